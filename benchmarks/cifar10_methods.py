"""Every joint-embedding method on CIFAR-10 under the same CPU budget, backbone and batch; kNN top-1 (k=20)
on the test split, images/s and peak memory per method.

    .venv/bin/python benchmarks/cifar10_methods.py [--budget 3m] [--methods moco-v2 byol ...] [key=value ...]
    .venv/bin/python benchmarks/cifar10_methods.py --vit [--budget 3m] [--methods mae ijepa ...]   # ViT table

Each method trains from its own recipe with the backbone, image size and batch size overridden to the same
values (the CPU CIFAR backbone of simclr-cifar-cpu). Writes benchmarks/results/cifar10_methods_<recipe>.json
per method; `python benchmarks/make_results.py` regenerates RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time

from common import ROOT, cifar10_folder, parse_args, write_row

RECIPES = ["demo", "moco-v2", "moco-v3", "byol", "simsiam", "barlow-twins", "vicreg", "swav", "dino", "nnclr",
           "rotnet", "supcon"]
VIT_RECIPES = ["mae", "simmim", "ijepa", "lejepa", "ibot", "cmae", "moco-v3"]
# The masked and predictive methods (and MoCo v3 as the joint-embedding reference) on one CPU-sized ViT.
SAME_FOR_VIT = ["backbone.name=vit_micro_cpu", "backbone.options={}", "data.image_size=32", "train.batch_size=128",
                "data.num_workers=1", "eval.protocols=[knn]"]
SAME_FOR_ALL = ["backbone.name=small_resnet", "backbone.options={widths: [16, 32, 64, 128], stem_stride: 1}",
                "data.image_size=32", "train.batch_size=128", "data.num_workers=1", "eval.protocols=[knn]"]


def peak_rss_mib_of(cmd: list[str]) -> tuple[int, float]:
    """Run ``cmd``; return (exit code, peak resident memory of its main process in MiB, from wait4)."""
    proc = subprocess.Popen(cmd, cwd=ROOT)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--budget", default="3m")
    parser.add_argument("--methods", nargs="*", default=None, help="recipe names")
    parser.add_argument("--vit", action="store_true", help="the ViT table: masked/predictive methods on vit_micro_cpu")
    parser.add_argument("--skip-baselines", action="store_true", help="an earlier row already holds them")
    parser.add_argument("overrides", nargs="*")
    args = parse_args(parser)
    data = cifar10_folder()
    args.methods = args.methods or (VIT_RECIPES if args.vit else RECIPES)
    same = SAME_FOR_VIT if args.vit else SAME_FOR_ALL
    suffix = "_vit" if args.vit else ""
    for position, recipe in enumerate(args.methods):
        # Random-init and raw-pixel baselines are the same for every method (same backbone, seed and data):
        # computed with the first method only.
        baselines = f"eval.baselines={str(position == 0 and not args.skip_baselines).lower()}"
        name = f"bench-methods-{recipe}-{time.strftime('%Y%m%d-%H%M%S')}"
        cmd = [sys.executable, "-m", "selfsup.cli", "train", recipe, f"data.source={data}", f"name={name}",
               "runs_dir=benchmarks/runs", "train.epochs=null", f"train.budget={args.budget}", "train.progress=false",
               *same, baselines, "eval.report=false", *args.overrides]
        start = time.perf_counter()
        code, peak = peak_rss_mib_of(cmd)
        wall = time.perf_counter() - start
        if code != 0:
            print(f"{recipe}: failed with exit code {code}", file=sys.stderr)
            continue
        results = json.loads((ROOT / "benchmarks" / "runs" / name / "results.json").read_text())
        shown = " ".join(["benchmarks/cifar10_methods.py", *(["--vit"] if args.vit else []), f"--budget {args.budget}",
                          f"--methods {recipe}",
                          *map(shlex.quote, args.overrides)])
        row = {
            "benchmark": "cifar10_methods", "title": f"{results['run']['method']}, CIFAR-10, {args.budget} CPU budget",
            "recipe": recipe, "command": shown, "method": results["run"]["method"],
            "backbone": results["run"]["backbone"], "budget": args.budget,
            "train_wall_time_s": results["run"]["wall_time_s"], "total_wall_time_s": round(wall, 1),
            "epochs": round(results["run"]["epochs"], 2), "images_per_s": results["run"]["images_per_s"],
            "peak_memory_mib": round(peak), "results": results["results"], "protocol": results["protocol"],
        }
        print(write_row(f"cifar10_methods_{recipe}{suffix}", row))


if __name__ == "__main__":
    main()
