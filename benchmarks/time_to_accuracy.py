"""Time to accuracy: selfsup's best CPU recipe against lightly's SimCLR example, both for one wall-clock budget
on CIFAR-10, in one invocation, judged by the same kNN protocol (issue 14).

    .venv/bin/python benchmarks/lightly_side_by_side.py --setup     # once: lightly's own environment
    .venv/bin/python benchmarks/time_to_accuracy.py [--budget 15m] [--recipe simclr-cifar-cpu]
        [--catch-up 1m 2m 4m] [--exact] [key=value ...]            # overrides for selfsup's side

1. lightly: ``benchmarks/lightly_simclr_example.py --budget-s`` trains its example pipeline (torchvision
   ResNet-18, SimCLRTransform at 32 px, NT-Xent, SGD lr 0.06, batch 256 and 8 workers as the example sets them,
   fp32) for the budget on the train JPEGs and saves the backbone; ``selfsup eval --backbone resnet18
   --weights`` scores it with kNN (k=20, T=0.07, cosine) on the test split.
2. selfsup: ``selfsup train RECIPE train.budget=BUDGET`` with its default evaluation (kNN + linear probe), whose
   wall time is the evaluation cost; ``--exact`` evaluates the same run again with the exact protocol (fp32
   features, the raw-pixel probe on every training image, baselines recomputed) to show the answers agree.
3. Catch-up: selfsup runs of the ``--catch-up`` budgets, shortest first, until one reaches lightly's kNN@20:
   the time selfsup needs to match lightly's budget (bracketed by the longest budget that fell short).

Writes benchmarks/results/time_to_accuracy_<recipe>_<budget>[-<tag>].json; `python benchmarks/make_results.py` tables
it. An AVX2-only CPU can be played by an AVX-512 one: ``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2
MKL_ENABLE_INSTRUCTIONS=AVX2`` hold torch's, oneDNN's and MKL's kernels to AVX2 (``precision=auto`` then picks
fp32), and the row records the variables.
Run it alone on the machine: both sides are budget-bound, so anything else running takes steps from them.
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, add_tag_argument, cifar10_folder, parse_args, tag_words, tagged, write_row  # noqa: E402
from eval_cost import EXACT, evaluate  # noqa: E402
from learning import train_and_read  # noqa: E402
from lightly_side_by_side import LIGHTLY_ENV, LIGHTLY_PY  # noqa: E402

from selfsup.config import parse_duration  # noqa: E402

RUNS = ROOT / "benchmarks" / "runs"


def knn20(results: dict, row: str = "pretrained") -> float:
    return round(100 * results["results"][row]["knn_top1@20"], 1)


def train_lightly(budget_s: float, args, stamp: str) -> tuple[dict, Path]:
    weights = RUNS / f"tta-lightly-{stamp}.safetensors"
    cmd = [str(LIGHTLY_PY), str(ROOT / "benchmarks" / "lightly_simclr_example.py"),
           "--data", str(cifar10_folder() / "train"), "--batch-size", str(args.lightly_batch_size),
           "--workers", str(args.lightly_workers), "--budget-s", str(budget_s), "--save", str(weights)]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if out.returncode:
        raise SystemExit(f"lightly run failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1]), weights


def eval_lightly(weights: Path, stamp: str) -> tuple[dict, float]:
    out_dir = RUNS / f"tta-lightly-eval-{stamp}"
    cmd = [sys.executable, "-m", "selfsup.cli", "eval", "--backbone", "resnet18", "--weights", str(weights),
           "--data", str(cifar10_folder()), "--image-size", "32", "--protocols", "knn", "--out", str(out_dir),
           "runs_dir=benchmarks/runs", "eval.report=false"]
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True)
    return json.loads((out_dir / "results.json").read_text()), time.perf_counter() - start


def train_selfsup(recipe: str, budget: str, overrides: list[str], tag: str, evaluation: list[str]) -> dict:
    name, results, peak, _ = train_and_read(recipe, f"tta-{tag}", [
        f"data.source={cifar10_folder()}", "train.epochs=null", f"train.budget={budget}", "train.progress=false",
        "eval.report=false", *evaluation, *overrides])
    if results is None:
        raise SystemExit(f"selfsup {recipe} {budget} failed (its log is named above)")
    run = results["run"]
    return {"run": name, "budget": budget, "results": results["results"], "protocol": results["protocol"],
            "train_wall_time_s": run["wall_time_s"], "eval_time_s": results.get("eval_time_s"),
            "epochs": round(run["epochs"], 2), "images_per_s": run["images_per_s"], "peak_memory_mib": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", default="15m")
    parser.add_argument("--recipe", default="simclr-cifar-cpu")
    parser.add_argument("--catch-up", nargs="*", default=["1m", "2m", "4m"],
                        help="selfsup budgets tried, shortest first, until one reaches lightly's kNN@20")
    parser.add_argument("--lightly-batch-size", type=int, default=256)  # lightly's example's values
    parser.add_argument("--lightly-workers", type=int, default=8)
    parser.add_argument("--exact", action="store_true", help="evaluate selfsup's run again with the exact protocol")
    add_tag_argument(parser)
    parser.add_argument("overrides", nargs="*", help="key=value overrides for selfsup's side")
    args = parse_args(parser)
    if not LIGHTLY_PY.exists():
        raise SystemExit(f"{LIGHTLY_ENV} not found: run `benchmarks/lightly_side_by_side.py --setup` first")
    stamp, start = time.strftime("%Y%m%d-%H%M%S"), time.perf_counter()

    lightly, weights = train_lightly(parse_duration(args.budget), args, stamp)
    lightly_results, lightly_eval_s = eval_lightly(weights, stamp)
    lightly.update(knn20=knn20(lightly_results), random_init_knn20=knn20(lightly_results, "random_init"),
                   eval_time_s=round(lightly_eval_s, 1))
    print(f"lightly, {args.budget}: kNN@20 {lightly['knn20']} ({lightly['epochs']} epochs, "
          f"{lightly['images_per_s']} images/s)", flush=True)

    ours = train_selfsup(args.recipe, args.budget, args.overrides, "main", [])
    ours["knn20"] = knn20(ours)
    ours["eval_share"] = round(ours["eval_time_s"] / ours["train_wall_time_s"], 3)
    print(f"selfsup {args.recipe}, {args.budget}: kNN@20 {ours['knn20']} ({ours['epochs']} epochs, "
          f"{ours['images_per_s']} images/s; evaluation {ours['eval_time_s']} s)", flush=True)
    if args.exact:  # fp32 features, every training image in the raw-pixel probe, no baseline cache
        exact = evaluate(RUNS / ours["run"], EXACT)
        ours["exact"] = {"results": exact["results"], "eval_time_s": exact["eval_time_s"]}

    catch_up = []
    for budget in sorted(args.catch_up, key=parse_duration):
        short = train_selfsup(args.recipe, budget, args.overrides, f"catch-up-{budget}",
                              ["eval.protocols=[knn]", "eval.baselines=false"])
        short["knn20"] = knn20(short)
        catch_up.append({k: short[k] for k in ("budget", "knn20", "epochs", "images_per_s", "train_wall_time_s")})
        print(f"selfsup {args.recipe}, {budget}: kNN@20 {short['knn20']}", flush=True)
        if short["knn20"] >= lightly["knn20"]:
            break
    reached = next((c["budget"] for c in catch_up if c["knn20"] >= lightly["knn20"]), None)

    shown = " ".join(["benchmarks/time_to_accuracy.py", f"--budget {args.budget}", f"--recipe {args.recipe}",
                      "--catch-up", *args.catch_up, *(["--exact"] if args.exact else []),
                      *map(shlex.quote, args.overrides), *tag_words(args.tag)])
    row = {"benchmark": "time_to_accuracy", "command": shown, "budget": args.budget, "recipe": args.recipe,
           "wall_time_s": round(time.perf_counter() - start, 1), "selfsup": ours, "lightly": lightly,
           "ratio_knn20": round(ours["knn20"] / lightly["knn20"], 2), "catch_up": catch_up,
           "selfsup_reaches_lightly_within": reached}
    print(write_row(tagged(f"time_to_accuracy_{args.recipe}_{args.budget}", args.tag), row))


if __name__ == "__main__":
    main()
