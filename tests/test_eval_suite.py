"""Known-answer tests of the evaluation suite: few-shot, low-label, retrieval, k-means, diagnostics, the protocol
selection, and `selfsup eval` on any backbone (reproducing a run's numbers from its exported backbone)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from selfsup.cli import main
from selfsup.config import ConfigError, build_config
from selfsup.eval.clustering import kmeans_scores
from selfsup.eval.diagnostics import alignment, representation_diagnostics, same_class_pairs, uniformity
from selfsup.eval.fewshot import (fewshot_accuracy, fewshot_split, fraction_name, lowlabel_accuracy,
                                  lowlabel_subset)
from selfsup.eval.display import format_table
from selfsup.eval.protocol import ProtocolSettings, evaluate_backbone, score_features
from selfsup.eval.protocols import all_protocols
from selfsup.eval.retrieval import retrieval_metrics
from selfsup.views.preprocess import Preprocess


def clusters(n_per_class, num_classes, dim, spread, seed):
    """Well-separated Gaussian clusters around random unit centres, shuffled."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.nn.functional.normalize(torch.randn(num_classes, dim, generator=g), dim=1)
    labels = torch.arange(num_classes).repeat_interleave(n_per_class)
    features = centers[labels] + spread * torch.randn(len(labels), dim, generator=g)
    perm = torch.randperm(len(labels), generator=g)
    return features[perm], labels[perm]


@pytest.fixture(scope="module")
def separable():
    x, y = clusters(60, 10, 32, spread=0.05, seed=0)
    return x[:400], y[:400], x[400:], y[400:]


