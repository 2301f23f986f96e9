"""`selfsup compare`: table contents (Markdown, CSV, HTML) and the refusal to mix protocols silently."""
from __future__ import annotations

import csv
import io
import json

import pytest
import yaml

from selfsup.cli import main
from selfsup.eval.compare import ProtocolMismatch, build_comparison, compare_runs, load_run

PROTOCOL = {"knn": {"k": [20, 200], "temperature": 0.07, "similarity": "cosine"},
            "linear": "logistic regression on frozen standardized features, L2 chosen on a 10% validation split",
            "fewshot": {"shots": [1, 5, 10], "seeds": [0, 1, 2, 3, 4], "classifier": "nearest centroid"},
            "protocols": ["knn", "linear", "fewshot"], "seed": 0, "image_size": 32}
DATA = {"source": "digits", "train_images": 6000, "test_images": 1000, "num_classes": 10,
        "train_fingerprint": "train-fp", "test_fingerprint": "test-fp"}
BASELINES = {"random_init": {"knn_top1@20": 0.31, "knn_top1@200": 0.30, "linear_top1": 0.35,
                             "linear_weight_decay": 0.01},
             "raw_pixels": {"knn_top1@20": 0.45, "knn_top1@200": 0.42, "linear_top1": 0.40,
                            "linear_weight_decay": 1.0}}


def make_run(root, name, *, method="simclr", knn20=0.5, protocol=None, data=None, budget="15m", with_fewshot=True,
             random_init=None, seed=0):
    run = root / name
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({
        "name": name, "seed": seed, "method": method, "backbone": {"name": "small_resnet", "options": {}},
        "data": {"source": "digits"}, "train": {"budget": budget, "epochs": None, "max_steps": None}}))
    (run / "train_summary.json").write_text(json.dumps({"steps": 100, "wall_time_s": 901.4, "images_per_s": 163.2}))
    (run / "metrics.jsonl").write_text(json.dumps({"step": 100, "loss": 1.0, "elapsed_s": 900.0}) + "\n")
    pretrained = {"knn_top1@20": knn20, "knn_top1@200": knn20 - 0.02, "linear_top1": knn20 + 0.05,
                  "linear_weight_decay": 0.001}
    if with_fewshot:
        pretrained.update({"fewshot_5shot_top1": 0.25, "fewshot_5shot_top1_std": 0.012})
    baselines = json.loads(json.dumps(BASELINES))
    if random_init is not None:
        baselines["random_init"]["knn_top1@20"] = random_init
    (run / "results.json").write_text(json.dumps({
        "protocol": protocol or PROTOCOL, "data": data or DATA,
        "run": {"method": method, "backbone": "small_resnet", "seed": seed, "wall_time_s": 901.4,
                "images_per_s": 163.2},
        "results": {"pretrained": pretrained, **baselines}}))
    return run


