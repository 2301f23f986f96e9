"""SimCLR on CIFAR-10 under a wall-clock CPU budget; kNN top-1 (k=20) on the test split.

    .venv/bin/python benchmarks/cifar10_simclr.py [--budget 15m] [--recipe simclr-cifar-cpu] [key=value ...]

Writes benchmarks/results/cifar10_simclr_<recipe>.json; `python benchmarks/make_results.py` regenerates
RESULTS.md from all result files.
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time

from common import ROOT, cifar10_folder, parse_args, write_row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--budget", default="15m")
    parser.add_argument("--recipe", default="simclr-cifar-cpu")
    parser.add_argument("overrides", nargs="*")
    args = parse_args(parser)
    data = cifar10_folder()
    name = f"bench-cifar10-{args.recipe}-{time.strftime('%Y%m%d-%H%M%S')}"
    cmd = [sys.executable, "-m", "selfsup.cli", "train", args.recipe, f"data.source={data}", f"name={name}",
           "runs_dir=benchmarks/runs", "train.epochs=null", f"train.budget={args.budget}", "train.progress=false",
           *args.overrides]
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True)
    wall = time.perf_counter() - start
    run = ROOT / "benchmarks" / "runs" / name
    results = json.loads((run / "results.json").read_text())
    shown = " ".join(["benchmarks/cifar10_simclr.py", f"--budget {args.budget}", f"--recipe {args.recipe}",
                      *map(shlex.quote, args.overrides)])
    row = {
        "benchmark": "cifar10_simclr", "title": f"SimCLR, CIFAR-10, {args.budget} CPU budget ({args.recipe})",
        "command": shown, "method": results["run"]["method"], "backbone": results["run"]["backbone"],
        "budget": args.budget, "train_wall_time_s": results["run"]["wall_time_s"], "total_wall_time_s": round(wall, 1),
        "epochs": round(results["run"]["epochs"], 2), "images_per_s": results["run"]["images_per_s"],
        "results": results["results"], "protocol": results["protocol"],
    }
    print(write_row(f"cifar10_simclr_{args.recipe}", row))


if __name__ == "__main__":
    main()
