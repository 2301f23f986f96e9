"""``selfsup data shard | dedup | select``: the data commands of issue 19 (tar shards, curation), their
arguments and handlers; :mod:`selfsup.cli` adds them to ``selfsup data``."""
from __future__ import annotations

import sys
from pathlib import Path

from selfsup.config import ConfigError
from selfsup.curate import dedup, select
from selfsup.data.open import open_data
from selfsup.data.shard_writer import ShardSize, write_shards


def _data_shard(args) -> int:
    """Tar shards of a folder's or a manifest's images (kept encoded) with OUT/index.json (selfsup.data.shard_writer)."""
    size = ShardSize.parse(args.shard_size)
    splits = open_data(args.source, holdout_fraction=0.0, max_bad_fraction=args.max_bad_fraction)
    for split, source in (("train", splits.train), ("test", splits.test)):
        if source is None:
            continue
        out = Path(args.out) if split == "train" else Path(args.out) / "test"
        result = write_shards(source, out, size, seed=args.seed, shuffle=not args.no_shuffle)
        print(f"{split}: {result['samples']} images in {len(result['shards'])} shards under {out}; index "
              f"{result['index']} (data.source={result['index']} streams them)")
        for where, reason in result["bad_files"]:
            print(f"skipped {where}: {reason}", file=sys.stderr)
        if result["bad_files"]:
            print(f"{len(result['bad_files'])} bad file(s) listed in {out / 'bad_files.txt'}", file=sys.stderr)
    return 0


def _data_dedup(args) -> int:
    """Exact and near duplicates of a folder or manifest: OUT/dedup_report.json and OUT/dedup_manifest.csv."""
    if args.weights and not args.backbone:
        raise ConfigError("--weights goes with --backbone NAME (the architecture those weights are for)")
    report = dedup(args.source, args.out, phash_threshold=args.phash_threshold, backbone=args.backbone,
                   weights=args.weights, cosine=args.cosine, image_size=args.image_size)
    pairs = ", ".join(f"{n} {test}" for test, n in report["pairs"].items())
    print(f"{report['images']} images: {report['groups']} duplicate groups ({pairs} pairs), {report['dropped']} "
          f"dropped, {report['kept']} kept; report {Path(args.out) / 'dedup_report.json'}, manifest "
          f"{report['manifest']} (data.source={report['manifest']})")
    for entry in report["bad_files"]:
        print(f"skipped {entry['path']}: {entry['reason']}", file=sys.stderr)
    return 0


def _data_select(args) -> int:
    """A SimCore coreset of POOL toward TARGET: a manifest of the --count nearest pool images."""
    result = select(args.pool, args.target, args.count, args.out, backbone=args.backbone, weights=args.weights,
                    image_size=args.image_size)
    print(f"selected {result['selected']} of {result['pool']} pool images toward {result['target']} target images "
          f"(mean cosine similarity {result['mean_similarity']:.3f}): {result['manifest']}")
    return 0


def add_data_commands(data_sub) -> None:
    """Add ``shard``, ``dedup`` and ``select`` to the ``selfsup data`` sub-parsers."""
    q = data_sub.add_parser("shard", help="write tar shards (webdataset layout) of a folder or manifest, with an index",
                            description="Images kept encoded, one key per image (<key>.jpg, .cls, .txt, .json), in "
                            "the source order shuffled from --seed; bad files skipped and listed in "
                            "OUT/bad_files.txt; OUT/index.json counts the samples per shard (train on it with "
                            "data.source=OUT/index.json).")
    q.add_argument("source", help="image folder or manifest (.csv, .jsonl, .parquet)")
    q.add_argument("out", help="folder for shard-000000.tar, ... and index.json")
    q.add_argument("--shard-size", default="1000", help="samples per shard (1000) or bytes (256MB, 1GiB); default 1000")
    q.add_argument("--seed", type=int, default=0, help="the shuffle of the written order (default 0)")
    q.add_argument("--no-shuffle", action="store_true", help="keep the source order")
    q.add_argument("--max-bad-fraction", type=float, default=0.1, help="as data.max_bad_fraction (default 0.1)")
    q.set_defaults(func=_data_shard)
    q = data_sub.add_parser("dedup", help="exact and near duplicates of a folder or manifest: a report and a filtered "
                            "manifest", description="Exact (same pixels), perceptual (DCT pHash within "
                            "--phash-threshold bits) and, with --backbone, embedding duplicates (cosine >= --cosine); "
                            "each group keeps one image (a test-split one when there is one).")
    q.add_argument("source", help="image folder or manifest (.csv, .jsonl, .parquet)")
    q.add_argument("--out", required=True, help="folder for dedup_report.json and dedup_manifest.csv")
    q.add_argument("--phash-threshold", type=int, default=8, help="Hamming distance of 64 bits (default 8)")
    q.add_argument("--backbone", help="also embedding duplicates: a run directory, a saved backbone or a name")
    q.add_argument("--weights", help="state dict for --backbone NAME")
    q.add_argument("--cosine", type=float, default=0.95, help="cosine similarity of embedding duplicates (0.95)")
    q.add_argument("--image-size", type=int, help="input size for --backbone (default: its own, else 32)")
    q.set_defaults(func=_data_dedup)
    q = data_sub.add_parser("select", help="a coreset of an unlabelled pool toward a target set (SimCore)",
                            description="Embed POOL and TARGET with --backbone; take each target image's nearest "
                            "pool image in turn until --count are taken; write them as a manifest.")
    q.add_argument("pool", help="image folder or manifest: the large unlabelled pool")
    q.add_argument("--target", required=True, help="image folder or manifest: the small target set")
    q.add_argument("--count", type=int, required=True, help="images to select")
    q.add_argument("--out", required=True, help="manifest to write (.csv)")
    q.add_argument("--backbone", required=True, help="a run directory, a saved backbone or a name (+ --weights)")
    q.add_argument("--weights", help="state dict for --backbone NAME")
    q.add_argument("--image-size", type=int, help="input size (default: the backbone's own, else 32)")
    q.set_defaults(func=_data_select)