def test_table_contents_in_every_format(tmp_path, capsys):
    a = make_run(tmp_path, "simclr-a", knn20=0.514)
    b = make_run(tmp_path, "byol-b", method="byol", knn20=0.6, budget=None, with_fewshot=False)
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "out")]) == 0
    captured = capsys.readouterr()
    assert "warning" not in captured.err.lower()
    md = (tmp_path / "out" / "compare.md").read_text()
    assert md == captured.out
    lines = md.splitlines()
    assert lines[0].startswith("| run | features | method | backbone | data | budget | wall time (s) | images/s | "
                               "knn@20 (%) | knn@200 (%) | linear (%) | fewshot_5shot (%) |")
    assert "| simclr-a | pretrained | simclr | small_resnet | digits | 15m | 901 | 163 | 51.4 | 49.4 | 56.4 | " \
           "25.0 ± 1.2 |" in md
    assert "| byol-b | pretrained | byol | small_resnet | digits | - | 901 | 163 | 60.0 | 58.0 | 65.0 | - |" in md
    # The baselines the two runs share exactly are shown once, and say so.
    assert md.count("| random-init |") == 1 and md.count("| raw pixels |") == 1
    assert "simclr-a (+1 identical) | raw pixels | - | - | digits |" in md
    assert "linear_weight_decay" not in md  # a chosen setting, not a score

    rows = list(csv.DictReader(io.StringIO((tmp_path / "out" / "compare.csv").read_text())))
    assert [(r["run"], r["features"]) for r in rows] == [
        ("simclr-a", "pretrained"), ("simclr-a (+1 identical)", "random-init"),
        ("simclr-a (+1 identical)", "raw pixels"), ("byol-b", "pretrained")]
    first = rows[0]
    assert float(first["knn_top1@20"]) == 0.514 and float(first["fewshot_5shot_top1_std"]) == 0.012
    assert first["protocol_mismatch"] == ""

    page = (tmp_path / "out" / "compare.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<th>knn@20 (%)</th>" in page and "<td>51.4</td>" in page
    assert "warning" not in page.lower().split("</style>")[1]


def test_baselines_differing_by_seed_are_kept_apart(tmp_path):
    a = make_run(tmp_path, "s0", random_init=0.31)
    b = make_run(tmp_path, "s1", random_init=0.29, seed=1)
    table = build_comparison([load_run(a), load_run(b)])
    assert [(r["run"], r["features"]) for r in table.rows] == [
        ("s0", "pretrained"), ("s0", "random-init"), ("s0 (+1 identical)", "raw pixels"), ("s1", "pretrained"),
        ("s1", "random-init")]
    only_pretrained = build_comparison([load_run(a), load_run(b)], baselines=False)
    assert [r["features"] for r in only_pretrained.rows] == ["pretrained", "pretrained"]


def test_different_knn_temperature_is_flagged_in_the_knn_columns_only(tmp_path, capsys):
    a = make_run(tmp_path, "t007")
    other = json.loads(json.dumps(PROTOCOL))
    other["knn"]["temperature"] = 0.1
    b = make_run(tmp_path, "t010", protocol=other)
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "out")]) == 0
    captured = capsys.readouterr()
    assert "warning" in captured.err and "knn.temperature 0.07 vs 0.1" in captured.err
    assert "columns knn@20, knn@200 measured under 2 different protocols" in captured.err
    assert "[a] t007; [b] t010" in captured.err
    md = captured.out
    assert "| t007 | pretrained | simclr | small_resnet | digits | 15m | 901 | 163 | 50.0 [a] | 48.0 [a] | 55.0 |" in md
    assert "| t010 | pretrained | simclr | small_resnet | digits | 15m | 901 | 163 | 50.0 [b] | 48.0 [b] | 55.0 |" in md
    assert "> **Warning:** columns knn@20, knn@200 measured under 2 different protocols" in md
    rows = list(csv.DictReader(io.StringIO((tmp_path / "out" / "compare.csv").read_text())))
    assert rows[0]["protocol_mismatch"] == "knn_top1@20=[a] knn_top1@200=[a]"
    page = (tmp_path / "out" / "compare.html").read_text()
    assert 'class="warning"' in page and '<td class="mismatch">50.0 [b]</td>' in page
    with pytest.raises(ProtocolMismatch, match="knn.temperature"):
        compare_runs([a, b], strict=True)
    assert main(["compare", str(a), str(b), "--strict", "--out", str(tmp_path / "strict")]) == 2
    assert "refusing to compare" in capsys.readouterr().err
    assert not (tmp_path / "strict").exists()


def test_different_k_list_is_not_a_different_protocol_but_other_data_or_image_size_is(tmp_path):
    a = make_run(tmp_path, "k20-200")
    sweep = json.loads(json.dumps(PROTOCOL))
    sweep["knn"]["k"] = [1, 5, 10, 20, 50, 100, 200]  # knn@20 does not depend on which other k were swept
    b = make_run(tmp_path, "sweep", protocol=sweep)
    assert build_comparison([load_run(a), load_run(b)]).notes == []

    cifar = make_run(tmp_path, "other-data", data={**DATA, "test_fingerprint": "another-test-set"})
    notes = build_comparison([load_run(a), load_run(cifar)]).notes
    assert len(notes) == 1 and "knn@20, knn@200, linear" in notes[0] and "test data" in notes[0]

    bigger = make_run(tmp_path, "size64", protocol={**PROTOCOL, "image_size": 64})
    notes = build_comparison([load_run(a), load_run(bigger)]).notes
    assert notes and "image_size 32 vs 64" in notes[0]

    seeds = json.loads(json.dumps(PROTOCOL))
    seeds["fewshot"]["seeds"] = [0]
    few = make_run(tmp_path, "one-seed", protocol=seeds)
    notes = build_comparison([load_run(a), load_run(few)]).notes
    assert len(notes) == 1 and notes[0].startswith("column fewshot_5shot ") and "fewshot.seeds" in notes[0]


