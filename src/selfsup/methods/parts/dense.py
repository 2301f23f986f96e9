"""Parts of the dense methods (PixPro, DenseCL): the 1x1 convolution heads that project a feature map location by
location, and the checks that a backbone has a feature map and a batch its views' geometry."""
from __future__ import annotations

import torch
import torch.nn as nn



def conv_projector(in_dim: int, hidden_dim: int, out_dim: int, batch_norm: bool = True) -> nn.Sequential:
    """Two 1x1 convolutions with (BatchNorm and) ReLU between them: an MLP applied at every location."""
    layers: list[nn.Module] = [nn.Conv2d(in_dim, hidden_dim, 1, bias=not batch_norm)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(hidden_dim))
    layers += [nn.ReLU(inplace=True), nn.Conv2d(hidden_dim, out_dim, 1)]
    return nn.Sequential(*layers)


def require_boxes(batch: dict, method: str) -> torch.Tensor:
    if "boxes" not in batch:
        raise ValueError(f"{method} needs the views' geometry (batch['boxes']): its ViewSpec asks for it with "
                         "boxes=True; a batch built by hand must carry it")
    return batch["boxes"]
