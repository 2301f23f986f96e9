"""Distillation losses: a student predicts a teacher, its own moving average (SimSiam, BYOL, DINO, iBOT) or a
frozen pre-trained one (feature matching, SEED's similarity distributions, soft class targets).

Distributed semantics: the losses are means over this rank's samples, which DDP's gradient averaging turns into
the global mean. The centres of DINO and iBOT are the batch statistics: :func:`update_center` takes them over
the global batch with an all_reduce (no autograd: a centre is a constant for the loss).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from selfsup.dist import all_reduce_sum


def negative_cosine(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean negative cosine similarity ``-cos(p, stopgrad(z))``, SimSiam (Chen and He, "Exploring Simple Siamese
    Representation Learning", CVPR 2021, eq. 1). The target is detached here.

    BYOL (Grill et al., NeurIPS 2020, eq. 2) writes its loss as ``||p_n - z_n||^2 = 2 - 2 cos(p, z)``, i.e.
    ``2 + 2 * negative_cosine(p, z)``: same gradient direction, twice the scale. Vectors along the last dim;
    float32. Distributed: per-sample, a local mean; no communication.
    """
    if prediction.shape != target.shape:
        raise ValueError(f"negative_cosine expects one shape, got {tuple(prediction.shape)} and {tuple(target.shape)}")
    return -F.cosine_similarity(prediction.float(), target.detach().float(), dim=-1).mean()


@torch.no_grad()
def dino_targets(teacher_logits: list[torch.Tensor], center: torch.Tensor, teacher_temp: float) -> list[torch.Tensor]:
    """DINO's teacher targets ``softmax((t - center) / teacher_temp)``, one (B, K) float32 tensor per teacher view
    (no gradient): what :func:`dino_loss` distils, and what the collapse monitor's uniform-target check reads."""
    center = center.detach().float()
    return [F.softmax((t.detach().float() - center) / teacher_temp, dim=-1) for t in teacher_logits]


def dino_loss(student_logits: list[torch.Tensor], teacher_logits: list[torch.Tensor], center: torch.Tensor,
              student_temp: float = 0.1, teacher_temp: float = 0.04) -> torch.Tensor:
    """DINO self-distillation loss (Caron et al., "Emerging Properties in Self-Supervised Vision Transformers",
    ICCV 2021, eq. 3 and algorithm 1).

    Teacher targets ``softmax((t - center) / teacher_temp)`` (no gradient); student predictions
    ``log_softmax(s / student_temp)``; the cross entropy ``-sum_k P_t log P_s`` is averaged over the batch and
    over every (teacher view i, student view j) pair with i != j. The teacher's views are the first
    ``len(teacher_logits)`` student views (the global crops), so pair (i, i) compares a view with itself and
    is skipped. Each tensor is (B, K); float32.

    Distributed: a mean over this rank's samples (DDP averaging makes it global); the global part is the
    centre, see :func:`update_center`.
    """
    if len(teacher_logits) > len(student_logits):
        raise ValueError(f"dino_loss: {len(teacher_logits)} teacher views but only {len(student_logits)} student views")
    targets = dino_targets(teacher_logits, center, teacher_temp)
    log_predictions = [F.log_softmax(s.float() / student_temp, dim=-1) for s in student_logits]
    total, pairs = None, 0
    for i, target in enumerate(targets):
        for j, log_prediction in enumerate(log_predictions):
            if i == j:
                continue
            term = -(target * log_prediction).sum(dim=-1).mean()
            total = term if total is None else total + term
            pairs += 1
    if pairs == 0:
        raise ValueError("dino_loss needs at least one (teacher view, other student view) pair")
    return total / pairs


@torch.no_grad()
def update_center(center: torch.Tensor, teacher_logits: list[torch.Tensor], momentum: float = 0.9) -> torch.Tensor:
    """DINO centring (Caron et al., ICCV 2021, eq. 4): ``momentum * center + (1 - momentum) * batch mean`` of the
    teacher logits, the mean taken over every teacher view of every sample of the global batch (one all_reduce
    of the sums and the row count, so unequal local batches are weighted correctly). Returns a new tensor of
    the shape and dtype of ``center``; nothing is modified in place.
    """
    rows = torch.cat([t.detach().float().reshape(-1, t.shape[-1]) for t in teacher_logits])
    # sum and count in one collective
    totals = all_reduce_sum(torch.cat([rows.sum(dim=0), rows.new_tensor([rows.shape[0]])]))
    batch_center = (totals[:-1] / totals[-1]).reshape(center.shape)
    return (center.float() * momentum + batch_center * (1 - momentum)).to(center.dtype)


