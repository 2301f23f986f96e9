"""Continued pre-training from a saved checkpoint: were the features kept, and does an extension join smoothly?

A finished run's backbone is exported with timm / torchvision key names (``selfsup export --format``, the file a
user would bring from elsewhere), a new run of ``--recipe`` starts from that file (``backbone.weights``, the
heads first, ``optim.schedule=wsd``) for ``--budget``, and is then extended by ``--extend``
(``selfsup train --resume RUN train.budget=+...``). The row records the kNN@20 of the ``start`` row (the backbone
at step 0) and of the trained backbone after the first segment and after the extension, all on the test split,
and the logged losses and learning rates where the extension joins the first segment.

    .venv/bin/python benchmarks/continued.py --from RUN [--recipe simclr-resnet18-cifar] [--budget 5m]
                                             [--extend 2m] [--data cifar10|digits] [--tag NAME] [key=value ...]

Writes benchmarks/results/continued_<data>[-<tag>].json; `python benchmarks/make_results.py` regenerates
RESULTS.md (section "Continued pre-training").
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

from common import ROOT, cifar10_folder, parse_args, write_row
from learning import run_and_measure
from selfsup.runs import METRICS_FILE, RESULTS_FILE, load_run_config

JUNCTION = 5  # logged records on each side of the branch point


def export_named(run: Path, out: Path) -> str:
    """Export ``run``'s backbone with timm key names where the backbone has a timm counterpart, else torchvision's
    (a ResNet's torchvision names are timm's too); returns the format used."""
    for fmt in ("timm", "torchvision"):
        done = subprocess.run([sys.executable, "-m", "selfsup.cli", "export", str(run), "--format", fmt,
                               "--out", str(out)], cwd=ROOT, capture_output=True, text=True)
        if done.returncode == 0:
            return fmt
    raise SystemExit(f"{run}: exports neither to timm nor to torchvision:\n{done.stderr[-2000:]}")


def knn(run: Path) -> dict:
    results = json.loads((run / RESULTS_FILE).read_text())["results"]
    return {row: scores.get("knn_top1@20") for row, scores in results.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--from", dest="source_run", required=True, help="the finished run to continue from")
    parser.add_argument("--recipe", default="simclr-resnet18-cifar")
    parser.add_argument("--budget", default="5m")
    parser.add_argument("--extend", default="2m")
    parser.add_argument("--data", default="cifar10", choices=["cifar10", "digits"])
    parser.add_argument("--tag")
    parser.add_argument("overrides", nargs="*")
    args = parse_args(parser)
    source_run = Path(args.source_run).resolve()
    cfg = load_run_config(source_run)
    name = f"bench-continued-{args.data}-{time.strftime('%Y%m%d-%H%M%S')}"
    runs_dir = ROOT / "benchmarks" / "runs"
    weights = runs_dir / f"{name}-start.safetensors"
    fmt = export_named(source_run, weights)
    source = str(cifar10_folder()) if args.data == "cifar10" else "digits"
    overrides = [f"data.source={source}", f"backbone.name={cfg.backbone.name}",
                 f"backbone.options={json.dumps(cfg.backbone.options)}", f"backbone.weights={weights}",
                 "optim.schedule=wsd", "train.epochs=null", f"train.budget={args.budget}", "train.progress=false",
                 "eval.report=false", "eval.protocols=[knn]", "eval.baselines=false", *args.overrides]
    run = runs_dir / name
    start = time.perf_counter()
    code, _ = run_and_measure([sys.executable, "-m", "selfsup.cli", "train", args.recipe, f"name={name}",
                               f"runs_dir={runs_dir}", *overrides], runs_dir / f"{name}.log")
    if code != 0:
        raise SystemExit(f"the continued run failed; see {runs_dir / f'{name}.log'}")
    first_records = [json.loads(line) for line in (run / METRICS_FILE).read_text().splitlines()]
    first = knn(run)
    code, _ = run_and_measure([sys.executable, "-m", "selfsup.cli", "train", "--resume", str(run),
                               f"train.budget=+{args.extend}"], runs_dir / f"{name}-extend.log")
    if code != 0:
        raise SystemExit(f"the extension failed; see {runs_dir / f'{name}-extend.log'}")
    records = [json.loads(line) for line in (run / METRICS_FILE).read_text().splitlines()]
    superseded = [json.loads(line) for line in (run / "metrics.superseded.jsonl").read_text().splitlines()]
    branch = superseded[0]["step"] - 1 if superseded else first_records[-1]["step"]
    before = [r for r in records if r["step"] <= branch][-JUNCTION:]
    after = [r for r in records if r["step"] > branch][:JUNCTION]
    extended = knn(run)
    row = {
        "benchmark": "continued", "dataset": args.data, "source_run": source_run.name, "weights_format": fmt,
        "recipe": args.recipe, "backbone": cfg.backbone.name, "budget": args.budget, "extend": args.extend,
        "knn_at_start": first.get("start"), "knn_after_budget": first.get("pretrained"),
        "knn_after_extension": extended.get("pretrained"), "kept": first["pretrained"] >= first["start"],
        "branch_step": branch, "steps_first": first_records[-1]["step"], "steps_extended": records[-1]["step"],
        "loss_before_branch": [round(r["loss"], 4) for r in before],
        "loss_after_branch": [round(r["loss"], 4) for r in after],
        "lr_before_branch": [r["lr"] for r in before], "lr_after_branch": [r["lr"] for r in after],
        "total_wall_time_s": round(time.perf_counter() - start, 1),
        "command": " ".join(["benchmarks/continued.py", "--from", str(source_run.relative_to(ROOT))
                             if source_run.is_relative_to(ROOT) else str(source_run), "--recipe", args.recipe,
                             "--budget", args.budget, "--extend", args.extend, "--data", args.data,
                             *([f"--tag {args.tag}"] if args.tag else []), *map(shlex.quote, args.overrides)]),
    }
    out = write_row(f"continued_{args.data}" + (f"-{args.tag}" if args.tag else ""), row)
    print(out, f"kNN@20 at step 0 {row['knn_at_start']}, after {args.budget} {row['knn_after_budget']}, after "
          f"+{args.extend} {row['knn_after_extension']}; losses at the junction {row['loss_before_branch']} | "
          f"{row['loss_after_branch']}", flush=True)


if __name__ == "__main__":
    main()
