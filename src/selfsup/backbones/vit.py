"""Vision Transformers (Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021) as backbones, with
the token-level access that masked and predictive methods are built on.

:class:`ViTBackbone` wraps an unmodified timm ``VisionTransformer`` (``self.model``), so its state dict is the
timm one and it exports to timm. It adds:

- ``forward_tokens(x, keep_indices=None, mask=None, mask_token=None)``: class token, register tokens and patch
  tokens after the final norm. With ``keep_indices`` (B, K) only those patch tokens (with their position
  embeddings already added) enter the blocks: the dropped ones are never computed, which is what makes
  MAE's encoder cheap (He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022) and
  I-JEPA's context encoder see only the context block (Assran et al., "Self-Supervised Learning from Images
  with a Joint-Embedding Predictive Architecture", CVPR 2023). With ``mask`` (B, N) bool the masked patch
  embeddings are replaced by ``mask_token`` before position embeddings are added, as in BEiT (Bao et al.,
  ICLR 2022), SimMIM (Xie et al., CVPR 2022) and iBOT.
- the two halves of that, ``embed_patches`` and ``forward_blocks``, for methods that build the token
  sequence themselves;
- position-embedding interpolation for any image size divisible by the patch size (train at 32 px, evaluate
  at 48, local crops at 16), any number of input channels, optional register tokens (Darcet et al., "Vision
  Transformers Need Registers", ICLR 2024);
- ``patch_size``, ``grid_size``, ``num_patches``, ``num_prefix_tokens``, ``num_registers``.

``forward(x)`` returns pooled features like every backbone: the class token (``global_pool="token"``) or
the mean of the patch tokens (``"avg"``), exactly as timm's ``forward`` computes them.

Backbones:

- registered names (``vit_tiny_cpu``, ``vit_micro_cpu``): small ViTs for 32 px images with 4 px patches (an
  8 x 8 grid), sized to pre-train on a few CPU cores. Class token and registers carry no position embedding
  (``no_embed_class``, as in DeiT III, and registers are position-free in Darcet et al.); the final norm is
  applied to every token before pooling (``fc_norm=False``), so ``forward_tokens`` returns normalized
  tokens whichever pooling is chosen. ``sincos_pos_embed=True`` fixes the position embedding to 2-D sin-cos
  (MAE, I-JEPA) instead of learning it. ``channelwise=True`` makes a channel-wise ViT (below).
- ``timm:<name>`` for a plain timm ViT (``VisionTransformer`` with a ``PatchEmbed`` stem): the same API,
  with timm's own choices (for instance ``global_pool="avg"`` models apply their norm after pooling, so their
  ``forward_tokens`` outputs are not normalized). Other timm models stay plain :class:`TimmBackbone`.

Patch order everywhere (tokens, masks, :func:`patchify`) is row-major over the patch grid: patch (r, c) of
a grid with ``w`` columns is index ``r * w + c``.

Channel-wise ViTs (``channelwise=True`` on a registered ViT; ChannelViT: Bao et al., "Channel Vision
Transformers: An Image Is Worth 1 x 16 x 16 Words", ICLR 2024): every band of a ``C``-band image is
patch-embedded on its own by one single-band patch projection shared by all bands (the timm model is built
with ``in_chans=1``), and a learned band embedding (``band_embed``, one vector per band) tells the bands
apart; the position embeddings are shared across bands. A 13-band 32 px image with 4 px patches is thus
13 x 64 patch tokens, band-major (patch ``n`` of band ``b`` is token ``b * num_patches + n``; ``num_patches``
and ``grid_size`` stay those of one band). Pooling is unchanged (class token, or the mean of all band-patch
tokens). Token dropping and mask tokens are not supported there (``NotImplementedError``), nor is the timm
export (``band_embed`` is not a timm parameter). The spec records ``channelwise: true`` (and only then, so
the specs of other ViTs are unchanged).
"""
from __future__ import annotations

from typing import Any

from contextlib import AbstractContextManager, nullcontext

import torch
import torch.nn as nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from selfsup.backbones.base import BACKBONES

