"""Known-answer tests of the evaluation protocols: kNN, linear probe, feature extraction."""
from __future__ import annotations

import functools
import json
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.nn as nn
import torchvision.transforms.v2.functional as TF

from selfsup.backbones import build_backbone
from selfsup.views.preprocess import eval_transform
from selfsup.eval.features import extract_features, feature_cache_key, raw_pixel_features
from selfsup.eval.knn import knn_accuracy, knn_classify
from selfsup.eval.linear import linear_probe


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These tests run many small tensor ops; with a second intra-op thread on a busy 2-core machine the
    OpenMP workers spin-wait against the main thread and the module runs ~10x slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# ----------------------------------------------------------------------------------------------- helpers


def gaussian_clusters(n_per_class, num_classes, dim, spread, seed):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(num_classes, dim, generator=g)
    centers = centers / centers.norm(dim=1, keepdim=True)
    labels = torch.arange(num_classes).repeat_interleave(n_per_class)
    features = centers[labels] + spread * torch.randn(len(labels), dim, generator=g)
    perm = torch.randperm(len(labels), generator=g)
    return features[perm], labels[perm]


def ternary_features(n, dim, nonzeros, seed):
    """Rows with exactly ``nonzeros`` entries of +-1 (``nonzeros`` a power of 4): after L2 normalisation
    every entry is +-2^-j, so every cosine similarity is computed exactly whatever the summation order.
    Similarities take few distinct values, so ties between neighbours are everywhere."""
    g = torch.Generator().manual_seed(seed)
    positions = torch.rand(n, dim, generator=g).argsort(dim=1)[:, :nonzeros]
    signs = torch.randint(0, 2, (n, nonzeros), generator=g).float() * 2 - 1
    return torch.zeros(n, dim).scatter_(1, positions, signs)


def naive_knn_vote_sets(train, train_labels, test, k, temperature, num_classes, rel_tol=1e-12):
    """Reference written independently: full float64 similarity matrix, Python sort of every query's
    neighbours by (similarity desc, index asc), math.exp weights. Returns, per query, the set of classes
    whose vote is within ``rel_tol`` of the best (a single class unless the top votes tie)."""
    tr = train.double() / train.double().norm(dim=1, keepdim=True)
    te = test.double() / test.double().norm(dim=1, keepdim=True)
    sims = (te @ tr.T).tolist()
    labels = train_labels.tolist()
    out = []
    for row in sims:
        order = sorted(range(len(row)), key=lambda j: (-row[j], j))[:k]
        top = row[order[0]]
        votes = [0.0] * num_classes
        for j in order:
            votes[labels[j]] += math.exp((row[j] - top) / temperature)
        best = max(votes)
        out.append({c for c, v in enumerate(votes) if v >= best * (1 - rel_tol)})
    return out


class TinySource:
    """Stand-in for a selfsup.data source: images of different sizes, labels, a fingerprint."""

    def __init__(self, n=7, channels=3, labels=True, seed=0, tag="a"):
        g = torch.Generator().manual_seed(seed)
        self.images = [
            torch.randint(0, 256, (channels, 12 + 3 * (i % 4), 10 + 5 * (i % 3)), dtype=torch.uint8, generator=g)
            for i in range(n)
        ]
        self.labels = np.arange(n, dtype=np.int64) % 3 if labels else None
        self.tag = tag

    def __len__(self):
        return len(self.images)

    def get_image(self, i):
        return self.images[i]

    def fingerprint(self):
        return f"tiny-{self.tag}-{len(self.images)}"


