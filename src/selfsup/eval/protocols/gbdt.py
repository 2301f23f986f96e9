"""Gradient-boosted trees on the features: scikit-learn's ``HistGradientBoostingClassifier`` (the histogram GBDT
of LightGBM, Ke et al., NeurIPS 2017) trained on the training features and labels, scored on the held-out
ones.

On tables it is the baseline a self-supervised encoder has to be measured against (Grinsztajn, Oyallon,
Varoquaux, "Why do tree-based models still outperform deep learning on tabular data?", NeurIPS 2022): on
the raw-feature row it is the GBDT baseline of every table result. Opt-in (``eval.protocols=[knn, linear,
gbdt]``, the table recipes' default): on images its trees would split wide raw pixels for minutes.

Features wider than ``max_features`` are first projected on their leading principal components (fit on the
training features): a flattened table encoder's F x D features (T-JEPA's, 64 x 64 on table-digits) took the
trees ~10 minutes per row on 2 cores, and the raw-feature rows of tables (tens of columns) stay as they are.
"""
from __future__ import annotations

import numpy as np
import torch
from pydantic import Field, PositiveInt

from selfsup.eval.protocols import PROTOCOLS
from selfsup.eval.protocols.base import FeatureSplits, Protocol, Settings


class GBDTSettings(Settings):
    max_iter: PositiveInt = 200  # boosting rounds, stopped early on a validation tenth of the training split
    learning_rate: float = Field(0.1, gt=0)
    max_leaf_nodes: PositiveInt = 31
    max_features: PositiveInt = 256  # wider features: their leading principal components (see the module docstring)


@PROTOCOLS.register("gbdt")
class GBDT(Protocol):
    settings = GBDTSettings
    family = ("gbdt_top1",)
    order = 27
    uses_run_seed = True
    title = "gradient-boosted trees"
    description = ("scikit-learn's HistGradientBoostingClassifier on the training features and labels (early "
                   "stopping on a tenth of them), accuracy on the held-out split: on the raw-feature row, the "
                   "GBDT baseline of tables")
    about = {"classifier": "sklearn HistGradientBoostingClassifier"}
    test_settings = {"max_iter": 10}

    @staticmethod
    def principal_components(train: torch.Tensor, test: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Both splits on the ``count`` leading principal components of the training features (float64 SVD:
        deterministic up to each component's sign, which a tree's thresholds do not care about)."""
        train, test = train.double(), test.double()
        mean = train.mean(0)
        _, _, vh = torch.linalg.svd(train - mean, full_matrices=False)
        basis = vh[:count].T
        return (train - mean) @ basis, (test - mean) @ basis

    def run(self, f: FeatureSplits, s: GBDTSettings, seed: int, log=None) -> dict:
        from sklearn.ensemble import HistGradientBoostingClassifier  # a dependency; only this protocol uses it

        train_labels = f.train_labels.numpy()
        early = len(train_labels) >= 200  # sklearn's own "auto" threshold is 10,000 samples
        model = HistGradientBoostingClassifier(max_iter=s.max_iter, learning_rate=s.learning_rate,
                                               max_leaf_nodes=s.max_leaf_nodes, early_stopping=early,
                                               random_state=seed)
        train, test = f.train.float(), f.test.float()
        if train.shape[1] > s.max_features:
            train, test = self.principal_components(train, test, s.max_features)
            if log:
                log(f"gbdt: {f.train.shape[1]} features projected on their {s.max_features} leading principal "
                    "components (eval.gbdt.max_features)")
        model.fit(train.numpy(), train_labels)
        predictions = model.predict(test.numpy())
        return {"gbdt_top1": float(np.mean(predictions == f.test_labels.numpy()))}