@pytest.fixture(scope="module")
def unrelated():
    """Random features with random labels: every protocol should be near chance (10 classes)."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1200, 32, generator=g)
    y = torch.randint(0, 10, (1200,), generator=g)
    return x[:1000], y[:1000], x[1000:], y[1000:]


# -------------------------------------------------------------------------------------------------- splits


def test_fewshot_split_is_exactly_k_per_class_and_fixed_by_the_seed():
    labels = torch.arange(7).repeat_interleave(torch.tensor([12, 30, 11, 50, 10, 25, 13]))
    labels = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(3))]
    for k in (1, 5, 10):
        idx = fewshot_split(labels, k, seed=0)
        assert torch.equal(torch.bincount(labels[idx], minlength=7), torch.full((7,), k))
        assert idx.unique().numel() == idx.numel() == 7 * k
        assert torch.equal(idx, fewshot_split(labels.numpy(), k, seed=0))  # same seed, same split
        assert not torch.equal(idx, fewshot_split(labels, k, seed=1))  # another seed, another split
    # Same seed: the 1-shot examples are among the 5-shot ones, which are among the 10-shot ones.
    one, five, ten = (set(fewshot_split(labels, k, seed=4).tolist()) for k in (1, 5, 10))
    assert one <= five <= ten
    with pytest.raises(ValueError, match="class 4 has 10 training samples"):
        fewshot_split(labels, 11, seed=0)
    with pytest.raises(ValueError, match="positive integer"):
        fewshot_split(labels, 0, seed=0)


def test_lowlabel_subset_sizes_are_class_balanced():
    sizes = torch.tensor([100, 200, 300, 1000, 40])
    labels = torch.arange(5).repeat_interleave(sizes)
    for fraction, expected in ((0.01, [1, 2, 3, 10, 1]), (0.1, [10, 20, 30, 100, 4]), (1.0, sizes.tolist())):
        idx = lowlabel_subset(labels, fraction, seed=0)
        assert torch.bincount(labels[idx], minlength=5).tolist() == expected
        assert torch.equal(idx, lowlabel_subset(labels, fraction, seed=0))
    assert lowlabel_subset(labels, 0.1).numel() == 164  # about 10% of the 1640 labels
    assert [fraction_name(p) for p in (0.01, 0.1, 0.005)] == ["1pct", "10pct", "0.5pct"]
    with pytest.raises(ValueError):
        lowlabel_subset(labels, 0.0)


# ------------------------------------------------------------------------------------- few-shot / low-label


def test_fewshot_separable_is_perfect_random_is_chance(separable, unrelated):
    scores = fewshot_accuracy(*separable, shots=(1, 5, 10), seeds=range(5))
    for k in (1, 5, 10):
        assert scores[k]["mean"] == 1.0 and scores[k]["std"] == 0.0 and len(scores[k]["per_seed"]) == 5
    logistic = fewshot_accuracy(*separable, shots=(1, 5), seeds=(0, 1), classifier="logistic")
    assert logistic[1]["mean"] == 1.0 and logistic[5]["mean"] == 1.0
    chance = fewshot_accuracy(*unrelated, shots=(5,), seeds=range(5))[5]
    assert abs(chance["mean"] - 0.1) < 0.05 and chance["std"] > 0
    assert fewshot_accuracy(*unrelated, shots=(5,), seeds=range(5)) == fewshot_accuracy(*unrelated, shots=(5,),
                                                                                          seeds=range(5))


def test_lowlabel_separable_is_perfect_random_is_chance(separable, unrelated):
    scores = lowlabel_accuracy(*separable, fractions=(0.01, 0.1))
    assert scores[0.01]["labels"] == 10 and scores[0.1]["labels"] == 40  # 40 per class -> 1 and 4 per class
    assert scores[0.01]["top1"] == 1.0 and scores[0.1]["top1"] == 1.0
    chance = lowlabel_accuracy(*unrelated, fractions=(0.1,))[0.1]["top1"]
    assert abs(chance - 0.1) < 0.07


# ------------------------------------------------------------------------------------------------ retrieval


def test_retrieval_separable_is_perfect_random_is_chance(separable, unrelated):
    train, train_y, test, test_y = separable
    assert retrieval_metrics(train, train_y, test, test_y) == {"recall@1": 1.0, "recall@5": 1.0, "map@r": 1.0}
    scores = retrieval_metrics(*unrelated[:4], recall_at=(1, 5))
    assert abs(scores["recall@1"] - 0.1) < 0.06
    assert 0.3 < scores["recall@5"] < 0.6  # 1 - 0.9^5 = 0.41 for independent neighbours
    assert scores["map@r"] < 0.15


def test_retrieval_hand_computed_ranking_and_chunking():
    # Query along x; database items at decreasing cosine: A (1.0), B (0.9), A (0.8), B (0.1), C (-1).
    angles = torch.tensor([0.0, math.acos(0.9), math.acos(0.8), math.acos(0.1), math.pi])
    database = torch.stack([angles.cos(), angles.sin()], dim=1)
    db_labels = torch.tensor([0, 1, 0, 1, 2])
    queries = torch.tensor([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0]])
    query_labels = torch.tensor([0, 1, 2])
    scores = retrieval_metrics(database, db_labels, queries, query_labels, recall_at=(1, 2, 5))
    # Query 0 (class A, R=2): ranks A, B -> AP@R = (1/1)/2 = 0.5. Query 1 (class B, R=2): A, B -> (1/2)/2 = 0.25.
    # Query 2 (class C, R=1): C first -> 1.  Recall@1: queries 0 and 2; @2: all.
    assert scores["recall@1"] == pytest.approx(2 / 3) and scores["recall@2"] == 1.0 and scores["recall@5"] == 1.0
    assert scores["map@r"] == pytest.approx((0.5 + 0.25 + 1.0) / 3)
    one_row_at_a_time = retrieval_metrics(database, db_labels, queries, query_labels, recall_at=(1, 2, 5),
                                          block_elements=1)
    assert one_row_at_a_time == pytest.approx(scores)


# ----------------------------------------------------------------------------------------------- clustering


def test_kmeans_separable_is_perfect_random_is_zero(separable, unrelated):
    x, y = separable[2], separable[3]
    assert kmeans_scores(x, y) == {"nmi": 1.0, "ari": 1.0}
    # Labels renamed: a clustering equal to the classes up to renaming still scores 1.
    assert kmeans_scores(x, (y + 3) % 10) == {"nmi": 1.0, "ari": 1.0}
    # NMI is not corrected for chance: with 1000 samples in 10 clusters it stays a little above 0.
    scores = kmeans_scores(unrelated[0], unrelated[1], n_init=2)
    assert scores["nmi"] < 0.05 and abs(scores["ari"]) < 0.02


# ---------------------------------------------------------------------------------------------- diagnostics


def test_alignment_and_uniformity_known_values():
    x = torch.randn(50, 16, generator=torch.Generator().manual_seed(0))
    assert alignment(x, 3 * x) == pytest.approx(0.0, abs=1e-6)  # same direction: aligned
    assert alignment(x, -x) == pytest.approx(4.0, abs=1e-5)  # antipodal: ||2u||^2
    collapsed = torch.ones(100, 8)
    assert uniformity(collapsed) == pytest.approx(0.0, abs=1e-9)
    spread = torch.randn(2000, 512, generator=torch.Generator().manual_seed(1))
    # On a high-dimensional sphere ||x - y||^2 concentrates at 2: log E exp(-2 * 2) = -4 (a little above, Jensen).
    assert -4.0 <= uniformity(spread) < -3.95
    assert uniformity(spread, max_samples=300) == uniformity(spread, max_samples=300)  # fixed subsample


def test_same_class_pairs_and_representation_diagnostics(separable):
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 3, 3])
    anchors, partners = same_class_pairs(labels)
    assert torch.equal(labels[anchors], labels[partners]) and bool((anchors != partners).all())
    assert sorted(anchors.tolist()) == [0, 1, 2, 3, 4, 6, 7]  # the singleton class 2 is left out
    x, y = separable[2], separable[3]
    diag = representation_diagnostics(x, y)
    assert set(diag) == {"effective_rank", "normalized_std", "uniformity", "alignment"}
    # Noise of std 0.05 in 32 dims: E||x - y||^2 ~ 2 * 32 * 0.05^2 = 0.16 within a class, ~2 across classes.
    assert 0.1 < diag["alignment"] < 0.25 and diag["uniformity"] < -2
    shuffled = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(0))]
    assert representation_diagnostics(x, shuffled)["alignment"] > 1.5
    assert 5 < diag["effective_rank"] <= 32


# -------------------------------------------------------------------------------------- protocol selection


def test_protocol_runs_a_knn_sweep_and_every_selected_protocol(separable):
    settings = ProtocolSettings(protocols=all_protocols(), options={"knn": {"k": [1, 5, 10, 20, 50, 100, 200]},
                                                                    "fewshot": {"seeds": [0, 1]}})
    scores = score_features(*separable, settings=settings)
    for k in (1, 5, 10, 20, 50, 100, 200):
        assert scores[f"knn_top1@{k}"] == 1.0
    perfect = ["linear_top1", "fewshot_1shot_top1", "fewshot_10shot_top1", "lowlabel_1pct_top1",
               "lowlabel_10pct_top1", "retrieval_recall@1", "retrieval_recall@5", "retrieval_map@r",
               "kmeans_nmi", "kmeans_ari"]
    assert {m: scores[m] for m in perfect} == {m: 1.0 for m in perfect}
    assert {"effective_rank", "alignment", "uniformity", "normalized_std", "fewshot_5shot_top1_std"} <= set(scores)
    assert set(score_features(*separable)) == {"knn_top1@20", "knn_top1@200", "linear_top1", "linear_weight_decay"}
    table = format_table({"pretrained": scores})
    for label in ("knn@1 ", "knn@200", "fewshot_5shot", "100.0 ± 0.0", "retrieval_map@r", "kmeans_ari",
                  "uniformity (raw)"):
        assert label in table
    assert table.index("knn@5 ") < table.index("knn@10 ") < table.index("knn@200")  # numeric order of k
    with pytest.raises(ValueError, match="unknown evaluation protocol"):
        ProtocolSettings(protocols=("knn", "zero-shot"))


def test_eval_config_keys():
    cfg = build_config("demo", ["eval.protocols=[knn,fewshot,retrieval]", "eval.knn.k=[1,5,10,20,50,100,200]"])
    settings = ProtocolSettings.from_eval_config(cfg.eval, cfg.seed)
    assert settings.protocols == ("knn", "fewshot", "retrieval") and settings.of("knn").k[-1] == 200
    assert build_config("demo").eval.protocols == ["knn", "linear"]  # the protocols registered as default
    with pytest.raises(ConfigError, match="eval.protocols.*Did you mean 'fewshot'"):
        build_config("demo", ["eval.protocols=[knn,fewshots]"])
    with pytest.raises(ConfigError, match="Did you mean 'zero_shot'"):
        build_config("demo", ["eval.protocols=[knn,zeroshot]"])
    with pytest.raises(ConfigError, match="eval.lowlabel.fractions"):
        build_config("demo", ["eval.lowlabel.fractions=[0]"])
    with pytest.raises(ConfigError, match="unknown config key 'eval.knn.kk'. Did you mean 'eval.knn.k'"):
        build_config("demo", ["eval.knn.kk=5"])
    # The flat keys of before the per-protocol sections say where they went.
    for old, new in (("eval.knn_k=[5]", "eval.knn_k is now eval.knn.k"),
                     ("eval.knn_temperature=0.1", "eval.knn_temperature is now eval.knn.temperature"),
                     ("eval.fewshot_shots=[1]", "eval.fewshot_shots is now eval.fewshot.shots"),
                     ("eval.fewshot_seeds=[0]", "eval.fewshot_seeds is now eval.fewshot.seeds"),
                     ("eval.lowlabel_fractions=[0.1]", "eval.lowlabel_fractions is now eval.lowlabel.fractions"),
                     ("eval.finetune_lr=0.1", "eval.finetune_lr is now eval.finetune.lr"),
                     ("eval.linear_sgd_epochs=1", "eval.linear_sgd_epochs is now eval.linear_sgd.epochs")):
        with pytest.raises(ConfigError, match=old.split("=")[0]) as error:
            build_config("demo", [old])
        assert new in str(error.value)
    with pytest.raises(ConfigError) as error:
        build_config("demo", ["eval.linear=false"])
    assert "eval.linear: false` used to drop that protocol" in str(error.value)
    assert "eval.protocols=[knn]" in str(error.value)


# --------------------------------------------------------------------------------------- eval any backbone




def coloured_squares(n_per_class, seed):
    """4 classes of 16x16 RGB images: a class colour plus noise (raw pixels separate them)."""
    rng = np.random.default_rng(seed)
    colours = np.array([[230, 30, 30], [30, 230, 30], [30, 30, 230], [230, 230, 30]], dtype=np.float32)
    labels = np.repeat(np.arange(4), n_per_class)
    images = colours[labels][:, :, None, None] + rng.normal(0, 20, (len(labels), 3, 16, 16))
    return np.clip(images, 0, 255).astype(np.uint8), labels.astype(np.int64)


@pytest.fixture(scope="module")
def tiny_npz(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "squares.npz"
    images, labels = coloured_squares(24, seed=0)
    test_images, test_labels = coloured_squares(8, seed=1)
    np.savez(path, images=images.transpose(0, 2, 3, 1), labels=labels, test_images=test_images.transpose(0, 2, 3, 1),
             test_labels=test_labels)
    return path


TINY_TRAIN = ["backbone.options={widths: [8, 8, 16, 16], stem_stride: 1}", "method_options.projector_hidden_dim=16",
              "method_options.projector_out_dim=16", "train.budget=null", "train.max_steps=2", "train.batch_size=16",
              "train.progress=false", "data.num_workers=0", "data.image_size=16"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_npz):
    runs = tmp_path_factory.mktemp("runs")
    assert main(["train", "demo", "--name", "tiny", f"runs_dir={runs}", f"data.source={tiny_npz}", *TINY_TRAIN]) == 0
    return runs / "tiny"


def _results(folder):
    return json.loads((folder / "results.json").read_text())


def test_eval_of_exported_backbone_reproduces_the_run(tiny_run, tiny_npz, tmp_path, capsys):
    run = _results(tiny_run)
    assert set(run["results"]) == {"pretrained", "random_init", "raw_pixels"}
    assert run["data"]["test_fingerprint"] and run["protocol"]["protocols"] == ["knn", "linear"]
    exported = tmp_path / "exported.safetensors"
    assert main(["export", str(tiny_run), "--format", "safetensors", "--out", str(exported)]) == 0
    for backbone in (str(tiny_run / "backbone.safetensors"), str(exported), str(tiny_run / "backbone.json")):
        out = tmp_path / f"eval-{len(backbone)}-{backbone[-4:]}"
        assert main(["eval", "--backbone", backbone, "--data", str(tiny_npz), "--out", str(out)]) == 0
        again = _results(out)
        assert again["results"] == run["results"], backbone
        assert again["protocol"] == run["protocol"]
        assert again["data"]["test_fingerprint"] == run["data"]["test_fingerprint"]
    # The run's own `selfsup eval RUN` with more protocols keeps the kNN numbers and adds the others.
    assert main(["eval", str(tiny_run), "--protocols", "knn,linear,fewshot,retrieval,kmeans,diagnostics",
                 "eval.fewshot.seeds=[0,1]"]) == 0
    more = _results(tiny_run)["results"]
    for row, scores in run["results"].items():
        assert {k: more[row][k] for k in scores} == scores
        assert {"fewshot_5shot_top1", "retrieval_map@r", "kmeans_nmi", "uniformity"} <= set(more[row])
    assert "fewshot_10shot" in capsys.readouterr().out
    assert main(["eval", str(tiny_run), "--out", str(tmp_path / "x")]) == 2
    assert "--out are for --backbone" in capsys.readouterr().err


def test_eval_any_timm_backbone_with_weights(tiny_npz, tmp_path, capsys):
    from selfsup.backbones import build_backbone

    torch.manual_seed(123)
    model = build_backbone("timm:test_resnet", 3)
    plain_timm = tmp_path / "test_resnet.safetensors"  # a timm state dict (no selfsup "model." prefix) + a head
    save_file({**{k: v.contiguous() for k, v in model.model.state_dict().items()},
               "fc.weight": torch.zeros(5, model.num_features)}, plain_timm)
    args = ["eval", "--backbone", "timm:test_resnet", "--data", str(tiny_npz), "--image-size", "16"]
    assert main([*args, "--weights", str(plain_timm), "--out", str(tmp_path / "a"), "--protocols", "knn"]) == 0
    assert "ignored 1 tensor(s)" in capsys.readouterr().err
    trained = _results(tmp_path / "a")
    assert set(trained["results"]) == {"pretrained", "random_init", "raw_pixels"}
    assert trained["protocol"]["image_size"] == 16
    mean, std = list(model.model.pretrained_cfg["mean"]), list(model.model.pretrained_cfg["std"])
    assert (trained["run"]["mean"], trained["run"]["std"]) == (mean, std)  # timm's normalisation for the model

    direct = evaluate_backbone(model, _splits_of(tiny_npz), preprocess=Preprocess(16, mean, std),
                               settings=ProtocolSettings(protocols=("knn",)), baselines=False, log=lambda m: None)
    assert direct["pretrained"] == trained["results"]["pretrained"]

    assert main([*args, "--out", str(tmp_path / "b"), "--protocols", "knn"]) == 0  # no weights: random init
    assert set(_results(tmp_path / "b")["results"]) == {"random_init", "raw_pixels"}

    wrong = tmp_path / "wrong.safetensors"
    save_file({"conv.weight": torch.zeros(3, 3, 3, 3)}, wrong)
    assert main([*args, "--weights", str(wrong), "--out", str(tmp_path / "c")]) == 2
    assert "does not fit timm:test_resnet" in capsys.readouterr().err
    assert main(["eval"]) == 2 and "--backbone" in capsys.readouterr().err


def _splits_of(npz):
    from selfsup.data import open_data

    return open_data(str(npz))


def test_compare_a_run_with_its_standalone_eval(tiny_run, tiny_npz, tmp_path, capsys):
    out = tmp_path / "standalone"
    assert main(["eval", "--backbone", str(tiny_run), "--data", str(tiny_npz), "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["compare", str(tiny_run), str(out), "--out", str(tmp_path / "cmp")]) == 0
    captured = capsys.readouterr()
    assert "warning" not in captured.err  # kNN, linear under the same protocol; the other columns only in the run
    assert "| tiny | pretrained | simclr | small_resnet |" in captured.out
    assert (tmp_path / "cmp" / "compare.html").exists()
