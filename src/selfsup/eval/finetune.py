"""Fine-tuning: every layer of a copy of the backbone plus a new linear head, trained on the labelled images.

The recipe is MAE's fine-tuning recipe (He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR
2022, appendix A.3), shortened to CPU budgets:

1. Train images get a light augmentation: random resized crop (scale 0.5 to 1) and a horizontal flip, drawn
   per sample from (seed, epoch, index) like the pre-training views (docs/ARCHITECTURE.md, "Reproducibility").
2. Optionally mixup (Zhang et al., "mixup: Beyond Empirical Risk Minimization", ICLR 2018) and CutMix (Yun et
   al., "CutMix: Regularization Strategy to Train Strong Classifiers with Localizable Features", ICCV 2019),
   one of them per batch when both are on, each sample mixed with its partner in the reversed batch (as
   timm's ``Mixup`` does); targets are soft (optionally label-smoothed) and the loss is soft-target
   cross-entropy.
3. AdamW, linear warm-up then cosine decay, per step. For ViTs, layer-wise learning-rate decay (Bao et al.,
   "BEiT: BERT Pre-Training of Image Transformers", ICLR 2022; MAE uses it with decay 0.75): the stem
   (patch embedding, position embedding, class and register tokens) is layer 0, block ``i`` is layer
   ``i + 1``, the final norm and the head are layer ``depth + 1``, and layer ``l`` learns at
   ``lr * decay ** (depth + 1 - l)``, so the early layers that pre-training made general move least. Other
   backbones have no layer sequence to decay along: they are fine-tuned at one learning rate, and the
   result says so (``finetune_layer_decay`` is then 1.0).
4. After the last epoch (no early stopping: the test split is looked at once), top-1 on the test split
   through the evaluation transform (:class:`selfsup.views.preprocess.Preprocess`).

The backbone passed in is never modified: training happens on a deep copy. Everything random (head
initialisation, sample order, crops, flips, mixing) follows from ``seed``; on CPU the same seed gives the
same accuracy.

The pieces that the full linear protocol (:mod:`selfsup.eval.linear_sgd`) shares are public here:
:class:`AugmentedImages`, :func:`train_batches` and :func:`top1_accuracy`.
"""
from __future__ import annotations

import contextlib
import copy
import math
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from pydantic import Field, PositiveInt, field_validator
from torch.utils.data import DataLoader, Dataset

from selfsup.backbones.layers import vit_layer_id, vit_trunk
from selfsup.config import SettingsModel
from selfsup.engine.optim import NO_DECAY_NAMES
from selfsup.schedules import warmup_cosine
from selfsup.views.augment import crop_box, resized_crop, sample_generator
from selfsup.views.preprocess import Preprocess

__all__ = ["FinetuneSettings", "finetune", "AugmentedImages", "train_batches", "top1_accuracy", "soft_targets",
           "mixup", "cutmix", "cutmix_box", "mix_batch", "soft_target_cross_entropy", "vit_layer_id",
           "finetune_param_groups", "seeded_rng", "resolve_device"]


def check_crop_scale(scale: tuple[float, float]) -> tuple[float, float]:
    low, high = scale
    if not 0 < low <= high <= 1:
        raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1, got {list(scale)}")
    return scale


class FinetuneSettings(SettingsModel):
    """Every choice of the fine-tuning protocol (``eval.finetune.*``); defaults sized for 6,000 images of 32 px
    on 2 CPU cores."""

    epochs: PositiveInt = 2
    lr: float = Field(2e-3, gt=0)  # AdamW peak learning rate, for batch_size (no scaling rule applied)
    batch_size: int = Field(128, ge=2)
    weight_decay: float = Field(0.05, ge=0)  # MAE's fine-tuning value; biases, norms and tokens are exempt
    warmup: float = Field(0.1, ge=0, lt=1)  # fraction of the steps spent in linear warm-up
    layer_decay: float = Field(0.75, gt=0, le=1)  # MAE's value for ViT-B; ViTs only; 1 = off
    mixup: float = Field(0.0, ge=0)  # Beta(alpha, alpha) mixing coefficient; 0 = off (MAE: 0.8)
    cutmix: float = Field(0.0, ge=0)  # 0 = off (MAE: 1.0)
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    crop_scale: tuple[float, float] = (0.5, 1.0)

    check_crop_scale = field_validator("crop_scale")(check_crop_scale)


