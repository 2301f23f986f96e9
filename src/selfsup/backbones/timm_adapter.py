"""Any timm model as a backbone: ``timm:<model name>`` (random init; no hub download ever happens)."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn


class TimmBackbone(nn.Module):
    def __init__(self, model_name: str, in_channels: int = 3, **timm_kwargs: Any):
        super().__init__()
        import timm

        self.spec = {"name": f"timm:{model_name}", "in_channels": in_channels, **timm_kwargs}
        self.model = timm.create_model(model_name, pretrained=False, num_classes=0, in_chans=in_channels, **timm_kwargs)
        self.num_features = int(self.model.num_features)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """timm's unpooled features: the last feature map (B, C, h, w) for ConvNets."""
        return self.model.forward_features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)
