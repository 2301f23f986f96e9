"""Distillation: does a small student get close to its frozen teacher? A teacher run (ResNet-18 SimCLR on
CIFAR-10 by default, trained here for ``--teacher-budget``, or an existing run given with ``--teacher``), then a
student run of the ``distill`` recipe (small_resnet, the teacher's clean-view features cached) for the shorter
``--student-budget``, both evaluated by the default evaluation; the row compares their kNN@20 on the test split
(the acceptance target: the student within 95% of the teacher).

    .venv/bin/python benchmarks/distill.py [--teacher RUN | --teacher-recipe simclr-resnet18-cifar
                                           --teacher-budget 60m] [--student-recipe distill] [--student-budget 20m]
                                           [--data cifar10|digits] [--tag NAME] [--teacher-set k=v ...]
                                           [--student-set k=v ...] [key=value ...  (both runs)]

Both runs read the same data with measured statistics, so the student's views arrive normalised as the
teacher expects (the row checks it: ``normalization_matched``). Writes benchmarks/results/distill_<data>[-<tag>].json;
`python benchmarks/make_results.py` regenerates RESULTS.md (section "Distillation").
"""
from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
from pathlib import Path

from safetensors import safe_open

from common import ROOT, cifar10_folder, parse_args, write_row
from learning import train_and_read
from selfsup.runs import RESULTS_FILE, load_run_config

TARGET = 0.95  # the student's kNN@20 as a fraction of the teacher's
RUN_KEYS = ("steps", "epochs", "images_per_s", "wall_time_s")


def parameters(run: Path) -> int:
    """The exported backbone's parameter count (BatchNorm statistics excluded)."""
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    with safe_open(str(run / "backbone.safetensors"), framework="pt") as f:
        return sum(math.prod(f.get_slice(key).get_shape()) for key in f.keys() if key.rsplit(".", 1)[-1] not in buffers)


def describe(run: Path, recipe: str | None, results: dict) -> dict:
    """One side of the row: what the run was, its size, its budget and its scores."""
    cfg = load_run_config(run)
    meta = json.loads((run / "backbone.json").read_text())
    return {"run": run.name, "recipe": recipe, "method": results["run"]["method"], "backbone": cfg.backbone.name,
            "backbone_options": cfg.backbone.options, "parameters": parameters(run),
            "budget": cfg.train.budget, "max_steps": cfg.train.max_steps,
            **{key: results["run"].get(key) for key in RUN_KEYS},
            "knn_top1@20": results["results"]["pretrained"].get("knn_top1@20"),
            "normalization": meta["normalization"], "results": results["results"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--teacher", help="an existing teacher run folder (then no teacher is trained)")
    parser.add_argument("--teacher-recipe", default="simclr-resnet18-cifar")
    parser.add_argument("--teacher-budget", default="60m")
    parser.add_argument("--student-recipe", default="distill")
    parser.add_argument("--student-budget", default="20m")
    parser.add_argument("--data", default="cifar10", choices=["cifar10", "digits"])
    parser.add_argument("--tag", help="suffix of the result file: variants keep their rows")
    parser.add_argument("--teacher-set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--student-set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("overrides", nargs="*", help="key=value for both runs")
    args = parse_args(parser)
    source = str(cifar10_folder()) if args.data == "cifar10" else "digits"
    common = [f"data.source={source}", "train.epochs=null", "train.progress=false", "eval.report=false",
              *args.overrides]
    if args.teacher:
        teacher_run = Path(args.teacher).resolve()
        if not (teacher_run / RESULTS_FILE).is_file():
            raise SystemExit(f"{teacher_run} has no {RESULTS_FILE}: evaluate it first (selfsup eval {teacher_run})")
        teacher_results, teacher_recipe = json.loads((teacher_run / RESULTS_FILE).read_text()), None
    else:
        name, teacher_results, _, _ = train_and_read(
            args.teacher_recipe, f"bench-distill-teacher-{args.data}",
            [*common, f"train.budget={args.teacher_budget}", *args.teacher_set])
        if teacher_results is None:
            sys.exit(1)
        teacher_run, teacher_recipe = ROOT / "benchmarks" / "runs" / name, args.teacher_recipe
    name, student_results, peak, wall = train_and_read(
        args.student_recipe, f"bench-distill-student-{args.data}",
        [*common, f"train.budget={args.student_budget}", f"method_options.teacher={teacher_run}", *args.student_set])
    if student_results is None:
        sys.exit(1)
    teacher = describe(teacher_run, teacher_recipe, teacher_results)
    student = describe(ROOT / "benchmarks" / "runs" / name, args.student_recipe, student_results)
    student["peak_memory_mib"] = round(peak)
    ratio = (student["knn_top1@20"] / teacher["knn_top1@20"]) if teacher["knn_top1@20"] else None
    shown = " ".join(["benchmarks/distill.py", *([f"--teacher {args.teacher}"] if args.teacher else
                                                 [f"--teacher-recipe {args.teacher_recipe}",
                                                  f"--teacher-budget {args.teacher_budget}"]),
                      f"--student-recipe {args.student_recipe}", f"--student-budget {args.student_budget}",
                      f"--data {args.data}", *(f"--teacher-set {shlex.quote(s)}" for s in args.teacher_set),
                      *(f"--student-set {shlex.quote(s)}" for s in args.student_set),
                      *([f"--tag {args.tag}"] if args.tag else []), *map(shlex.quote, args.overrides)])
    row = {"benchmark": "distill", "dataset": args.data, "teacher": teacher, "student": student,
           "knn_ratio": round(ratio, 4) if ratio is not None else None, "target_ratio": TARGET,
           "meets_target": ratio is not None and ratio >= TARGET,
           "parameter_ratio": round(student["parameters"] / teacher["parameters"], 4),
           "normalization_matched": teacher["normalization"] == student["normalization"],
           "total_wall_time_s": round(wall, 1), "command": shown}
    out = write_row(f"distill_{args.data}" + (f"-{args.tag}" if args.tag else ""), row)
    print(out, f"teacher kNN@20 {teacher['knn_top1@20']}, student {student['knn_top1@20']}, ratio {row['knn_ratio']} "
          f"(target {TARGET}), parameters x{row['parameter_ratio']}", flush=True)


if __name__ == "__main__":
    main()
