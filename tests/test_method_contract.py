"""The method contract, for every registered method (parametrized over ``METHODS``, so a method is covered the
moment it registers): on one fixed small batch (the same views at every step), with the hooks called as the
engine calls them (``on_step``, forward, backward, ``before_optimizer_step``, the optimizer,
``after_optimizer_step``) and progress running from 0 to 1 as in a run,

- the loss falls: the mean of the last steps' losses is below the first step's by a margin (per method below:
  about half the drop measured on this machine, so the test fails on a method that stops learning, not on
  noise; MoCo v2 from its peak, see FROM_PEAK);
- every trainable parameter receives a non-zero gradient at some step (progress passes every freeze: DINO's and
  iBOT's last layer, SwAV's prototypes are frozen for the first half under their ``test_options``);
- losses, gradients and embeddings stay finite;
- the collapse monitor raises no alarm on the final embeddings (nor on the teacher targets, where a method
  reports them).

Each method is built with its own ``test_options`` (a tiny ViT for ``needs_vit`` methods), in fp32, seed 0.
"""
import math

import numpy as np
import pytest
import torch

from selfsup.data.sources import ArraySource
from selfsup.engine.monitor import CollapseMonitor
from method_utils import SIZE, build_tiny_method, captions_for, view_batch
from selfsup.methods import METHODS

BATCH, STEPS, LR = 16, 30, 3e-3
LAST = 5  # the final loss is the mean of the last LAST steps (some losses jitter step to step)

# How far each method's loss must fall, first step's loss - final loss, in the loss's own units. The drops measured
# on this machine (seed 0, fp32, 30 AdamW steps at lr 3e-3) are in the comments; each margin is about
# half of it. A method missing here (a new one) must fall by a tenth of its first loss; give it its own margin.
MIN_DROP = {
    "barlow_twins": 15.0,  # 40.04 -> 0.98
    "byol": 0.8,  # 2.02 -> 0.18
    "cmae": 0.5,  # 2.19 -> 0.97
    "dino": 1.5,  # 4.60 -> 1.39 (BatchNorm in its head on a ConvNet: DINOOptions.head_batch_norm)
    "fastsiam": 0.25,  # 0.00 -> -0.52
    "ibot": 2.0,  # 10.28 -> 5.76
    "ijepa": 0.03,  # 0.428 -> 0.358
    "lejepa": 0.12,  # 0.348 -> 0.072
    "mae": 0.25,  # 1.48 -> 0.94
    "moco_v2": 0.2,  # from its peak at step 4 (see FROM_PEAK): 3.43 -> 2.96
    "moco_v3": 1.0,  # 2.72 -> 0.32
    "nnclr": 1.2,  # 3.85 -> 0.96
    "rotnet": 0.6,  # 1.45 -> 0.16
    "simclr": 1.0,  # 3.65 -> 1.61
    "simmim": 0.1,  # 0.80 -> 0.59
    "simsiam": 0.25,  # 0.02 -> -0.48
    "supcon": 2.0,  # 5.96 -> 1.96
    "swav": 1.2,  # 3.73 -> 0.88
    "vicreg": 7.0,  # 23.3 -> 8.5
}
# Methods whose loss cannot fall from the first step on one repeated batch; the drop is measured from the highest
# loss of the first N steps instead. MoCo v2: its queue (64 keys, test_options) fills with this batch's own keys
# in 4 steps, so every query then meets copies of its positive key among the negatives (and MoCHi mixes its hard
# negatives from them): the loss rises while the queue fills, towards a floor of about ln(1 + copies), and falls
# from there as the queries align with their keys.
FROM_PEAK = {"moco_v2": 5}


@pytest.fixture(scope="module")
def source():
    return ArraySource(structured_images(), labels=np.arange(BATCH) % 4, captions=captions_for(BATCH))


def structured_images(n=BATCH):
    """``n`` distinct smooth images (a random 4 x 4 colour grid, upsampled): crops of one image share a layout
    that tells it from the others, which pure pixel noise would not give the methods to learn."""
    rng = np.random.default_rng(0)
    grid = torch.from_numpy(rng.random((n, 3, 4, 4))).float()
    images = torch.nn.functional.interpolate(grid, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    return (images * 255).round().clamp(0, 255).to(torch.uint8).numpy()


def build(name):
    return build_tiny_method(name)


def fixed_batch(method, source):
    return view_batch(method, source, BATCH)


def fit_one_batch(name, source, steps=STEPS):
    """Trains ``name`` on one fixed batch as the engine would; returns the losses, the names of the trainable
    parameters that got a non-zero gradient at some step, the last step's output and the method."""
    method = build(name)
    method.train()
    params = {n: p for n, p in method.named_parameters() if p.requires_grad}
    optimizer = torch.optim.AdamW(params.values(), lr=LR, weight_decay=0.0)
    batch = fixed_batch(method, source)
    losses, reached = [], set()
    out = None
    for step in range(steps):
        progress = step / (steps - 1)
        method.on_step(progress)
        out = method(batch)
        assert out.loss.ndim == 0 and torch.isfinite(out.loss), f"step {step}: loss {out.loss}"
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        method.before_optimizer_step(progress)
        for n, p in params.items():
            if p.grad is not None:
                assert torch.isfinite(p.grad).all(), f"step {step}: non-finite gradient in {n}"
                if p.grad.abs().sum() > 0:
                    reached.add(n)
        optimizer.step()
        method.after_optimizer_step(progress)
        losses.append(float(out.loss.detach()))
        for key, value in out.metrics.items():
            assert math.isfinite(value), f"step {step}: metric {key} = {value}"
    return losses, reached, out, method


@pytest.mark.parametrize("name", sorted(METHODS))
def test_method_contract(name, source):
    torch.manual_seed(0)
    losses, reached, out, method = fit_one_batch(name, source)

    first, final = max(losses[:FROM_PEAK.get(name, 1)]), float(np.mean(losses[-LAST:]))
    need = MIN_DROP.get(name, 0.1 * abs(first))
    assert first - final >= need, f"{name}: loss {first:.4f} -> {final:.4f} (need a drop of {need:.4g}); {losses}"

    never = sorted(n for n, p in method.named_parameters() if p.requires_grad and n not in reached)
    assert not never, f"{name}: trainable parameters that never received a gradient: {never}"

    for extra in (out.embeddings, out.targets):
        assert extra is None or (torch.isfinite(extra).all() and not extra.requires_grad)
    if out.embeddings is not None or out.targets is not None:
        metrics, warning = CollapseMonitor()(out.embeddings, out.targets)
        assert warning is None, f"{name}: {warning} ({metrics})"
