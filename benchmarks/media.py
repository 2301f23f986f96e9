"""Video and audio: VideoMAE, VideoMAE V2, CVRL and RSP on the generated ``moving-digits`` videos (1,000 train,
500 test, 10 classes), SSAST, audio MAE and SimCLR on spectrogram crops on the generated ``sounds`` (1,200 train,
600 test, 6 classes); kNN@20 on the held-out split beside random-init features and raw inputs (the evaluation
clip's voxels, the evaluation spectrogram's values).

    .venv/bin/python benchmarks/media.py [--recipes videomae ssast ...] [--steps N] [key=value ...]

Each recipe trains for a fixed number of optimizer steps (``STEPS``), so that the accuracy does not depend on
what else the machine runs; the wall time and clips/s do. Only the kNN protocol is run. Writes
benchmarks/results/media_<recipe>[-<tag>].json; `python benchmarks/make_results.py` regenerates RESULTS.md.
"""
from __future__ import annotations

import argparse
import shlex

from common import add_tag_argument, parse_args, tag_words, tagged, write_row
from learning import knn_margins, train_and_read

RECIPES = ["videomae", "videomae-v2", "cvrl", "rsp", "ssast", "audio-mae", "simclr-audio"]
STEPS = 150  # one budget for every recipe: about 5 minutes each when the 2-core machine is quiet
DATASETS = {"moving-digits": "moving-digits (generated videos, 32 gray frames of 32 x 32, 1000 + 500, 10 classes)",
            "sounds": "sounds (generated 1 s clips at 16 kHz, 1200 + 600, 6 classes)"}
COMMON = ["train.epochs=null", "train.budget=null", "train.progress=false", "eval.report=false",
          "eval.baselines=true", "eval.protocols=[knn]", "data.num_workers=1"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipes", nargs="*", default=RECIPES)
    parser.add_argument("--steps", type=int, default=STEPS)
    add_tag_argument(parser)
    parser.add_argument("overrides", nargs="*")
    args = parse_args(parser)
    for recipe in args.recipes:
        overrides = [f"train.max_steps={args.steps}", *COMMON, *args.overrides]
        name, results, peak, wall = train_and_read(recipe, "bench-media", overrides)
        if results is None:
            continue
        run, scores = results["run"], results["results"]
        margins = knn_margins(scores)
        source = "sounds" if recipe in ("ssast", "audio-mae", "simclr-audio") else "moving-digits"
        shown = " ".join(["benchmarks/media.py", f"--recipes {recipe}", f"--steps {args.steps}",
                          *map(shlex.quote, args.overrides), *tag_words(args.tag)])
        print(write_row(tagged(f"media_{recipe}", args.tag), {
            "benchmark": "media", "dataset": DATASETS[source], "recipe": recipe, "method": run["method"],
            "backbone": run["backbone"], "steps": run["steps"], "epochs": round(run["epochs"], 1),
            "command": shown, "images_per_s": run["images_per_s"], "train_wall_time_s": run["wall_time_s"],
            "eval_time_s": results.get("eval_time_s"), "total_wall_time_s": round(wall, 1),
            "peak_memory_mib": round(peak), "results": scores, "knn20_margin_points": margins, "run": name,
        }), scores["pretrained"], margins, flush=True)


if __name__ == "__main__":
    main()
