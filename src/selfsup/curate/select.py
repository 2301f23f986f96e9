"""``selfsup data select POOL --target TARGET --count N``: a coreset of an unlabelled pool toward a small
target set, SimCore-style (Kim et al., "Coreset Sampling from Open-Set for Fine-Grained Self-Supervised
Learning", CVPR 2023): in a backbone's embedding space, the pool images nearest to the target images.

Every target image ranks the pool by cosine similarity; the coreset takes each target's nearest pool image not
yet taken, target after target, round after round, until it holds ``count`` images (so every target image
pulls in its own neighbourhood, rather than the densest part of the target taking everything). The manifest
``OUT`` lists them in the order taken, with the similarity to the target image that took each and the round.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F

from selfsup.curate.dedup import embed_items, list_items, write_manifest
from selfsup.data import DataError


def simcore_order(pool: torch.Tensor, target: torch.Tensor, count: int, chunk: int = 1024) -> tuple[list[int], list[float], list[int]]:
    """(pool indices, similarities, rounds) of the first ``count`` pool items taken (see the module docstring)."""
    if count > len(pool):
        raise DataError(f"--count {count} is more than the pool holds ({len(pool)} images)")
    p, t = F.normalize(pool.float(), dim=1), F.normalize(target.float(), dim=1)
    neighbours = max(1, min(len(pool), -(-count // len(t)) * 4))  # enough per target for the rounds it needs
    ranked, sims = [], []
    for start in range(0, len(t), chunk):
        values, indices = (t[start:start + chunk] @ p.T).topk(neighbours, dim=1)
        ranked.append(indices)
        sims.append(values)
    ranked, sims = torch.cat(ranked).tolist(), torch.cat(sims).tolist()
    taken, order, similarity, rounds = set(), [], [], []
    cursor = [0] * len(t)
    round_ = 0
    while len(order) < count:
        progressed = False
        for k in range(len(t)):
            while cursor[k] < neighbours and ranked[k][cursor[k]] in taken:
                cursor[k] += 1
            if cursor[k] < neighbours and len(order) < count:
                index = ranked[k][cursor[k]]
                taken.add(index)
                order.append(index)
                similarity.append(sims[k][cursor[k]])
                rounds.append(round_)
                progressed = True
        if not progressed:  # every target's neighbour list is used up: the rest by best similarity to any target
            best = (p @ t.T).max(dim=1).values
            for index in best.argsort(descending=True).tolist():
                if len(order) == count:
                    break
                if index not in taken:
                    taken.add(index)
                    order.append(index)
                    similarity.append(float(best[index]))
                    rounds.append(round_ + 1)
        round_ += 1
    return order, similarity, rounds


def select(pool_spec: str | os.PathLike, target_spec: str | os.PathLike, count: int, out: str | os.PathLike, *,
           backbone: str, weights: str | None = None, image_size: int | None = None, log=lambda m: None) -> dict:
    """Write the manifest ``out`` of the ``count`` pool images nearest the target set; returns a summary."""
    if count < 1:
        raise DataError(f"--count must be at least 1, not {count}")
    pool, pool_bad = list_items(pool_spec)
    target, _ = list_items(target_spec)
    log(f"embedding {len(pool)} pool and {len(target)} target images with {backbone}")
    pool_features = embed_items(pool, backbone, weights, image_size)
    target_features = embed_items(target, backbone, weights, image_size)
    order, similarity, rounds = simcore_order(pool_features, target_features, count)
    out = Path(out)
    chosen = [pool[i] for i in order]
    for item in chosen:
        item.split = "train"
    write_manifest(out, chosen, extra={"similarity": [f"{s:.6f}" for s in similarity], "round": rounds})
    return {"pool": len(pool), "target": len(target), "selected": len(chosen), "manifest": str(out),
            "mean_similarity": float(sum(similarity) / len(similarity)), "bad_files": pool_bad}
