"""Images/s of the ViT methods (LeJEPA, iBOT, MAE as the reference) before and after a change, measured by
`selfsup bench` on one backbone and batch, in one session on one machine (issue 14).

    .venv/bin/python benchmarks/vit_methods_speed.py --before COMMIT [--methods lejepa ibot mae] [--rounds 2]
        [--steps 10] [--warmup 3] [key=value ...]

"before" is the code (and the recipes) of ``--before COMMIT``: its ``src/`` is extracted with ``git archive``
into a temporary folder and put first on ``PYTHONPATH``; "after" is the working tree. Each method runs its
own recipe with ``backbone.name=vit_micro_cpu`` and the recipe's batch (128), plus the ``key=value``
overrides given here, identical for both sides. Runs alternate (before, after, method after method, round
after round), so a slow phase of a shared machine hits both. Each side's figure is its BEST run (the least
disturbed one: on a 2-core machine shared with other jobs, an unchanged method moved 10x between runs of one
session), beside the median and every run.
The matmul peaks are measured once and reused.

Writes benchmarks/results/vit_methods_speed_<method>.json; `python benchmarks/make_results.py` tables them.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, parse_args, write_row  # noqa: E402

BACKBONE = "vit_micro_cpu"


def extract_source(commit: str, into: Path) -> Path:
    """``src/`` of ``commit`` under ``into`` (read from git, the working tree untouched); returns that src."""
    archive = into / "src.tar"
    with archive.open("wb") as out:
        subprocess.run(["git", "archive", "--format=tar", commit, "src"], cwd=ROOT, stdout=out, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def bench(method: str, overrides: list[str], src: Path | None, args, peaks: Path | None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bench.json"
        cmd = [sys.executable, "-m", "selfsup.cli", "bench", method, f"backbone.name={BACKBONE}", f"runs_dir={tmp}",
               *overrides, "--steps", str(args.steps), "--warmup", str(args.warmup), "--json", str(out)]
        if peaks is not None:
            cmd += ["--peaks-from", str(peaks)]
        env = dict(os.environ)
        if src is not None:  # the old code first on the path, ahead of the editable install of the working tree
            env["PYTHONPATH"] = os.pathsep.join([str(src), *filter(None, [env.get("PYTHONPATH")])])
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
        if done.returncode:
            return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"}
        return json.loads(out.read_text())


def side(runs: list[dict]) -> dict:
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return {"error": runs[-1]["error"]}
    last = ok[-1]
    return {"images_per_s": round(max(r["images_per_s"] for r in ok), 1),
            "images_per_s_median": round(statistics.median(r["images_per_s"] for r in ok), 1),
            "images_per_s_runs": [round(r["images_per_s"], 1) for r in ok],
            "views_per_image": last["views_per_image"], "batch_size": last["batch_size"],
            "step_split_percent": {k: round(v["percent"], 1) for k, v in last["step_split"].items()},
            "gflop_per_step": round(last["flops_per_step"] / 1e9, 2), "mfu": last.get("mfu"),
            "mfu_precision": last.get("mfu_precision"), "peak_memory_mib": round(last["memory"]["peak_bytes"] / 2**20),
            "loss": last.get("loss"), "settings": last["settings"],
            "load_average_1m": [r["machine"].get("load_average_1m") for r in ok],  # at each run's start
            "method_options": last["config"]["method_options"]}


def summary(before: dict, after: dict) -> str:
    def text(s: dict) -> str:
        if "error" in s:
            return f"failed: {s['error']}"
        split = s["step_split_percent"]
        return (f"best {s['images_per_s']:.1f} images/s (runs {', '.join(map(str, s['images_per_s_runs']))}; "
                f"{s['views_per_image']} views, {s['gflop_per_step']} GFLOP/step, {s['settings']['precision']}, "
                f"augment={s['settings']['augment']}, data wait {split['data_wait']:.0f}%, load average at the "
                f"runs' starts {', '.join(map(str, s['load_average_1m']))})")
    ratio = (f"; best after / best before x{after['images_per_s'] / before['images_per_s']:.2f}"
             if "error" not in before and "error" not in after else "")
    return f"before {text(before)}; after {text(after)}{ratio}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True, help="git commit of the 'before' code")
    parser.add_argument("--methods", nargs="*", default=["lejepa", "ibot", "mae"])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("overrides", nargs="*", help="key=value overrides for every run, before and after")
    args = parse_args(parser)
    start = time.perf_counter()
    before_commit = subprocess.run(["git", "rev-parse", "--short", args.before], cwd=ROOT, capture_output=True,
                                   text=True, check=True).stdout.strip()
    runs = {(m, s): [] for m in args.methods for s in ("before", "after")}
    with tempfile.TemporaryDirectory() as tmp:
        old_src = extract_source(args.before, Path(tmp))
        peaks = Path(tmp) / "peaks.json"
        for r in range(args.rounds):
            for method in args.methods:
                for label, src in (("before", old_src), ("after", None)):
                    result = bench(method, args.overrides, src, args, peaks if peaks.exists() else None)
                    if "error" not in result and not peaks.exists():
                        peaks.write_text(json.dumps({k: result[k] for k in ("peak_flops_per_s", "peak_matmul_size")}))
                    runs[method, label].append(result)
                    shown = f"{result['images_per_s']:.1f} images/s" if "error" not in result else result["error"]
                    print(f"round {r + 1} {method} {label}: {shown}", flush=True)
    wall = round(time.perf_counter() - start, 1)
    command = " ".join(["benchmarks/vit_methods_speed.py", f"--before {before_commit}", "--methods", *args.methods,
                        f"--rounds {args.rounds}", f"--steps {args.steps}", f"--warmup {args.warmup}",
                        *map(shlex.quote, args.overrides)])
    for method in args.methods:
        before, after = side(runs[method, "before"]), side(runs[method, "after"])
        row = {"benchmark": "vit_methods_speed",
               "title": f"{method} speed, `{method}` recipe on {BACKBONE}, batch {after.get('batch_size')}: before "
                        f"(code of {before_commit}) and after, same machine and session",
               "summary": summary(before, after), "method": method, "backbone": BACKBONE,
               "before_commit": before_commit, "command": command, "wall_time_s": wall,
               "steps": args.steps, "warmup": args.warmup, "rounds": args.rounds, "before": before, "after": after}
        print(row["summary"])
        # A pinned precision gets its own file, beside the rows of precision=auto.
        pinned = [o.split("=", 1)[1] for o in args.overrides if o.startswith("train.precision=")]
        print(write_row("_".join([f"vit_methods_speed_{method}", *pinned]), row))


if __name__ == "__main__":
    main()
