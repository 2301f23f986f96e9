"""Time selfsup.eval.knn.knn_classify on random features and report wall time and peak memory.

    python benchmarks/knn_scale.py                      # 100,000 train x 10,000 test x 512 dims (issue 5)
    python benchmarks/knn_scale.py --train 20000 --test 2000 --dim 128 --no-record

Prints one JSON line: sizes, chunk sizes, device, threads, wall time of knn_classify alone, pairs per second,
the size of the inputs and the process's peak RSS before and after the call (resource.getrusage; on Linux
ru_maxrss is in KiB). The inputs are generated in blocks so that the "before" peak is close to the size of
the inputs themselves; the growth of the peak during the call is the memory the chunked kNN needed, which
depends on the chunk sizes, not on the bank or query counts. Unless --no-record, the row is written to
benchmarks/results/knn_scale[_<device>].json, from which benchmarks/make_results.py builds RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time

import torch
from common import write_row

from selfsup.eval.knn import knn_classify


def peak_rss_mib() -> float:
    scale = 1 / 1024 if sys.platform != "darwin" else 1 / 2**20  # KiB on Linux, bytes on macOS
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def random_features(n: int, dim: int, gen: torch.Generator, block: int = 50_000) -> torch.Tensor:
    out = torch.empty(n, dim)
    for i in range(0, n, block):
        out[i:i + block] = torch.randn(min(block, n - i), dim, generator=gen)
    return out


def matmul_bound_s(train: torch.Tensor, test: torch.Tensor, query_chunk: int, train_chunk: int, device: str) -> float:
    """Seconds of the similarity matrix products alone, chunk by chunk as knn_classify computes them (the floor
    any exact kNN on these features pays): the kNN's wall time over this is its overhead."""
    bank = torch.nn.functional.normalize(train.to(device), dim=1)
    queries = test.to(device)
    start = time.perf_counter()
    for q0 in range(0, len(queries), query_chunk):
        chunk = queries[q0:q0 + query_chunk]
        for t0 in range(0, len(bank), train_chunk):
            similarities = chunk @ bank[t0:t0 + train_chunk].T
            del similarities
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", type=int, default=100_000, help="bank size (default 100000)")
    p.add_argument("--test", type=int, default=10_000, help="number of queries (default 10000)")
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--ks", type=int, nargs="+", default=[20, 200])
    p.add_argument("--query-chunk", type=int, default=1024)
    p.add_argument("--train-chunk", type=int, default=65536)
    p.add_argument("--device", default="cpu", help="compute device; features stay on the CPU")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="also append the JSON line to this file")
    p.add_argument("--no-record", action="store_true", help="do not write benchmarks/results/knn_scale*.json")
    args = p.parse_args(argv)

    gen = torch.Generator().manual_seed(args.seed)
    train = random_features(args.train, args.dim, gen)
    test = random_features(args.test, args.dim, gen)
    labels = torch.randint(0, args.classes, (args.train,), generator=gen)
    knn_classify(train[:1000], labels[:1000], test[:16], ks=args.ks, device=args.device)  # warm-up

    rss_before = peak_rss_mib()
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    knn_classify(train, labels, test, ks=args.ks, query_chunk=args.query_chunk, train_chunk=args.train_chunk,
                 device=args.device)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    wall = time.perf_counter() - start
    bound = matmul_bound_s(train, test, args.query_chunk, args.train_chunk, args.device)
    result = {
        "benchmark": "knn_scale",
        "n_train": args.train, "n_test": args.test, "dim": args.dim, "classes": args.classes, "ks": args.ks,
        "query_chunk": args.query_chunk, "train_chunk": args.train_chunk,
        "device": args.device, "threads": torch.get_num_threads(),
        "wall_s": round(wall, 3),
        "matmul_bound_s": round(bound, 3), "over_matmul_bound": round(wall / bound, 2),
        "pairs_per_s": round(args.train * args.test / wall),
        "peak_rss_before_mib": round(rss_before, 1),
        "peak_rss_after_mib": round(peak_rss_mib(), 1),
        "torch": torch.__version__, "arch": platform.machine(), "processor": platform.processor(),
        "command": " ".join(["python", "benchmarks/knn_scale.py", *(argv if argv is not None else sys.argv[1:])]),
    }
    if args.device.startswith("cuda"):
        result["cuda_peak_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        result["gpu"] = torch.cuda.get_device_name()
    inputs_mib = (args.train + args.test) * args.dim * 4 / 2**20
    growth = result["peak_rss_after_mib"] - result["peak_rss_before_mib"]
    result.update({
        "inputs_mib": round(inputs_mib, 1),
        "title": f"kNN classification, {args.train:,} x {args.test:,} features of dim {args.dim}, "
                 f"k={','.join(map(str, args.ks))}, chunked ({args.device})",
        "summary": f"{wall:.1f} s, {result['pairs_per_s'] / 1e6:.0f} M pairs/s, {result['threads']} threads, "
                   f"{wall / bound:.2f}x the {bound:.1f} s of the similarity matmuls alone (same chunks, same run); "
                   f"peak RSS grew by {max(growth, 0):.0f} MiB during the call (query_chunk={args.query_chunk}, "
                   f"train_chunk={args.train_chunk}) over {result['peak_rss_before_mib']:.0f} MiB before it "
                   f"(runtime + the {inputs_mib:.0f} MiB of inputs)",
        "wall_time_s": round(wall, 3),
    })
    line = json.dumps(result)
    print(line)
    if not args.no_record:
        name = "knn_scale" if args.device == "cpu" else f"knn_scale_{args.device.split(':')[0]}"
        print(write_row(name, result), file=sys.stderr)
    if args.out:
        with open(args.out, "a") as f:
            f.write(line + "\n")
    return result


if __name__ == "__main__":
    main()