def test_results_written_before_fingerprints_and_missing_results(tmp_path, capsys):
    old = make_run(tmp_path, "old", data={"source": "digits", "train_images": 6000, "test_images": 1000})
    record = load_run(old)
    assert record.budget == "15m" and record.wall_time_s == 901.4
    assert build_comparison([record, load_run(old)]).notes == []
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="selfsup eval"):
        load_run(tmp_path / "empty")
    assert main(["compare", str(tmp_path / "empty")]) == 2
    assert "results.json" in capsys.readouterr().err


# What results.json held for every protocol at its defaults before the protocols became registered objects.
RECORD_BEFORE_THE_REGISTRY = {
    "knn": {"k": [20, 200], "temperature": 0.07, "similarity": "cosine"},
    "linear": "logistic regression on frozen standardized features, L2 chosen on a 10% validation split of the "
              "training labels",
    "fewshot": {"shots": [1, 5, 10], "seeds": [0, 1, 2, 3, 4], "classifier": "nearest centroid (SimpleShot CL2N)"},
    "lowlabel": {"fractions": [0.01, 0.1], "seed": 0, "classifier": "linear probe on the class-balanced subset"},
    "retrieval": {"recall_at": [1, 5], "similarity": "cosine", "queries": "test", "database": "train"},
    "kmeans": {"k": "number of classes", "split": "test", "seed": 0},
    "diagnostics": {"split": "test", "alignment_positives": "same-class pairs", "seed": 0},
    "linear_sgd": {"epochs": 4, "lr": 0.1, "batch_size": 256, "momentum": 0.9, "weight_decay": 0.0,
                   "crop_scale": [0.5, 1.0], "optimizer": "SGD, cosine schedule",
                   "classifier": "BatchNorm (no affine) + linear on frozen features",
                   "augmentation": "random resized crop + horizontal flip", "seed": 0},
    "finetune": {"epochs": 2, "lr": 0.002, "batch_size": 128, "weight_decay": 0.05, "warmup": 0.1,
                 "layer_decay": 0.75, "mixup": 0.0, "cutmix": 0.0, "label_smoothing": 0.1, "crop_scale": [0.5, 1.0],
                 "optimizer": "AdamW, linear warm-up + cosine",
                 "layer_decay_scope": "ViT backbones (others: one learning rate)",
                 "augmentation": "random resized crop + horizontal flip", "seed": 0},
}


def test_runs_evaluated_before_the_registry_compare_cleanly_with_new_ones(tmp_path):
    from selfsup.eval.protocol import ProtocolSettings

    names = tuple(RECORD_BEFORE_THE_REGISTRY)
    # The old protocol fitted the raw-pixel probe on every training image: eval.linear.raw_pixels_max_train=null.
    exact = {"linear": {"raw_pixels_max_train": None}}
    record = ProtocolSettings(protocols=names, options=exact).record()
    assert {name: record[name] for name in names} == RECORD_BEFORE_THE_REGISTRY
    old = make_run(tmp_path, "old", protocol={**RECORD_BEFORE_THE_REGISTRY, "protocols": ["knn", "linear", "fewshot"],
                                              "seed": 0, "image_size": 32})
    new = make_run(tmp_path, "new", protocol={
        **ProtocolSettings(protocols=("knn", "linear", "fewshot"), options=exact).record(), "image_size": 32})
    assert build_comparison([load_run(old), load_run(new)]).notes == []
    # With the default cap, the linear column says the protocols differ.
    capped = make_run(tmp_path, "capped", protocol={
        **ProtocolSettings(protocols=("knn", "linear", "fewshot")).record(), "image_size": 32})
    assert any("linear" in note for note in build_comparison([load_run(old), load_run(capped)]).notes)
