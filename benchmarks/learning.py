"""Does every method learn? Each registered method's own recipe, trained for a CPU budget on CIFAR-10 (from
../shared/data) and on the embedded digits, then judged by the default evaluation (kNN@20 and the linear probe)
against random-init features of the same backbone and against raw pixels.

    .venv/bin/python benchmarks/learning.py [--datasets cifar10 digits] [--methods dino mae ...]
                                            [--seeds 0 1 2] [--force] [key=value ...]

Resumable one (dataset, method, seed) at a time: a cell whose result file already exists is skipped (``--force``
re-runs it), so the whole zoo can be measured over several sittings. CIFAR-10 runs get 10 minutes and the digits
3 (``--cifar10-budget``, ``--digits-budget``); the recipe is otherwise unchanged. Random-init and raw-pixel
baselines are computed once per (dataset, backbone configuration) and shared by the rows with that backbone.
Writes benchmarks/results/learning_<dataset>_<recipe>_seed<k>.json; `python benchmarks/make_results.py`
regenerates RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from common import RESULTS_DIR, ROOT, cifar10_folder, parse_args, write_row
from selfsup.backbones import BACKBONES
from selfsup.config import build_config, recipe_names
from selfsup.methods import METHODS, Method
from selfsup.methods.parts.teacher import TeacherChoice

# One recipe per method: the method's own small-budget recipe (SimCLR's is the CPU CIFAR recipe, whose stride-1
# stem is the one the 15-minute benchmark uses; `demo` is SimCLR too but sized for the first minute).
RECIPE_OF = {"simclr": "simclr-cifar-cpu", "barlow_twins": "barlow-twins", "moco_v2": "moco-v2",
             "moco_v3": "moco-v3", "emp_ssl": "emp-ssl"}
DATASETS = {"cifar10": "10m", "digits": "3m"}


def recipe_methods() -> dict[str, str]:
    """method name -> its recipe, for every method some built-in recipe trains (read from the recipe files)."""
    by_method: dict[str, list[str]] = {}
    for name in recipe_names():
        method = build_config(name).method
        # Image-text methods need captions, which CIFAR-10 and the plain digits lack: benchmarks/image_text.py.
        # Distillation methods need a trained teacher: benchmarks/distill.py.
        needs_teacher = issubclass(METHODS[method].Options, TeacherChoice)
        # Recipes of other field kinds (sounds, videos, tables, clouds, graphs) have their own benchmarks:
        # benchmarks/media.py, benchmarks/kinds.py.
        encodes = getattr(BACKBONES.get(build_config(name).backbone.name), "field_kind", "image")
        if encodes != "image":
            continue
        if METHODS[method].image_text_towers is Method.image_text_towers and not needs_teacher:
            by_method.setdefault(method, []).append(name)
    chosen = {}
    for method, names in sorted(by_method.items()):
        preferred = RECIPE_OF.get(method, method.replace("_", "-"))
        chosen[method] = preferred if preferred in names else sorted(names)[0]
    return chosen


def backbone_key(recipe: str, overrides: list[str]) -> str:
    """What random-init features depend on: the backbone's name and options, and the image size."""
    cfg = build_config(recipe, overrides)
    return json.dumps({"name": cfg.backbone.name, "options": cfg.backbone.options, "image_size": cfg.data.image_size},
                      sort_keys=True)


def cell_name(dataset: str, recipe: str, seed: int) -> str:
    """The result file (without ``.json``) of one cell of the learning table."""
    return f"learning_{dataset}_{recipe}_seed{seed}"


def baselines_known(dataset: str, key: str, seed: int, replacing: Path) -> bool:
    """Whether some other result file of ``dataset`` carries the random-init and raw-pixel rows of ``key``
    (``replacing``, the file this cell is about to overwrite, does not count: it would lose them)."""
    for path in RESULTS_DIR.glob(f"learning_{dataset}_*.json"):
        if path == replacing:
            continue
        row = json.loads(path.read_text())
        if row.get("backbone_key") == key and row.get("seed") == seed and "random_init" in row["results"]:
            return True
    return False


