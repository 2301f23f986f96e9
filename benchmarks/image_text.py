"""Image-text methods on the embedded captioned digits: zero-shot top-1 / top-5 on the held-out digits
(handwriting never seen in training; chance 10%), image-to-text and text-to-image Recall@1, kNN@20 and the
linear probe of the image tower, each beside random-init towers, after a CPU budget.

    .venv/bin/python benchmarks/image_text.py [--budget 5m] [--methods clip siglip ...] [key=value ...]

Every method trains from its own recipe (``digits-captions``), unchanged but for ``train.budget`` and the
overrides. Writes benchmarks/results/image_text_<recipe>.json; `python benchmarks/make_results.py` regenerates
RESULTS.md.
"""
from __future__ import annotations

import argparse
import shlex

from common import parse_args, write_row
from learning import train_and_read

RECIPES = ["clip", "siglip", "convirt", "slip"]
SHOWN = ["zero_shot_top1", "zero_shot_top5", "image_to_text_recall@1", "text_to_image_recall@1", "knn_top1@20",
         "linear_top1"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--budget", default="5m")
    parser.add_argument("--methods", nargs="*", default=RECIPES, help="recipe names")
    parser.add_argument("overrides", nargs="*")
    args = parse_args(parser)
    for recipe in args.methods:
        overrides = ["train.epochs=null", f"train.budget={args.budget}", "train.progress=false", "eval.report=false",
                     *args.overrides]
        name, results, peak, wall = train_and_read(recipe, "bench-image-text", overrides)
        if results is None:
            continue
        rows = {row: {k: v for k, v in scores.items() if k in SHOWN} for row, scores in results["results"].items()}
        shown = " ".join(["benchmarks/image_text.py", f"--budget {args.budget}", f"--methods {recipe}",
                          *map(shlex.quote, args.overrides)])
        print(write_row(f"image_text_{recipe}", {
            "benchmark": "image_text", "recipe": recipe, "method": results["run"]["method"],
            "backbone": results["run"]["backbone"], "budget": args.budget, "command": shown,
            "steps": results["run"]["steps"], "epochs": round(results["run"]["epochs"], 1),
            "images_per_s": results["run"]["images_per_s"], "train_wall_time_s": results["run"]["wall_time_s"],
            "eval_time_s": results.get("eval_time_s"), "total_wall_time_s": round(wall, 1),
            "peak_memory_mib": round(peak), "results": rows, "run": name,
        }), rows["pretrained"], flush=True)


if __name__ == "__main__":
    main()
