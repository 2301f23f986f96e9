"""A backbone's spatial feature map, whatever its kind: what dense methods (PixPro, DenseCL) and the dense probe
(:mod:`selfsup.eval.protocols.dense`) read instead of the pooled features."""
from __future__ import annotations

import torch
import torch.nn as nn


def has_feature_map(backbone: nn.Module) -> bool:
    """Whether ``backbone`` gives a spatial feature map: ConvNets with ``forward_features`` (small_resnet,
    torchvision ResNets) or ViTs with token access (their patch tokens on the patch grid)."""
    return hasattr(backbone, "forward_features") or hasattr(backbone, "forward_tokens")


def require_feature_map(backbone: nn.Module, method: str) -> None:
    if not has_feature_map(backbone):
        raise ValueError(f"{method} matches feature-map locations between views and needs a backbone with a feature "
                         f"map (small_resnet, a torchvision ResNet or a ViT); {type(backbone).__name__} only gives "
                         "pooled features: set backbone.name=small_resnet")


def feature_map(backbone: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w): a ConvNet's last feature map before pooling, or a ViT's patch tokens on its patch grid."""
    if hasattr(backbone, "forward_features"):
        fmap = backbone.forward_features(images)
        if fmap.ndim != 4:
            raise ValueError(f"{type(backbone).__name__}.forward_features gave {tuple(fmap.shape)}, not a (B, C, h, w) "
                             "feature map")
        return fmap
    patches = backbone.forward_tokens(images)["patches"]
    grid = backbone.grid_for(*images.shape[-2:])
    return patches.transpose(1, 2).reshape(len(images), -1, *grid)


def _is_small_resnet(backbone: nn.Module) -> bool:
    return hasattr(backbone, "stages") and hasattr(backbone, "stem")


def _torchvision_resnet(backbone: nn.Module) -> nn.Module | None:
    """The torchvision ResNet inside ``backbone`` (layer1..layer4), or None."""
    model = getattr(backbone, "model", None)
    return model if model is not None and all(hasattr(model, f"layer{i}") for i in range(1, 5)) else None


def has_stages(backbone: nn.Module) -> bool:
    """Whether :func:`stage_features` knows ``backbone``'s stages (small_resnet, torchvision ResNets)."""
    return _is_small_resnet(backbone) or _torchvision_resnet(backbone) is not None


def stage_features(backbone: nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
    """The feature map at the end of every resolution of a ConvNet, shallowest first (SparK's hierarchy):
    small_resnet's stages (the last block of each width), a torchvision ResNet's layer1..layer4."""
    if _is_small_resnet(backbone):
        per_stage = int(backbone.spec.get("blocks_per_stage", 1))
        x, outputs = backbone.stem(images), []
        for i, block in enumerate(backbone.stages):
            x = block(x)
            if (i + 1) % per_stage == 0:
                outputs.append(x)
        return outputs
    model = _torchvision_resnet(backbone)
    if model is not None:
        x = model.maxpool(model.relu(model.bn1(model.conv1(images))))
        outputs = []
        for i in range(1, 5):
            x = getattr(model, f"layer{i}")(x)
            outputs.append(x)
        return outputs
    raise ValueError(f"{type(backbone).__name__} has no known stages (small_resnet and torchvision ResNets do): SparK "
                     "needs a ConvNet's feature maps at every resolution")
