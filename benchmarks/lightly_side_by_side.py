"""selfsup vs lightly, SimCLR pretraining throughput, side by side in one invocation.

    .venv/bin/python benchmarks/lightly_side_by_side.py --setup          # once: the lightly environment
    .venv/bin/python benchmarks/lightly_side_by_side.py [--rounds 3] [--steps 20] [--warmup 5] [--batch-size 128]
        [--lightly-workers 8] [key=value ...]                           # overrides for selfsup's side

Both sides train the same thing: a torchvision ResNet-18 (ImageNet stem) + a 512-512-128 projection head,
SimCLR views of 32 px from the CIFAR-10 train JPEGs of ../shared/data (random resized crop 0.08-1, flip,
colour jitter 0.8/0.8/0.8/0.2 with p 0.8, grayscale 0.2, no blur), NT-Xent with temperature 0.5, SGD lr 0.06,
batch 128. lightly runs as its PyTorch example runs it (``benchmarks/lightly_simclr_example.py``, fp32, per-image
transforms in 8 DataLoader workers); selfsup runs ``selfsup bench`` with its defaults plus the overrides given.
Runs alternate (lightly, selfsup, lightly, selfsup, ...) so that a slow phase of the machine hits both; the
ratio of every adjacent pair is reported with its median, min and max.

lightly is installed into ``benchmarks/.venv-lightly`` (ignored), never into selfsup's environment. That
environment reuses the torch and torchvision of ``.venv`` through a ``.pth`` file, so both sides run the same
torch build and the set-up downloads only lightly and its small dependencies.

Writes benchmarks/results/lightly_side_by_side.json; `python benchmarks/make_results.py` tables it.
"""
from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, cifar10_folder, parse_args, write_row  # noqa: E402

LIGHTLY_ENV = ROOT / "benchmarks" / ".venv-lightly"
LIGHTLY_PY = LIGHTLY_ENV / "bin" / "python"
LIGHTLY_VERSION = "1.6.0"

# selfsup's side of the comparison: the same model, views, loss and optimizer as lightly's example.
PARITY_OVERRIDES = [
    "method=simclr", "backbone.name=resnet18", "backbone.options={}", "data.image_size=32",
    "method_options.temperature=0.5", "method_options.projector_hidden_dim=512", "method_options.projector_out_dim=128",
    "method_options.crop_scale=[0.08,1.0]", "method_options.colour_strength=1.0", "method_options.grayscale_p=0.2",
    "method_options.blur_p=0.0", "optim.name=sgd", "optim.lr=0.06", "optim.scale_lr=false", "optim.momentum=0.0",
    "optim.weight_decay=0.0", "optim.warmup=0.0",
]


def setup() -> None:
    if not LIGHTLY_PY.exists():
        subprocess.run([sys.executable, "-m", "venv", str(LIGHTLY_ENV)], check=True)
    # Share selfsup's torch build: a .pth line puts .venv's site-packages on the lightly environment's path.
    purelib = Path(sysconfig.get_paths()["purelib"])
    env_site = Path(subprocess.run([str(LIGHTLY_PY), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                   capture_output=True, text=True, check=True).stdout.strip())
    (env_site / "selfsup_torch.pth").write_text(str(purelib) + "\n")
    subprocess.run([str(LIGHTLY_PY), "-m", "pip", "install", "--quiet", f"lightly=={LIGHTLY_VERSION}"], check=True)
    out = subprocess.run([str(LIGHTLY_PY), "-c", "import lightly, torch; print(lightly.__version__, torch.__version__)"],
                         capture_output=True, text=True, check=True)
    print(f"lightly environment ready: lightly {out.stdout.strip()} (torch shared with .venv)")


def run_lightly(data: Path, args) -> dict:
    cmd = [str(LIGHTLY_PY), str(ROOT / "benchmarks" / "lightly_simclr_example.py"), "--data", str(data),
           "--batch-size", str(args.batch_size), "--workers", str(args.lightly_workers), "--steps", str(args.steps),
           "--warmup", str(args.warmup)]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if out.returncode:
        raise SystemExit(f"lightly run failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_selfsup(data: Path, args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out_json = Path(tmp) / "bench.json"
        # A fixed runs_dir so that data.cache (if given) decodes once and later rounds reuse it.
        cmd = [sys.executable, "-m", "selfsup.cli", "bench", "demo", f"data.source={data}",
               f"train.batch_size={args.batch_size}", f"runs_dir={ROOT / 'benchmarks' / 'runs'}", *PARITY_OVERRIDES,
               *args.overrides,
               "--steps", str(args.steps), "--warmup", str(args.warmup), "--json", str(out_json)]
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if out.returncode:
            raise SystemExit(f"selfsup bench failed:\n{out.stderr[-3000:]}")
        return json.loads(out_json.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setup", action="store_true", help="create the lightly environment and exit")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lightly-workers", type=int, default=8)
    parser.add_argument("overrides", nargs="*", help="key=value overrides for selfsup's side")
    args = parse_args(parser)
    if args.setup:
        setup()
        return
    if not LIGHTLY_PY.exists():
        raise SystemExit(f"{LIGHTLY_ENV} not found: run `{Path(__file__).name} --setup` first")
    data = cifar10_folder() / "train"
    lightly_runs, selfsup_runs, ratios = [], [], []
    start = time.perf_counter()
    for r in range(args.rounds):
        lightly = run_lightly(data, args)
        ours = run_selfsup(data, args)
        lightly_runs.append(lightly)
        selfsup_runs.append(ours)
        ratios.append(ours["images_per_s"] / lightly["images_per_s"])
        print(f"round {r + 1}: lightly {lightly['images_per_s']:.1f} images/s, selfsup {ours['images_per_s']:.1f} "
              f"images/s, ratio {ratios[-1]:.2f}", flush=True)
    shown = " ".join(["benchmarks/lightly_side_by_side.py", f"--rounds {args.rounds}", f"--steps {args.steps}",
                      f"--warmup {args.warmup}", f"--batch-size {args.batch_size}",
                      f"--lightly-workers {args.lightly_workers}", *map(shlex.quote, args.overrides)])
    settings = selfsup_runs[-1]["settings"]
    row = {
        "benchmark": "lightly_side_by_side", "title": "SimCLR ResNet-18, 32 px, batch "
        f"{args.batch_size}: selfsup vs lightly {lightly_runs[-1]['lightly_version']} (its example pipeline, fp32)",
        "command": shown, "wall_time_s": round(time.perf_counter() - start, 1),
        "images_per_s": round(statistics.median(r["images_per_s"] for r in selfsup_runs), 1),
        "lightly_images_per_s": round(statistics.median(r["images_per_s"] for r in lightly_runs), 1),
        "ratio_median": round(statistics.median(ratios), 2), "ratio_min": round(min(ratios), 2),
        "ratio_max": round(max(ratios), 2), "ratios": [round(x, 3) for x in ratios],
        "selfsup_settings": settings, "selfsup_step_split": selfsup_runs[-1]["step_split"],
        "selfsup_mfu": selfsup_runs[-1].get("mfu"), "lightly_runs": lightly_runs,
        "selfsup_runs": [{k: r[k] for k in ("images_per_s", "step_time_s", "loss")} for r in selfsup_runs],
    }
    print(f"selfsup / lightly images/s: median {row['ratio_median']} (min {row['ratio_min']}, max {row['ratio_max']})")
    print(write_row("lightly_side_by_side", row))


if __name__ == "__main__":
    main()
