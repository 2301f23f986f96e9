"""How long each method needs to learn on the embedded digits: kNN@20 of its features against random-init
features of the same backbone, after each of several CPU budgets.

    .venv/bin/python benchmarks/digits_learning.py [--budgets 30s 90s] [--methods byol dino ...] [key=value ...]

Every method trains from its own recipe, unchanged except for ``train.budget``, on the embedded ``digits``
(no download; the held-out split is handwriting never seen in training), then is evaluated by kNN on the
held-out split exactly as ``selfsup train`` evaluates it. This is the measurement behind the question "does
every method beat random-init within ~30 s on 2 cores?" (issues 3 and 4). Writes
benchmarks/results/digits_learning_<recipe>.json per method; `python benchmarks/make_results.py`
regenerates RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time

from cifar10_methods import RECIPES as RESNET_RECIPES, VIT_RECIPES
from common import ROOT, parse_args, write_row

# The same recipes as the CIFAR-10 method tables (MoCo v3 appears in both of those; once here).
RECIPES = RESNET_RECIPES + [recipe for recipe in VIT_RECIPES if recipe not in RESNET_RECIPES]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--budgets", nargs="*", default=["30s", "90s"])
    parser.add_argument("--methods", nargs="*", default=None, help="recipe names")
    parser.add_argument("overrides", nargs="*")
    args = parse_args(parser)
    for recipe in args.methods or RECIPES:
        runs = []
        for budget in args.budgets:
            name = f"bench-digits-{recipe}-{budget}-{time.strftime('%Y%m%d-%H%M%S')}"
            cmd = [sys.executable, "-m", "selfsup.cli", "train", recipe, "data.source=digits", f"name={name}",
                   "runs_dir=benchmarks/runs", "train.epochs=null", f"train.budget={budget}", "train.progress=false",
                   "eval.protocols=[knn]", "eval.report=false", "eval.knn.k=[20]", *args.overrides]
            start = time.perf_counter()
            code = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL).returncode
            if code != 0:
                print(f"{recipe} {budget}: failed with exit code {code}", file=sys.stderr)
                continue
            results = json.loads((ROOT / "benchmarks" / "runs" / name / "results.json").read_text())
            summary = json.loads((ROOT / "benchmarks" / "runs" / name / "train_summary.json").read_text())
            pretrained = results["results"]["pretrained"]["knn_top1@20"]
            random_init = results["results"]["random_init"]["knn_top1@20"]
            runs.append({"budget": budget, "steps": summary["steps"], "epochs": round(summary["epochs"], 1),
                         "images_per_s": summary["images_per_s"], "knn_pretrained": pretrained,
                         "knn_random_init": random_init, "margin": round(pretrained - random_init, 4),
                         "total_wall_time_s": round(time.perf_counter() - start, 1), "run": name})
            print(recipe, runs[-1], flush=True)
        if not runs:
            continue
        shown = " ".join(["benchmarks/digits_learning.py", "--budgets", *args.budgets, "--methods", recipe,
                          *map(shlex.quote, args.overrides)])
        write_row(f"digits_learning_{recipe}", {
            "benchmark": "digits_learning", "recipe": recipe, "method": results["run"]["method"],
            "backbone": results["run"]["backbone"], "command": shown,
            "wall_time_s": round(sum(r["total_wall_time_s"] for r in runs), 1), "runs": runs,
            "knn_raw_pixels": results["results"].get("raw_pixels", {}).get("knn_top1@20"),
        })


if __name__ == "__main__":
    main()
