"""The evaluation protocol (DESIGN.md): kNN and linear probe on frozen features, always beside the
random-init and raw-pixel baselines so a user sees what pre-training bought."""
from __future__ import annotations

import copy

import torch

from selfsup.eval.features import extract_features, raw_pixel_features
from selfsup.eval.knn import knn_accuracy
from selfsup.eval.linear import linear_probe

ROWS = {"pretrained": "pretrained", "random_init": "random-init", "raw_pixels": "raw pixels"}


def random_init_like(backbone: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """The same architecture with fresh random weights (the random-init baseline)."""
    from selfsup.backbones import backbone_from_spec

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return backbone_from_spec(copy.deepcopy(backbone.spec))


def score_features(train, train_labels, test, test_labels, *, ks, temperature, linear: bool, seed: int) -> dict:
    scores = {f"knn_top1@{k}": acc for k, acc in
              knn_accuracy(train, train_labels, test, test_labels, ks=tuple(ks), temperature=temperature).items()}
    if linear:
        probe = linear_probe(train, train_labels, test, test_labels, seed=seed)
        scores.update({"linear_top1": probe["top1"], "linear_weight_decay": probe["weight_decay"]})
    return scores


def evaluate_backbone(backbone, splits, *, image_size: int, mean, std, ks=(20, 200), temperature: float = 0.07,
                      linear: bool = True, baselines: bool = True, batch_size: int = 256, device="cpu",
                      cache_dir=None, seed: int = 0, log=print) -> dict:
    """Scores of ``backbone`` (and the baselines) trained on ``splits.train`` labels, tested on ``splits.test``."""
    if splits.test is None or splits.train.labels is None:
        raise ValueError("evaluation needs labels: a labelled held-out split (class sub-folders, npz labels, or an "
                         "embedded dataset)")
    kw = dict(image_size=image_size, mean=mean, std=std)
    extract = dict(batch_size=batch_size, device=device, cache_dir=cache_dir, **kw)
    candidates = {"pretrained": backbone}
    if baselines:
        candidates["random_init"] = random_init_like(backbone, seed)
    results = {}
    for row, model in candidates.items():
        log(f"evaluating {ROWS[row]} features ...")
        train, train_y = extract_features(model, splits.train, **extract)
        test, test_y = extract_features(model, splits.test, **extract)
        results[row] = score_features(train, train_y, test, test_y, ks=ks, temperature=temperature, linear=linear, seed=seed)
    if baselines:
        log("evaluating raw pixels ...")
        train, train_y = raw_pixel_features(splits.train, **kw)
        test, test_y = raw_pixel_features(splits.test, **kw)
        results["raw_pixels"] = score_features(train, train_y, test, test_y, ks=ks, temperature=temperature,
                                               linear=linear, seed=seed)
    return results


def format_table(results: dict) -> str:
    metrics = [m for m in ("knn_top1@20", "knn_top1@200", "linear_top1") if any(m in r for r in results.values())]
    metrics += sorted({m for r in results.values() for m in r if m.startswith("knn_top1@")} - set(metrics))
    header = f"{'features':<14}" + "".join(f"{m.replace('_top1', ''):>12}" for m in metrics)
    lines = [header, "-" * len(header)]
    for row, scores in results.items():
        cells = "".join(f"{100 * scores[m]:>11.1f}%" if m in scores else f"{'-':>12}" for m in metrics)
        lines.append(f"{ROWS.get(row, row):<14}{cells}")
    return "\n".join(lines)
