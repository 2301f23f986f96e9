"""Linear probe: multinomial logistic regression on frozen features.

Protocol (docs/ARCHITECTURE.md, "Evaluation protocol"):

1. A stratified validation split (``val_fraction`` of every class, drawn with ``seed``) is carved from the
   *training* samples. The test split is used once, at the very end, and never influences any choice.
2. For every weight decay of a log grid, the model is fit on the rest of the training samples
   (standardised with *their* mean and standard deviation) and scored on the validation split.
3. The weight decay with the best validation top-1 is kept (ties: lower validation cross-entropy, then
   the larger weight decay), the model is refit on all training samples (standardised with all-train
   statistics) and its test top-1 is reported.

The objective is ``mean cross-entropy + weight_decay / 2 * ||W||^2`` (the bias is not penalised), minimised
in float32 with full-batch L-BFGS (strong-Wolfe line search) until the largest gradient entry is below 1e-5
or ``max_iter`` iterations. The grid is swept from the strongest to the weakest weight decay, each fit
starting from the previous solution (so, at the weak end, neighbouring values whose solutions differ by less
than the tolerance give the same model), and the final refit starts from the chosen solution; everything is
deterministic for a given seed. ``weight_decay = lambda`` corresponds to scikit-learn's
``C = 1 / (lambda * n_samples)``.

Cost: every L-BFGS step reads the feature matrix twice (two thin matrix products), so the probe is bound by
``N * D * C`` per step; 50,000 x 512 features with 10 classes take roughly 10 to 20 s on one busy CPU core.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from selfsup.eval.tensors import as_tensor

__all__ = ["linear_probe", "stratified_subset", "DEFAULT_WEIGHT_DECAYS"]

#: the default weight-decay grid: one value per decade from 1e-6 (practically unregularised for
#: standardised features) to 1 (heavily regularised).
DEFAULT_WEIGHT_DECAYS: tuple[float, ...] = tuple(10.0 ** e for e in range(-6, 1))


def _stratified_split(labels: torch.Tensor, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(fit indices, validation indices), both sorted. Every class with at least two samples gives at least
    one sample to validation and keeps at least one for fitting; singleton classes stay in the fit part."""
    gen = torch.Generator().manual_seed(int(seed))
    is_val = torch.zeros(labels.numel(), dtype=torch.bool)
    if val_fraction > 0:
        for c in torch.unique(labels).tolist():  # sorted, so the draw order is fixed
            idx = (labels == c).nonzero().squeeze(1)
            n = idx.numel()
            if n < 2:
                continue
            n_val = min(max(int(round(val_fraction * n)), 1), n - 1)
            is_val[idx[torch.randperm(n, generator=gen)[:n_val]]] = True
    return (~is_val).nonzero().squeeze(1), is_val.nonzero().squeeze(1)


def stratified_subset(labels: torch.Tensor, size: int, seed: int) -> torch.Tensor:
    """Sorted indices of at most ``size`` samples, every class keeping its share (at least one sample each),
    drawn with ``seed``: a class-balanced subset that bounds a probe's cost on very wide features."""
    labels = torch.as_tensor(labels).reshape(-1)
    if size >= labels.numel():
        return torch.arange(labels.numel())
    gen = torch.Generator().manual_seed(int(seed))
    keep = []
    for c in torch.unique(labels).tolist():  # sorted, so the draw order is fixed
        idx = (labels == c).nonzero().squeeze(1)
        share = max(1, int(round(size * idx.numel() / labels.numel())))
        keep.append(idx[torch.randperm(idx.numel(), generator=gen)[:share]])
    return torch.cat(keep).sort().values


def _standardizer(x: torch.Tensor):
    mean = x.mean(dim=0)
    std = x.std(dim=0, unbiased=False)
    std = torch.where(std > 1e-6 * std.max().clamp_min(1e-12), std, torch.ones_like(std))  # constant features
    return lambda z: (z - mean) / std


def _fit(x: torch.Tensor, y: torch.Tensor, num_classes: int, weight_decay: float, max_iter: int, init=None):
    """Minimise mean CE + wd/2 ||W||^2 with full-batch L-BFGS from ``init`` (default zeros); returns (W, b).

    W is stored as (classes, dims). The gradient is written out by hand rather than taken by autograd: the
    backward matmul autograd would issue (x.T @ g, with x.T a transposed view) is ~20x slower on CPU than
    g.T @ x for tall, thin x, and the probe spends nearly all its time in these two matmuls.
    """
    n = x.shape[0]
    if init is None:
        w = torch.zeros(num_classes, x.shape[1], dtype=x.dtype, device=x.device)
        b = torch.zeros(num_classes, dtype=x.dtype, device=x.device)
    else:
        w, b = init[0].clone(), init[1].clone()
    w.grad, b.grad = torch.zeros_like(w), torch.zeros_like(b)
    rows = torch.arange(n, device=x.device)
    opt = torch.optim.LBFGS(
        [w, b], lr=1.0, max_iter=max_iter, history_size=10, line_search_fn="strong_wolfe",
        tolerance_grad=1e-5, tolerance_change=1e-9,
    )

    def closure():
        logp = torch.log_softmax(torch.addmm(b, x, w.T), dim=1)
        loss = -logp[rows, y].mean() + 0.5 * weight_decay * w.pow(2).sum()
        err = logp.exp_()
        err[rows, y] -= 1.0
        err /= n  # d(mean CE)/d(logits)
        torch.mm(err.T, x, out=w.grad)
        w.grad.add_(w, alpha=weight_decay)
        torch.sum(err, dim=0, out=b.grad)
        return loss

    opt.step(closure)
    return w, b


