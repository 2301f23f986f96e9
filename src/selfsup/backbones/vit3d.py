"""A 3-D Vision Transformer for volumes (the field kind ``volume``), with the token API of
:class:`~selfsup.backbones.vit.ViTBackbone` that masked methods use.

A volume (C, D, H, W) is cut into p x p x p patches (a Conv3d of stride p: the tubelet embedding of video
ViTs with cubes, Arnab et al., "ViViT", ICCV 2021; Tong et al., "VideoMAE", NeurIPS 2022), numbered
depth-major over the (gd, gh, gw) grid: patch (z, r, c) is ``(z * gh + r) * gw + c``, the order of
:func:`patchify_3d` and of the ``cube`` / ``tube`` masks (:mod:`selfsup.views.masks`). Everything else is a
plain pre-norm ViT built from timm's ``Block``: a class token without a position (as the registered 2-D ViTs,
``no_embed_class``), learned or fixed 3-D sin-cos positions (``sincos_pos_embed``, as MAE's 2-D ones), a final
norm on every token, class-token or mean pooling.

``forward_tokens(x, keep_indices=...)`` encodes only the kept patches (MAE's token dropping, He et al.,
"Masked Autoencoders Are Scalable Vision Learners", CVPR 2022), ``grid_size`` is a 3-tuple and ``grid_for``
takes (D, H, W), so :class:`~selfsup.methods.mae.MAE` trains it unchanged. Not a timm model: the timm export
does not apply (the safetensors export and ``load_backbone`` do).

``vit3d_micro_cpu``: 16^3 volumes in 4^3 patches (64 tokens), width 128, depth 4, 4 heads (0.8 M parameters,
the 2-D ``vit_micro_cpu``'s blocks).
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models.vision_transformer import Block

from selfsup.backbones.base import BACKBONES
from selfsup.backbones.vit import attention_kernel, gather_tokens, patchify, sincos_pos_embed_2d, unpatchify

VIT3D_CONFIGS: dict[str, dict[str, Any]] = {
    "vit3d_micro_cpu": {"img_size": 16, "patch_size": 4, "embed_dim": 128, "depth": 4, "num_heads": 4},
}
VIT3D_DEFAULTS: dict[str, Any] = {"mlp_ratio": 4.0, "class_token": True, "global_pool": "token",
                                  "sincos_pos_embed": False}


def patchify_3d(volumes: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, D, H, W) -> (B, N, p^3 C): patches depth-major, each flattened as (z, y, x, channel)."""
    b, c, d, h, w = volumes.shape
    p = patch_size
    if d % p or h % p or w % p:
        raise ValueError(f"volume size {d}x{h}x{w} is not divisible by the patch size {p}")
    x = volumes.reshape(b, c, d // p, p, h // p, p, w // p, p)
    return x.permute(0, 2, 4, 6, 3, 5, 7, 1).reshape(b, (d // p) * (h // p) * (w // p), p ** 3 * c)


def unpatchify_3d(patches: torch.Tensor, patch_size: int, grid_size: tuple[int, int, int]) -> torch.Tensor:
    """Inverse of :func:`patchify_3d`: (B, N, p^3 C) -> (B, C, D, H, W)."""
    b, n, dim = patches.shape
    p, (gd, gh, gw) = patch_size, grid_size
    c = dim // p ** 3
    if n != gd * gh * gw or c * p ** 3 != dim:
        raise ValueError(f"patches of shape {tuple(patches.shape)} do not fit a {gd}x{gh}x{gw} grid of {p}^3 patches")
    x = patches.reshape(b, gd, gh, gw, p, p, p, c)
    return x.permute(0, 7, 1, 4, 2, 5, 3, 6).reshape(b, c, gd * p, gh * p, gw * p)


def patchify_nd(inputs: torch.Tensor, patch_size: int) -> torch.Tensor:
    """:func:`~selfsup.backbones.vit.patchify` for images (B, C, H, W), :func:`patchify_3d` for volumes."""
    return patchify_3d(inputs, patch_size) if inputs.ndim == 5 else patchify(inputs, patch_size)


def unpatchify_nd(patches: torch.Tensor, patch_size: int, grid_size: tuple[int, ...]) -> torch.Tensor:
    return unpatchify_3d(patches, patch_size, grid_size) if len(grid_size) == 3 else \
        unpatchify(patches, patch_size, grid_size)


def sincos_pos_embed_3d(dim: int, grid_size: tuple[int, int, int]) -> torch.Tensor:
    """Fixed 3-D sine-cosine position embedding, (gd * gh * gw, dim) depth-major: a third of the channels per
    axis (1-D sinusoids of Vaswani et al. 2017), zero-padded when ``dim`` is not a multiple of 6."""
    per_axis = dim // 6
    if per_axis < 1:
        raise ValueError(f"a 3-D sin-cos embedding needs a width of at least 6, got {dim}")
    freqs = 1.0 / 10000 ** (torch.arange(per_axis, dtype=torch.float64) / per_axis)
    gd, gh, gw = grid_size

    def axis(n: int) -> torch.Tensor:
        angles = torch.arange(n, dtype=torch.float64)[:, None] * freqs[None]
        return torch.cat([angles.sin(), angles.cos()], dim=1)  # (n, 2 per_axis)

    z = axis(gd)[:, None, None].expand(gd, gh, gw, -1)
    r = axis(gh)[None, :, None].expand(gd, gh, gw, -1)
    c = axis(gw)[None, None, :].expand(gd, gh, gw, -1)
    pos = torch.cat([z, r, c], dim=-1).reshape(gd * gh * gw, 6 * per_axis)
    return F.pad(pos, (0, dim - 6 * per_axis)).float()


def sincos_pos_embed_nd(dim: int, grid_size: tuple[int, ...]) -> torch.Tensor:
    """The fixed sin-cos embedding of a 2-D or 3-D patch grid (MAE's decoder positions for either)."""
    return sincos_pos_embed_3d(dim, grid_size) if len(grid_size) == 3 else sincos_pos_embed_2d(dim, grid_size)


class ViT3DBackbone(nn.Module):
    """A ViT over 3-D patches (see the module doc); ``forward(x)`` pools (B, C, D, H, W) to (B, embed_dim)."""

    field_kind = "volume"

    def __init__(self, spec: dict[str, Any]):
        super().__init__()
        self.spec = spec
        p, dim, side = int(spec["patch_size"]), int(spec["embed_dim"]), int(spec["img_size"])
        if side % p:
            raise ValueError(f"img_size {side} is not a multiple of patch_size {p}")
        if spec["global_pool"] not in ("token", "avg") or (spec["global_pool"] == "token" and not spec["class_token"]):
            raise ValueError("global_pool must be 'token' (with class_token=True) or 'avg'")
        self.patch_size, self.embed_dim, self.num_features = p, dim, dim
        self.grid_size = (side // p,) * 3
        self.num_patches = math.prod(self.grid_size)
        self.has_class_token = bool(spec["class_token"])
        self.num_prefix_tokens, self.num_registers = int(self.has_class_token), 0
        self.patch_embed = nn.Conv3d(int(spec["in_channels"]), dim, kernel_size=p, stride=p)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if self.has_class_token else None
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_patches, dim))
        self.blocks = nn.Sequential(*[Block(dim, int(spec["num_heads"]), float(spec["mlp_ratio"]), qkv_bias=True)
                                      for _ in range(int(spec["depth"]))])
        self.norm = nn.LayerNorm(dim)
        if spec["sincos_pos_embed"]:
            with torch.no_grad():
                self.pos_embed.copy_(sincos_pos_embed_3d(dim, self.grid_size)[None])
            self.pos_embed.requires_grad_(False)  # fixed, as MAE's
        else:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=1e-6)
        for module in self.modules():  # timm's ViT init for the linear layers
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def grid_for(self, depth: int, height: int, width: int) -> tuple[int, int, int]:
        """The patch grid of a volume of this size (each side a multiple of the patch size)."""
        if depth % self.patch_size or height % self.patch_size or width % self.patch_size:
            raise ValueError(f"volume size {depth}x{height}x{width} is not a multiple of the patch size "
                             f"{self.patch_size}")
        return depth // self.patch_size, height // self.patch_size, width // self.patch_size

    def patch_pos_embed(self, grid_size: tuple[int, int, int]) -> torch.Tensor:
        """(1, N, D) positions of this grid: the native ones, or trilinearly resampled for another size."""
        if tuple(grid_size) == self.grid_size:
            return self.pos_embed
        pos = self.pos_embed.reshape(1, *self.grid_size, -1).permute(0, 4, 1, 2, 3)
        pos = F.interpolate(pos, size=tuple(grid_size), mode="trilinear", align_corners=False)
        return pos.permute(0, 2, 3, 4, 1).reshape(1, math.prod(grid_size), -1)

    def embed_patches(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                      mask_token: torch.Tensor | None = None) -> torch.Tensor:
        """Patch plus position embeddings (B, N, D); ``mask`` (B, N) swaps in ``mask_token`` first (SimMIM)."""
        if x.ndim != 5:
            raise ValueError(f"a 3-D ViT takes volumes (B, C, D, H, W), got shape {tuple(x.shape)}; use a 2-D "
                             "backbone for images, or data.slices=true with a 2-D backbone")
        grid = self.grid_for(*x.shape[-3:])
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)
        if mask is not None:
            if mask_token is None:
                raise ValueError("a mask needs a mask_token to put in place of the masked patches")
            tokens = torch.where(mask.unsqueeze(-1), mask_token.to(tokens.dtype).expand_as(tokens), tokens)
        return tokens + self.patch_pos_embed(grid).to(tokens.dtype)

    def forward_blocks(self, patch_tokens: torch.Tensor) -> dict[str, torch.Tensor | None]:
        """Class token, blocks and final norm over any subset of patch tokens: ``{"cls", "registers", "patches"}``."""
        x = patch_tokens
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)
        with attention_kernel(x):
            x = self.norm(self.blocks(x))
        return {"cls": x[:, 0] if self.cls_token is not None else None, "registers": None,
                "patches": x[:, self.num_prefix_tokens:]}

    def forward_tokens(self, x: torch.Tensor, keep_indices: torch.Tensor | None = None, *,
                       mask: torch.Tensor | None = None,
                       mask_token: torch.Tensor | None = None) -> dict[str, torch.Tensor | None]:
        """Encode volumes to tokens; ``keep_indices`` (B, K): only these patches enter the blocks."""
        tokens = self.embed_patches(x, mask, mask_token)
        if keep_indices is not None:
            tokens = gather_tokens(tokens, keep_indices)
        return self.forward_blocks(tokens)

    def pool(self, tokens: dict[str, torch.Tensor | None]) -> torch.Tensor:
        if self.spec["global_pool"] == "token":
            return tokens["cls"]
        return tokens["patches"].mean(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.forward_tokens(x))


def build_vit3d(name: str, in_channels: int = 1, **options: Any) -> ViT3DBackbone:
    known = {**VIT3D_CONFIGS[name], **VIT3D_DEFAULTS}
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for backbone '{name}'; options: {', '.join(sorted(known))}")
    return ViT3DBackbone({"name": name, "in_channels": int(in_channels), **known, **options})


def _factory(name: str):
    def build(in_channels: int = 1, **options: Any) -> ViT3DBackbone:
        return build_vit3d(name, in_channels, **options)
    build.field_kind = ViT3DBackbone.field_kind  # what it encodes, readable without building one
    return build


for _name in VIT3D_CONFIGS:
    BACKBONES.add(_name, _factory(_name))

__all__ = ["VIT3D_CONFIGS", "ViT3DBackbone", "build_vit3d", "patchify_3d", "patchify_nd", "sincos_pos_embed_3d",
           "sincos_pos_embed_nd", "unpatchify_3d", "unpatchify_nd"]
