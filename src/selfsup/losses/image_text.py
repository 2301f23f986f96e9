"""Image-text contrastive losses: CLIP, SigLIP, ConVIRT.

Each takes the two towers' embeddings of one batch of B pairs, ``image_emb[i]`` matching ``text_emb[i]``, both
(B, D). They are L2-normalised here, and everything is computed in float32 with autocast off (bf16 logits
times a scale of up to 100 would be too coarse for the softmax / sigmoid).

Logit scale: CLIP and SigLIP learn their temperature. The caller passes the parameter as stored, the LOG of
the scale (``ImageTextTowers.logit_scale``; CLIP initialises it to log(1 / 0.07), SigLIP to log 10), never its
exponential (open_clip's model returns ``logit_scale.exp()``: pass the parameter, not that). The scale used is
``exp(logit_scale).clamp(max=100)`` (CLIP: "clipped to prevent scaling the logits by more than 100"). While
exp(logit_scale) < 100 the gradient into logit_scale is dL/dscale * scale. From 100 up (logit_scale >= log 100,
the bound included: torch's clamp passes no gradient at its bound) the scale is the constant 100 and
logit_scale gets exactly zero gradient from the loss: it stays where it is unless something else moves it
(weight decay, optimizer momentum), so keep it out of weight decay.

Distributed semantics (docs/ARCHITECTURE.md): every rank passes B pairs, the same B on every rank; the global
batch is the N * B pairs of N ranks. Each loss returns a value whose mean over ranks is the single-process
loss on the global batch, and other ranks' embeddings reach it through autograd-aware communication from
:mod:`selfsup.dist`, whose backward sums over ranks what every rank's loss sends to a rank's embeddings. With
DDP averaging the gradients, N processes x batch B then give the loss and the gradients of 1 process x batch
N * B (tests/test_distributed_image_text.py). ``gather=False`` keeps each rank to its own B pairs.

- ``clip_loss(local_loss=True)`` and ``convirt_loss``: this rank's images against all N * B texts and its texts
  against all images (``all_gather_with_grad`` of both), the mean over its 2 x B anchors; logits 2 x B x NB.
- ``clip_loss(local_loss=False)``: every rank gathers both and computes the full NB x NB logit matrix, so
  every rank returns the same value, the global loss itself. No rescaling is needed under DDP: rank r's
  embeddings receive, through the gather's backward, the sum of N identical gradients, N x dL/d(rank r's
  embeddings), and DDP divides the parameter gradients by N. The local form gives rank r the same N x: the sum
  over ranks of their losses' gradients is N times the gradient of their mean, the global loss. The two modes
  give equal gradients; the non-local one costs N times the logit memory and compute.
- ``siglip_loss``: this rank's images against every rank's texts, the texts walking a ring (see there).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from selfsup.dist import all_gather_with_grad, rank, send_to_next_rank_with_grad, world_size

MAX_LOGIT_SCALE = 100.0


def _check_pairs(loss: str, image_emb: torch.Tensor, text_emb: torch.Tensor) -> None:
    if image_emb.ndim != 2 or text_emb.ndim != 2:
        raise ValueError(f"{loss} expects image and text embeddings of shape (B, D), got {tuple(image_emb.shape)} "
                         f"and {tuple(text_emb.shape)}")
    if image_emb.shape[0] != text_emb.shape[0]:
        raise ValueError(f"{loss} expects one text per image: {image_emb.shape[0]} images but {text_emb.shape[0]} "
                         f"texts")
    if image_emb.shape[1] != text_emb.shape[1]:
        raise ValueError(f"{loss} expects both towers in one embedding space: image dimension {image_emb.shape[1]}, "
                         f"text dimension {text_emb.shape[1]}")
    if image_emb.shape[0] == 0:
        raise ValueError(f"{loss} needs at least one image-text pair")


def _scalar(loss: str, name: str, value: torch.Tensor | float, device: torch.device) -> torch.Tensor:
    """A 0-d float32 tensor of ``value`` (a one-element tensor, gradient kept, or a fixed number)."""
    if not torch.is_tensor(value):
        return torch.tensor(float(value), device=device)
    if value.numel() != 1:
        raise ValueError(f"{loss}: {name} must be a scalar (one-element tensor), got shape {tuple(value.shape)}")
    return value.float().reshape(())


def _logit_scale(loss: str, logit_scale: torch.Tensor | float, device: torch.device) -> torch.Tensor:
    return _scalar(loss, "logit_scale (the log of the scale)", logit_scale, device).exp().clamp(max=MAX_LOGIT_SCALE)


def _two_way_info_nce(image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor, image_weight: float,
                      gather: bool, local_loss: bool) -> torch.Tensor:
    """``image_weight`` x cross entropy image -> text + (1 - ``image_weight``) x text -> image, over normalised
    float32 embeddings, with global candidates when ``gather`` (module doc)."""
    batch = image.shape[0]
    all_images = all_gather_with_grad(image) if gather else image
    all_texts = all_gather_with_grad(text) if gather else text
    if local_loss or all_images.shape[0] == batch:
        targets = torch.arange(batch, device=image.device) + (rank() * batch if all_images.shape[0] > batch else 0)
        image_to_text = F.cross_entropy(scale * image @ all_texts.T, targets)
        text_to_image = F.cross_entropy(scale * text @ all_images.T, targets)
    else:
        logits = scale * all_images @ all_texts.T  # (NB, NB), the same on every rank
        targets = torch.arange(all_images.shape[0], device=image.device)
        image_to_text = F.cross_entropy(logits, targets)
        text_to_image = F.cross_entropy(logits.T, targets)
    return image_weight * image_to_text + (1 - image_weight) * text_to_image


def clip_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor | float, *,
              gather: bool = True, local_loss: bool = False) -> torch.Tensor:
    """CLIP's symmetric InfoNCE (Radford et al., "Learning Transferable Visual Models From Natural Language
    Supervision", ICML 2021, Figure 3): logits ``s * <x_i, y_j>`` of L2-normalised image and text embeddings,
    with ``s = exp(logit_scale).clamp(max=100)``; the mean of the cross entropy over images (the matching text
    is the class) and over texts (the matching image), each mean over the global batch when ``gather``.

    ``logit_scale`` is the learnable LOG of the scale (a scalar parameter, init log(1 / 0.07)); the clamp and its
    gradient are in the module doc. ``local_loss``: open_clip's option, each rank's B images against all N * B
    texts and its B texts against all images (logits 2 x B x NB per rank); otherwise every rank computes the
    full NB x NB matrix and returns the global loss. Both give the single-process loss and gradients on the
    global batch under DDP, without any rescaling (module doc: why).
    """
    _check_pairs("clip_loss", image_emb, text_emb)
    with torch.autocast(device_type=image_emb.device.type, enabled=False):
        scale = _logit_scale("clip_loss", logit_scale, image_emb.device)
        image, text = F.normalize(image_emb.float(), dim=1), F.normalize(text_emb.float(), dim=1)
        return _two_way_info_nce(image, text, scale, 0.5, gather, local_loss)


def _negative_log_sigmoid_sum(image: torch.Tensor, texts: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor,
                              matching: bool) -> torch.Tensor:
    """Sum over one (B, B) block of -log sigmoid(z_ij (s <x_i, y_j> + b)); z_ij = +1 on the diagonal of the
    ``matching`` block (this rank's own texts), -1 everywhere else."""
    logits = scale * image @ texts.T + bias
    signs = -torch.ones_like(logits)
    if matching:
        signs.diagonal().fill_(1.0)
    return -F.logsigmoid(signs * logits).sum()


def siglip_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor | float,
                logit_bias: torch.Tensor | float, *, gather: bool = True) -> torch.Tensor:
    """SigLIP's pairwise sigmoid loss (Zhai et al., "Sigmoid Loss for Language Image Pre-Training", ICCV 2023,
    eq. 1 and section 3.3): ``-1/|B| sum_i sum_j log sigmoid(z_ij (t <x_i, y_j> + b))`` over L2-normalised
    embeddings, z_ij = +1 for a matching pair (i = j) and -1 otherwise: every image-text pair is an independent
    binary classification, summed over the texts and averaged over the images.

    ``logit_scale`` is the learnable LOG of t (t = exp(logit_scale).clamp(max=100), module doc), ``logit_bias``
    the scalar b, both parameters (the paper's init: t' = log 10, b = -10, so that the many negatives do not
    dominate the first steps).

    Distributed, the paper's chunked form: this rank's B images meet its own texts (the only block holding
    positives), then its text chunk walks a ring. In each of N - 1 steps every rank sends the (B, D) text chunk
    it holds to rank r + 1 and receives one from rank r - 1 (``dist.send_to_next_rank_with_grad``, point to
    point), and adds that chunk's all-negative (B, B) block; in the backward the gradients of the chunks walk
    the ring the other way to the rank that owns each text. The value is this rank's sum divided by its B, so
    the mean over ranks is the global loss divided by N * B. Communication: (N - 1) x B x D floats per rank
    each way, as much as an all_gather, in N - 1 neighbour steps that are not overlapped with compute here.
    Memory: the full NB x NB matrix never exists; a block is B x B, but autograd keeps every received chunk
    and every block for the backward, (N - 1) x B x D texts and B x NB logits per rank.
    """
    _check_pairs("siglip_loss", image_emb, text_emb)
    with torch.autocast(device_type=image_emb.device.type, enabled=False):
        scale = _logit_scale("siglip_loss", logit_scale, image_emb.device)
        bias = _scalar("siglip_loss", "logit_bias", logit_bias, image_emb.device)
        image, text = F.normalize(image_emb.float(), dim=1), F.normalize(text_emb.float(), dim=1)
        total = _negative_log_sigmoid_sum(image, text, scale, bias, matching=True)
        if gather:
            chunk = text
            for _ in range(world_size() - 1):
                chunk = send_to_next_rank_with_grad(chunk)
                total = total + _negative_log_sigmoid_sum(image, chunk, scale, bias, matching=False)
        return total / image.shape[0]


