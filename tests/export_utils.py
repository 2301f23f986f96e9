"""A saved backbone with random weights and BatchNorm statistics, shared by the export tests."""
import torch
import torch.nn as nn

from selfsup.backbones import build_backbone
from selfsup.export import save_backbone


def saved_random_backbone(folder, name: str, channels: int, size: int = 32, method: str = "simclr",
                          **options) -> nn.Module:
    """A backbone with random weights and BatchNorm statistics (so buffers matter), saved to ``folder``."""
    torch.manual_seed(0)
    model = build_backbone(name, in_channels=channels, **options)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    save_backbone(model, folder, image_size=size, mean=[0.4] * channels, std=[0.2] * channels,
                  extra={"method": method})
    return model.eval()
