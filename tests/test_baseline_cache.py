"""Baseline rows are scored once per (data, transform, settings, weights) and reused by later evaluations
(selfsup.eval.baseline_cache): the reused scores equal a recomputation, anything that changes a number misses."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from selfsup.backbones import build_backbone
from selfsup.config import build_config
from selfsup.data.sources import DataSplits
from selfsup.eval.baseline_cache import baseline_key
from selfsup.eval.evaluate import eval_precision
from selfsup.eval.protocol import ProtocolSettings, evaluate_backbone
from selfsup.views.preprocess import Preprocess


class LabelledImages:
    """In-memory labelled images (uint8 (C, H, W)) with a fingerprint: what the protocol reads."""

    def __init__(self, images, labels, tag):
        self.images, self.labels, self.tag = images, labels, tag
        self.classes = [str(c) for c in range(int(labels.max()) + 1)]

    def __len__(self):
        return len(self.images)

    def get_image(self, i):
        return torch.from_numpy(self.images[i])

    def fingerprint(self):
        return self.tag


def _splits(seed: int = 0, tag: str = "squares") -> DataSplits:
    rng = np.random.default_rng(seed)
    def make(n, salt):
        labels = np.repeat(np.arange(3), n)
        images = (labels[:, None, None, None] * 80 + rng.normal(0, 20, (len(labels), 3, 16, 16))).clip(0, 255)
        return LabelledImages(images.astype(np.uint8), labels.astype(np.int64), f"{tag}-{salt}")
    return DataSplits(train=make(12, "train"), test=make(4, "test"))


PREPROCESS = Preprocess(16, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def _evaluate(splits, cache, settings=None, logs=None):
    torch.manual_seed(0)
    backbone = build_backbone("small_resnet", 3, widths=[8, 8, 16, 16], stem_stride=1)
    return evaluate_backbone(backbone, splits, preprocess=PREPROCESS, settings=settings or ProtocolSettings(),
                             baseline_cache=cache, log=(logs.append if logs is not None else lambda m: None))


def test_second_evaluation_reuses_the_baseline_scores_exactly(tmp_path):
    splits, cache = _splits(), tmp_path / ".baselines"
    first_logs, second_logs = [], []
    first = _evaluate(splits, cache, logs=first_logs)
    assert sorted(p.name for p in cache.glob("*.json")).__len__() == 2  # random-init and raw pixels, not the row
    second = _evaluate(splits, cache, logs=second_logs)
    assert second == first
    assert sum("earlier evaluation" in m for m in second_logs) == 2
    assert not any("earlier evaluation" in m for m in first_logs)
    assert first == _evaluate(splits, None)  # the same numbers as without any cache
    stored = {json.loads(p.read_text())["row"]: json.loads(p.read_text())["scores"] for p in cache.glob("*.json")}
    assert stored == {"random_init": first["random_init"], "raw_pixels": first["raw_pixels"]}


def test_anything_that_changes_a_number_misses(tmp_path):
    splits, cache = _splits(), tmp_path / ".baselines"
    _evaluate(splits, cache)
    for changed in (_splits(tag="other-data"), ):
        logs = []
        _evaluate(changed, cache, logs=logs)
        assert not any("earlier evaluation" in m for m in logs)
    logs = []
    _evaluate(splits, cache, settings=ProtocolSettings(seed=1), logs=logs)  # random-init weights and split differ
    assert not any("earlier evaluation" in m for m in logs)
    logs = []
    _evaluate(splits, cache, settings=ProtocolSettings(options={"knn": {"k": [5]}}), logs=logs)
    assert not any("earlier evaluation" in m for m in logs)


def test_key_depends_on_weights_transform_and_row():
    splits, settings = _splits(), ProtocolSettings().fingerprint()
    torch.manual_seed(0)
    a = build_backbone("small_resnet", 3, widths=[8, 8, 16, 16])
    torch.manual_seed(1)
    b = build_backbone("small_resnet", 3, widths=[8, 8, 16, 16])
    key = baseline_key("random_init", a, None, splits, PREPROCESS, settings, "cpu")
    assert key == baseline_key("random_init", a, None, splits, PREPROCESS, settings, "cpu")
    assert key != baseline_key("random_init", b, None, splits, PREPROCESS, settings, "cpu")
    assert key != baseline_key("random_init", a, None, splits, Preprocess(20, PREPROCESS.mean, PREPROCESS.std),
                               settings, "cpu")
    raw = baseline_key("raw_pixels", None, None, splits, PREPROCESS, settings, "cpu")
    assert raw != key and raw != baseline_key("raw_pixels", None, None, splits, PREPROCESS, settings, "cuda")


def test_unreadable_cache_file_is_recomputed_and_replaced(tmp_path):
    splits, cache = _splits(), tmp_path / ".baselines"
    first = _evaluate(splits, cache)
    for path in cache.glob("*.json"):
        path.write_text("{ truncated")
    logs = []
    assert _evaluate(splits, cache, logs=logs) == first
    assert not any("earlier evaluation" in m for m in logs)
    assert all(json.loads(p.read_text())["format"] == 1 for p in cache.glob("*.json"))


@pytest.mark.parametrize("enabled", [True, False])
def test_run_config_switch(tmp_path, enabled):
    from selfsup.cli import main  # the whole path: selfsup train writes and reads <runs_dir>/.baselines
    runs = tmp_path / "runs"
    args = ["train", "demo", f"runs_dir={runs}", "train.budget=null", "train.max_steps=1", "train.batch_size=16",
            "train.progress=false", "data.num_workers=0", "data.image_size=16",
            "backbone.options={widths: [8, 8, 16, 16], stem_stride: 2}", f"eval.cache_baselines={str(enabled).lower()}"]
    assert main([*args, "--name", "a"]) == 0
    assert main([*args, "--name", "b", "seed=0"]) == 0
    assert (runs / ".baselines").is_dir() == enabled
    a = json.loads((runs / "a" / "results.json").read_text())["results"]
    b = json.loads((runs / "b" / "results.json").read_text())["results"]
    assert a["raw_pixels"] == b["raw_pixels"] and a["random_init"] == b["random_init"]


def test_bf16_features_key_their_own_baselines_and_agree_with_fp32(tmp_path):
    """eval.precision: bf16 autocast features are stored under their own baseline keys (raw pixels, which no
    model computes, share one), and on separable data they score as fp32 features do."""
    splits = _splits()
    torch.manual_seed(0)
    backbone = build_backbone("small_resnet", 3, widths=[8, 8, 16, 16], stem_stride=1)
    fp32, bf16 = (baseline_key("random_init", backbone, None, splits, PREPROCESS, {}, "cpu", precision=p)
                  for p in ("fp32", "bf16"))
    assert fp32 != bf16
    assert baseline_key("raw_pixels", None, None, splits, PREPROCESS, {}, "cpu", precision="bf16") == \
        baseline_key("raw_pixels", None, None, splits, PREPROCESS, {}, "cpu")
    logs = []
    scores = {dtype: evaluate_backbone(backbone, splits, preprocess=PREPROCESS, settings=ProtocolSettings(),
                                       baselines=False, autocast_dtype=dtype, log=logs.append)
              for dtype in (None, torch.bfloat16)}
    assert abs(scores[None]["pretrained"]["knn_top1@20"] - scores[torch.bfloat16]["pretrained"]["knn_top1@20"]) <= 0.1
    assert any("bf16 autocast" in line for line in logs) and any("bf16" not in line and "features (" in line
                                                                  for line in logs)


def test_eval_precision_follows_the_training_precision_unless_given():
    assert eval_precision(build_config("demo", ["train.precision=fp32"])) == "fp32"
    assert eval_precision(build_config("demo", [])) == "auto"
    assert eval_precision(build_config("demo", ["train.precision=bf16", "eval.precision=fp32"])) == "fp32"