def convirt_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, temperature: float = 0.1, weight: float = 0.75,
                 *, gather: bool = True) -> torch.Tensor:
    """ConVIRT's bidirectional InfoNCE (Zhang et al., "Contrastive Learning of Medical Visual Representations
    from Paired Images and Text", MLHC 2022, section 3): with cosine similarities over a fixed ``temperature``
    tau, l(v->u)_i = -log softmax_k(<v_i, u_k> / tau)_i for image i against all texts, l(u->v)_i the same for text
    i against all images, and the loss ``mean_i [weight * l(v->u)_i + (1 - weight) * l(u->v)_i]`` (the paper's
    lambda = 0.75, tau = 0.1: the image -> text direction weighs more).

    Distributed as CLIP's ``local_loss``: this rank's anchors against the gathered global candidates.
    """
    _check_pairs("convirt_loss", image_emb, text_emb)
    if temperature <= 0:
        raise ValueError(f"convirt_loss: temperature must be positive, got {temperature}")
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"convirt_loss: weight (lambda, of the image -> text direction) must be in [0, 1], got "
                         f"{weight}")
    with torch.autocast(device_type=image_emb.device.type, enabled=False):
        image, text = F.normalize(image_emb.float(), dim=1), F.normalize(text_emb.float(), dim=1)
        scale = torch.tensor(1.0 / temperature, device=image.device)
        return _two_way_info_nce(image, text, scale, weight, gather, local_loss=True)
