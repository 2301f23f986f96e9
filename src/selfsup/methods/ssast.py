"""SSAST: Gong, Lai, Chung, Glass, "SSAST: Self-Supervised Audio Spectrogram Transformer", AAAI 2022
(arXiv:2110.09784).

Masked spectrogram patch modelling with a joint discriminative and generative objective (paper, section 2.2):

1. masking: a random ``mask_ratio`` of the spectrogram's patches (the paper masks 400 of 512 patches; its
   "cluster" masking of neighbouring patches is ``mask: block``), drawn per sample in the data workers;
2. encoder: the whole spectrogram goes in, the masked patches' embeddings replaced by a learned mask token
   before the positions (the encoder sees every position, as in BERT / SimMIM, unlike MAE);
3. two heads on each masked position's output token, each a two-layer MLP to a patch's values: a generative
   head that reconstructs the patch (mean squared error) and a discriminative head whose output must pick its
   own patch among all masked patches of the same spectrogram (InfoNCE, the patches as keys);
4. loss: ``InfoNCE + recon_weight * MSE`` (the paper's lambda = 10).

``encoder: drop`` is MAE-AST's form of the same objective (Baade, Peng, Harwath, "MAE-AST: Masked Autoencoding
Audio Spectrogram Transformer", Interspeech 2022, arXiv:2203.16691): only the visible patches enter the encoder
(token dropping, as MAE), a light transformer decoder (:class:`~selfsup.heads.mae_decoder.MAEDecoder`) puts a
mask token at every hidden position, and its output at each masked patch goes through the two heads (one linear
layer each, computed as one layer of twice the width). The encoder then sees at evaluation the input
distribution it trained on, minus the hidden patches, where SSAST's encoder trains on mostly mask tokens and is
evaluated on none; MAE-AST reports it better and about 3x faster. The ``ssast`` recipe uses it on a CPU
(benchmarks/media.py measures both).

Both terms are within one sample (the negatives are the other masked patches of the same spectrogram), so the
loss needs no exchange between processes. The views are time crops of the waveform's log-mel spectrogram
(:mod:`selfsup.views.audio`) with noise and no SpecAugment (masking is the task); on images it is a masked image
model of the same form. ``reconstruct`` draws inputs, masked inputs and the generative head's patches.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field

from selfsup.backbones.vit import patchify, unpatchify
from selfsup.heads import MAEDecoder
from selfsup.methods.base import METHODS, Method, MethodOptions, StepOutput
from selfsup.methods.mae import encode_visible, plain_crop
from selfsup.views import MaskSpec, ViewSpec
from selfsup.views.masks import build_mask_strategy, draw_masks


class SSASTOptions(MethodOptions):
    mask_ratio: float = Field(0.75, gt=0, lt=1)
    mask: Literal["random", "block"] = "random"  # block: the paper's cluster masking
    recon_weight: float = Field(10.0, ge=0)  # lambda of section 2.2
    temperature: float = Field(1.0, gt=0)  # the paper's InfoNCE is on raw dot products
    head_dim: int = Field(256, ge=4)  # the hidden width of both heads (encoder: mask_tokens)
    # mask_tokens: the paper's encoder over every position; drop: MAE-AST's encoder over the visible patches and
    # a decoder (module doc)
    encoder: Literal["mask_tokens", "drop"] = "mask_tokens"
    decoder_dim: int = Field(64, ge=4)  # encoder: drop only
    decoder_depth: int = Field(2, ge=1)
    decoder_heads: int = Field(4, ge=1)
    crop_scale: tuple[float, float] = (0.2, 1.0)  # images only: audio views crop in time


def masked_patch_info_nce(pred: torch.Tensor, target: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """SSAST's discriminative loss: ``pred`` and ``target`` (B, M, P) at the M masked patches of each sample; the
    prediction at patch i must score its own patch above the other M - 1 of the same sample (cross-entropy on
    the (M, M) dot products). Per sample: no process exchange."""
    logits = pred.float() @ target.float().transpose(1, 2) / temperature
    labels = torch.arange(pred.shape[1], device=pred.device).expand(pred.shape[0], -1)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))


def _gather(values: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    return torch.gather(values, 1, indices[..., None].expand(-1, -1, values.shape[-1]))


@METHODS.register("ssast")
class SSAST(Method):
    Options = SSASTOptions
    needs_vit = True
    test_options = {"head_dim": 16}

    def __init__(self, backbone: nn.Module, options: SSASTOptions):
        super().__init__()
        if not hasattr(backbone, "forward_tokens") or len(getattr(backbone, "grid_size", ())) != 2:
            raise ValueError("SSAST needs a 2-D ViT (vit_audio_micro_cpu for spectrograms, or any registered ViT)")
        self.options, self.backbone = options, backbone
        self.patch_size = backbone.patch_size
        width, out = backbone.embed_dim, self.patch_size ** 2 * backbone.spec.get("in_channels", 1)
        self.patch_dim = out
        if options.encoder == "drop":  # the two heads are the two halves of the decoder's last linear layer
            self.decoder = MAEDecoder(width, 2 * out, backbone.grid_size, options.decoder_dim,
                                      options.decoder_depth, options.decoder_heads)
        else:
            self.mask_token = nn.Parameter(torch.zeros(width))
            nn.init.trunc_normal_(self.mask_token, std=0.02)

            def head() -> nn.Module:
                return nn.Sequential(nn.Linear(width, options.head_dim), nn.ReLU(), nn.Linear(options.head_dim, out))

            self.generative_head, self.discriminative_head = head(), head()
        self.views = ViewSpec(crops=(plain_crop(options.crop_scale),),
                              masks=MaskSpec(build_mask_strategy(options.mask, ratio=options.mask_ratio),
                                             patch_size=self.patch_size))

    def encode(self, images: torch.Tensor, masks: dict):
        """(generative predictions, discriminative predictions, targets) at the ``masks["masked"]`` (B, M)
        patches, and the encoder's tokens."""
        masked = masks["masked"]
        target = _gather(patchify(images, self.patch_size), masked)
        if self.options.encoder == "drop":
            tokens, prefix, grid = encode_visible(self.backbone, images, masks["visible"])
            predicted = _gather(self.decoder(tokens["patches"], masks["visible"], grid, prefix), masked)
            generated, discriminated = predicted.split(self.patch_dim, dim=-1)
            return generated, discriminated, target, tokens
        tokens = self.backbone.forward_tokens(images, mask=masks["mask"], mask_token=self.mask_token)
        at_masked = _gather(tokens["patches"], masked)
        return self.generative_head(at_masked), self.discriminative_head(at_masked), target, tokens

    def forward(self, batch: dict) -> StepOutput:
        images, masks = batch["views"][0], batch["masks"]
        generated, discriminated, target, tokens = self.encode(images, masks)
        nce = masked_patch_info_nce(discriminated, target, self.options.temperature)
        mse = F.mse_loss(generated.float(), target.float())
        with torch.no_grad():
            embeddings = self.backbone.pool(tokens)
            accuracy = (discriminated.float() @ target.float().transpose(1, 2)).argmax(-1) == \
                torch.arange(target.shape[1], device=target.device)
        return StepOutput(loss=nce + self.options.recon_weight * mse, embeddings=embeddings,
                          metrics={"nce": float(nce.detach()), "mse": float(mse.detach()),
                                   "patch_acc": float(accuracy.float().mean())})

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor, seed: int = 0) -> dict[str, torch.Tensor]:
        """Rows for (B, C, H, W) normalized spectrograms (or images): input, masked input (hidden patches at 0)
        and the generative head's patches pasted over the hidden ones; masks from the method's own strategy."""
        sizes = [images.shape[-1]] * self.views.num_views
        drawn = [draw_masks(self.views.masks, sizes, seed, 0, i) for i in range(len(images))]
        masks = {key: torch.stack([d[key] for d in drawn]).to(images.device) for key in ("mask", "masked", "visible")}
        mask, masked = masks["mask"], masks["masked"]
        generated, _, _, _ = self.encode(images, masks)
        patches = patchify(images, self.patch_size)
        filled = patches.scatter(1, masked[..., None].expand(-1, -1, patches.shape[-1]), generated.float())
        grid = self.backbone.grid_for(*images.shape[-2:])
        hidden = mask.unsqueeze(-1)
        return {"input": images, "masked": unpatchify(patches.masked_fill(hidden, 0.0), self.patch_size, grid),
                "reconstruction": unpatchify(filled, self.patch_size, grid)}
