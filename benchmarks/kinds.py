"""Tables, point clouds and graphs: T-JEPA, Point-MAE and GraphMAE on the embedded demos, each for a fixed
number of steps (so that the accuracy does not depend on what else the machine runs; the wall time does), kNN@20
and the linear probe on the held-out split beside the random-init encoder and the raw features, and for tables
the gradient-boosted trees (scikit-learn's HistGradientBoostingClassifier) on the raw features.

    .venv/bin/python benchmarks/kinds.py [--only tjepa-digits ...] [key=value ...]

The ``*-files`` rows train the same recipes on the demos written out as a user's files (a CSV, an edge list with a
node-feature file, a folder of .ply; benchmarks/kind_files.py, under benchmarks/runs/kind-files), each loader
making its own held-out split.

Writes benchmarks/results/kinds_<name>[-<tag>].json; `python benchmarks/make_results.py` regenerates RESULTS.md.
"""
from __future__ import annotations

import argparse
import shlex

from common import ROOT, add_tag_argument, parse_args, tag_words, tagged, write_row
from kind_files import user_files
from learning import train_and_read

FILES = ROOT / "benchmarks" / "runs" / "kind-files"

COMMON = ["train.epochs=null", "train.budget=null", "train.progress=false", "eval.report=false",
          "eval.baselines=true"]
# name: (recipe, dataset description, overrides)
RUNS = {
    "tjepa-digits": ("tjepa", "table-digits (sklearn digits as 64 columns, 1,347 + 450, 10 classes)",
                     ["data.source=table-digits", "train.max_steps=200", "train.batch_size=64"]),
    "tjepa-breast-cancer": ("tjepa", "table-breast-cancer (sklearn WDBC, 30 columns, 426 + 143, 2 classes)",
                            ["data.source=table-breast-cancer", "train.max_steps=300", "train.batch_size=32"]),
    "tjepa-factors": ("tjepa", "table-factors (generated: 12 of 64 columns carry 6 latent clusters, 1,500 + 500)",
                      ["data.source=table-factors", "train.max_steps=200", "train.batch_size=64"]),
    "point-mae-shapes": ("point-mae", "point-shapes (generated, 12 families, random pose, 1,200 + 360, 256 points)",
                         ["train.max_steps=100", "eval.protocols=[knn,linear]"]),
    # GraphMAE: 1000 steps (200 gave +2.5 / +3.5 on graph-sbm and -1.8 / +2.6 on graph-sbm-nodes, kNN / linear)
    "graphmae-sbm": ("graphmae", "graph-sbm (generated SBM graphs, 1-4 blocks, 600 + 200)",
                     ["train.max_steps=1000", "eval.protocols=[knn,linear]"]),
    "graphmae-sbm-nodes": ("graphmae", "graph-sbm-nodes (one 900-node SBM, 6 blocks, node classification, 675 + 225)",
                           ["data.source=graph-sbm-nodes", "train.max_steps=1000", "eval.protocols=[knn,linear]"]),
}
# name: (the embedded row it repeats, the file written under FILES, dataset description, more overrides)
FILE_RUNS = {
    "tjepa-digits-csv": ("tjepa-digits", "digits.csv", "digits.csv (sklearn digits written as a CSV, 64 columns + "
                         "label; the loader's 80/20 split)", ["data.label_column=label"]),
    "tjepa-factors-csv": ("tjepa-factors", "factors.csv", "factors.csv (table-factors written as a CSV, 64 columns "
                          "+ label; the loader's 80/20 split)", ["data.label_column=label"]),
    "graphmae-sbm-nodes-files": ("graphmae-sbm-nodes", "sbm-nodes", "sbm-nodes/ (graph-sbm-nodes written as "
                                 "edges.csv + nodes.csv; the loader's 80/20 split)", []),
    "point-mae-shapes-ply": ("point-mae-shapes", "shapes-ply", "shapes-ply/ (point-shapes written as 1,560 binary "
                             ".ply files in class folders; the loader's 80/20 split)", []),
}


def run_spec(key: str) -> tuple[str, str, list[str]]:
    """(recipe, dataset description, overrides) of a row; a file row writes its files first."""
    if key in RUNS:
        return RUNS[key]
    base, name, dataset, extra = FILE_RUNS[key]
    recipe, _, overrides = RUNS[base]
    source = user_files(FILES, name)
    return recipe, dataset, [o for o in overrides if not o.startswith("data.source=")] + [f"data.source={source}",
                                                                                          *extra]


def margins(scores: dict) -> dict:
    """Points of the pretrained row over the random-init and raw rows, for kNN@20 and the linear probe."""
    out = {}
    for metric, short in (("knn_top1@20", "knn20"), ("linear_top1", "linear")):
        for row in ("random_init", "raw_pixels"):  # (raw_pixels: the raw-feature row of these kinds)
            if metric in scores.get(row, {}) and metric in scores["pretrained"]:
                out[f"{short}_over_{row}"] = round(100 * (scores["pretrained"][metric] - scores[row][metric]), 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", nargs="*", default=sorted([*RUNS, *FILE_RUNS]), choices=sorted([*RUNS, *FILE_RUNS]))
    add_tag_argument(parser)
    parser.add_argument("overrides", nargs="*")
    args = parse_args(parser)
    for key in args.only:
        recipe, dataset, overrides = run_spec(key)
        name, results, peak, wall = train_and_read(recipe, f"bench-kinds-{key}", [*COMMON, *overrides, *args.overrides])
        if results is None:
            continue
        scores = results["results"]
        shown = " ".join(["benchmarks/kinds.py", "--only", key, *map(shlex.quote, args.overrides),
                          *tag_words(args.tag)])
        run = results["run"]
        found = margins(scores)
        print(write_row(tagged(f"kinds_{key}", args.tag), {
            "benchmark": "kinds", "dataset": dataset, "recipe": recipe, "method": run["method"],
            "backbone": run["backbone"], "steps": run["steps"], "epochs": round(run["epochs"], 1),
            "command": shown, "images_per_s": run["images_per_s"], "train_wall_time_s": run["wall_time_s"],
            "eval_time_s": results.get("eval_time_s"), "total_wall_time_s": round(wall, 1),
            "peak_memory_mib": round(peak), "results": scores, "margins_points": found,
            "knn20_margin_points": {k.replace("knn20_", ""): v for k, v in found.items() if k.startswith("knn20")},
            "run": name,
        }), found, flush=True)


if __name__ == "__main__":
    main()
