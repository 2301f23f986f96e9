"""Time selfsup.eval.knn.knn_classify on random features and report wall time and peak memory.

    python benchmarks/knn_scale.py                      # 100,000 train x 10,000 test x 512 dims
    python benchmarks/knn_scale.py --train 20000 --test 2000 --dim 128 --out knn.jsonl

Prints one JSON line (and appends it to --out when given): sizes, chunk sizes, device, threads, wall time
of knn_classify alone, pairs per second, and the process's peak RSS before and after the call
(resource.getrusage; on Linux ru_maxrss is in KiB). The inputs are generated in blocks so that the
"before" peak is close to the size of the inputs themselves.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time

import torch

from selfsup.eval.knn import knn_classify


def peak_rss_mib() -> float:
    scale = 1 / 1024 if sys.platform != "darwin" else 1 / 2**20  # KiB on Linux, bytes on macOS
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def random_features(n: int, dim: int, gen: torch.Generator, block: int = 50_000) -> torch.Tensor:
    out = torch.empty(n, dim)
    for i in range(0, n, block):
        out[i:i + block] = torch.randn(min(block, n - i), dim, generator=gen)
    return out


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
    p.add_argument("--out", default=None, help="append the JSON line to this file")
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
    result = {
        "benchmark": "knn_scale",
        "n_train": args.train, "n_test": args.test, "dim": args.dim, "classes": args.classes, "ks": args.ks,
        "query_chunk": args.query_chunk, "train_chunk": args.train_chunk,
        "device": args.device, "threads": torch.get_num_threads(),
        "wall_s": round(wall, 3),
        "pairs_per_s": round(args.train * args.test / wall),
        "peak_rss_before_mib": round(rss_before, 1),
        "peak_rss_after_mib": round(peak_rss_mib(), 1),
        "torch": torch.__version__, "machine": platform.machine(), "processor": platform.processor(),
        "command": " ".join(["python", "benchmarks/knn_scale.py", *(argv if argv is not None else sys.argv[1:])]),
    }
    if args.device.startswith("cuda"):
        result["cuda_peak_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        result["gpu"] = torch.cuda.get_device_name()
    line = json.dumps(result)
    print(line)
    if args.out:
        with open(args.out, "a") as f:
            f.write(line + "\n")
    return result


if __name__ == "__main__":
    main()