# ------------------------------------------------------------------------------------------------- images
def _with_channels(image: torch.Tensor, channels: int) -> torch.Tensor:
    """As :func:`eval_transform` does: a single-channel image is repeated, any other mismatch is an error."""
    if image.ndim != 3 or not (image.dtype == torch.uint8 or image.is_floating_point()):
        raise ValueError(f"expected a uint8 or float image (C, H, W), got {image.dtype} {tuple(image.shape)}")
    if image.shape[0] == channels:
        return image
    if image.shape[0] == 1:
        return image.expand(channels, -1, -1)
    raise ValueError(f"image has {image.shape[0]} channels but mean/std have {channels} entries")


class AugmentedImages(Dataset):
    """One epoch of the labelled training images: random resized crop, horizontal flip (p=0.5), normalised.

    Each sample's crop and flip come from ``sample_generator(seed, epoch, index)``, so they do not depend on
    the number of workers or on the order in which samples are read.
    """

    def __init__(self, source, *, preprocess: Preprocess, crop_scale=(0.5, 1.0), seed: int = 0, epoch: int = 0):
        self.source, self.preprocess, self.crop_scale = source, preprocess, tuple(crop_scale)
        self.seed, self.epoch = int(seed), int(epoch)
        self.labels = torch.as_tensor(np.asarray(source.labels), dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = _with_channels(self.source.get_image(i), self.preprocess.channels)
        gen = sample_generator(self.seed, self.epoch, i)
        top, left, h, w = crop_box(image.shape[-2], image.shape[-1], self.crop_scale, (3 / 4, 4 / 3), gen)
        view = resized_crop(image, top, left, h, w, self.preprocess.image_size)
        if gen.random() < 0.5:
            view = view.flip(-1)
        return TF.normalize(view, list(self.preprocess.mean), list(self.preprocess.std)), self.labels[i]


def train_batches(source, *, epoch: int, order: torch.Generator, batch_size: int, preprocess: Preprocess,
                  crop_scale, seed: int) -> DataLoader:
    """The batches of one training epoch in an order drawn from ``order``; the last partial batch is dropped
    (a batch of one breaks BatchNorm, and equal batches keep the schedule's step count exact)."""
    images = AugmentedImages(source, preprocess=preprocess, crop_scale=crop_scale, seed=seed, epoch=epoch)
    permutation = torch.randperm(len(images), generator=order).tolist()
    return DataLoader(images, batch_size=min(batch_size, len(images)), sampler=permutation, drop_last=True)


def supervised_epochs(protocol: str, source, *, optimizer: torch.optim.Optimizer,
                      loss_of: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                      lr_at: Callable[[float], float], epochs: int, batch_size: int, preprocess: Preprocess,
                      crop_scale: tuple[float, float], seed: int, log: Callable[[str], None] | None) -> bool:
    """The loop the supervised protocols share: ``epochs`` of shuffled, augmented batches of ``source``; each
    step sets every group's lr to ``lr_at(progress) * lr_scale`` (progress in [0, 1)), then minimises
    ``loss_of(images, labels)``. Returns False, having logged it, as soon as the loss is not finite."""
    order = torch.Generator().manual_seed(seed)
    steps_per_epoch = len(source) // min(batch_size, len(source))
    total, step = epochs * steps_per_epoch, 0
    for epoch in range(epochs):
        running = 0.0
        for images, labels in train_batches(source, epoch=epoch, order=order, batch_size=batch_size,
                                            preprocess=preprocess, crop_scale=crop_scale, seed=seed):
            lr = lr_at(step / total)
            for group in optimizer.param_groups:
                group["lr"] = lr * group.get("lr_scale", 1.0)
            loss = loss_of(images, labels)
            if not torch.isfinite(loss):
                if log is not None:
                    log(f"  {protocol}: the loss diverged at step {step}; lower eval.{protocol}.lr")
                return False
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            running += float(loss.detach())
            step += 1
        if log is not None:
            log(f"  {protocol} epoch {epoch + 1}/{epochs}: loss {running / max(1, steps_per_epoch):.3f}")
    return True


class _TestImages(Dataset):
    def __init__(self, source, preprocess: Preprocess):
        self.source, self.preprocess = source, preprocess
        self.labels = torch.as_tensor(np.asarray(source.labels), dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.preprocess(self.source.get_image(i)), self.labels[i]


@torch.no_grad()
def top1_accuracy(classify: Callable[[torch.Tensor], torch.Tensor], source, *, preprocess: Preprocess, device,
                  batch_size: int = 256) -> float:
    """Top-1 of ``classify`` (images -> logits) on every image of ``source`` under the evaluation transform."""
    correct = 0
    for images, labels in DataLoader(_TestImages(source, preprocess), batch_size=batch_size):
        predictions = classify(images.to(device)).argmax(dim=1).cpu()
        correct += int((predictions == labels).sum())
    return correct / max(1, len(source))


def resolve_device(module: nn.Module | None, device=None) -> torch.device:
    """``device`` when given, else where ``module``'s parameters live (CPU for None or a parameter-free module)."""
    if device is not None:
        return torch.device(device)
    first = next(iter(module.parameters()), None) if module is not None else None
    return first.device if first is not None else torch.device("cpu")


@contextlib.contextmanager
def seeded_rng(seed: int, device: torch.device):
    """The global torch RNG starts from ``seed`` inside, and the caller's RNG state is restored afterwards
    (head initialisation, dropout and drop-path draw from it)."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


# ------------------------------------------------------------------------------------------ mixup, cutmix
def soft_targets(labels: torch.Tensor, num_classes: int, smoothing: float = 0.0) -> torch.Tensor:
    """One-hot rows with label smoothing: ``smoothing / C`` everywhere, plus ``1 - smoothing`` on the label."""
    off = smoothing / num_classes
    targets = torch.full((labels.numel(), num_classes), off, device=labels.device)
    return targets.scatter_(1, labels.reshape(-1, 1), 1.0 - smoothing + off)


def mixup(images: torch.Tensor, targets: torch.Tensor, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """mixup (Zhang et al. 2018): each sample blended with its partner in the reversed batch, weight ``lam``."""
    return (lam * images + (1 - lam) * images.flip(0), lam * targets + (1 - lam) * targets.flip(0))


def cutmix_box(height: int, width: int, lam: float, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a box of about ``1 - lam`` of the image around a uniform centre, clipped to the
    image (CutMix's sampling, as in the reference code and timm)."""
    cut = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * cut), int(width * cut)
    cy, cx = int(rng.integers(height)), int(rng.integers(width))
    top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
    left, right = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
    return top, left, bottom - top, right - left


def cutmix(images: torch.Tensor, targets: torch.Tensor, lam: float,
           rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, float]:
    """CutMix (Yun et al. 2019): a box of the partner's image pasted in; since clipping changes the box, the
    returned ``lam`` is the area that stayed the sample's own, and the targets are mixed with it."""
    height, width = images.shape[-2:]
    top, left, h, w = cutmix_box(height, width, lam, rng)
    mixed = images.clone()
    mixed[..., top:top + h, left:left + w] = images.flip(0)[..., top:top + h, left:left + w]
    lam = 1.0 - h * w / (height * width)
    return mixed, lam * targets + (1 - lam) * targets.flip(0), lam


def mix_batch(images: torch.Tensor, labels: torch.Tensor, num_classes: int, *, mixup_alpha: float,
              cutmix_alpha: float, smoothing: float, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and soft targets of one training batch: with both alphas on, CutMix or mixup with equal odds
    (timm's ``switch_prob=0.5``, MAE's setting); ``lam ~ Beta(alpha, alpha)``."""
    targets = soft_targets(labels, num_classes, smoothing)
    if mixup_alpha <= 0 and cutmix_alpha <= 0:
        return images, targets
    use_cutmix = cutmix_alpha > 0 and (mixup_alpha <= 0 or rng.random() < 0.5)
    alpha = cutmix_alpha if use_cutmix else mixup_alpha
    lam = float(rng.beta(alpha, alpha))
    if use_cutmix:
        images, targets, _ = cutmix(images, targets, lam, rng)
        return images, targets
    return mixup(images, targets, lam)


def soft_target_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return torch.sum(-targets * F.log_softmax(logits, dim=-1), dim=-1).mean()


# ------------------------------------------------------------------------------------ layer-wise lr decay
# Embeddings rather than weights, exempt from weight decay as in MAE (which also lists DeiT's distillation token).
_NO_DECAY_NAMES = NO_DECAY_NAMES + ("dist_token",)


def finetune_param_groups(backbone: nn.Module, head: nn.Module, *, layer_decay: float,
                          weight_decay: float) -> tuple[list[dict], bool]:
    """AdamW parameter groups (one per layer and weight-decay kind) with ``lr_scale``, and whether layer
    decay applied (a ViT backbone); every group also lists its parameters' ``names``."""
    trunk = vit_trunk(backbone)
    top = trunk[1] + 1 if trunk is not None else 0  # the layer of the final norm and the head: depth + 1

    def layer_of(name: str) -> int:  # ``name`` relative to the backbone
        if trunk is None:
            return 0
        prefix, depth = trunk
        return vit_layer_id(name[len(prefix):], depth) if name.startswith(prefix) else top

    named = [(f"backbone.{n}", p, layer_of(n)) for n, p in backbone.named_parameters()] + \
            [(f"head.{n}", p, top) for n, p in head.named_parameters()]
    groups: dict[tuple[int, bool], dict] = {}
    for name, param, layer in named:
        if not param.requires_grad:  # e.g. a fixed sin-cos position embedding stays fixed
            continue
        exempt = param.ndim <= 1 or any(key in name.rsplit(".", 1)[-1] for key in _NO_DECAY_NAMES)
        group = groups.setdefault((layer, exempt), {
            "params": [], "names": [], "layer_id": layer, "weight_decay": 0.0 if exempt else weight_decay,
            "lr_scale": layer_decay ** (top - layer)})
        group["params"].append(param)
        group["names"].append(name)
    return [groups[key] for key in sorted(groups)], trunk is not None


# ------------------------------------------------------------------------------------------- fine-tuning
class _Classifier(nn.Module):
    def __init__(self, backbone: nn.Module, head: nn.Linear):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images))