def masked_patch_distillation(student_patches: list[torch.Tensor], teacher_patches: list[torch.Tensor],
                              masks: list[torch.Tensor], center: torch.Tensor, student_temp: float = 0.1,
                              teacher_temp: float = 0.07) -> torch.Tensor:
    """iBOT's masked image modelling loss (Zhou et al., "iBOT: Image BERT Pre-Training with Online Tokenizer",
    ICLR 2022, eq. 2): self-distillation on patch tokens.

    For each global view v, the student saw the view with some patches replaced by a mask token and the
    teacher saw it intact; at every MASKED patch the student's ``log_softmax(s / student_temp)`` matches the
    teacher's centred, sharpened ``softmax((t - center) / teacher_temp)`` by cross-entropy. Each image's loss is
    the mean over its masked patches (an image without masked patches contributes 0), averaged over the batch
    and then over the views. ``student_patches[v]`` and ``teacher_patches[v]`` are (B, N, K) logits of the same
    view, ``masks[v]`` (B, N) bool; float32.

    Distributed: a mean over this rank's images (DDP averaging makes it global); the patch centre is the one
    batch statistic, updated over the global batch with :func:`update_center` (which flattens the patches).
    """
    if not (len(student_patches) == len(teacher_patches) == len(masks)) or not masks:
        raise ValueError("masked_patch_distillation needs one student output, teacher output and mask per view")
    center = center.detach().float().reshape(1, 1, -1)
    total = None
    for student, teacher, mask in zip(student_patches, teacher_patches, masks):
        target = F.softmax((teacher.detach().float() - center) / teacher_temp, dim=-1)
        per_patch = -(target * F.log_softmax(student.float() / student_temp, dim=-1)).sum(dim=-1)  # (B, N)
        weight = mask.float()
        per_image = (per_patch * weight).sum(dim=-1) / weight.sum(dim=-1).clamp(min=1.0)
        total = per_image.mean() if total is None else total + per_image.mean()
    return total / len(masks)


def masked_patch_distillation_at_masks(student_masked: torch.Tensor, teacher_patches: torch.Tensor, mask: torch.Tensor,
                                       center: torch.Tensor, student_temp: float = 0.1,
                                       teacher_temp: float = 0.07) -> torch.Tensor:
    """:func:`masked_patch_distillation` with the student's logits given at the masked patches only, the
    patches its loss reads (so the student's patch head need not run on the visible ones, ~70% of them at
    iBOT's mask ratios).

    ``student_masked`` (M, K) holds the student's logits at ``mask.nonzero()`` (row-major: image by image,
    patch by patch), i.e. ``student_patches[mask]``; ``teacher_patches`` (B, N, K) and ``mask`` (B, N) bool are
    those of every image. The views go along the batch (``torch.cat`` of equal-sized views): the mean over
    all B images equals the mean over views of each view's mean over its images, so the value is that of
    :func:`masked_patch_distillation` on the same views, up to float summation order (tests/test_losses_jepa.py).
    Distributed: as :func:`masked_patch_distillation`.
    """
    if mask.dim() != 2 or teacher_patches.shape[:2] != mask.shape or student_masked.shape[0] != int(mask.sum()):
        raise ValueError(f"masked_patch_distillation_at_masks: {student_masked.shape[0]} student rows, teacher "
                         f"{tuple(teacher_patches.shape)} and mask {tuple(mask.shape)} do not match")
    center = center.detach().float().reshape(1, -1)
    target = F.softmax((teacher_patches.detach()[mask].float() - center) / teacher_temp, dim=-1)  # (M, K)
    per_patch = -(target * F.log_softmax(student_masked.float() / student_temp, dim=-1)).sum(dim=-1)  # (M,)
    image_of_patch = mask.nonzero()[:, 0]
    per_image = per_patch.new_zeros(mask.shape[0]).index_add(0, image_of_patch, per_patch)
    return (per_image / mask.sum(dim=-1).clamp(min=1).to(per_image.dtype)).mean()


# -- distillation from a frozen teacher (selfsup.methods.distill, dmae, simclrv2_distill) -------------------------
FEATURE_DISTANCES = ("cosine", "smooth_l1", "l1", "mse")


