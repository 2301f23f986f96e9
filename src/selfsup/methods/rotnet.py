"""RotNet: Gidaris, Singh, Komodakis, "Unsupervised Representation Learning by Predicting Image Rotations",
ICLR 2018 (arXiv:1803.07728).

The classic pretext task: every image is shown at 0, 90, 180 and 270 degrees and a linear classifier on the
backbone's features predicts which. Recognising the rotation needs the orientation of objects, so the
backbone has to learn what they are. All four rotations of an image go in the same batch (the paper's best
setting). A per-sample mean loss: DDP averaging makes it global.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field

from selfsup.methods.base import METHODS, Method, MethodOptions, StepOutput
from selfsup.views import CropSpec, ViewSpec


class RotNetOptions(MethodOptions):
    crop_scale: tuple[float, float] = (0.5, 1.0)  # mild: strong crops remove the cues of orientation
    flip_p: float = Field(0.5, ge=0, le=1)
    hidden_dim: int = Field(0, ge=0)  # 0: a linear classifier as in the paper; >0: an MLP head


@METHODS.register("rotnet")
class RotNet(Method):
    Options = RotNetOptions

    def __init__(self, backbone: nn.Module, options: RotNetOptions):
        super().__init__()
        self.backbone = backbone
        dim = backbone.num_features
        self.classifier = (nn.Linear(dim, 4) if not options.hidden_dim else
                           nn.Sequential(nn.Linear(dim, options.hidden_dim), nn.ReLU(inplace=True),
                                         nn.Linear(options.hidden_dim, 4)))
        # Light photometric augmentation; rotations are not part of the view, the method makes all four.
        self.views = ViewSpec(crops=(CropSpec(count=1, scale=tuple(options.crop_scale), flip_p=options.flip_p,
                                              jitter_p=0.0, grayscale_p=0.0),))

    def forward(self, batch: dict) -> StepOutput:
        (images,) = batch["views"]
        if images.shape[-1] != images.shape[-2]:
            raise ValueError("RotNet needs square views: rotating a non-square batch changes its shape")
        rotated = torch.cat([torch.rot90(images, k, dims=(-2, -1)) for k in range(4)])
        targets = torch.arange(4, device=images.device).repeat_interleave(images.shape[0])
        features = self.backbone(rotated)
        logits = self.classifier(features)
        loss = F.cross_entropy(logits.float(), targets)
        accuracy = (logits.argmax(1) == targets).float().mean()
        return StepOutput(loss=loss, metrics={"rotation_accuracy": float(accuracy)},
                          embeddings=features[: images.shape[0]].detach())
