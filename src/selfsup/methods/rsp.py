"""Relative speed perception, RSPNet-style: Chen, Lin, Yang, Zhou, Hu, Lin, Lu, "RSPNet: Relative Speed
Perception for Unsupervised Video Representation Learning", AAAI 2021 (arXiv:2011.07949).

Two pretext tasks on clips of one video (paper, section 3):

1. relative speed perception (RSP): clips played at different speeds (here frame strides 1 and 2,
   :class:`~selfsup.views.video.ClipSpec`); a head on the pair of pooled features tells whether the second clip
   is slower, as fast as, or faster than the first. Absolute speed is ambiguous (a fast walker, a slow runner),
   relative speed within one video is not; the paper ranks the pair's similarity with a margin, this is its
   classification form (3 classes: cross-entropy over the pairs (1x, 2x) -> faster, (2x, 1x) -> slower,
   (1x, 1x') -> same);
2. appearance-focused video instance discrimination (A-VID): clips of the same video at different speeds are
   positives against the other videos of the batch, InfoNCE on projections
   (:func:`~selfsup.losses.nt_xent`, gathered across processes), so appearance is learnt despite the speed.

Loss: ``RSP + avid_weight * A-VID``. The views are three clips per video: two at stride 1 (different times and
augmentations) and one at stride 2, each with one spatial augmentation for all its frames.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field

from selfsup.heads import mlp
from selfsup.losses import nt_xent
from selfsup.methods.base import METHODS, Method, MethodOptions, StepOutput
from selfsup.methods.cvrl import cvrl_clips
from selfsup.views import ViewSpec

SLOWER, SAME, FASTER = 0, 1, 2


class RSPOptions(MethodOptions):
    fast_stride: int = Field(2, ge=2)  # the faster clip skips this many frames per step
    avid_weight: float = Field(1.0, ge=0)
    temperature: float = Field(0.1, gt=0)
    projector_hidden_dim: int = Field(512, ge=1)
    projector_out_dim: int = Field(128, ge=1)
    head_hidden_dim: int = Field(256, ge=1)
    crop_scale: tuple[float, float] = (0.3, 1.0)
    jitter_p: float = Field(0.8, ge=0, le=1)
    grayscale_p: float = Field(0.2, ge=0, le=1)


@METHODS.register("rsp")
class RSP(Method):
    Options = RSPOptions
    test_options = {"projector_hidden_dim": 32, "projector_out_dim": 16, "head_hidden_dim": 16}

    def __init__(self, backbone: nn.Module, options: RSPOptions):
        super().__init__()
        self.backbone, self.options = backbone, options
        width = backbone.num_features
        self.projector = mlp(width, options.projector_hidden_dim, options.projector_out_dim, 2)
        self.speed_head = nn.Sequential(nn.Linear(2 * width, options.head_hidden_dim), nn.ReLU(),
                                        nn.Linear(options.head_hidden_dim, 3))
        self.views = ViewSpec(crops=(cvrl_clips(options, count=2), cvrl_clips(options, 1, options.fast_stride)))

    def forward(self, batch: dict) -> StepOutput:
        slow_a, slow_b, fast = batch["views"]
        h_a, h_b, h_fast = self.backbone(torch.cat([slow_a, slow_b, fast])).chunk(3)
        pairs = [(h_a, h_fast, FASTER), (h_fast, h_a, SLOWER), (h_a, h_b, SAME), (h_b, h_fast, FASTER),
                 (h_fast, h_b, SLOWER), (h_b, h_a, SAME)]
        logits = self.speed_head(torch.cat([torch.cat([first, second], 1) for first, second, _ in pairs]))
        labels = torch.cat([torch.full((len(h_a),), label, device=h_a.device) for _, _, label in pairs])
        rsp = F.cross_entropy(logits.float(), labels)
        z_a, z_fast = self.projector(torch.cat([h_a, h_fast])).chunk(2)
        avid = nt_xent(z_a, z_fast, self.options.temperature)
        with torch.no_grad():
            accuracy = (logits.argmax(-1) == labels).float().mean()
        return StepOutput(loss=rsp + self.options.avid_weight * avid, embeddings=z_a.detach(),
                          metrics={"rsp": float(rsp.detach()), "avid": float(avid.detach()),
                                   "speed_acc": float(accuracy)})