def finetune(backbone: nn.Module, splits, *, preprocess: Preprocess, settings: FinetuneSettings | None = None,
             seed: int = 0, device=None, log: Callable[[str], None] | None = None) -> dict:
    """Fine-tune a copy of ``backbone`` with a new linear head on ``splits.train``; test top-1 on ``splits.test``.

    ``device``: where to train (default: where the backbone is). Returns ``{"finetune_top1": accuracy,
    "finetune_layer_decay": the decay applied (1.0 for a non-ViT backbone)}``; the accuracy is NaN when the
    loss diverged (lower ``eval.finetune.lr``).
    """
    settings = settings or FinetuneSettings()
    device = resolve_device(backbone, device)
    labels = torch.as_tensor(np.asarray(splits.train.labels), dtype=torch.int64)
    num_classes = int(labels.max()) + 1
    mixing = np.random.default_rng(seed)
    with seeded_rng(seed, device):
        head = nn.Linear(int(backbone.num_features), num_classes)
        nn.init.trunc_normal_(head.weight, std=2e-5)  # MAE: a near-zero head leaves the features intact at first
        nn.init.zeros_(head.bias)
        model = _Classifier(copy.deepcopy(backbone), head).to(device).train()
        groups, decayed = finetune_param_groups(model.backbone, model.head, layer_decay=settings.layer_decay,
                                                weight_decay=settings.weight_decay)
        applied_decay = settings.layer_decay if decayed else 1.0
        optimizer = torch.optim.AdamW(groups, lr=settings.lr, betas=(0.9, 0.999))

        def loss_of(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            images, targets = mix_batch(images.to(device), labels.to(device), num_classes,
                                        mixup_alpha=settings.mixup, cutmix_alpha=settings.cutmix,
                                        smoothing=settings.label_smoothing, rng=mixing)
            return soft_target_cross_entropy(model(images), targets)

        if not supervised_epochs("finetune", splits.train, optimizer=optimizer, loss_of=loss_of,
                                 lr_at=lambda progress: settings.lr * warmup_cosine(progress, settings.warmup, 0.0),
                                 epochs=settings.epochs, batch_size=settings.batch_size, preprocess=preprocess,
                                 crop_scale=settings.crop_scale, seed=seed, log=log):
            return {"finetune_top1": float("nan"), "finetune_layer_decay": applied_decay}
        model.eval()
        top1 = top1_accuracy(model, splits.test, preprocess=preprocess, device=device)
    return {"finetune_top1": top1, "finetune_layer_decay": applied_decay}
