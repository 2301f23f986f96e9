"""Dense features: PixPro and DenseCL against global-only SimCLR on the embedded dense task (``digits-dense``:
three digits per 48 px image, per-pixel labels), scored by the dense probe (a 1x1 linear head on the frozen
backbone's hypercolumn: every stage's map upsampled to the labels, Hariharan et al. 2015; mIoU and pixel accuracy)
beside random-init features and raw pixels, all read the same way.

    .venv/bin/python benchmarks/dense.py [--methods pixpro densecl simclr-small] [key=value ...]

Every method trains the same backbone (``small_resnet`` with widths 16-128) for the same fixed number of steps
(``STEPS``), so the scores do not depend on the machine's load; the wall time and images/s do. Writes
benchmarks/results/dense_<recipe>[-<tag>].json; `python benchmarks/make_results.py` regenerates RESULTS.md.
"""
from __future__ import annotations

import argparse
import shlex

from common import add_tag_argument, parse_args, tag_words, tagged, write_row
from learning import train_and_read

STEPS = 300
BACKBONE = ["backbone.name=small_resnet", "backbone.options={widths: [16, 32, 64, 128]}"]
COMMON = ["data.source=digits-dense", "data.image_size=48", "train.batch_size=128", "train.epochs=null",
          "train.budget=null", "train.progress=false", "eval.report=false", "eval.protocols=[knn, dense]",
          "optim.lr=0.002", "seed=0"]
RECIPE_OVERRIDES = {"simclr-small": ["method_options.crop_scale=[0.3, 1.0]"]}


def miou_margins(scores: dict) -> dict[str, float]:
    """mIoU points of the pretrained row over the random-init and raw-pixel rows (those present)."""
    return {f"over_{row}": round(100 * (scores["pretrained"]["dense_miou"] - scores[row]["dense_miou"]), 1)
            for row in ("random_init", "raw_pixels") if "dense_miou" in scores.get(row, {})}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--methods", nargs="*", default=["pixpro", "densecl", "simclr-small"], help="recipe names")
    parser.add_argument("--steps", type=int, default=STEPS)
    add_tag_argument(parser)
    parser.add_argument("overrides", nargs="*", help="key=value for every run")
    args = parse_args(parser)
    for recipe in args.methods:
        overrides = [*COMMON, *BACKBONE, f"train.max_steps={args.steps}", *RECIPE_OVERRIDES.get(recipe, []),
                     *args.overrides]
        name, results, peak, wall = train_and_read(recipe, "bench-dense", overrides)
        if results is None:
            continue
        scores = results["results"]
        features = next((o.split("=", 1)[1] for o in overrides if o.startswith("eval.dense.features=")), "stages")
        margins = miou_margins(scores)
        shown = " ".join(["benchmarks/dense.py", *map(shlex.quote, args.overrides), f"--steps {args.steps}",
                          f"--methods {recipe}", *tag_words(args.tag)])
        print(write_row(tagged(f"dense_{recipe}", args.tag), {
            "benchmark": "dense", "dataset": "digits-dense (3 digits per 48 px image, 2000 + 500, 11 pixel classes)",
            "recipe": recipe, "method": results["run"]["method"], "backbone": results["run"]["backbone"],
            "steps": results["run"]["steps"], "epochs": round(results["run"]["epochs"], 1), "command": shown,
            "images_per_s": results["run"]["images_per_s"], "train_wall_time_s": results["run"]["wall_time_s"],
            "eval_time_s": results.get("eval_time_s"), "total_wall_time_s": round(wall, 1),
            "peak_memory_mib": round(peak), "results": scores, "miou_margin_points": margins, "run": name,
            "probe_reads": {"stages": "hypercolumn", "last": "last map"}[features],
        }), {k: v for k, v in scores["pretrained"].items() if k.startswith("dense")}, margins, flush=True)


if __name__ == "__main__":
    main()