class CountingNet(nn.Module):
    """conv -> BN -> global pool -> (B, 8); counts forward calls."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.bn(self.conv(x)).mean(dim=(2, 3))


MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


# ---------------------------------------------------------------------------------------------------- kNN


def test_knn_separable_clusters_are_perfect():
    x, y = gaussian_clusters(60, 10, 32, spread=0.05, seed=0)
    acc = knn_accuracy(x[:500], y[:500], x[500:], y[500:], ks=(20, 200))
    assert acc == {20: 1.0, 200: 1.0}


def test_knn_random_labels_are_near_chance():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1500, 16, generator=g)
    y = torch.randint(0, 5, (1500,), generator=g)
    acc = knn_accuracy(x[:1000], y[:1000], x[1000:], y[1000:], ks=(20, 200))
    for k in (20, 200):
        assert abs(acc[k] - 0.2) < 0.07, acc


_CHUNK_CASE = dict(
    train=ternary_features(299, 32, 16, seed=2),
    test=ternary_features(40, 32, 16, seed=3),
    labels=torch.randint(0, 5, (299,), generator=torch.Generator().manual_seed(4)),
    ks=(1, 5, 20, 200),
)


@functools.lru_cache(maxsize=None)
def _chunk_case_reference():
    c = _CHUNK_CASE
    return {k: naive_knn_vote_sets(c["train"], c["labels"], c["test"], k, 0.07, 5) for k in c["ks"]}


@pytest.mark.parametrize(
    "query_chunk,train_chunk",
    [(1024, 65536), (40, 1), (1, 17), (3, 7), (7, 13), (16, 50), (50, 299), (5, 300)],
)
def test_knn_chunked_matches_naive_reference(query_chunk, train_chunk):
    # chunks smaller than k, chunks not dividing N, a single chunk, chunks larger than N
    c = _CHUNK_CASE
    preds = knn_classify(c["train"], c["labels"], c["test"], ks=c["ks"], query_chunk=query_chunk,
                         train_chunk=train_chunk)
    unchunked = knn_classify(c["train"], c["labels"], c["test"], ks=c["ks"], query_chunk=10**6, train_chunk=10**6)
    strict = 0
    for k in c["ks"]:
        for p, allowed in zip(preds[k].tolist(), _chunk_case_reference()[k]):
            assert p in allowed  # a single class unless the reference's top votes tie (within 1e-12)
            strict += len(allowed) == 1
        assert torch.equal(preds[k], unchunked[k])  # and bit for bit the same as without chunking
    assert strict >= 0.9 * len(c["ks"]) * len(c["test"])


def test_knn_k_larger_than_bank_uses_whole_bank():
    train = ternary_features(9, 32, 16, seed=5)
    test = ternary_features(20, 32, 16, seed=6)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 1])
    preds = knn_classify(train, labels, test, ks=(9, 50, 1000), train_chunk=4, query_chunk=6)
    assert set(preds) == {9, 50, 1000}
    assert torch.equal(preds[50], preds[9]) and torch.equal(preds[1000], preds[9])
    reference = naive_knn_vote_sets(train, labels, test, 9, 0.07, 3)
    assert all(p in allowed for p, allowed in zip(preds[50].tolist(), reference))


def test_knn_temperature_weighting_matters():
    # 3 close neighbours of class 0 (cos ~0.99) against 10 far ones of class 1 (cos 0.5)
    query = torch.tensor([[1.0, 0.0, 0.0]])
    close = torch.tensor([[1.0, 0.14, 0.0], [1.0, 0.0, 0.14], [1.0, -0.14, 0.0]])
    far = torch.tensor([[0.5, math.sqrt(0.75) * math.cos(a), math.sqrt(0.75) * math.sin(a)] for a in range(10)])
    train = torch.cat([close, far])
    labels = torch.tensor([0] * 3 + [1] * 10)
    assert knn_classify(train, labels, query, ks=(13,), temperature=0.07)[13].item() == 0
    assert knn_classify(train, labels, query, ks=(13,), temperature=10.0)[13].item() == 1


def test_knn_ties_are_deterministic():
    # four identical bank vectors: the earliest wins a neighbour tie; equal votes go to the smaller class
    train = torch.ones(4, 8)
    labels = torch.tensor([3, 1, 2, 0])
    query = torch.ones(2, 8)
    for train_chunk in (1, 3, 4):
        preds = knn_classify(train, labels, query, ks=(1, 2, 4), train_chunk=train_chunk)
        assert preds[1].tolist() == [3, 3]
        assert preds[2].tolist() == [1, 1]
        assert preds[4].tolist() == [0, 0]


def test_knn_inputs_checked():
    x = torch.randn(10, 4)
    y = torch.zeros(10, dtype=torch.long)
    with pytest.raises(ValueError, match="NaN"):
        knn_classify(torch.full((10, 4), float("nan")), y, x)
    with pytest.raises(ValueError, match="widths"):
        knn_classify(x, y, torch.randn(3, 5))
    with pytest.raises(ValueError, match="labels"):
        knn_classify(x, y[:5], x)
    # numpy inputs and an empty query set are fine
    preds = knn_classify(x.numpy(), y.numpy(), x[:0].numpy(), ks=(3,))
    assert preds[3].shape == (0,) and preds[3].dtype == torch.int64


@pytest.mark.slow
def test_knn_large_bank_bounded_memory_and_matches_reference():
    """200,000 x 2,000 queries of dim 128 in small chunks, in a fresh process whose peak RSS we can read:
    the peak must grow by far less than the 1.6 GB a full similarity matrix would take, and the predictions
    on a subsample of queries must match a full-matrix reference. (2,000 rather than 20,000 queries keeps
    the test under a minute on one core; the memory bound does not depend on the number of queries.)"""
    script = textwrap.dedent(
        """
        import json, resource, sys, torch
        sys.path.insert(0, sys.argv[1])
        from test_eval_protocols import ternary_features
        from selfsup.eval.knn import knn_classify
        train = torch.empty(200_000, 128)
        for i in range(0, 200_000, 10_000):  # in blocks, to keep the generation's own peak small
            train[i:i + 10_000] = ternary_features(10_000, 128, 64, seed=10 + i)
        test = ternary_features(2_000, 128, 64, seed=9)
        labels = torch.randint(0, 100, (200_000,), generator=torch.Generator().manual_seed(12))
        knn_classify(train[:1000], labels[:1000], test[:10], ks=(20,))  # warm-up: allocator, kernels
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        preds = knn_classify(train, labels, test, ks=(20, 200), query_chunk=128, train_chunk=8192)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        sub = torch.arange(0, 2_000, 20)
        sims = torch.nn.functional.normalize(test[sub], dim=1) @ torch.nn.functional.normalize(train, dim=1).T
        order = sims.sort(dim=1, descending=True, stable=True)  # stable: equal sims keep index order
        ok = {}
        for k in (20, 200):
            idx, val = order.indices[:, :k], order.values[:, :k].double()
            w = torch.exp((val - val[:, :1]) / 0.07)
            votes = torch.zeros(len(sub), 100, dtype=torch.float64).scatter_add_(1, labels[idx], w)
            ok[k] = int((votes.argmax(1) == preds[k][sub]).sum())
        print(json.dumps({"extra_kb": after - before, "agree": ok, "n": len(sub)}))
        """
    )
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run(
        [sys.executable, "-c", script, os.path.dirname(__file__)],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    # chunk math: 128 x 8192 float32 sims (4 MiB) plus masks and 128 x 200 lists; a full matrix is 1.6 GB
    assert result["extra_kb"] < 200 * 1024, result
    assert result["agree"] == {"20": result["n"], "200": result["n"]}, result


# ------------------------------------------------------------------------------------------- linear probe


def test_linear_probe_separable_clusters_are_perfect():
    x, y = gaussian_clusters(50, 5, 24, spread=0.05, seed=20)
    r = linear_probe(x[:200], y[:200], x[200:], y[200:])
    assert r["top1"] == 1.0 and r["val_top1"] == 1.0
    assert set(r) == {"top1", "weight_decay", "val_top1"}


def test_linear_probe_random_labels_are_near_chance():
    g = torch.Generator().manual_seed(21)
    x = torch.randn(1200, 32, generator=g)
    y = torch.randint(0, 4, (1200,), generator=g)
    r = linear_probe(x[:800], y[:800], x[800:], y[800:])
    assert abs(r["top1"] - 0.25) < 0.08, r


def _noisy_high_dim(seed=0, n=800, dim=600):
    """Two classes, a weak signal spread over ``dim`` dims; with the defaults 480 samples fit 600 weights,
    which overfits unless regularised. Three quarters train, one quarter test."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    direction = torch.randn(dim, generator=g)
    x = torch.randn(n, dim, generator=g) + (y[:, None] * 2 - 1) * direction / direction.norm()
    split = n * 3 // 4
    return x[:split], y[:split], x[split:], y[split:]


