"""Few-shot: ``k`` labels per class drawn with fixed seeds, SimpleShot nearest centroid (:mod:`selfsup.eval.fewshot`)."""
from __future__ import annotations

import torch
from pydantic import Field, PositiveInt

from selfsup.eval.fewshot import DEFAULT_FEWSHOT_SEEDS, DEFAULT_SHOTS, fewshot_accuracy
from selfsup.eval.protocols import PROTOCOLS
from selfsup.eval.protocols.base import FeatureSplits, Protocol, Settings


class FewshotSettings(Settings):
    shots: list[PositiveInt] = Field(default_factory=lambda: list(DEFAULT_SHOTS))
    seeds: list[int] = Field(default_factory=lambda: list(DEFAULT_FEWSHOT_SEEDS))  # fixed: same labels every run


@PROTOCOLS.register("fewshot")
class Fewshot(Protocol):
    settings = FewshotSettings
    family = ("fewshot_",)
    order = 50
    scope_keys = frozenset({"shots"})
    title = "few-shot"
    description = ("k labelled training images per class, drawn with each of several fixed seeds (the same "
                   "images for every run); SimpleShot's nearest centroid on centred, L2-normalised features "
                   "(Wang et al., 2019); mean ± standard deviation over the seeds")
    about = {"classifier": "nearest centroid (SimpleShot CL2N)"}

    def run(self, f: FeatureSplits, s: FewshotSettings, seed: int, log=None) -> dict:
        smallest_class = int(torch.bincount(f.train_labels)[torch.unique(f.train_labels)].min())
        # A shot count larger than the smallest class cannot be drawn; skip it rather than fail the whole eval.
        shots = [k for k in s.shots if k <= smallest_class]
        out = {}
        for k, score in fewshot_accuracy(f.train, f.train_labels, f.test, f.test_labels, shots=shots,
                                         seeds=s.seeds).items():
            out[f"fewshot_{k}shot_top1"] = score["mean"]
            out[f"fewshot_{k}shot_top1_std"] = score["std"]
        return out
