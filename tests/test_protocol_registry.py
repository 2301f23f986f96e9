"""Every registered evaluation protocol keeps the protocol contract (eval/protocols/base.py): it runs on a tiny
backbone and tiny data, writes metrics of its declared family only, applies to the raw-pixel row or says it does
not, describes itself, and its settings are its config section and round-trip through config.yaml."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

import selfsup  # noqa: F401  (registers everything, as a run does)
from selfsup.backbones import build_backbone
from selfsup.backbones.text import build_text_encoder
from selfsup.backbones.towers import ImageTextTowers
from selfsup.config import ConfigError, build_config, validate
from selfsup.data.sources import ArraySource, DataSplits
from selfsup.eval.display import format_table, metric_sort_key, table_metrics
from selfsup.eval.protocol import ProtocolSettings, evaluate_backbone
from selfsup.eval.protocols import PROTOCOLS, all_protocols, default_protocols, protocol_of
from selfsup.views.preprocess import Preprocess

NAMES = PROTOCOLS.names()
PREPROCESS = Preprocess(16, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def squares(n_per_class: int, seed: int) -> ArraySource:
    """4 classes of 16x16 RGB images: a class colour plus pixel noise."""
    rng = np.random.default_rng(seed)
    colours = np.array([[230, 30, 30], [30, 230, 30], [30, 30, 230], [230, 230, 30]], dtype=np.float32)
    labels = rng.permutation(np.repeat(np.arange(4), n_per_class))
    images = colours[labels][:, :, None, None] + rng.normal(0, 30, (len(labels), 3, 16, 16))
    captions = [[f"a {['red', 'green', 'blue', 'yellow'][c]} square", f"square of class {c}"] for c in labels]
    return ArraySource(np.clip(images, 0, 255).astype(np.uint8), labels=labels, name=f"squares-{seed}",
                       captions=captions)  # the captions serve the image-text protocols


@pytest.fixture(scope="module")
def data() -> DataSplits:
    return DataSplits(train=squares(12, seed=0), test=squares(6, seed=1))


@pytest.fixture(scope="module")
def backbone():
    torch.manual_seed(0)
    return build_backbone("small_resnet", 3, widths=(8, 8, 16, 16))


def test_the_registry_holds_every_protocol_file():
    assert {"knn", "linear", "fewshot", "lowlabel", "retrieval", "kmeans", "diagnostics", "linear_sgd",
            "finetune"} <= set(NAMES)
    assert default_protocols() == ("knn", "linear")
    assert set(all_protocols()) == {n for n in NAMES if PROTOCOLS[n].in_all}  # `selfsup eval --protocols all`
    assert "finetune" not in all_protocols() and "linear_sgd" not in all_protocols()
    with pytest.raises(ConfigError, match="unknown evaluation protocol 'knnn'. Did you mean 'knn'"):
        PROTOCOLS.get("knnn")


@pytest.mark.parametrize("name", NAMES)
def test_protocol_runs_and_writes_its_own_metric_family(name, data, backbone, tmp_path):
    protocol = PROTOCOLS[name]
    assert protocol.name == name and protocol.family and protocol.title and len(protocol.description) > 20
    settings = ProtocolSettings(protocols=(name,), options={name: protocol.test_settings})
    towers = None
    if protocol.inputs == "image_text":  # an image-text model around the backbone (tiny text tower)
        pytest.importorskip("open_clip")
        torch.manual_seed(0)
        text = build_text_encoder("text_micro_cpu", width=32, heads=2, layers=1, context_length=16)
        towers = ImageTextTowers(backbone, text, 16)
    results = evaluate_backbone(backbone, data, preprocess=PREPROCESS, settings=settings, log=lambda m: None,
                                cache_dir=tmp_path, towers=towers)
    assert set(results) == {"pretrained", "random_init", "raw_pixels"}
    for row, scores in results.items():
        if row == "raw_pixels" and not protocol.raw_pixels:
            assert scores == {}
            continue
        assert scores, (name, row)
        for metric, value in scores.items():
            assert protocol_of(metric) is protocol, (metric, protocol_of(metric))
            assert isinstance(value, float) and (value == value), (metric, value)
    shown = table_metrics(results.values())  # scores are shown, chosen settings are not
    assert shown and all(m not in protocol.not_scores for m in shown)
    assert format_table(results).count("\n") == len(shown) + 1


@pytest.mark.parametrize("name", NAMES)
def test_settings_are_the_config_section_and_round_trip(name, tmp_path):
    protocol = PROTOCOLS[name]
    cfg = build_config("demo", [f"eval.protocols=[{name}]"])
    section = getattr(cfg.eval, name)
    assert isinstance(section, protocol.settings) and section == protocol.settings()  # defaults filled in
    saved = yaml.safe_dump(cfg.model_dump(mode="json"))
    assert f"{name}:" in saved
    again = validate(yaml.safe_load(saved))
    assert getattr(again.eval, name) == section and again.eval.protocols == [name]
    settings = ProtocolSettings.from_eval_config(again.eval, again.seed)
    record = settings.record()
    assert json.loads(json.dumps(record)) == record  # what results.json stores, unchanged by a reload
    assert record[name] == protocol.record(section, again.seed) and record["protocols"] == [name]
    assert set(protocol.scope_keys) <= set(protocol.settings.model_fields)
    with pytest.raises(ConfigError, match=f"unknown config key 'eval.{name}.no_such_key'"):
        build_config("demo", [f"eval.{name}.no_such_key=1"])
    for key in protocol.settings.model_fields:  # the flat keys of before the sections say where they went
        with pytest.raises(ConfigError, match=f"eval.{name}_{key} is now eval.{name}.{key}"):
            build_config("demo", [f"eval.{name}_{key}=1"])


def test_display_order_follows_the_protocols_order():
    metrics = [f for n in NAMES for f in PROTOCOLS[n].family]
    ordered = sorted(metrics, key=metric_sort_key)
    orders = [protocol_of(m).order for m in ordered]
    assert orders == sorted(orders)
    assert sorted(["knn_top1@10", "knn_top1@5", "knn_top1@200"], key=metric_sort_key) == [
        "knn_top1@5", "knn_top1@10", "knn_top1@200"]
