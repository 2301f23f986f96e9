"""Cost of ViT token dropping, and the throughput of the CPU-sized ViTs.

    python benchmarks/vit_token_dropping.py                       # vit_tiny_cpu and vit_micro_cpu, batch 64, 1 thread
    python benchmarks/vit_token_dropping.py --backbones vit_micro_cpu --batch 32 --repeats 3

For each backbone, at 32 px (an 8 x 8 patch grid): the time of an inference forward over all 64 patch
tokens and over a random 25% of them (MAE's visible set; ``forward_tokens(x, keep_indices)``), best of
``--repeats`` interleaved runs, and their ratio; then training throughput (forward, backward and an AdamW
step on the encoder alone) with all tokens and with 25% of them. Writes
benchmarks/results/vit_token_dropping.json (a row of RESULTS.md; regenerate it with make_results.py).
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

from common import write_row
from selfsup.backbones import build_backbone


def best_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def measure(name: str, batch: int, repeats: int, visible: float, seed: int) -> dict:
    torch.manual_seed(seed)
    vit = build_backbone(name)
    x = torch.randn(batch, vit.model.patch_embed.proj.in_channels, 32, 32)
    keep_count = round(visible * vit.num_patches)
    keep = torch.rand(batch, vit.num_patches).argsort(dim=1)[:, :keep_count]

    vit.eval()
    full_times, dropped_times = [], []
    with torch.no_grad():
        vit.forward_tokens(x), vit.forward_tokens(x, keep)
        for _ in range(repeats):  # interleaved: other load on the machine hits both alike
            start = time.perf_counter()
            vit.forward_tokens(x)
            full_times.append(time.perf_counter() - start)
            start = time.perf_counter()
            vit.forward_tokens(x, keep)
            dropped_times.append(time.perf_counter() - start)
    full, dropped = min(full_times), min(dropped_times)

    vit.train()
    optimizer = torch.optim.AdamW(vit.parameters(), lr=1e-4)

    def train_step(keep_indices):
        def step():
            tokens = vit.forward_tokens(x, keep_indices)
            loss = tokens["patches"].pow(2).mean() + tokens["cls"].pow(2).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return step

    train_full = best_time(train_step(None), repeats)
    train_dropped = best_time(train_step(keep), repeats)
    return {
        "backbone": name,
        "params_m": round(sum(p.numel() for p in vit.parameters()) / 1e6, 2),
        "embed_dim": vit.embed_dim, "depth": len(vit.model.blocks), "patch_size": vit.patch_size,
        "tokens_full": vit.num_patches + vit.num_prefix_tokens, "tokens_visible": keep_count + vit.num_prefix_tokens,
        "forward_full_s": round(full, 4), "forward_visible_s": round(dropped, 4),
        "forward_time_ratio": round(dropped / full, 3),
        "inference_images_per_s": round(batch / full, 1),
        "train_images_per_s_full": round(batch / train_full, 1),
        "train_images_per_s_visible": round(batch / train_dropped, 1),
    }


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbones", nargs="+", default=["vit_tiny_cpu", "vit_micro_cpu"])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--visible", type=float, default=0.25, help="fraction of patch tokens kept (default 0.25)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: on a shared machine, multi-threaded timings swing by 2x)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-write", action="store_true", help="print only; do not write benchmarks/results/")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    start = time.perf_counter()
    rows = [measure(name, args.batch, args.repeats, args.visible, args.seed) for name in args.backbones]
    wall = time.perf_counter() - start
    summary = "; ".join(
        f"{r['backbone']}: {round(100 * args.visible)}% of tokens cost {r['forward_time_ratio']:.2f} of the full forward, "
        f"train {r['train_images_per_s_full']:.0f} img/s all tokens / {r['train_images_per_s_visible']:.0f} img/s visible only"
        for r in rows)
    row = {
        "benchmark": "vit_token_dropping",
        "title": f"ViT token dropping, 32 px, batch {args.batch}, {torch.get_num_threads()} thread(s)",
        "summary": summary,
        "wall_time_s": round(wall, 1),
        "batch": args.batch, "visible_fraction": args.visible, "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "results": rows,
        "command": " ".join(["python", "benchmarks/vit_token_dropping.py", *(argv if argv is not None else sys.argv[1:])]),
    }
    print(summary)
    if not args.no_write:
        print(write_row("vit_token_dropping", row))
    return row


if __name__ == "__main__":
    main()
