"""SwAV: Caron, Misra, Mairal, Goyal, Bojanowski, Joulin, "Unsupervised Learning of Visual Features by
Contrasting Cluster Assignments", NeurIPS 2020 (arXiv:2006.09882).

Every view is projected and scored against K learnable prototypes. Codes (soft cluster assignments) of the
global views come from the Sinkhorn-Knopp equipartition of their scores; each view predicts the code of
every other global view (swapped prediction). Multi-crop adds small local views that are predicted from
but never assigned. A queue of earlier embeddings can join the Sinkhorn step when batches are small, and
the prototypes are frozen for the first iterations (paper, appendix A).

Sinkhorn's normalisation is over the global batch (all-reduced sums inside the loss), so codes do not
depend on how the batch is split across ranks. BN reads batch statistics: SyncBatchNorm under DDP.
"""
from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field

from selfsup.methods.parts.queue import FeatureQueue
from selfsup.heads import Prototypes, mlp
from selfsup.losses import swav_loss
from selfsup.methods.base import METHODS, Method, StepOutput
from selfsup.methods.common import MultiCropOptions, Probability, Scale, Strength, encode_by_resolution


class SwAVOptions(MultiCropOptions):
    num_prototypes: int = Field(3000, ge=2)
    temperature: float = Field(0.1, gt=0)
    epsilon: float = Field(0.05, gt=0)  # entropy regularisation of Sinkhorn
    sinkhorn_iterations: int = Field(3, ge=1)
    projector_hidden_dim: int = Field(2048, ge=1)
    projector_out_dim: int = Field(128, ge=1)
    global_scale: Scale = (0.14, 1.0)
    local_scale: Scale = (0.05, 0.14)
    colour_strength: Strength = 0.8  # SwAV's colour jitter strength
    solarize_p: Probability = 0.0
    queue_size: int = Field(0, ge=0)  # 0: no queue
    queue_start: float = Field(0.15, ge=0, le=1)  # fraction of training before the queue is used
    freeze_prototypes: float = Field(0.01, ge=0, le=1)  # fraction of training with frozen prototypes


@METHODS.register("swav")
class SwAV(Method):
    Options = SwAVOptions
    test_options = {"num_prototypes": 10, "projector_hidden_dim": 32, "projector_out_dim": 16, "num_local_crops": 2,
                    "local_size": 8, "queue_size": 32, "queue_start": 0.0, "freeze_prototypes": 0.5}
    sync_batchnorm = True

    def __init__(self, backbone: nn.Module, options: SwAVOptions):
        super().__init__()
        self.options = options
        self.backbone = backbone
        self.projector = mlp(backbone.num_features, options.projector_hidden_dim, options.projector_out_dim)
        self.prototypes = Prototypes(options.projector_out_dim, options.num_prototypes)
        # One queue per assigned (global) view, holding normalised embeddings.
        self.queues = nn.ModuleList(FeatureQueue(options.queue_size, options.projector_out_dim)
                                    for _ in range(2)) if options.queue_size else None
        self.progress = 0.0
        self.views = options.multi_crop_views()

    def on_step(self, progress: float) -> None:
        self.progress = progress
        self.prototypes.normalize_()

    def before_optimizer_step(self, progress: float) -> None:
        if progress < self.options.freeze_prototypes:
            self.prototypes.weight.grad = None

    def forward(self, batch: dict) -> StepOutput:
        embeddings = encode_by_resolution(lambda x: F.normalize(self.projector(self.backbone(x)), dim=1),
                                          batch["views"])
        scores = [self.prototypes(z) for z in embeddings]
        queue_scores = None
        if self.queues is not None:
            use_queue = self.progress >= self.options.queue_start
            if use_queue:
                queue_scores = [self.prototypes(q.get().clone()).detach() for q in self.queues]
            if self.training:
                for queue, z in zip(self.queues, embeddings[:2]):
                    queue.enqueue(z.detach())
        o = self.options
        loss = swav_loss(scores, assign_views=(0, 1), iterations=o.sinkhorn_iterations, epsilon=o.epsilon,
                         temperature=o.temperature, queue_scores=queue_scores)
        return StepOutput(loss=loss, embeddings=embeddings[0].detach())