@torch.no_grad()
def _score(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    logits = torch.addmm(b, x, w.T)
    return float((logits.argmax(dim=1) == y).double().mean()), float(F.cross_entropy(logits, y))


def linear_probe(
    train_features,
    train_labels,
    test_features,
    test_labels,
    *,
    val_fraction: float = 0.1,
    weight_decays=None,
    seed: int = 0,
    max_iter: int = 200,
) -> dict:
    """Linear-probe top-1 on frozen features, regularisation chosen on a validation split of the train set.

    Args:
        train_features, test_features: (N, D) and (M, D) float tensors or numpy arrays.
        train_labels, test_labels: integer labels; classes are ``0 .. max(train_labels)``; a test label
            outside that range simply counts as an error.
        val_fraction: fraction of every training class held out to choose the weight decay.
        weight_decays: the grid (default :data:`DEFAULT_WEIGHT_DECAYS`). With a single value and
            ``val_fraction=0`` no validation is done and ``val_top1`` is NaN.
        seed: seeds the validation split (the optimisation itself has no randomness).
        max_iter: L-BFGS iterations per fit.

    Returns:
        ``{"top1": test top-1, "weight_decay": chosen value, "val_top1": its validation top-1}``.
    """
    x_train = as_tensor(train_features, "train_features")
    x_test = as_tensor(test_features, "test_features")
    y_train = as_tensor(train_labels, "train_labels").reshape(-1).long()
    y_test = as_tensor(test_labels, "test_labels").reshape(-1).long()
    if x_train.ndim != 2 or x_test.ndim != 2 or x_train.shape[1] != x_test.shape[1]:
        raise ValueError(
            f"features must be 2-D with the same width; got train {tuple(x_train.shape)}, test {tuple(x_test.shape)}"
        )
    if y_train.numel() != x_train.shape[0] or y_test.numel() != x_test.shape[0]:
        raise ValueError("number of labels and number of feature rows differ")
    if x_train.shape[0] == 0 or x_test.shape[0] == 0:
        raise ValueError("empty train or test set")
    if y_train.min() < 0:
        raise ValueError("train labels must be >= 0")
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    grid = tuple(float(v) for v in (DEFAULT_WEIGHT_DECAYS if weight_decays is None else weight_decays))
    if not grid or any(not (v >= 0 and math.isfinite(v)) for v in grid):
        raise ValueError(f"weight_decays must be a non-empty list of finite values >= 0, got {grid}")

    device = x_train.device
    x_train = x_train.to(torch.float32)
    x_test = x_test.to(device=device, dtype=torch.float32)
    if not bool(torch.isfinite(x_train).all()) or not bool(torch.isfinite(x_test).all()):
        raise ValueError("features contain NaN or infinite values")
    y_train_cpu = y_train.cpu()
    y_train = y_train.to(device)
    num_classes = int(y_train_cpu.max()) + 1

    fit_idx, val_idx = _stratified_split(y_train_cpu, val_fraction, seed)
    if val_idx.numel() == 0:
        if len(grid) > 1:
            raise ValueError(
                "no validation samples (val_fraction=0, or every class has a single sample): "
                "cannot choose among several weight decays; pass a single value in weight_decays"
            )
        best_wd, best_val_top1, best_params = grid[0], float("nan"), None
    else:
        fit_idx, val_idx = fit_idx.to(device), val_idx.to(device)
        standardize = _standardizer(x_train[fit_idx])
        x_fit, x_val = standardize(x_train[fit_idx]), standardize(x_train[val_idx])
        y_fit, y_val = y_train[fit_idx], y_train[val_idx]
        best_key, best_wd, best_val_top1, best_params = None, None, None, None
        params = None
        for wd in sorted(grid, reverse=True):  # strong to weak: each fit starts from the previous solution
            params = _fit(x_fit, y_fit, num_classes, wd, max_iter, init=params)
            top1, loss = _score(x_val, y_val, *params)
            key = (top1, -loss if math.isfinite(loss) else -math.inf, wd)
            if best_key is None or key > best_key:
                best_key, best_wd, best_val_top1, best_params = key, wd, top1, params
        del x_fit, x_val, params

    # Refit on all training samples, starting from the chosen solution (the standardisation statistics of
    # the full train set are close to those of the fit part, so it is a good start).
    standardize = _standardizer(x_train)
    w, b = _fit(standardize(x_train), y_train, num_classes, best_wd, max_iter, init=best_params)
    with torch.no_grad():
        pred = torch.addmm(b, standardize(x_test), w.T).argmax(dim=1)
    top1 = float((pred == y_test.to(device)).double().mean())
    return {"top1": top1, "weight_decay": best_wd, "val_top1": best_val_top1}
