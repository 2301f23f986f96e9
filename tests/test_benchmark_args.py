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


def test_the_learning_table_averages_seeds_and_names_each_seeds_machine():
    from make_results import learning_rows

    def row(seed, knn, machine, speed):
        return {"recipe": "r", "method": "simclr", "backbone": "small_resnet", "backbone_key": "k", "seed": seed,
                "epochs": 9.0, "images_per_s": speed, "peak_memory_mib": 100, "machine": machine, "date": "d",
                "command": f"learning.py --seeds {seed}",
                "results": {"pretrained": {"knn_top1@20": knn, "linear_top1": knn},
                            "random_init": {"knn_top1@20": 0.3, "linear_top1": 0.3}}}

    lines = learning_rows([row(0, 0.58, "AMD", 750.0), row(1, 0.60, "Intel", 790.0), row(2, 0.59, "Intel", 790.0)])
    cells = [cell.strip() for cell in lines[2].split("|")]
    assert cells[4] == "59.0 ± 1.0 (3 seeds)" and cells[6] == "+29.0"
    assert "750 (seed 0); 790 (seeds 1, 2)" in cells and "AMD (seed 0); Intel (seeds 1, 2)" in cells
    assert cells[9] == "9.0" and cells[14] == "d"
