"""One recipe under a short CPU budget on CIFAR-10, once per lever (a set of overrides), in sequence: kNN@20 on
the test split, images/s and epochs of each, to choose what the 15-minute time-to-accuracy run uses.

    .venv/bin/python benchmarks/levers.py [--recipe simclr-cifar-cpu] [--budget 4m] [--tag T] \\
        --variant base= --variant ramp16='data.progressive_resize={start_size: 16}' [key=value ...]

Each ``--variant NAME=OVERRIDES`` is one run (OVERRIDES split like a shell line; empty: the recipe as it is);
the ``key=value`` words apply to every variant. Only the kNN protocol runs, without baselines (they do not
change between variants). The runs take turns on the same machine, so their images/s compare only while the
machine's load stays the same; run nothing beside it. Writes
benchmarks/results/lever_sweep_<recipe>_<budget>[-<tag>].json; `python benchmarks/make_results.py` regenerates
RESULTS.md.
"""
from __future__ import annotations

import argparse
import shlex
import time

from common import add_tag_argument, cifar10_folder, parse_args, tag_words, tagged, write_row
from learning import train_and_read


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="simclr-cifar-cpu")
    parser.add_argument("--budget", default="4m")
    parser.add_argument("--variant", action="append", required=True, metavar="NAME=OVERRIDES",
                        help="one run: a name, '=', and its overrides (repeat the option for more runs)")
    add_tag_argument(parser)
    parser.add_argument("overrides", nargs="*", help="key=value for every variant")
    args = parse_args(parser, valued=("--variant",))  # a variant's overrides hold '=' themselves
    common = [f"data.source={cifar10_folder()}", "train.epochs=null", f"train.budget={args.budget}",
              "train.progress=false", "eval.protocols=[knn]", "eval.baselines=false", "eval.report=false",
              *args.overrides]
    runs, start = [], time.perf_counter()
    for variant in args.variant:
        label, _, words = variant.partition("=")
        overrides = shlex.split(words)
        name, results, peak, wall = train_and_read(args.recipe, f"bench-levers-{label}", [*common, *overrides])
        if results is None:
            continue
        run = results["run"]
        row = {"variant": label, "overrides": " ".join(overrides) or "(the recipe as it is)",
               "knn_top1@20": results["results"]["pretrained"]["knn_top1@20"], "images_per_s": run["images_per_s"],
               "epochs": round(run["epochs"], 2), "steps": run["steps"], "peak_memory_mib": round(peak),
               "run": name}
        runs.append(row)
        print(row, flush=True)
    shared = f"every run with {' '.join(args.overrides)}: " if args.overrides else ""
    summary = shared + "; ".join(f"{r['overrides']}: kNN@20 {100 * r['knn_top1@20']:.1f}, "
                                 f"{r['images_per_s']:.0f} images/s, {r['epochs']} epochs" for r in runs)
    shown = " ".join(["benchmarks/levers.py", f"--recipe {args.recipe}", f"--budget {args.budget}",
                      *(f"--variant {shlex.quote(v)}" for v in args.variant), *map(shlex.quote, args.overrides),
                      *tag_words(args.tag)])
    print(write_row(tagged(f"lever_sweep_{args.recipe}_{args.budget}", args.tag), {
        "benchmark": "lever_sweep",
        "title": f"Levers, `{args.recipe}` on CIFAR-10, {args.budget} CPU budget each, kNN@20 on the test split "
                 "(no baselines)",
        "summary": summary + ". One run each, in sequence, alone", "wall_time_s": round(time.perf_counter() - start, 1),
        "runs": runs, "command": shown,
    }))


if __name__ == "__main__":
    main()