def test_linear_probe_regularises_more_on_a_noisy_high_dimensional_problem():
    x, y = gaussian_clusters(100, 4, 16, spread=0.1, seed=22)
    clean = linear_probe(x[:300], y[:300], x[300:], y[300:], val_fraction=0.2)
    noisy = linear_probe(*_noisy_high_dim(), val_fraction=0.2)
    assert clean["top1"] == 1.0
    assert noisy["weight_decay"] > clean["weight_decay"], (clean, noisy)
    assert noisy["weight_decay"] >= 1e-2


def test_linear_probe_never_looks_at_test_labels_and_is_deterministic():
    xtr, ytr, xte, yte = _noisy_high_dim(seed=1, n=500, dim=50)
    a = linear_probe(xtr, ytr, xte, yte, seed=3)
    b = linear_probe(xtr, ytr, xte, yte, seed=3)
    assert a == b
    permuted = yte[torch.randperm(len(yte), generator=torch.Generator().manual_seed(0))]
    c = linear_probe(xtr, ytr, xte, permuted, seed=3)
    assert c["weight_decay"] == a["weight_decay"] and c["val_top1"] == a["val_top1"]
    assert c["top1"] != a["top1"]
    # all-wrong test labels (even out of range) only change top1
    d = linear_probe(xtr, ytr, xte, torch.full_like(yte, 7), seed=3)
    assert d["top1"] == 0.0 and d["weight_decay"] == a["weight_decay"]


