"""Volumes: 3-D MAE (the ``mae-3d`` recipe: vit3d_micro_cpu, cube masks) on the generated 16^3 ``volumes``
dataset (2,000 train, 500 test, 4 classes told apart by 3-D structure only), kNN@20 on the held-out volumes
beside random-init features and raw voxels.

    .venv/bin/python benchmarks/volumes.py [--steps N] [key=value ...]

It trains for a fixed number of optimizer steps (``STEPS``), so that the accuracy does not depend on what else
the machine runs; the wall time and images/s do. Only the kNN protocol is run (the linear probe on 4,096 raw
voxels costs minutes and is not what the comparison is about). Writes benchmarks/results/volumes_mae-3d.json;
`python benchmarks/make_results.py` regenerates RESULTS.md.
"""
from __future__ import annotations

import argparse
import shlex

from common import parse_args, write_row
from learning import knn_margins, train_and_read

RECIPE = "mae-3d"
STEPS = 300
COMMON = ["train.batch_size=128", "train.epochs=null", "train.budget=null", "train.progress=false",
          "eval.report=false", "eval.baselines=true", "eval.protocols=[knn]", "data.num_workers=1"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("overrides", nargs="*")
    args = parse_args(parser)
    overrides = [f"train.max_steps={args.steps}", *COMMON, *args.overrides]
    name, results, peak, wall = train_and_read(RECIPE, "bench-volumes", overrides)
    if results is None:
        raise SystemExit(1)
    scores = results["results"]
    margins = knn_margins(scores)
    shown = " ".join(["benchmarks/volumes.py", f"--steps {args.steps}", *map(shlex.quote, args.overrides)])
    print(write_row(f"volumes_{RECIPE}", {
        "benchmark": "volumes", "dataset": "volumes (generated, 1 channel uint16, 16^3, 2000 + 500, 4 classes)",
        "recipe": RECIPE, "method": results["run"]["method"], "backbone": results["run"]["backbone"],
        "steps": results["run"]["steps"], "epochs": round(results["run"]["epochs"], 1), "command": shown,
        "images_per_s": results["run"]["images_per_s"], "train_wall_time_s": results["run"]["wall_time_s"],
        "eval_time_s": results.get("eval_time_s"), "total_wall_time_s": round(wall, 1),
        "peak_memory_mib": round(peak), "results": scores, "knn20_margin_points": margins, "run": name,
    }), scores["pretrained"], margins, flush=True)


if __name__ == "__main__":
    main()