# Small ViTs for 32 px images. Training throughput of the encoder alone (forward, backward, AdamW), batch 64,
# 1 thread of a shared 2-core AMD EPYC (benchmarks/vit_token_dropping.py): all 64 patch tokens / the 25% a
# MAE encoder sees.
VIT_CONFIGS: dict[str, dict[str, Any]] = {
    # ViT-Tiny's width and heads (Touvron et al., DeiT 2021) at half its depth; 2.7 M parameters.
    # 21 / 63 images/s.
    "vit_tiny_cpu": {"img_size": 32, "patch_size": 4, "embed_dim": 192, "depth": 6, "num_heads": 3},
    # 0.8 M parameters, for CI-sized runs (about 30 s per method). 75 / 180 images/s.
    "vit_micro_cpu": {"img_size": 32, "patch_size": 4, "embed_dim": 128, "depth": 4, "num_heads": 4},
}
# Options every registered ViT takes, with their defaults.
VIT_DEFAULTS: dict[str, Any] = {
    "mlp_ratio": 4.0,
    "reg_tokens": 0,
    "class_token": True,
    "global_pool": "token",
    "sincos_pos_embed": False,
    "drop_path_rate": 0.0,
}
# The timm model whose constructor builds the registered ViTs: every architecture argument is passed
# explicitly, so only its class (VisionTransformer) matters. Exports name it with the same arguments.
TIMM_BASE_MODEL = "vit_tiny_patch16_224"


