"""Encoders of sounds (the field kind ``audio``) and videos (``video``): the image and volume encoders, declared for
the new kinds.

A spectrogram view is a 1-channel picture (1, n_mels, frames) (:mod:`selfsup.views.audio`) and a clip a
(C, T, H, W) grid like a volume (:mod:`selfsup.views.video`), so no new architecture is needed; these factories
build the existing ones at the sizes that suit the kind and say what they encode (``field_kind``), which is what
a run checks against its data. Each keeps its own registered name in ``spec``, so a saved backbone is rebuilt as
the same kind (``load_backbone``).

- ``vit_audio_micro_cpu``: ``vit_micro_cpu``'s blocks (width 128, depth 4, 4 heads) on 64 x 64 spectrograms in
  8 x 8 patches (an 8 x 8 grid of 64 tokens; the token API, token dropping and masks of the 2-D ViT), the
  CPU-sized stand-in for AST / SSAST's ViT over 16 x 16 spectrogram patches (Gong et al., AAAI 2021 / 2022);
- ``small_resnet_audio``: ``small_resnet`` on one channel;
- ``vit_video_micro_cpu``: ``vit3d_micro_cpu`` (16-frame clips of 16 x 16 in tubelets of 4 frames x 4 x 4 pixels,
  a 4 x 4 x 4 grid, time-major; ViViT / VideoMAE's tubelet embedding, Arnab et al. 2021, Tong et al. 2022);
- ``resnet3d_video``: ``resnet3d_small`` (3-D convolutions over time and space, Hara et al., CVPR 2018) on clips.
"""
from __future__ import annotations

from typing import Any

import torch.nn as nn

from selfsup.backbones.base import BACKBONES
from selfsup.backbones.resnet3d import ResNet3D
from selfsup.backbones.small import SmallResNet
from selfsup.backbones.vit import build_registered_vit
from selfsup.backbones.vit3d import build_vit3d
from selfsup.fields import AUDIO, VIDEO

AUDIO_VIT_DEFAULTS = {"img_size": 64, "patch_size": 8}


def _declared(module: nn.Module, name: str, kind: str) -> nn.Module:
    module.spec["name"] = name
    module.field_kind = kind  # what runs check against their data (selfsup.runs)
    return module


def _factory(build, kind: str):
    build.field_kind = kind  # readable without building one
    return build


def vit_audio_micro_cpu(in_channels: int = 1, **options: Any) -> nn.Module:
    vit = build_registered_vit("vit_micro_cpu", in_channels, **{**AUDIO_VIT_DEFAULTS, **options})
    return _declared(vit, "vit_audio_micro_cpu", AUDIO.name)


def small_resnet_audio(in_channels: int = 1, **options: Any) -> nn.Module:
    return _declared(SmallResNet(in_channels, **options), "small_resnet_audio", AUDIO.name)


def vit_video_micro_cpu(in_channels: int = 3, **options: Any) -> nn.Module:
    return _declared(build_vit3d("vit3d_micro_cpu", in_channels, **options), "vit_video_micro_cpu", VIDEO.name)


def resnet3d_video(in_channels: int = 3, **options: Any) -> nn.Module:
    return _declared(ResNet3D(in_channels, **options), "resnet3d_video", VIDEO.name)


for _build, _kind in ((vit_audio_micro_cpu, AUDIO.name), (small_resnet_audio, AUDIO.name),
                      (vit_video_micro_cpu, VIDEO.name), (resnet3d_video, VIDEO.name)):
    BACKBONES.add(_build.__name__, _factory(_build, _kind))

__all__ = ["resnet3d_video", "small_resnet_audio", "vit_audio_micro_cpu", "vit_video_micro_cpu"]
