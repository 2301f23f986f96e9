"""Nearest class mean (NCM): every class is the mean of its L2-normalised training features, and a test image
takes the class whose mean is most cosine-similar to its own normalised features.

The classifier of Mensink et al., "Distance-Based Image Classification: Generalizing to New Classes at
Near-Zero Cost" (TPAMI 2013), here without a learned metric; with ``center`` the features are first centred on
the training mean, SimpleShot's CL2N (Wang et al., 2019). It has no hyper-parameter to choose and uses all
training labels: between kNN (local) and the linear probe (trained), it asks whether each class is one
direction in feature space.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from selfsup.eval.protocols import PROTOCOLS
from selfsup.eval.protocols.base import FeatureSplits, Protocol, Settings


class NCMSettings(Settings):
    center: bool = False  # subtract the mean training feature before normalising (SimpleShot's CL2N)


def class_means(features: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(classes present, the L2-normalised mean of each class's L2-normalised features), classes ascending."""
    classes, index = torch.unique(labels, return_inverse=True)
    sums = torch.zeros(len(classes), features.shape[1], dtype=features.dtype).index_add_(0, index, features)
    return classes, F.normalize(sums, dim=1)  # the mean's direction: dividing by the class size changes nothing


@PROTOCOLS.register("ncm")
class NearestClassMean(Protocol):
    settings = NCMSettings
    family = ("ncm_",)
    order = 25  # after the linear probe, before the image protocols
    title = "nearest class mean"
    description = ("each class is the mean of its L2-normalised training features; a test image takes the class "
                   "of the most cosine-similar mean (Mensink et al., TPAMI 2013; SimpleShot's CL2N with center)")
    about = {"similarity": "cosine", "classifier": "nearest class mean of L2-normalised train features"}

    def run(self, f: FeatureSplits, s: NCMSettings, seed: int, log=None) -> dict:
        train, test = f.train.float(), f.test.float()
        if s.center:
            mean = train.mean(dim=0)
            train, test = train - mean, test - mean
        classes, means = class_means(F.normalize(train, dim=1), f.train_labels.long())
        predictions = classes[(F.normalize(test, dim=1) @ means.T).argmax(dim=1)]
        return {"ncm_top1": float((predictions == f.test_labels.long()).double().mean())}
