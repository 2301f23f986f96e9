"""The benchmarks' command lines: the commands their tables show run as shown (benchmarks/common.py)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from common import parse_args  # noqa: E402


def bench_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", nargs="*", default=["a", "b"], choices=["a", "b"])
    parser.add_argument("--tag")
    parser.add_argument("overrides", nargs="*")
    return parser


def test_overrides_after_a_list_option_are_overrides_not_names():
    args = parse_args(bench_parser(), ["--only", "a", "train.max_steps=1000", "--tag", "s1000",
                                       "backbone.options={global_pool: token}"])
    assert args.only == ["a"] and args.tag == "s1000"
    assert args.overrides == ["train.max_steps=1000", "backbone.options={global_pool: token}"]


def test_overrides_keep_their_order_wherever_they_stand():
    args = parse_args(bench_parser(), ["optim.lr=1", "--only", "b", "optim.lr=2"])
    assert args.only == ["b"] and args.overrides == ["optim.lr=1", "optim.lr=2"]
    assert parse_args(bench_parser(), []).overrides == []


def test_the_value_of_a_valued_option_stays_with_it():
    parser = bench_parser()
    parser.add_argument("--variant", action="append")
    args = parse_args(parser, ["--variant", "ramp=data.progressive_resize={start_size: 16}", "seed=1",
                               "--variant", "base="], valued=("--variant",))
    assert args.variant == ["ramp=data.progressive_resize={start_size: 16}", "base="] and args.overrides == ["seed=1"]


def test_a_forced_learning_cell_does_not_count_its_own_file_as_carrying_the_baselines(tmp_path, monkeypatch):
    import json

    import learning
    monkeypatch.setattr(learning, "RESULTS_DIR", tmp_path)
    row = {"backbone_key": "k", "seed": 0, "results": {"pretrained": {}, "random_init": {"knn_top1@20": 0.1}}}
    own = tmp_path / "learning_digits_dino_seed0.json"
    own.write_text(json.dumps(row))
    # Re-running (--force) the only cell that carries them would overwrite the baselines: measure them again.
    assert not learning.baselines_known("digits", "k", 0, replacing=own)
    other = tmp_path / "learning_digits_simclr_seed0.json"
    other.write_text(json.dumps(row))
    assert learning.baselines_known("digits", "k", 0, replacing=own)
    assert not learning.baselines_known("digits", "other-backbone", 0, replacing=own)
