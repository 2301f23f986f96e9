"""The speed switches, one at a time, measured by `selfsup bench` on one recipe (default: the demo's).

    .venv/bin/python benchmarks/throughput_switches.py [--recipe demo] [--rounds 2] [--steps 30] [--warmup 5]
        [--only LABEL ...] [key=value ...]

Every variant is the plain path plus one switch, except "defaults" (selfsup's chosen defaults, what a user
gets without flags). Variants run in turn, round after round, so that a slow phase of the machine hits all
of them; each variant's images/s is the median over rounds and its speed-up is relative to "plain". The
matmul peaks are measured once and reused, so every MFU has the same denominator.

Writes benchmarks/results/throughput_<recipe>.json; `python benchmarks/make_results.py` tables it.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, parse_args, write_row  # noqa: E402

import torch  # noqa: E402

# Every intra-op thread torch starts with (one per core), whatever train.threads=auto would choose.
ALL_THREADS = torch.get_num_threads()
PLAIN = ["train.precision=fp32", "train.channels_last=false", "train.compile=false", "optim.fused=false",
         "data.augment=workers", f"train.threads={ALL_THREADS}"]
# (label, what it changes, overrides on top of PLAIN or None for the defaults, extra environment)
VARIANTS = [
    ("plain", f"fp32, NCHW, eager, foreach AdamW, views made in DataLoader workers, {ALL_THREADS} intra-op threads",
     [], {}),
    ("channels_last", "train.channels_last=true", ["train.channels_last=true"], {}),
    ("bf16", "train.precision=bf16 (autocast)", ["train.precision=bf16"], {}),
    ("compile", "train.compile=true (torch.compile of the backbone)", ["train.compile=true"], {}),
    ("device_augment", "data.augment=device (batched crop/colour on the training device)", ["data.augment=device"], {}),
    ("one_thread", "train.threads=1 (one intra-op thread; the workers keep the other cores)", ["train.threads=1"], {}),
    ("auto_threads", "train.threads=auto (the faster of the two counts, timed over the first steps)",
     ["train.threads=auto"], {}),
    ("defaults", "selfsup's defaults for the recipe (no switch given)", None, {}),
]


def bench(recipe: str, overrides: list[str], env: dict, args, peaks: Path | None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bench.json"
        cmd = [sys.executable, "-m", "selfsup.cli", "bench", recipe, f"runs_dir={tmp}", *overrides,
               "--steps", str(args.steps), "--warmup", str(args.warmup), "--json", str(out)]
        if peaks is not None:
            cmd += ["--peaks-from", str(peaks)]
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, **env})
        if done.returncode:
            return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"}
        return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="demo")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--only", nargs="*", help="variant labels to run (default: all)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides applied to every variant")
    args = parse_args(parser)
    variants = [v for v in VARIANTS if not args.only or v[0] in args.only]
    runs: dict[str, list[dict]] = {label: [] for label, *_ in variants}
    start = time.perf_counter()
    peaks_file = Path(tempfile.mkdtemp()) / "peaks.json"
    for r in range(args.rounds):
        for label, _, switch, env in variants:
            overrides = [*args.overrides] if switch is None else [*PLAIN, *switch, *args.overrides]
            result = bench(args.recipe, overrides, env, args, peaks_file if peaks_file.exists() else None)
            if "error" not in result and not peaks_file.exists():
                peaks_file.write_text(json.dumps({k: result[k] for k in ("peak_flops_per_s", "peak_matmul_size")}))
            runs[label].append(result)
            shown = f"{result['images_per_s']:.1f} images/s" if "error" not in result else result["error"]
            print(f"round {r + 1} {label}: {shown}", flush=True)
    plain = [x["images_per_s"] for x in runs.get("plain", []) if "error" not in x]
    plain_median = statistics.median(plain) if plain else None
    table = []
    for label, what, switch, env in variants:
        ok = [x for x in runs[label] if "error" not in x]
        if not ok:
            table.append({"variant": label, "what": what, "error": runs[label][-1]["error"]})
            continue
        ips = statistics.median(x["images_per_s"] for x in ok)
        last = ok[-1]
        table.append({
            "variant": label, "what": what, "images_per_s": round(ips, 1),
            "images_per_s_runs": [round(x["images_per_s"], 1) for x in ok],
            "speedup": round(ips / plain_median, 2) if plain_median else None,
            "mfu": last.get("mfu"), "mfu_precision": last.get("mfu_precision"),
            "data_wait_percent": last["step_split"]["data_wait"]["percent"],
            "peak_memory_mib": round(last["memory"]["peak_bytes"] / 2**20),
            "loss": last.get("loss"), "settings": last["settings"],
        })
    shown = " ".join(["benchmarks/throughput_switches.py", f"--recipe {args.recipe}", f"--rounds {args.rounds}",
                      f"--steps {args.steps}", f"--warmup {args.warmup}",
                      *(["--only", *args.only] if args.only else []), *map(shlex.quote, args.overrides)])
    first = next((x for v in runs.values() for x in v if "error" not in x), {})
    row = {"benchmark": "throughput_switches", "title": f"Speed switches, `{args.recipe}` recipe", "recipe": args.recipe,
           "command": shown, "wall_time_s": round(time.perf_counter() - start, 1), "steps": args.steps,
           "batch_size": first.get("batch_size"), "peak_flops_per_s": first.get("peak_flops_per_s"),
           "load_average_1m": first.get("machine", {}).get("load_average_1m"), "variants": table}
    for entry in table:
        print(f"{entry['variant']:>15}: " + (f"{entry['images_per_s']:8.1f} images/s  x{entry['speedup']}"
                                           if "error" not in entry else entry["error"]))
    print(write_row(f"throughput_{args.recipe}", row))


if __name__ == "__main__":
    main()
