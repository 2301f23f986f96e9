"""``selfsup train | eval | compare | report | export | embed | bench | list | demo | data``."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from selfsup import api, registry
from selfsup.config import Config, ConfigError, apply_overrides, recipe_names, validate
from selfsup.data import DataError, open_folder, open_npz
from selfsup.data.folder import PIXEL_MODES
from selfsup.data.geotiff import write_geotiff_folder
from selfsup.data.spectral import spectral_splits_arrays
from selfsup.data.stats import compute_stats, default_stats_file, save_stats
from selfsup.data_commands import add_data_commands
from selfsup.engine.trainer import TrainingDiverged
from selfsup.eval.compare import compare_runs
from selfsup.eval.evaluate import evaluate_any_backbone, evaluate_run
from selfsup.eval.protocols import all_protocols
from selfsup.export import EXPORT_FORMATS, export_backbone
from selfsup.export.embeddings import DEFAULT_CHUNK_FILES, PRECISIONS
from selfsup.export.open_clip import export_open_clip
from selfsup.export.towers_io import load_towers
from selfsup.report import write_report
from selfsup.runs import is_run_dir, load_run_config
from selfsup.throughput import summary_table

# What `selfsup list` adds after a registry's names: the forms a value may take besides a registered name.
OPEN_CLIP_FORMAT = "open_clip"
OTHER_FORMS = {"backbone": "timm:<any timm model name>, open_clip:<any open_clip architecture>",
               "dataset": "<image folder>, <file.npz>, <pairs.csv|.jsonl|.parquet>, <folder of .tar shards>"}


def _train(args) -> int:
    overrides = list(args.overrides)
    recipe = args.recipe
    if recipe and "=" in recipe:  # no recipe given, only overrides
        overrides.insert(0, recipe)
        recipe = None
    if args.epochs is not None:
        overrides.append(f"train.epochs={args.epochs}")
    if args.budget is not None:
        overrides += [f"train.budget={args.budget}", "train.epochs=null"]
    if args.name:
        overrides.append(f"name={args.name}")
    if args.resume:
        api.train(resume=args.resume, overrides=overrides)
    else:
        api.train(recipe, overrides=overrides)
    return 0


def _eval(args) -> int:
    """A run directory (its config, with ``key=value`` overrides), or ``--backbone`` (+ ``--weights``) on
    ``--data`` with the default config and the overrides. ``--protocols``: comma-separated names, or ``all``
    (every registered protocol that does not train on the images)."""
    run, overrides = args.run, list(args.overrides)
    if run and "=" in run:  # no run directory given, only overrides
        run, overrides = None, [run] + overrides
    if args.protocols:
        names = [p.strip() for p in args.protocols.split(",") if p.strip()]
        overrides.append(f"eval.protocols=[{','.join(all_protocols() if names == ['all'] else names)}]")
    if run is not None:
        if args.backbone is not None or args.weights is not None:
            raise ConfigError("give either a run directory or --backbone/--weights, not both")
        if args.image_size is not None or args.out is not None:
            raise ConfigError("--image-size and --out are for --backbone: a run's backbone is evaluated at its "
                              "training size, and its results go to RUN_DIR/results.json")
        cfg = load_run_config(run)
        if overrides:
            cfg = validate(apply_overrides(cfg.model_dump(mode="json"), overrides), where="eval overrides")
        evaluate_run(run, data=args.data, cfg=cfg)
        return 0
    backbone, weights = args.backbone, args.weights
    if backbone is None:
        if weights is None:
            raise ConfigError("selfsup eval needs a run directory, or --backbone NAME_OR_FILE (and --data)")
        backbone, weights = str(weights), None  # a selfsup backbone file given as --weights
    if args.data is None:
        raise ConfigError("--data is required with --backbone: a dataset name (selfsup list), image folder or .npz")
    cfg = validate(apply_overrides(Config().model_dump(mode="json"), overrides), where="eval overrides")
    evaluate_any_backbone(backbone, args.data, weights=weights, out_dir=args.out, cfg=cfg,
                          image_size=args.image_size)
    return 0


def _compare(args) -> int:
    comparison = compare_runs(args.runs, args.out, strict=args.strict, baselines=not args.no_baselines)
    print(comparison.markdown(), end="")
    print(f"[selfsup] wrote compare.md, compare.csv and compare.html to {args.out}", file=sys.stderr)
    return 0


def _report(args) -> int:
    projections = [p.strip() for p in args.maps.split(",") if p.strip()] if args.maps else None
    print(write_report(args.run, out=args.out, projections=projections))
    return 0


def _export(args) -> int:
    if args.format == OPEN_CLIP_FORMAT:  # both towers of an image-text run, in open_clip's own layout
        run = Path(args.run)
        path = export_open_clip(load_towers(run if run.is_dir() else run.parent),
                                Path(args.out) if args.out else (run if run.is_dir() else run.parent) / "open_clip")
        print(path)
        return 0
    path = export_backbone(args.run, args.format, Path(args.out) if args.out else None)
    print(path)
    return 0


def _embed(args) -> int:
    """A run directory, saved backbone or backbone name (positional or ``--backbone``, with ``--weights``) on every
    image file under ``--data``; Ctrl-C keeps the finished chunks and exits 130 (the same command continues)."""
    if args.backbone is not None and args.backbone_name is not None:
        raise ConfigError("give the backbone once: RUN_OR_BACKBONE or --backbone, not both")
    backbone, weights = args.backbone or args.backbone_name, args.weights
    if backbone is None:
        if weights is None:
            raise ConfigError("selfsup embed needs a run directory, a saved backbone or --backbone NAME (and --data, "
                              "--out)")
        backbone, weights = weights, None  # a selfsup backbone file given as --weights
    try:
        result = api.embed(backbone, args.data, args.out, weights=weights, image_size=args.image_size,
                           batch_size=args.batch_size, num_workers=args.num_workers, device=args.device,
                           precision=args.precision, pixels=args.pixels, stats=args.stats,
                           chunk_files=args.chunk_size, restart=args.restart, progress=not args.no_progress)
    except KeyboardInterrupt:  # the finished chunks are saved; the message saying so is already out
        return 130
    print(result.summary())
    return 0


def _bench(args) -> int:
    overrides, recipe = list(args.overrides), args.recipe
    if recipe and "=" in recipe:  # no recipe given, only overrides
        recipe, overrides = None, [recipe] + overrides
    peaks = None
    if args.peaks_from:  # a fixed MFU denominator across runs: the matmul peaks of an earlier bench JSON
        earlier = json.loads(Path(args.peaks_from).read_text())
        peaks = {"peak_flops_per_s": earlier["peak_flops_per_s"],
                 "peak_matmul_size": earlier.get("peak_matmul_size", {})}
    result = api.bench(recipe, overrides=overrides, steps=args.steps, warmup=args.warmup, json_path=args.json,
                   peaks=peaks)
    print(summary_table(result))
    if args.json:
        print(f"[selfsup] wrote {args.json}", file=sys.stderr)
    return 0


def _list(args) -> int:
    """Every registry (methods, backbones, datasets, mask strategies, evaluation protocols, export formats,
    field kinds), then the recipes."""
    for kind, entries in registry.ALL.items():
        names = sorted(entries) + ([OTHER_FORMS[kind]] if kind in OTHER_FORMS else [])
        print(f"{entries.plural + ':':<23}" + ", ".join(names))
    print(f"{'recipes:':<23}" + ", ".join(recipe_names()))
    return 0


def _demo(args) -> int:
    previous = Path("runs") / args.name
    if is_run_dir(previous):  # the demo always starts afresh
        shutil.rmtree(previous)
    api.train("demo", overrides=[f"name={args.name}"] + list(args.overrides))
    return 0


def _data_stats(args) -> int:
    """Per-band statistics of a folder's (or .npz's) train split in raw units, saved where runs find them."""
    path = Path(args.source)
    splits = open_folder(path, pixels=args.pixels) if path.is_dir() else open_npz(path, pixels=args.pixels)
    train = splits.train
    if not getattr(train, "raw", False):
        print(f"note: {path} holds 8-bit pictures (data.pixels=auto reads them as such); their statistics follow, "
              "but runs normalise 8-bit data from a sample of their own", file=sys.stderr)
    stats = compute_stats(train, max_images=args.max_images,
                          progress=lambda done, total: done % max(1, total // 10) == 0 and print(
                              f"  {done}/{total} images", file=sys.stderr))
    out = Path(args.out) if args.out else default_stats_file(path)
    save_stats(stats, out)
    print(f"{train.name}: {stats.images} of {stats.files} images, {stats.channels} bands, {stats.dtype}"
          f"{' (a sample: --max-images)' if stats.images < stats.files else ''}")
    print(f"{'band':>5} {'mean':>12} {'std':>12} {'min':>12} {'p1':>12} {'p99':>12} {'max':>12}")
    for c in range(stats.channels):
        print(f"{c:>5} {stats.mean[c]:>12.6g} {stats.std[c]:>12.6g} {stats.min[c]:>12.6g} "
              f"{stats.percentiles['1'][c]:>12.6g} {stats.percentiles['99'][c]:>12.6g} {stats.max[c]:>12.6g}")
    for where, reason in stats.skipped:
        print(f"skipped {where}: {reason}", file=sys.stderr)
    print(f"saved {out}" + ("" if out == default_stats_file(path) else f" (give it to runs as data.stats={out})"))
    return 0


def _data_demo(args) -> int:
    """Write the embedded ``spectral`` set as a folder of 13-band GeoTIFFs (train/ and test/, class folders)."""
    arrays = spectral_splits_arrays(args.train, args.test, args.seed)
    out = Path(args.out)
    write_geotiff_folder(out, arrays["images"], arrays["labels"], arrays["classes"], split="train")
    write_geotiff_folder(out, arrays["test_images"], arrays["test_labels"], arrays["classes"], split="test")
    print(f"wrote {args.train} + {args.test} 13-band uint16 GeoTIFFs (synthetic) under {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="selfsup", description="Self-supervised pre-training of visual backbones.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="pretrain a backbone", description="Pretrain from a recipe with key=value overrides, "
                       "e.g. `selfsup train simclr-small data.source=path/to/images --budget 10m`.")
    p.add_argument("recipe", nargs="?", help="built-in recipe name or YAML path (see `selfsup list`)")
    p.add_argument("overrides", nargs="*", help="key=value, e.g. train.batch_size=128 optim.lr=0.002")
    p.add_argument("--epochs", type=float)
    p.add_argument("--budget", help="wall-clock budget, e.g. 90s, 10m, 2h")
    p.add_argument("--name", help="run name (directory under runs/)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run exactly from its last checkpoint")
    p.set_defaults(func=_train)

    p = sub.add_parser("eval", help="evaluate a run's backbone, or any backbone, beside the baselines",
                       description="`selfsup eval RUN_DIR` or `selfsup eval --backbone timm:resnet18 [--weights "
                       "w.safetensors] --data FOLDER`, plus key=value overrides such as eval.knn.k=[1,5,20,200].")
    p.add_argument("run", nargs="?", help="run directory (or give --backbone)")
    p.add_argument("overrides", nargs="*", help="key=value, e.g. eval.protocols=[knn,fewshot] seed=1")
    p.add_argument("--data", help="dataset name, image folder or .npz (default: the run's data)")
    p.add_argument("--backbone", help="registered name, timm:<model>, open_clip:<architecture> (both towers: "
                   "zero-shot too), or a saved backbone (run dir / .safetensors)")
    p.add_argument("--weights", help="state dict (.safetensors, .pt) for --backbone NAME; default: random init")
    p.add_argument("--protocols", help="comma-separated evaluation protocols (selfsup list), or all: every one that "
                   "does not train on the images (default: eval.protocols)")
    p.add_argument("--image-size", type=int, help="input size for --backbone (default: saved or model default)")
    p.add_argument("--out", help="results folder for --backbone (default runs/eval-<backbone>-<time>)")
    p.set_defaults(func=_eval)

    p = sub.add_parser("compare", help="one table (Markdown, CSV, HTML) of several runs' results")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories (or selfsup eval result folders)")
    p.add_argument("--out", default="compare", help="folder for compare.md/.csv/.html (default ./compare)")
    p.add_argument("--strict", action="store_true", help="fail instead of warning when protocols differ")
    p.add_argument("--no-baselines", action="store_true", help="only the pretrained rows")
    p.set_defaults(func=_compare)

    p = sub.add_parser("report", help="write RUN_DIR/report.html: curves, metrics, embedding map, retrieval, views")
    p.add_argument("run", metavar="RUN_DIR", help="run directory")
    p.add_argument("--maps", help="2-D embedding maps, comma-separated: pca,tsne,umap (default pca, plus umap "
                   "when installed; t-SNE takes about a minute on a small CPU)")
    p.add_argument("--out", help="output file (default RUN_DIR/report.html)")
    p.set_defaults(func=_report)

    p = sub.add_parser("export", help="export a run's backbone for timm / torchvision / ONNX / a Hugging Face-style "
                       "folder, or an image-text run's two towers for open_clip")
    p.add_argument("run", help="run directory or backbone.safetensors")
    p.add_argument("--format", default="safetensors", choices=[*EXPORT_FORMATS.names(), OPEN_CLIP_FORMAT],
                   help=f"{OPEN_CLIP_FORMAT}: both towers of a run whose towers are open_clip architectures, as "
                   "open_clip_model.safetensors + open_clip_config.json (open_clip.create_model('local-dir:OUT'))")
    p.add_argument("--out", help="output file (a folder for open_clip and hf)")
    p.set_defaults(func=_export)

    p = sub.add_parser("embed", help="a backbone's embeddings of every image in a folder, as .npy, .parquet or .csv",
                       description="`selfsup embed runs/simclr --data photos/ --out emb.parquet`: one row per good "
                       "file (its path relative to --data, the backbone's pooled features in eval mode); bad files are "
                       "skipped and listed in OUT.bad_files.txt. Interrupted, the same command continues where it "
                       "stopped (OUT.parts/ holds the finished chunks).")
    p.add_argument("backbone", nargs="?", metavar="RUN_OR_BACKBONE", help="run directory, saved backbone (folder or "
                   ".safetensors), or a backbone name (selfsup list, timm:<model>) with --weights")
    p.add_argument("--backbone", dest="backbone_name", help="the same as RUN_OR_BACKBONE, as selfsup eval spells it")
    p.add_argument("--weights", help="state dict (.safetensors, .pt) for a backbone name; default: random init")
    p.add_argument("--data", required=True, help="folder of images, recursively (class sub-folders or not)")
    p.add_argument("--out", required=True, help="emb.npy (+ emb.npy.paths.txt, the row order), emb.parquet (path, "
                   "embedding) or emb.csv (path, dim_0, ...)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--image-size", type=int, help="input size (default: the backbone's own)")
    p.add_argument("--num-workers", type=int, default=2, help="DataLoader workers decoding files (default 2)")
    p.add_argument("--precision", default="fp32", choices=list(PRECISIONS),
                   help="forward pass in fp32, or under bf16 / fp16 autocast; fp16 rows are stored as float16")
    p.add_argument("--device", default="auto", help="auto (cuda when there is one), cpu, cuda, cuda:1, ...")
    p.add_argument("--pixels", choices=PIXEL_MODES, help="as data.pixels (default: the run's, else auto)")
    p.add_argument("--stats", help="pixel statistics of raw data (a run's data_stats.json, or `selfsup data stats`'s "
                   "file; default: the run's, else DIR/.selfsup-stats.json, else measured)")
    p.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_FILES,
                   help=f"files per saved chunk, the most an interruption loses (default {DEFAULT_CHUNK_FILES})")
    p.add_argument("--restart", action="store_true", help="discard an interrupted embedding's chunks (or replace a "
                   "finished OUT) and start over")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (it is off anyway without a terminal)")
    p.set_defaults(func=_embed)

    p = sub.add_parser("bench", help="measure a recipe's training throughput, step-time split, memory and MFU",
                       description="Run the recipe's real training pipeline for --warmup steps, then --steps measured "
                       "steps, e.g. `selfsup bench demo train.compile=true --steps 50 --json bench.json`.")
    p.add_argument("recipe", nargs="?", help="built-in recipe name or YAML path (see `selfsup list`)")
    p.add_argument("overrides", nargs="*", help="key=value, e.g. train.precision=bf16 optim.fused=true")
    p.add_argument("--steps", type=int, default=30, help="measured optimizer steps (default 30)")
    p.add_argument("--warmup", type=int, default=5, help="unmeasured steps first: compilation, start-up (default 5)")
    p.add_argument("--json", metavar="OUT.json", help="also write the full result (config, machine, split) as JSON")
    p.add_argument("--peaks-from", metavar="BENCH.json",
                   help="reuse the matmul peaks of an earlier bench result instead of measuring them (same MFU "
                   "denominator across runs)")
    p.set_defaults(func=_bench)

    p = sub.add_parser("list", help="everything registered (methods, backbones, datasets, protocols, ...) and the recipes")
    p.set_defaults(func=_list)

    p = sub.add_parser("data", help="data tools: per-band statistics of domain data, the domain demo folder")
    data_sub = p.add_subparsers(dest="data_command", required=True)
    q = data_sub.add_parser("stats", help="per-band mean, std, min, max, percentiles of a folder, saved for the runs",
                            description="Stream the train split's raw pixels (all images up to --max-images, a "
                            "deterministic sample above) and write DIR/.selfsup-stats.json, which runs on DIR read "
                            "for their pixel window (data.clip_percentiles) and normalisation.")
    q.add_argument("source", help="image folder (or .npz file)")
    q.add_argument("--out", help="statistics file (default DIR/.selfsup-stats.json)")
    q.add_argument("--max-images", type=int, default=10000, help="images read at most (default 10000)")
    q.add_argument("--pixels", default="auto", choices=PIXEL_MODES, help="as data.pixels (default auto)")
    q.set_defaults(func=_data_stats)
    q = data_sub.add_parser("demo", help="write the synthetic 13-band spectral set as GeoTIFF files")
    q.add_argument("out", help="folder to write (train/<class>/*.tif, test/<class>/*.tif)")
    q.add_argument("--train", type=int, default=5000)
    q.add_argument("--test", type=int, default=1000)
    q.add_argument("--seed", type=int, default=0)
    q.set_defaults(func=_data_demo)
    add_data_commands(data_sub)  # shard, dedup, select (selfsup.data_commands)

    p = sub.add_parser("demo", help="pretrain on the embedded digits data and compare with baselines")
    p.add_argument("overrides", nargs="*")
    p.add_argument("--name", default="demo")
    p.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # key=value overrides may come after options (`train demo --name x a.b=1`): collect them here.
    args, extra = parser.parse_known_args(argv)
    stray = [item for item in extra if "=" not in item or item.startswith("-")]
    if stray or (extra and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
    if extra:
        args.overrides = list(args.overrides) + extra
    try:
        return args.func(args)
    except (ConfigError, DataError, FileNotFoundError, FileExistsError, ValueError) as error:
        if os.environ.get("SELFSUP_DEBUG"):
            raise
        print(f"selfsup: error: {error}", file=sys.stderr)
        return 2
    except TrainingDiverged as error:
        print(f"selfsup: training diverged: {error}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