def feature_distillation(student: torch.Tensor, teacher: torch.Tensor, distance: str = "cosine",
                         normalize_target: bool = True) -> torch.Tensor:
    """Feature matching: the student's (projected) features regress the frozen teacher's, vector by vector
    along the last dimension (FitNets, Romero et al., ICLR 2015; Heo et al., "A Comprehensive Overhaul of
    Feature Distillation", ICCV 2019; DMAE, Bai et al., CVPR 2023, on patch tokens).

    ``distance``: ``cosine`` (``1 - cos``, blind to the teacher's scale), or ``smooth_l1`` / ``l1`` / ``mse``
    against the teacher's vectors, which ``normalize_target`` first standardises per vector (a layer norm
    without affine parameters: a teacher's residual-stream tokens or post-ReLU features have scales of their
    own that an elementwise distance would otherwise weigh). Shapes (..., D), any leading dims; the mean over
    vectors; float32; the teacher is detached. Distributed: per vector, a local mean; no communication.
    """
    if student.shape != teacher.shape:
        raise ValueError(f"feature_distillation expects one shape, got {tuple(student.shape)} and {tuple(teacher.shape)}")
    student, teacher = student.float(), teacher.detach().float()
    if distance == "cosine":
        return 1 - F.cosine_similarity(student, teacher, dim=-1).mean()
    if normalize_target:
        teacher = F.layer_norm(teacher, teacher.shape[-1:], eps=1e-6)
    if distance == "smooth_l1":
        return F.smooth_l1_loss(student, teacher, beta=1.0)
    if distance == "l1":
        return F.l1_loss(student, teacher)
    if distance == "mse":
        return F.mse_loss(student, teacher)
    raise ValueError(f"feature_distillation: unknown distance {distance!r}; use one of {', '.join(FEATURE_DISTANCES)}")


def similarity_distillation(student: torch.Tensor, teacher: torch.Tensor, support: torch.Tensor,
                            student_temp: float = 0.2, teacher_temp: float = 0.01) -> torch.Tensor:
    """SEED (Fang, Wang, Wang, Zhang, Yang, Liu, "SEED: Self-supervised Distillation for Visual
    Representation", ICLR 2021, eq. 2-4): the student learns the teacher's similarity distribution over a
    support set of teacher embeddings instead of the embeddings themselves.

    With ``z_T``, ``z_S`` the L2-normalised teacher and student embeddings (B, D) and ``d_j`` the normalised rows
    of ``support`` (K, D) (the teacher queue, which should hold the current batch's own teacher embeddings: the
    paper appends each sample's ``z_T`` as its positive), ``p_T = softmax(z_T . d / teacher_temp)`` (sharp, no
    gradient), ``p_S = softmax(z_S . d / student_temp)``, and the loss is the cross-entropy ``-sum_j p_T log p_S``
    averaged over the batch (the paper's temperatures: 0.01 and 0.2).

    Distributed: per sample given the support set, a local mean; the support set is the caller's and must be
    the same on every rank (:class:`~selfsup.methods.parts.queue.FeatureQueue` gathers every rank's keys), so N
    processes x B samples give the loss of one process with N * B.
    """
    if student.shape != teacher.shape or support.ndim != 2 or support.shape[1] != student.shape[1]:
        raise ValueError(f"similarity_distillation: student {tuple(student.shape)}, teacher {tuple(teacher.shape)} "
                         f"and support {tuple(support.shape)} do not fit")
    support = F.normalize(support.detach().float(), dim=1)
    with torch.no_grad():
        target = F.softmax(F.normalize(teacher.detach().float(), dim=1) @ support.T / teacher_temp, dim=1)
    log_prediction = F.log_softmax(F.normalize(student.float(), dim=1) @ support.T / student_temp, dim=1)
    return -(target * log_prediction).sum(dim=1).mean()


def soft_target_distillation(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                             temperature: float = 1.0) -> torch.Tensor:
    """Distillation of a classifier's softened predictions (Hinton, Vinyals, Dean, "Distilling the Knowledge in
    a Neural Network", 2015), as SimCLRv2 distils a fine-tuned teacher on unlabelled images (Chen, Kornblith,
    Swersky, Norouzi, Hinton, "Big Self-Supervised Models are Strong Semi-Supervised Learners", NeurIPS 2020,
    eq. 2): ``-sum_y softmax(t / T)_y log softmax(s / T)_y``, averaged over the batch. (B, K) logits; float32; the
    teacher is detached. Distributed: per sample, a local mean; no communication.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"soft_target_distillation expects one shape, got {tuple(student_logits.shape)} and "
                         f"{tuple(teacher_logits.shape)}")
    target = F.softmax(teacher_logits.detach().float() / temperature, dim=-1)
    return -(target * F.log_softmax(student_logits.float() / temperature, dim=-1)).sum(dim=-1).mean()
