"""What the default evaluation of a finished run costs, against the run's training time (issue 14).

    .venv/bin/python benchmarks/eval_cost.py RUN_DIR [--exact] [key=value ...]

Evaluates RUN_DIR with `selfsup eval` and its default protocol twice: first with an empty baseline cache (a
user's first evaluation on this data: the random-init and raw-pixel rows are computed), then again (the
baselines read from that cache, as for the user's next run; the run's own features are extracted again each
time); with ``--exact``, once more with the exact protocol (fp32 features, the
raw-pixel probe on every training image, no cache). Each evaluation's time comes from its results.json; the
share is that time over the run's training wall time. The run itself is not touched (a copy is evaluated).

Writes benchmarks/results/eval_cost_<run>.json; `python benchmarks/make_results.py` tables it.
"""
from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, parse_args, write_row  # noqa: E402

EXACT = ["eval.precision=fp32", "eval.linear.raw_pixels_max_train=null", "eval.cache_baselines=false"]


def evaluate(run: Path, overrides: list[str]) -> dict:
    shutil.rmtree(run / "features", ignore_errors=True)  # the run's features are extracted again every time
    subprocess.run([sys.executable, "-m", "selfsup.cli", "eval", str(run), "eval.report=false", *overrides],
                   cwd=ROOT, check=True)
    results = json.loads((run / "results.json").read_text())
    return {"eval_time_s": results["eval_time_s"], "precision": results["protocol"].get("precision", "fp32"),
            "results": results["results"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run")
    parser.add_argument("--exact", action="store_true")
    parser.add_argument("overrides", nargs="*", help="key=value overrides for every evaluation")
    args = parse_args(parser)
    run = Path(args.run).resolve()
    train_s = json.loads((run / "results.json").read_text())["run"]["wall_time_s"]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        # A copy of the run in an empty folder: the baseline cache lives beside the run (<folder>/.baselines), so
        # it starts empty, and the run itself is left as it was.
        copy = Path(folder) / run.name
        shutil.copytree(run, copy)
        first = evaluate(copy, args.overrides)
        again = evaluate(copy, args.overrides)
        exact = evaluate(copy, [*args.overrides, *EXACT]) if args.exact else None
    rows = {"first": first, "cached": again, **({"exact": exact} if exact else {})}
    parts = []
    for name, r in rows.items():
        knn, linear = r["results"]["pretrained"].get("knn_top1@20"), r["results"]["pretrained"].get("linear_top1")
        parts.append(f"{name} ({r['precision']}): {r['eval_time_s']:.0f} s = {100 * r['eval_time_s'] / train_s:.0f}% of "
                     f"the {train_s:.0f} s of training, kNN@20 {100 * knn:.1f}, linear {100 * linear:.1f}")
    summary = "; ".join(parts)
    print(summary)
    shown = " ".join(["benchmarks/eval_cost.py", f"benchmarks/runs/{run.name}", *(["--exact"] if args.exact else []),
                      *map(shlex.quote, args.overrides)])
    row = {"benchmark": "eval_cost", "title": f"Default evaluation of a finished run ({run.name}): first evaluation "
           "(baselines computed), again (baselines cached)" + (", exact protocol" if exact else ""),
           "summary": summary, "train_wall_time_s": train_s, "wall_time_s": round(time.perf_counter() - start, 1),
           "evaluations": rows, "command": shown}
    print(write_row(f"eval_cost_{run.name}", row))


if __name__ == "__main__":
    main()