def run_and_measure(cmd: list[str], log: Path) -> tuple[int, float]:
    """Run ``cmd`` with its messages in ``log``; return (exit code, peak resident memory of its main process in
    MiB, from wait4)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as stream:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=stream, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    return os.waitstatus_to_exitcode(status), usage.ru_maxrss / 1024


def train_and_read(recipe: str, prefix: str, overrides: list[str]) -> tuple[str, dict | None, float, float]:
    """``selfsup train recipe`` as a run ``<prefix>-<recipe>-<time>`` under benchmarks/runs with ``overrides``:
    (run name, its results.json or None when it failed, peak memory MiB, wall seconds). A failure is reported
    with its log."""
    name = f"{prefix}-{recipe}-{time.strftime('%Y%m%d-%H%M%S')}"
    cmd = [sys.executable, "-m", "selfsup.cli", "train", recipe, f"name={name}", "runs_dir=benchmarks/runs", *overrides]
    start = time.perf_counter()
    log = ROOT / "benchmarks" / "runs" / f"{name}.log"
    code, peak = run_and_measure(cmd, log)
    wall = time.perf_counter() - start
    if code != 0:
        print(f"{recipe}: failed with exit code {code}; see {log}", file=sys.stderr)
        return name, None, peak, wall
    return name, json.loads((ROOT / "benchmarks" / "runs" / name / "results.json").read_text()), peak, wall


def knn_margins(scores: dict) -> dict[str, float]:
    """kNN@20 points of the pretrained row over the random-init and raw-pixel rows (those present)."""
    return {f"over_{row}": round(100 * (scores["pretrained"]["knn_top1@20"] - scores[row]["knn_top1@20"]), 1)
            for row in ("random_init", "raw_pixels") if row in scores}


def measure(dataset: str, recipe: str, seed: int, budget: str, overrides: list[str]) -> dict | None:
    source = str(cifar10_folder()) if dataset == "cifar10" else "digits"
    name = f"bench-learning-{dataset}-{recipe}-s{seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = ROOT / "benchmarks" / "runs" / name
    key = backbone_key(recipe, overrides)
    own_file = RESULTS_DIR / f"{cell_name(dataset, recipe, seed)}.json"
    baselines = not baselines_known(dataset, key, seed, replacing=own_file)
    cmd = [sys.executable, "-m", "selfsup.cli", "train", recipe, f"data.source={source}", f"name={name}",
           "runs_dir=benchmarks/runs", "train.epochs=null", f"train.budget={budget}", "train.progress=false",
           f"seed={seed}", f"eval.baselines={str(baselines).lower()}", "eval.report=false", *overrides]
    start = time.perf_counter()
    log = ROOT / "benchmarks" / "runs" / f"{name}.log"
    code, peak = run_and_measure(cmd, log)
    wall = time.perf_counter() - start
    if code != 0:
        print(f"{dataset} {recipe} seed {seed}: failed with exit code {code}; see {log}", file=sys.stderr)
        return None
    results = json.loads((run_dir / "results.json").read_text())
    # The collapse monitor's last reading (effective rank, normalized std, teacher-target entropy) and its
    # warnings: the first things to look at when a method does not learn.
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    monitor = next(({k: round(v, 4) for k, v in r.items() if k.startswith("monitor/")} for r in reversed(records)
                    if any(k.startswith("monitor/") for k in r)), {})
    warnings = [line.strip() for line in log.read_text().splitlines() if "collapse" in line or "uniform" in line]
    return {
        "benchmark": "learning", "dataset": dataset, "recipe": recipe, "seed": seed, "budget": budget,
        "method": results["run"]["method"], "backbone": results["run"]["backbone"], "backbone_key": key,
        "run": name, "steps": results["run"]["steps"], "epochs": round(results["run"]["epochs"], 2),
        "images_per_s": results["run"]["images_per_s"], "train_wall_time_s": results["run"]["wall_time_s"],
        "eval_time_s": results.get("eval_time_s"), "total_wall_time_s": round(wall, 1),
        "peak_memory_mib": round(peak), "results": results["results"], "protocol": results["protocol"],
        "monitor": monitor, "warnings": warnings, "final_loss": records[-1].get("loss") if records else None,
        "command": " ".join(["benchmarks/learning.py", "--datasets", dataset, "--methods", results["run"]["method"],
                             "--seeds", str(seed), *map(shlex.quote, overrides)]),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--datasets", nargs="*", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--methods", nargs="*", default=None, help="method names (default: every method)")
    parser.add_argument("--seeds", nargs="*", type=int, default=[0])
    parser.add_argument("--cifar10-budget", default=DATASETS["cifar10"])
    parser.add_argument("--digits-budget", default=DATASETS["digits"])
    parser.add_argument("--force", action="store_true", help="re-run cells whose result file exists")
    parser.add_argument("overrides", nargs="*")
    args = parse_args(parser)
    recipes = recipe_methods()
    unknown = sorted(set(args.methods or []) - set(recipes))
    if unknown:
        raise SystemExit(f"no recipe trains {', '.join(unknown)}; methods with a recipe: {', '.join(recipes)}")
    budgets = {"cifar10": args.cifar10_budget, "digits": args.digits_budget}
    for method in args.methods or list(recipes):
        for dataset in args.datasets:
            for seed in args.seeds:
                out = cell_name(dataset, recipes[method], seed)
                if (RESULTS_DIR / f"{out}.json").exists() and not args.force:
                    print(f"{out}: measured already (--force re-runs it)")
                    continue
                row = measure(dataset, recipes[method], seed, budgets[dataset], args.overrides)
                if row is not None:
                    pretrained = row["results"]["pretrained"]
                    print(write_row(out, row), f"kNN@20 {pretrained.get('knn_top1@20')}",
                          f"linear {pretrained.get('linear_top1')}", flush=True)


if __name__ == "__main__":
    main()