def test_linear_probe_grid_and_validation_options():
    x, y = gaussian_clusters(30, 3, 8, spread=0.3, seed=23)
    r = linear_probe(x[:60], y[:60], x[60:], y[60:], weight_decays=[0.5])
    assert r["weight_decay"] == 0.5 and 0 <= r["val_top1"] <= 1
    r = linear_probe(x[:60], y[:60], x[60:], y[60:], weight_decays=[0.5], val_fraction=0.0)
    assert math.isnan(r["val_top1"])
    with pytest.raises(ValueError, match="validation"):
        linear_probe(x[:60], y[:60], x[60:], y[60:], val_fraction=0.0)


# --------------------------------------------------------------------------------------- feature extraction


def test_eval_transform_shape_and_normalisation():
    image = torch.full((3, 20, 40), 255, dtype=torch.uint8)
    out = eval_transform(image, 16, MEAN, STD)
    assert out.shape == (3, 16, 16) and out.dtype == torch.float32
    expected = (1 - torch.tensor(MEAN)) / torch.tensor(STD)
    assert torch.allclose(out.mean(dim=(1, 2)), expected)
    assert eval_transform(torch.zeros(1, 9, 9, dtype=torch.uint8), 8, MEAN, STD).shape == (3, 8, 8)
    with pytest.raises(ValueError, match="channels"):
        eval_transform(torch.zeros(2, 9, 9, dtype=torch.uint8), 8, MEAN, STD)


def test_eval_transform_of_an_image_already_at_its_size_is_the_resized_path_exactly():
    """Images already image_size square skip resize and crop (a per-image cost larger than decoding CIFAR's
    JPEGs); the answer is what resize + crop give."""
    image = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    resized = TF.center_crop(TF.resize(image, [32], antialias=True), [32, 32])
    expected = TF.normalize(resized.float().div(255.0), list(MEAN), list(STD))
    assert torch.equal(eval_transform(image, 32, MEAN, STD), expected)


def test_extract_features_shape_order_labels_and_mode():
    source = TinySource(n=7)
    net = CountingNet()
    net.train()
    net.bn.eval()  # a mixed state must survive
    feats, labels = extract_features(net, source, image_size=16, mean=MEAN, std=STD, batch_size=3)
    assert feats.shape == (7, 8) and feats.dtype == torch.float32
    assert labels.dtype == torch.int64 and labels.tolist() == [0, 1, 2, 0, 1, 2, 0]
    assert net.calls == 3  # ceil(7 / 3) batches
    assert net.training and not net.bn.training and net.conv.training
    net.eval()
    with torch.no_grad():
        one_by_one = torch.cat([net(eval_transform(source.get_image(i), 16, MEAN, STD)[None]) for i in range(7)])
    assert torch.allclose(feats, one_by_one, atol=1e-5)  # source order, eval-mode BN

    unlabeled, none = extract_features(net, TinySource(n=4, labels=False), image_size=16, mean=MEAN, std=STD)
    assert none is None and unlabeled.shape == (4, 8)


