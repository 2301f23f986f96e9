"""Training from streamed tar shards against the decoded-image cache, on the same images: images/s of
`selfsup bench simclr-cifar-cpu` (fixed measured steps) with ``data.source=<shards>/index.json`` (JPEGs
decoded in the DataLoader workers, shard order, a shuffle buffer) and with ``data.cache=true`` on the manifest
the shards were written from (decoded once into a memmap). The target: shards at least 90% of the cache.

    .venv/bin/python benchmarks/shards_speed.py [--images 10000] [--steps 30] [--repeats 2] [--threads N]
                                                [key=value ...]

``--threads N`` gives training N compute threads (OMP_NUM_THREADS) on both sides, e.g. one core fewer than the
machine has, so that the loader worker that decodes the shards' JPEGs has a core of its own; the row is then
written to shards_speed_threads<N>.json.

The two are run in turn (cache, shards, cache, shards, ...) and each side's median is kept, so that a change
of the machine's load hits both. Writes benchmarks/results/shards_speed.json; `python benchmarks/make_results.py`
regenerates RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time

from common import ROOT, cifar10_folder, parse_args, write_row


def selfsup(*args: str, threads: int | None = None) -> str:
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    done = subprocess.run([sys.executable, "-m", "selfsup.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          env=env)
    if done.returncode != 0:
        raise SystemExit(f"selfsup {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return done.stdout


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=10000, help="the first N CIFAR-10 training images (sorted)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="training's compute threads (OMP_NUM_THREADS)")
    parser.add_argument("overrides", nargs="*", help="key=value for both sides")
    args = parse_args(parser)
    start = time.perf_counter()
    cifar = cifar10_folder()
    files = sorted(p.relative_to(cifar).as_posix() for p in (cifar / "train").rglob("*") if p.is_file())[:args.images]
    manifest = cifar / f"first{args.images}.csv"
    manifest.write_text("image\n" + "\n".join(files) + "\n")
    shards = ROOT / ".data" / f"cifar10-shards-{args.images}"
    if not (shards / "index.json").exists():
        selfsup("data", "shard", str(manifest), str(shards), "--shard-size", "1000")
    sides = {"cache": [f"data.source={manifest}", "data.cache=true"],
             "shards": [f"data.source={shards / 'index.json'}"]}
    common = ["train.progress=false", *args.overrides]
    speeds: dict[str, list[float]] = {side: [] for side in sides}
    waits: dict[str, list[float]] = {side: [] for side in sides}  # % of step time waiting for data
    loads = []  # the 1-minute load average before each run: the machine is shared
    peaks = ROOT / "benchmarks" / "runs" / "shards_speed_peaks.json"
    for repeat in range(args.repeats):
        for side, overrides in sides.items():
            out = ROOT / "benchmarks" / "runs" / f"shards_speed_{side}_{repeat}.json"
            out.parent.mkdir(parents=True, exist_ok=True)
            loads.append(round(os.getloadavg()[0], 2))
            selfsup("bench", "simclr-cifar-cpu", *overrides, *common, "--steps", str(args.steps), "--json", str(out),
                    *(["--peaks-from", str(peaks)] if peaks.exists() else []), threads=args.threads)
            if not peaks.exists():
                peaks.write_text(out.read_text())
            result = json.loads(out.read_text())
            speeds[side].append(result["images_per_s"])
            waits[side].append(round(result["step_split"]["data_wait"]["percent"], 2))
            print(side, repeat, round(speeds[side][-1], 1), flush=True)
    cache, streamed = statistics.median(speeds["cache"]), statistics.median(speeds["shards"])
    ratio = streamed / cache
    shown = " ".join(["benchmarks/shards_speed.py", f"--images {args.images}", f"--steps {args.steps}",
                      f"--repeats {args.repeats}", *([f"--threads {args.threads}"] if args.threads else []),
                      *map(shlex.quote, args.overrides)])
    threads = f", {args.threads} compute thread(s) of {os.cpu_count()} cores" if args.threads else ""
    print(write_row("shards_speed" + (f"_threads{args.threads}" if args.threads else ""), {
        "benchmark": "shards_speed",
        "title": f"Training from streamed tar shards vs the decoded-image cache ({args.images} CIFAR-10 JPEGs, "
                 f"simclr-cifar-cpu, {args.steps} measured steps, median of {args.repeats}{threads})",
        "summary": f"shards {streamed:.1f} images/s = {100 * ratio:.0f}% of the cache's {cache:.1f} images/s "
                   f"(target >= 90%; each run: {', '.join(f'{s} {v:.1f}' for s in speeds for v in speeds[s])}; "
                   f"waiting for data: {', '.join(f'{s} {max(w):.1f}%' for s, w in waits.items())} of step time at "
                   f"most; 1-minute load average {min(loads)}-{max(loads)})",
        "images_per_s": {"shards": speeds["shards"], "cache": speeds["cache"]}, "ratio": round(ratio, 3),
        "load_average_1m": loads, "data_wait_percent": waits,
        "wall_time_s": round(time.perf_counter() - start, 1), "command": shown,
    }), flush=True)


if __name__ == "__main__":
    main()
