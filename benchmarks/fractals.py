"""Pre-training without natural images: SimCLR on procedural fractals (``data.source=fractals`` or
``fractals-multi``; FractalDB, Kataoka et al. 2020) for a fixed number of steps, evaluated by kNN@20 on CIFAR-10
beside random-init features and raw pixels, and beside the same steps of SimCLR on CIFAR-10 itself.

    .venv/bin/python benchmarks/fractals.py [--steps 300] [--sources fractals-multi cifar10] [key=value ...]

Fixed steps (``train.max_steps``), so the accuracy does not depend on the machine's load; the wall time and
images/s do. Writes benchmarks/results/fractals_<source>.json (rows of the domain table);
`python benchmarks/make_results.py` regenerates RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time

from common import ROOT, cifar10_folder, parse_args, write_row
from learning import knn_margins, train_and_read

COMMON = ["train.epochs=null", "train.budget=null", "train.progress=false", "eval.report=false",
          "eval.protocols=[knn]", "data.image_size=32",
          # One normalisation for every run (CIFAR-10's statistics): the backbone trained on fractals sees CIFAR-10
          # images as they are at evaluation, not through the statistics of black-backed fractals.
          "data.mean=[0.491,0.482,0.447]", "data.std=[0.247,0.243,0.261]"]


def evaluate_on_cifar(run: str) -> dict:
    """``selfsup eval RUN --data CIFAR-10``: the run's backbone with the random-init and raw-pixel rows."""
    subprocess.run([sys.executable, "-m", "selfsup.cli", "eval", str(ROOT / "benchmarks" / "runs" / run), "--data",
                    str(cifar10_folder()), "eval.protocols=[knn]"], cwd=ROOT, check=True, capture_output=True,
                   text=True)
    return json.loads((ROOT / "benchmarks" / "runs" / run / "results.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--sources", nargs="*", default=["fractals-multi", "cifar10"])
    parser.add_argument("overrides", nargs="*", help="key=value for every run")
    args = parse_args(parser)
    cifar = str(cifar10_folder())
    for source in args.sources:
        data = cifar if source == "cifar10" else source
        overrides = [f"data.source={data}", f"train.max_steps={args.steps}", f"train.batch_size={args.batch_size}",
                     *COMMON, *args.overrides]
        if source != "cifar10":
            overrides.append("eval.enabled=false")  # evaluated on CIFAR-10 below, not on the fractals' own split
        start = time.perf_counter()
        name, results, peak, wall = train_and_read("simclr-cifar-cpu", f"bench-fractals-{source}", overrides) \
            if source == "cifar10" else _train_only(overrides, source)
        if source != "cifar10" and name is not None:
            results = evaluate_on_cifar(name)
        if results is None:
            continue
        scores = results["results"]
        margins = knn_margins(scores)
        summary = json.loads((ROOT / "benchmarks" / "runs" / name / "train_summary.json").read_text())
        shown = " ".join(["benchmarks/fractals.py", f"--steps {args.steps}", f"--batch-size {args.batch_size}",
                          f"--sources {source}", *map(shlex.quote, args.overrides)])
        label = "CIFAR-10 itself" if source == "cifar10" else f"{source} (no natural image), kNN on CIFAR-10"
        print(write_row(f"fractals_{source}", {
            "benchmark": "domain", "dataset": f"pretrained on {label}", "recipe": "simclr-cifar-cpu",
            "method": "simclr", "backbone": "small_resnet", "steps": summary["steps"],
            "epochs": round(summary["epochs"], 2), "command": shown, "images_per_s": summary["images_per_s"],
            "train_wall_time_s": summary["wall_time_s"], "total_wall_time_s": round(time.perf_counter() - start, 1),
            "results": scores, "knn20_margin_points": margins, "run": name,
        }), scores["pretrained"], margins, flush=True)


def _train_only(overrides: list[str], source: str):
    name = f"bench-fractals-{source}-{time.strftime('%Y%m%d-%H%M%S')}"
    cmd = [sys.executable, "-m", "selfsup.cli", "train", "simclr-cifar-cpu", f"name={name}",
           "runs_dir=benchmarks/runs", *overrides]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        print(f"{source}: failed\n{done.stderr[-3000:]}", file=sys.stderr)
        return None, None, 0.0, 0.0
    return name, None, 0.0, 0.0


if __name__ == "__main__":
    main()