def test_extract_features_cache(tmp_path):
    source = TinySource(n=5)
    net = CountingNet()
    kw = dict(image_size=16, mean=MEAN, std=STD, batch_size=2, cache_dir=tmp_path)
    first, labels = extract_features(net, source, **kw)
    calls = net.calls
    assert calls == 3 and len(list(tmp_path.glob("*.pt"))) == 1
    again, labels2 = extract_features(net, source, **kw)
    assert net.calls == calls  # cache hit: backbone not run
    assert torch.equal(first, again) and torch.equal(labels, labels2)

    key = feature_cache_key(net, source, image_size=16, mean=MEAN, std=STD)
    with torch.no_grad():
        net.conv.weight[0, 0, 0, 0] += 1.0
    assert feature_cache_key(net, source, image_size=16, mean=MEAN, std=STD) != key
    changed, _ = extract_features(net, source, **kw)
    assert net.calls > calls and not torch.allclose(changed, first)
    assert len(list(tmp_path.glob("*.pt"))) == 2
    # data, transform and buffers are part of the key too
    assert feature_cache_key(net, TinySource(n=5, tag="b"), image_size=16, mean=MEAN, std=STD) != key
    assert feature_cache_key(net, source, image_size=17, mean=MEAN, std=STD) != key
    net.bn.running_mean += 1
    assert feature_cache_key(net, source, image_size=16, mean=MEAN, std=STD) != key
    # an option that changes the features and not the weights (how the tokens are pooled) changes the key
    torch.manual_seed(0)
    avg = build_backbone("table_transformer_tiny", 1, cardinalities=[0, 0], depth=1)
    torch.manual_seed(0)
    flat = build_backbone("table_transformer_tiny", 1, cardinalities=[0, 0], depth=1, global_pool="flatten")
    assert avg.state_dict().keys() == flat.state_dict().keys()
    assert feature_cache_key(avg, source, image_size=16, mean=MEAN, std=STD) != feature_cache_key(
        flat, source, image_size=16, mean=MEAN, std=STD)


def test_raw_pixel_features():
    source = TinySource(n=4)
    feats, labels = raw_pixel_features(source, image_size=8, mean=MEAN, std=STD)
    assert feats.shape == (4, 3 * 8 * 8) and feats.dtype == torch.float32
    assert labels.tolist() == [0, 1, 2, 0]
    assert torch.equal(feats[2], eval_transform(source.get_image(2), 8, MEAN, STD).reshape(-1))


def test_raw_pixel_linear_probe_fits_on_a_capped_class_balanced_subset():
    from selfsup.eval.display import format_table
    from selfsup.eval.linear import stratified_subset
    from selfsup.eval.protocol import ProtocolSettings, score_features

    labels = torch.arange(200) % 4
    keep = stratified_subset(labels, 40, seed=0)
    assert keep.numel() == 40 and torch.bincount(labels[keep]).tolist() == [10, 10, 10, 10]
    assert torch.equal(stratified_subset(labels, 40, seed=0), keep)  # deterministic
    torch.manual_seed(0)
    train, test = torch.randn(200, 16) + labels[:, None].float(), torch.randn(40, 16) + (torch.arange(40) % 4)[:, None]
    settings = ProtocolSettings(protocols=("linear",), options={"linear": {"raw_pixels_max_train": 40}})
    raw = score_features(train, labels, test, torch.arange(40) % 4, settings=settings, raw_pixels=True)
    backbone = score_features(train, labels, test, torch.arange(40) % 4, settings=settings)
    assert raw["linear_train_subset"] == 40 and "linear_train_subset" not in backbone  # only the raw-pixel row
    assert "class-balanced 40 training images" in format_table({"pretrained": backbone, "raw_pixels": raw})
