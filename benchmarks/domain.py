"""Domain images: SimCLR and MAE on a folder of 13-band 16-bit GeoTIFFs (the synthetic ``spectral`` set written
as files by ``selfsup data demo``), kNN@20 and the linear probe on its held-out test folder beside random-init
features and raw pixels.

    .venv/bin/python benchmarks/domain.py [--methods simclr-small mae] [key=value ...]

What it shows: the raw readers (tifffile), ``selfsup data stats`` (timed), the pixel window and normalisation
from those statistics, the views for measurements (band jitter, spectral tilt, band dropout, noise, and
``data.overhead`` flips and quarter turns), ``data.cache`` of raw data as uint16, and whether pre-training beats
the baselines. Each method trains for a fixed number of steps (``STEPS``, about 3 CPU minutes on the 2-core
machine of RESULTS.md when it has the CPU to itself), so that the accuracy does not depend on what else the
machine runs; the wall time and images/s do. Writes benchmarks/results/domain_<recipe>.json;
`python benchmarks/make_results.py` regenerates RESULTS.md.
"""
from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time

from common import ROOT, add_tag_argument, parse_args, tag_words, tagged, write_row
from learning import knn_margins, train_and_read

FOLDER = ROOT / ".data" / "spectral-geotiff"
# recipe -> (optimizer steps, overrides): 2-3 minutes each on 2 cores; MAE learns more slowly (`train.max_steps=2000`).
STEPS = {"simclr-small": (300, ["train.batch_size=256"]), "mae": (500, ["train.batch_size=128"])}
COMMON = ["data.cache=true", "data.overhead=true", "data.hflip=true", "train.epochs=null", "train.budget=null",
          "train.progress=false", "eval.report=false"]


def selfsup(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "selfsup.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          check=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--methods", nargs="*", default=list(STEPS), help="recipe names")
    add_tag_argument(parser)
    parser.add_argument("overrides", nargs="*", help="key=value for every run")
    args = parse_args(parser)
    if not (FOLDER / "test").is_dir():
        start = time.perf_counter()
        selfsup("data", "demo", str(FOLDER))
        print(f"wrote {FOLDER} in {time.perf_counter() - start:.0f} s", flush=True)
    start = time.perf_counter()
    stats = selfsup("data", "stats", str(FOLDER))
    stats_time = round(time.perf_counter() - start, 1)
    print(stats.stdout.splitlines()[0], f"({stats_time} s)", flush=True)
    for recipe in args.methods:
        steps, recipe_overrides = STEPS[recipe]
        overrides = [f"data.source={FOLDER}", f"train.max_steps={steps}", *COMMON, *recipe_overrides, *args.overrides]
        name, results, peak, wall = train_and_read(recipe, "bench-domain", overrides)
        if results is None:
            continue
        scores = results["results"]
        margins = knn_margins(scores)
        shown = " ".join(["benchmarks/domain.py", *map(shlex.quote, args.overrides), f"--methods {recipe}",
                          *tag_words(args.tag)])
        print(write_row(tagged(f"domain_{recipe}", args.tag), {
            "benchmark": "domain", "dataset": "spectral GeoTIFF folder (13 bands, uint16, 5000 + 1000)",
            "recipe": recipe, "method": results["run"]["method"], "backbone": results["run"]["backbone"],
            "steps": results["run"]["steps"], "epochs": round(results["run"]["epochs"], 1), "command": shown,
            "stats_time_s": stats_time, "images_per_s": results["run"]["images_per_s"],
            "train_wall_time_s": results["run"]["wall_time_s"], "eval_time_s": results.get("eval_time_s"),
            "total_wall_time_s": round(wall, 1), "peak_memory_mib": round(peak),
            "results": scores, "knn20_margin_points": margins, "run": name,
        }), scores["pretrained"], margins, flush=True)


if __name__ == "__main__":
    main()
