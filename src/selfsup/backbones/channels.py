"""Carry a backbone's input-layer weights from RGB (or any band count) to ``N`` input bands.

A backbone pre-trained on RGB images does not take 13-band Sentinel-2 or 1-band SAR/grayscale input as
is: its first layer has 3 input channels. Everything after that layer does not depend on the band count,
so the rest of the state dict carries over unchanged and only the first kernel needs new input slices.
This module builds those slices:

- :func:`input_layer_key` finds the state-dict key of that first weight in any backbone of
  :func:`selfsup.backbones.build_backbone`;
- :func:`carry_input_weight` maps a kernel ``(O, C_in, *k)`` to ``(O, channels, *k)`` (modes below);
- :func:`carry_state_dict` / :func:`selfsup.backbones.carry_backbone` apply it to a state dict / build the ``channels``-band
  backbone of the same architecture and load the carried weights strictly.

Modes of :func:`carry_input_weight`:

``"repeat"`` (repeat-and-scale, the idea of timm's ``adapt_input_conv``): every new band takes the kernel
    of a source channel, and every source channel's kernel is split over the new bands that take it, so the
    kernel summed over the new bands equals the kernel summed over the source channels *exactly*.
    Exactness property: a gray image replicated to ``channels`` bands gives the same first-layer output,
    hence the same features, as the source model on the gray image replicated to ``C_in`` channels.
``"rgb_bands"`` (in the spirit of SoftCon, Wang et al., "Multi-label Guided Soft Contrastive Learning for
    Efficient Earth Observation Pretraining", 2024, who continue pre-training RGB vision models on
    multispectral data from a simple weight initialization): the bands named by ``rgb_bands`` take the
    R, G, B kernels unscaled, every other band starts from the mean RGB kernel. Exactness property: an image
    whose R, G, B bands carry an RGB image and whose other bands are zero gives the source model's output
    on that RGB image.

Both exactness properties hold only when the input normalisation maps the carried bands the same way as
the source channels (for the gray property: the same mean and std for every band, e.g. mean 0.5, std 0.25;
a replicated gray image is then still replicated after normalisation).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn

CARRY_MODES = ("repeat", "rgb_bands")
# Layers whose weight is (out, in, *kernel), i.e. whose input channels are dimension 1 of the weight.
_INPUT_LAYER_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


# ------------------------------------------------------------------------------------ finding the layer
def _layer_in_channels(module: nn.Module) -> int:
    return module.in_features if isinstance(module, nn.Linear) else module.in_channels


def _timm_first_conv_keys(backbone: nn.Module) -> list[str] | None:
    """The state-dict keys timm names as its model's first conv (``pretrained_cfg['first_conv']``), prefixed
    with where the timm model sits in ``backbone``; None when the backbone holds no timm model that says."""
    for prefix, module in backbone.named_modules():
        cfg = getattr(module, "pretrained_cfg", None)
        if not isinstance(cfg, dict) or not cfg.get("first_conv"):
            continue
        names = cfg["first_conv"]
        names = [names] if isinstance(names, str) else list(names)
        return [f"{prefix}.{name}.weight" if prefix else f"{name}.weight" for name in names]
    return None


def input_layer_key(backbone: nn.Module) -> str:
    """The state-dict key of the weight of ``backbone``'s input layer, e.g. ``"stem.0.weight"`` (small_resnet),
    ``"model.conv1.weight"`` (torchvision ResNet), ``"model.conv1.0.weight"`` (timm resnet10t's deep stem),
    ``"model.patch_embed.proj.weight"`` (ViTs).

    The input layer is the first ``Conv1d/2d/3d`` or ``Linear`` in module order whose input channels equal
    ``backbone.spec["in_channels"]`` and that is not grouped (so its weight has every input channel in
    dimension 1). When the backbone holds a timm model whose ``pretrained_cfg`` names a ``first_conv``, the
    two must agree: module order is a convention, timm's ``first_conv`` is what timm itself adapts when it
    changes ``in_chans``, so a disagreement means one of them is wrong for this model and we refuse to guess.
    """
    spec = getattr(backbone, "spec", None)
    if not isinstance(spec, dict) or "in_channels" not in spec:
        raise ValueError(f"{type(backbone).__name__} has no spec['in_channels']; input_layer_key needs a backbone "
                         "built by selfsup.backbones.build_backbone")
    in_channels = int(spec["in_channels"])
    found = None
    for name, module in backbone.named_modules():
        if (isinstance(module, _INPUT_LAYER_TYPES) and _layer_in_channels(module) == in_channels
                and getattr(module, "groups", 1) == 1 and module.weight is not None):
            found = f"{name}.weight"
            break
    if found is None:
        hint = (" (a channel-wise ViT embeds every band with one shared single-band projection: it has no "
                "per-band input weights to carry)" if spec.get("channelwise") else "")
        raise ValueError(f"backbone '{spec.get('name')}' has no ungrouped Conv1d/2d/3d or Linear layer with "
                         f"{in_channels} input channels, so there is no input-layer weight to carry{hint}")
    timm_keys = _timm_first_conv_keys(backbone)
    if timm_keys is not None:
        state_keys = set(backbone.state_dict())
        named = [k for k in timm_keys if k in state_keys]
        if named and found not in named:
            raise ValueError(f"backbone '{spec.get('name')}': the first layer with {in_channels} input channels is "
                             f"{found!r} but timm's pretrained_cfg names {named} as the first conv; refusing to "
                             "guess which one takes the image")
    return found


# ---------------------------------------------------------------------------------------- the carry
def _repeat_mixing(channels: int, source: int) -> torch.Tensor:
    """(channels, source) float64 matrix M with new band j = sum_s M[j, s] * source kernel s, each column
    summing to one (so the summed kernel is preserved exactly).

    At least as many new bands as source channels: band j takes source j mod source, divided by the number
    of bands that take it. Fewer: source s is added to band s mod channels (one band sums all of them)."""
    mixing = torch.zeros(channels, source, dtype=torch.float64)
    if channels >= source:
        takers = torch.bincount(torch.arange(channels) % source, minlength=source).to(torch.float64)
        for j in range(channels):
            mixing[j, j % source] = 1.0 / takers[j % source]
    else:
        for s in range(source):
            mixing[s % channels, s] = 1.0
    return mixing


def _check_rgb_bands(rgb_bands: Sequence[int] | None, channels: int, source: int) -> list[int]:
    if rgb_bands is None:
        raise ValueError("mode='rgb_bands' needs rgb_bands: the indices of the R, G, B bands in the new band order "
                         "(for instance Sentinel-2 B4, B3, B2 = (3, 2, 1) in the 13-band order B1..B12)")
    bands = [int(b) for b in rgb_bands]
    if source != 3:
        raise ValueError(f"mode='rgb_bands' carries an RGB kernel (3 input channels), got {source}; "
                         "use mode='repeat' for other source channel counts")
    if len(bands) != 3 or len(set(bands)) != 3 or any(not 0 <= b < channels for b in bands):
        raise ValueError(f"rgb_bands must be three distinct band indices in [0, {channels}), got {list(rgb_bands)}")
    return bands


def carry_input_weight(weight: torch.Tensor, channels: int, mode: str = "repeat",
                       rgb_bands: Sequence[int] | None = None) -> torch.Tensor:
    """Carry an input-layer weight ``(O, C_in, *k)`` to ``(O, channels, *k)`` (a new tensor, same dtype).

    ``mode="repeat"``: new band ``j`` takes the kernel of source channel ``j mod C_in`` divided by the number
    of new bands that take that source channel (with fewer bands than source channels, band ``j`` instead
    sums the source channels ``s`` with ``s mod channels == j``; one band sums all of them, as timm does).
    The kernel summed over the new bands is then the kernel summed over the source channels, exactly, for
    every band count, so a gray image replicated to ``channels`` bands gives the same output as the source
    model on the gray image replicated to ``C_in`` channels. For ``channels`` a multiple of ``C_in`` this is
    timm's ``adapt_input_conv`` (which scales every repeated kernel by ``C_in / channels``); otherwise timm's
    uniform scale is not exact: for 13 bands from 3, source channel 0 is taken by 5 bands and channels 1, 2
    by 4 each, so ``3/13`` sums to ``15/13`` of R and ``12/13`` of G and B, while we scale by 1/5 and 1/4.

    ``mode="rgb_bands"``: ``rgb_bands = (r, g, b)`` are the indices of the bands that correspond to the
    source R, G, B channels in the new band order (Sentinel-2 in the order B1..B12 with B8A: B4, B3, B2 =
    ``(3, 2, 1)``). Those bands take the R, G, B kernels unscaled; each other band takes the mean RGB kernel
    times ``3 / channels``. This is our reading of SoftCon's initialisation (Wang et al., 2024; we had only
    the paper's summary, "simple weight-initialization", not its code for this step), not a copy of it:
    RGB bands copied, other bands starting from the mean RGB kernel.

    The two exactness properties cannot both hold here: an RGB image placed on the R, G, B bands (other bands
    zero) reproduces the source model only if the RGB kernels are unscaled, and a replicated gray image does
    only if all kernels sum to the RGB sum, which then forces the other kernels to sum to zero. We keep the
    RGB-image property (a multispectral model that still sees true colour as the RGB model did is what the
    mode is for) and give the other bands ``3 / channels`` of the mean kernel, the share each band would get
    if the total gray response were split evenly over all bands; on a replicated gray image the first-layer
    response is therefore ``(2 * channels - 3) / channels`` times the source one (1.77 for 13 bands),
    not equal. Use ``"repeat"`` where the gray property matters.

    The arithmetic is done in float64, so the exactness holds to float rounding of the result's dtype.
    """
    if weight.ndim < 2:
        raise ValueError(f"an input-layer weight has shape (out, in, *kernel), got {tuple(weight.shape)}")
    if channels < 1:
        raise ValueError(f"channels must be at least 1, got {channels}")
    if mode not in CARRY_MODES:
        raise ValueError(f"unknown carry mode {mode!r}; modes: {', '.join(CARRY_MODES)}")
    source = weight.shape[1]
    w = weight.detach().to(torch.float64)
    if mode == "repeat":
        if rgb_bands is not None:
            raise ValueError("rgb_bands only applies to mode='rgb_bands'")
        out = torch.einsum("js,os...->oj...", _repeat_mixing(channels, source), w)
    else:
        bands = _check_rgb_bands(rgb_bands, channels, source)
        # Start every band from the mean kernel, then put the R, G, B kernels in their bands unscaled.
        mean = w.mean(dim=1, keepdim=True) * (3.0 / channels)
        out = mean.expand(w.shape[0], channels, *w.shape[2:]).clone()
        for src, band in enumerate(bands):
            out[:, band] = w[:, src]
    return out.to(weight.dtype).contiguous()


def carry_state_dict(state: dict[str, Any], key: str, channels: int, mode: str = "repeat",
                     rgb_bands: Sequence[int] | None = None) -> dict[str, Any]:
    """A shallow copy of ``state`` with ``state[key]`` carried to ``channels`` input bands
    (:func:`carry_input_weight`); every other entry is the same object as in ``state``."""
    if key not in state:
        raise KeyError(f"{key!r} is not in the state dict (keys start with {sorted(state)[:3]}...)")
    carried = dict(state)
    carried[key] = carry_input_weight(state[key], channels, mode, rgb_bands)
    return carried


__all__ = ["CARRY_MODES", "carry_input_weight", "carry_state_dict", "input_layer_key"]
