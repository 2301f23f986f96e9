"""The compute ceiling of a pretraining pipeline: the backbone's own forward and backward, nothing else.

    python benchmarks/backbone_ceiling.py                      # resnet18, 32 px, 2 views x batch 128
    python benchmarks/backbone_ceiling.py --backbone small_resnet --batch 128 --repeats 5

Times forward + backward of the bare backbone (no data loading, no augmentation, no head, no loss, no optimizer
step) on random images, for each memory format and precision, and reports samples/s (a sample = its views),
the FLOPs torch's counter sees, and MFU against the matmul peak measured in the same invocation. No
pipeline built on that backbone can run faster than this row on the same machine, so it bounds what any
speed-up over another pipeline can be: the row also divides the ceiling by lightly's measured rate from
benchmarks/results/lightly_side_by_side.json when that file exists. Writes
benchmarks/results/backbone_ceiling.json (a row of RESULTS.md; regenerate it with make_results.py).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import nullcontext

import torch

from common import RESULTS_DIR, write_row
from selfsup.backbones import build_backbone
from selfsup.throughput import count_flops, measure_peaks


def measure(backbone: str, batch: int, views: int, size: int, channels_last: bool, precision: str,
            repeats: int, seed: int) -> dict:
    torch.manual_seed(seed)
    model = build_backbone(backbone).train()
    images = torch.randn(batch * views, 3, size, size)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else nullcontext()

    def step():
        with autocast:
            out = model(images)
        out.float().square().mean().backward()

    flops = count_flops(step)
    step()  # warm-up: kernel selection and allocator
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    median = sorted(times)[len(times) // 2]
    return {"channels_last": channels_last, "precision": precision, "median_step_s": round(median, 4),
            "samples_per_s": round(batch / median, 1), "flops_per_step": flops,
            "flop_rate": flops / median}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--batch", type=int, default=128, help="samples per step")
    parser.add_argument("--views", type=int, default=2, help="images per sample (SimCLR: 2)")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--precisions", nargs="*", default=["fp32"], help="fp32 and/or bf16 (autocast)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start = time.time()
    peaks = measure_peaks(torch.device("cpu"))["peak_flops_per_s"]
    results = []
    for precision in args.precisions:
        for channels_last in (False, True):
            row = measure(args.backbone, args.batch, args.views, args.size, channels_last, precision, args.repeats,
                          args.seed)
            row["mfu"] = round(row.pop("flop_rate") / peaks[precision], 3)
            results.append(row)
            print(json.dumps(row), flush=True)
    best = max(results, key=lambda r: r["samples_per_s"])
    summary = (f"best {best['samples_per_s']} samples/s ({best['precision']}, "
               f"{'channels_last' if best['channels_last'] else 'NCHW'}, MFU {best['mfu']:.0%}); "
               + ", ".join(f"{r['precision']} {'channels_last' if r['channels_last'] else 'NCHW'} "
                           f"{r['samples_per_s']}" for r in results))
    lightly_path = RESULTS_DIR / "lightly_side_by_side.json"
    ceiling_over_lightly = None
    if lightly_path.exists():
        lightly = json.loads(lightly_path.read_text())
        ceiling_over_lightly = round(best["samples_per_s"] / lightly["lightly_images_per_s"], 2)
        summary += (f"; ceiling / lightly's pipeline ({lightly['lightly_images_per_s']} samples/s, "
                    f"{lightly['date']}) = {ceiling_over_lightly}; selfsup's full pipeline ran at "
                    f"{lightly['images_per_s']} samples/s = {lightly['images_per_s'] / best['samples_per_s']:.0%} of "
                    f"the ceiling")
    write_row("backbone_ceiling", {
        "benchmark": "backbone_ceiling",
        "title": (f"Bare {args.backbone} forward + backward, {args.size} px, {args.views} views x batch {args.batch} "
                  f"(no data, head, loss or optimizer): the ceiling of any pipeline on it"),
        "summary": summary,
        "command": " ".join(["python benchmarks/backbone_ceiling.py", *sys.argv[1:]]),
        "wall_time_s": round(time.time() - start, 1),
        "peak_flops_per_s": peaks,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "ceiling_over_lightly": ceiling_over_lightly,
        "results": results,
    })
    print(summary)


if __name__ == "__main__":
    main()