# --------------------------------------------------------------------------------------------- helpers
def gather_tokens(tokens: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """``tokens[b, indices[b, k]]``: (B, N, D) and (B, K) long -> (B, K, D)."""
    return torch.gather(tokens, 1, indices.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, N, p*p*C): patches in row-major grid order, each flattened as (row, col, channel)
    (the target layout of MAE's and SimMIM's pixel losses)."""
    b, c, h, w = images.shape
    p = patch_size
    if h % p or w % p:
        raise ValueError(f"image size {h}x{w} is not divisible by the patch size {p}")
    x = images.reshape(b, c, h // p, p, w // p, p)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(patches: torch.Tensor, patch_size: int, grid_size: tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`patchify`: (B, N, p*p*C) -> (B, C, H, W)."""
    b, n, d = patches.shape
    p, (gh, gw) = patch_size, grid_size
    c = d // (p * p)
    if n != gh * gw or c * p * p != d:
        raise ValueError(f"patches of shape {tuple(patches.shape)} do not fit a {gh}x{gw} grid of {p}px patches")
    x = patches.reshape(b, gh, gw, p, p, c)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(b, c, gh * p, gw * p)


def patch_mask_to_pixels(mask: torch.Tensor, patch_size: int, grid_size: tuple[int, int]) -> torch.Tensor:
    """(B, N) patch mask -> (B, 1, H, W) pixel mask, for masking in pixel space (SimMIM on a ConvNet)."""
    gh, gw = grid_size
    pixels = mask.reshape(len(mask), 1, gh, gw)
    return pixels.repeat_interleave(patch_size, dim=2).repeat_interleave(patch_size, dim=3)


def sincos_pos_embed_2d(dim: int, grid_size: tuple[int, int]) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embedding, (gh * gw, dim) in row-major order.

    Half of the channels encode the row and half the column, each with the 1-D sinusoids of Vaswani et al.
    (2017); MAE and I-JEPA use this for encoders, decoders and predictors: it needs no training and has a
    meaning at any grid size.
    """
    if dim % 4:
        raise ValueError(f"a 2-D sin-cos embedding needs a width divisible by 4, got {dim}")
    gh, gw = grid_size
    freqs = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))

    def axis(n: int) -> torch.Tensor:
        angles = torch.arange(n, dtype=torch.float64)[:, None] * freqs[None]
        return torch.cat([angles.sin(), angles.cos()], dim=1)  # (n, dim / 2)

    rows = axis(gh)[:, None, :].expand(gh, gw, dim // 2)
    cols = axis(gw)[None, :, :].expand(gh, gw, dim // 2)
    return torch.cat([rows, cols], dim=-1).reshape(gh * gw, dim).float()


def _pair_to_int(value: Any, what: str) -> int:
    a, b = (value, value) if isinstance(value, int) else tuple(value)
    if a != b:
        raise ValueError(f"non-square {what} {value} is not supported")
    return int(a)


def is_plain_timm_vit(model: nn.Module) -> bool:
    """A timm ``VisionTransformer`` (not a subclass with extra tokens) whose stem is a ``PatchEmbed``."""
    from timm.layers import PatchEmbed
    from timm.models.vision_transformer import VisionTransformer

    return type(model) is VisionTransformer and type(model.patch_embed) is PatchEmbed


# -------------------------------------------------------------------------------------------- backbone
class ViTBackbone(nn.Module):
    """A timm ``VisionTransformer`` (``self.model``, unmodified) with token-level access; see the module doc."""

    def __init__(self, model: nn.Module, spec: dict[str, Any]):
        super().__init__()
        if not is_plain_timm_vit(model):
            raise TypeError(f"{type(model).__name__} is not a plain timm VisionTransformer with a PatchEmbed stem")
        self.model, self.spec = model, spec
        self.num_features = int(model.num_features)
        self.embed_dim = int(model.embed_dim)
        self.patch_size = _pair_to_int(model.patch_embed.patch_size, "patch size")
        self.grid_size = tuple(int(g) for g in model.patch_embed.grid_size)  # at the native image size
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.num_prefix_tokens = int(model.num_prefix_tokens)
        self.num_registers = int(model.num_reg_tokens)
        self.has_class_token = model.cls_token is not None
        self.channelwise = bool(spec.get("channelwise", False))
        if self.channelwise:
            if model.patch_embed.proj.in_channels != 1:
                raise TypeError("a channel-wise ViT needs a timm model built with in_chans=1 (the shared single-band "
                                f"patch projection), got {model.patch_embed.proj.in_channels} input channels")
            self.num_bands = int(spec["in_channels"])
            # One learned vector per band, added to every patch token of that band (ChannelViT); small random
            # init as timm's position embeddings, so that bands differ from the first step.
            self.band_embed = nn.Parameter(torch.zeros(1, self.num_bands, 1, self.embed_dim))
            nn.init.trunc_normal_(self.band_embed, std=0.02)

    # -- geometry --------------------------------------------------------------------------------------
    def grid_for(self, height: int, width: int) -> tuple[int, int]:
        """The patch grid of an image of this size (which must be a multiple of the patch size)."""
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(f"image size {height}x{width} is not a multiple of the ViT's patch size "
                             f"{self.patch_size}; resize or crop to a multiple of {self.patch_size}")
        return height // self.patch_size, width // self.patch_size

    def patch_pos_embed(self, grid_size: tuple[int, int]) -> torch.Tensor | None:
        """Position embeddings of the patch tokens for this grid, (1, gh * gw, D); None if the ViT has none.

        At another grid than the native one they are resampled (bicubic, as timm's ``dynamic_img_size``), so
        a ViT trained at 32 px encodes 48 px images or 16 px local crops with the same positions stretched.
        """
        pos = self.model.pos_embed
        if pos is None:
            return None
        if not self.model.no_embed_class:
            pos = pos[:, self.num_prefix_tokens:]
        if tuple(grid_size) == self.grid_size:
            return pos
        from timm.layers import resample_abs_pos_embed

        return resample_abs_pos_embed(pos, new_size=list(grid_size), old_size=list(self.grid_size),
                                      num_prefix_tokens=0)

    # -- the two halves of the encoder -----------------------------------------------------------------
    def embed_patches(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                      mask_token: torch.Tensor | None = None) -> torch.Tensor:
        """Patch embeddings plus position embeddings, (B, N, D), no prefix tokens.

        ``mask`` (B, N) bool: these patch embeddings are replaced by ``mask_token`` (shape (D,) or
        broadcastable to (B, N, D)) before the position embedding is added, so the encoder knows where the
        hidden patches are but not what they hold (BEiT, SimMIM, iBOT).
        """
        if self.channelwise:
            if mask is not None:
                raise NotImplementedError("mask tokens are not supported by a channel-wise ViT (channelwise=True)")
            return self._embed_bands(x)
        grid = self.grid_for(x.shape[-2], x.shape[-1])
        stem = self.model.patch_embed
        # The convolution directly, not PatchEmbed.forward: the latter refuses sizes other than the native
        # one unless the model was built with dynamic_img_size.
        tokens = stem.norm(stem.proj(x).flatten(2).transpose(1, 2))
        if mask is not None:
            if mask_token is None:
                raise ValueError("a mask needs a mask_token to put in place of the masked patches")
            tokens = torch.where(mask.unsqueeze(-1), mask_token.to(tokens.dtype).expand_as(tokens), tokens)
        pos = self.patch_pos_embed(grid)
        return tokens if pos is None else tokens + pos

    def _embed_bands(self, x: torch.Tensor) -> torch.Tensor:
        """Channel-wise patch embeddings (B, C * N, D), band-major: every band through the shared single-band
        projection, plus the shared position embeddings and its band embedding."""
        b, c, h, w = x.shape
        if c != self.num_bands:
            raise ValueError(f"this channel-wise ViT was built for {self.num_bands} bands, got {c}")
        grid = self.grid_for(h, w)
        stem = self.model.patch_embed
        # Bands as a batch of single-band images: one projection for all of them (ChannelViT's weight sharing).
        tokens = stem.norm(stem.proj(x.reshape(b * c, 1, h, w)).flatten(2).transpose(1, 2))  # (B * C, N, D)
        pos = self.patch_pos_embed(grid)
        if pos is not None:
            tokens = tokens + pos
        tokens = tokens.reshape(b, c, -1, tokens.shape[-1]) + self.band_embed.to(tokens.dtype)
        return tokens.reshape(b, -1, tokens.shape[-1])

    def forward_blocks(self, patch_tokens: torch.Tensor) -> dict[str, torch.Tensor | None]:
        """Prepend the class and register tokens to ``patch_tokens`` (B, K, D), run the blocks and the final
        norm; any subset or order of patches works, since their positions are already in the embeddings.

        Returns ``{"cls": (B, D) or None, "registers": (B, R, D) or None, "patches": (B, K, D)}``.
        """
        m, b = self.model, patch_tokens.shape[0]
        x = patch_tokens
        if self.num_prefix_tokens:
            prefix = torch.cat([t.expand(b, -1, -1) for t in (m.cls_token, m.reg_token) if t is not None], dim=1)
            if m.pos_embed is not None and not m.no_embed_class:
                prefix = prefix + m.pos_embed[:, :self.num_prefix_tokens]
            x = torch.cat([prefix, patch_tokens], dim=1)
        with attention_kernel(x):
            x = m.norm(m.blocks(m.norm_pre(m.pos_drop(x))))
        start = 1 if self.has_class_token else 0
        return {
            "cls": x[:, 0] if self.has_class_token else None,
            "registers": x[:, start:self.num_prefix_tokens] if self.num_registers else None,
            "patches": x[:, self.num_prefix_tokens:],
        }

    # -- what methods call -----------------------------------------------------------------------------
    def forward_tokens(self, x: torch.Tensor, keep_indices: torch.Tensor | None = None, *,
                       mask: torch.Tensor | None = None,
                       mask_token: torch.Tensor | None = None) -> dict[str, torch.Tensor | None]:
        """Encode images (B, C, H, W) to tokens: ``{"cls", "registers", "patches"}`` (see :meth:`forward_blocks`).

        ``keep_indices`` (B, K) long: encode only these patches (row-major indices), in this order; the
        others never enter the blocks. ``mask`` / ``mask_token``: see :meth:`embed_patches`.
        """
        if self.channelwise and (keep_indices is not None or mask is not None):
            raise NotImplementedError("token dropping (keep_indices) and mask tokens (mask) are not supported by a "
                                      "channel-wise ViT (channelwise=True)")
        tokens = self.embed_patches(x, mask, mask_token)
        if keep_indices is not None:
            tokens = gather_tokens(tokens, keep_indices)
        return self.forward_blocks(tokens)

    def pool(self, tokens: dict[str, torch.Tensor | None]) -> torch.Tensor:
        """The pooled features of :meth:`forward` from a ``forward_tokens`` output (for instance of the
        visible tokens only): class token or mean of the patch tokens, as the model's ``global_pool`` says."""
        parts = [tokens["cls"][:, None]] if tokens.get("cls") is not None else []
        if tokens.get("registers") is not None:
            parts.append(tokens["registers"])
        return self.model.forward_head(torch.cat(parts + [tokens["patches"]], dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.forward_tokens(x))


def attention_kernel(x: torch.Tensor) -> AbstractContextManager:
    """The attention kernel of the blocks for the tokens ``x``: on a CPU while gradients are recorded, the math
    backend of ``F.scaled_dot_product_attention`` (what timm's blocks call), elsewhere torch's own choice.

    On a CPU torch picks a fused flash kernel whose backward is slow for the short sequences of CPU-sized ViTs
    (65 tokens of a 32 px image with 4 px patches, 17 of a 16 px crop); the math backend computes the same
    attention up to float rounding. Measured on a 2-core AVX512-BF16 EPYC, vit_micro_cpu, batch 128, bf16
    autocast, forward+backward, fused vs math: LeJEPA 835 vs 350 ms, MAE 164 vs 80 ms, I-JEPA 405 vs 225 ms.
    Without gradients (teachers, evaluation) the fused kernel is faster (256 images: 96 vs 143 ms in bf16, 220
    vs 273 ms in fp32), so it stays."""
    if x.device.type == "cpu" and torch.is_grad_enabled():
        return sdpa_kernel([SDPBackend.MATH])
    return nullcontext()


# ------------------------------------------------------------------------------------ registered ViTs
def registered_vit_timm_args(spec: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``(model_name, kwargs)`` for ``timm.create_model`` that build the architecture of a registered ViT
    ``spec`` (add ``pretrained=False, num_classes=0, in_chans=...``); the export to timm uses the same."""
    options = {k: v for k, v in spec.items() if k not in ("name", "in_channels", "sincos_pos_embed", "channelwise")}
    options.update(no_embed_class=True, fc_norm=False, dynamic_img_size=True)
    return TIMM_BASE_MODEL, options


def build_registered_vit(name: str, in_channels: int = 3, **options: Any) -> ViTBackbone:
    """A ViT from :data:`VIT_CONFIGS` (any entry overridable through ``options``); ``channelwise=True`` makes it
    a channel-wise ViT (see the module doc)."""
    import timm

    # Not in VIT_DEFAULTS: only a channel-wise ViT's spec records it, so every other spec stays as it was.
    channelwise = bool(options.pop("channelwise", False))
    known = {**VIT_CONFIGS[name], **VIT_DEFAULTS}
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for backbone '{name}'; options: "
                         f"{', '.join(sorted([*known, 'channelwise']))}")
    config = {**known, **options}
    if config["global_pool"] not in ("token", "avg"):
        raise ValueError(f"global_pool must be 'token' (class token) or 'avg' (mean of patch tokens), "
                         f"got {config['global_pool']!r}")
    if config["global_pool"] == "token" and not config["class_token"]:
        raise ValueError("global_pool='token' needs class_token=True; use global_pool='avg' without a class token")
    if config["sincos_pos_embed"] and config["embed_dim"] % 4:
        raise ValueError(f"sincos_pos_embed needs embed_dim divisible by 4, got {config['embed_dim']}")
    spec = {"name": name, "in_channels": in_channels, **config}
    if channelwise:
        spec["channelwise"] = True
    model_name, kwargs = registered_vit_timm_args(spec)
    # A channel-wise ViT's timm model sees one band at a time (its patch projection is the shared one).
    model = timm.create_model(model_name, pretrained=False, num_classes=0, in_chans=1 if channelwise else in_channels,
                              **kwargs)
    if config["sincos_pos_embed"]:
        with torch.no_grad():
            model.pos_embed.copy_(sincos_pos_embed_2d(model.embed_dim, model.patch_embed.grid_size)[None])
        model.pos_embed.requires_grad_(False)  # fixed, as in MAE and I-JEPA
    return ViTBackbone(model, spec)


def as_vit_backbone(backbone: nn.Module) -> nn.Module:
    """A ``timm:<name>`` backbone holding a plain timm ViT as a :class:`ViTBackbone` (same module, weights and
    spec, so exports are unchanged); any other backbone unchanged."""
    model = getattr(backbone, "model", None)
    if model is not None and is_plain_timm_vit(model):
        return ViTBackbone(model, backbone.spec)
    return backbone



def _vit_factory(name: str):
    def build(in_channels: int = 3, **options: Any) -> ViTBackbone:
        return build_registered_vit(name, in_channels, **options)
    return build


for _name in VIT_CONFIGS:
    BACKBONES.add(_name, _vit_factory(_name))

__all__ = [
    "TIMM_BASE_MODEL",
    "VIT_CONFIGS",
    "VIT_DEFAULTS",
    "ViTBackbone",
    "as_vit_backbone",
    "build_registered_vit",
    "gather_tokens",
    "is_plain_timm_vit",
    "patch_mask_to_pixels",
    "patchify",
    "registered_vit_timm_args",
    "sincos_pos_embed_2d",
    "unpatchify",
]
