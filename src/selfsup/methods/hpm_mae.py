"""HPM-MAE: Wang, Song, Shen, Wang, Zhang, Wei, Huang, Sun, Chen, Ni, "Hard Patches Mining for Masked Image
Modeling", CVPR 2023 (arXiv:2304.05919).

MAE (:mod:`selfsup.methods.mae`) that also learns where its reconstruction is hard and hides those patches:

1. a light loss predictor (an MLP per patch token) reads the encoder's tokens of the whole, unmasked image
   (computed without gradient, so the predictor alone learns from them) and scores every patch;
2. the mask: ``round(alpha * K)`` of the K masked patches are the patches with the highest predicted loss, the
   rest come from the random mask the data workers drew (``method_options.mask``, any registered patch-mask
   strategy); alpha rises linearly from ``hard_fraction[0]`` to ``hard_fraction[1]`` over the run (the paper's
   easy-to-hard schedule, 0 -> 0.5);
3. MAE's encoder (visible patches only), decoder and loss (MSE on the masked patches' normalised pixels);
4. the predictor's loss is HPM's relative one: for every pair of masked patches of an image, binary cross entropy
   on whether the first's reconstruction loss exceeds the second's (``predictor_weight`` x that, added).

Deviation: the paper's predictor is a second decoder head trained on the masked tokens, and the scores for the
next mask come from the teacher-like full-image pass; here the predictor reads the full-image encoder tokens
directly, the pass that also scores the patches (one extra encoder forward without gradient per step).
All terms are means over this rank's images: DDP's gradient averaging makes them global.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field

from selfsup.backbones.vit3d import patchify_nd
from selfsup.heads import MAEDecoder
from selfsup.losses import masked_patch_mse
from selfsup.methods.base import METHODS, Method, StepOutput
from selfsup.methods.mae import MAEOptions, encode_visible, mae_reconstruction, plain_crop
from selfsup.views import MaskSpec, ViewSpec
from selfsup.views.mask_shapes import patch_mask_strategy


class HPMOptions(MAEOptions):
    hard_fraction: tuple[float, float] = (0.0, 0.5)  # alpha at the start and at the end of the run
    predictor_hidden_dim: int = Field(256, ge=1)
    predictor_weight: float = Field(1.0, ge=0)


def per_patch_error(pred: torch.Tensor, target: torch.Tensor, normalize_target: bool) -> torch.Tensor:
    """(B, N) MAE reconstruction error of every patch (as :func:`~selfsup.losses.masked_patch_mse` computes it)."""
    target = target.detach().float()
    if normalize_target:
        target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6).sqrt()
    return (pred.detach().float() - target).pow(2).mean(-1)


def relative_loss(scores: torch.Tensor, errors: torch.Tensor) -> torch.Tensor:
    """HPM's relative loss on (B, K) predicted scores and true errors: BCE of sigmoid(s_i - s_j) against
    [e_i > e_j] over the ordered pairs i != j of each image."""
    logits = scores[:, :, None] - scores[:, None, :]
    target = (errors[:, :, None] > errors[:, None, :]).float()
    off_diagonal = ~torch.eye(scores.shape[1], dtype=torch.bool, device=scores.device)
    return F.binary_cross_entropy_with_logits(logits.float()[:, off_diagonal], target[:, off_diagonal])


def hard_mask(scores: torch.Tensor, random_mask: torch.Tensor, hard: int) -> torch.Tensor:
    """(B, N) bool with as many masked patches per image as ``random_mask`` has: the ``hard`` highest ``scores``
    first, then the random mask's patches (those the predictor expects to be harder first, when they are more)."""
    count = int(random_mask[0].sum())
    hard = min(hard, count)
    top = torch.zeros_like(random_mask)
    if hard:
        top.scatter_(1, scores.topk(hard, dim=1).indices, True)
    ranking = torch.sigmoid(scores.float()) * 0.5  # < 1: only breaks ties inside a priority level
    priority = 2 * top.float() + random_mask.float() + ranking
    mask = torch.zeros_like(random_mask)
    mask.scatter_(1, priority.topk(count, dim=1).indices, True)
    return mask


@METHODS.register("hpm_mae")
class HPMMAE(Method):
    Options = HPMOptions
    needs_vit = True
    test_options = {"decoder_dim": 16, "decoder_depth": 1, "decoder_heads": 2, "predictor_hidden_dim": 16}

    def __init__(self, backbone: nn.Module, options: HPMOptions):
        super().__init__()
        self.options = options
        self.backbone = backbone
        self.patch_size = backbone.patch_size
        if len(backbone.grid_size) != 2:
            raise ValueError("HPM-MAE masks images (a 2-D patch grid); for volumes use method: mae")
        channels = backbone.spec.get("in_channels", 3)
        self.decoder = MAEDecoder(backbone.embed_dim, self.patch_size ** 2 * channels, backbone.grid_size,
                                  options.decoder_dim, options.decoder_depth, options.decoder_heads)
        self.predictor = nn.Sequential(nn.Linear(backbone.embed_dim, options.predictor_hidden_dim), nn.GELU(),
                                       nn.Linear(options.predictor_hidden_dim, 1))
        mask = "random" if options.mask == "auto" else options.mask
        strategy = patch_mask_strategy(mask, options.mask_ratio, backbone.grid_size, "HPM-MAE", **options.mask_options)
        self.views = ViewSpec(crops=(plain_crop(options.crop_scale),),
                              masks=MaskSpec(strategy, patch_size=self.patch_size, views=0))
        self.alpha = options.hard_fraction[0]

    def on_step(self, progress: float) -> None:
        start, end = self.options.hard_fraction
        self.alpha = start + (end - start) * progress

    def predict(self, images: torch.Tensor, visible: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Encode the ``visible`` (B, K) patches only; decode every patch (as :meth:`MAE.predict`)."""
        tokens, prefix, grid = encode_visible(self.backbone, images, visible)
        return self.decoder(tokens["patches"], visible, grid, prefix), tokens

    def forward(self, batch: dict) -> StepOutput:
        images, random_mask = batch["views"][0], batch["masks"]["mask"]
        with torch.no_grad():
            full = self.backbone.forward_tokens(images)["patches"]
        scores = self.predictor(full).squeeze(-1)  # (B, N): the predictor's own gradient only
        count = int(random_mask[0].sum())
        mask = hard_mask(scores.detach(), random_mask, round(self.alpha * count))
        visible = torch.argsort(mask.int(), dim=1, stable=True)[:, : mask.shape[1] - count]  # ascending indices
        visible = visible.sort(dim=1).values
        pred, tokens = self.predict(images, visible)
        target = patchify_nd(images, self.patch_size)
        reconstruction = masked_patch_mse(pred, target, mask, normalize_target=self.options.normalize_target)
        masked = torch.argsort((~mask).int(), dim=1, stable=True)[:, :count]
        errors = per_patch_error(pred, target, self.options.normalize_target).gather(1, masked)
        prediction = relative_loss(scores.gather(1, masked), errors)
        loss = reconstruction + self.options.predictor_weight * prediction
        with torch.no_grad():
            embeddings = self.backbone.pool(tokens)
        return StepOutput(loss=loss, metrics={"reconstruction_loss": float(reconstruction.detach()),
                                              "predictor_loss": float(prediction.detach()), "hard_fraction": self.alpha},
                          embeddings=embeddings)

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor, seed: int = 0) -> dict[str, torch.Tensor]:
        """MAE's picture (input, masked input, reconstruction) with the workers' random masks."""
        return mae_reconstruction(self, images, seed, self.options.normalize_target)
