"""What an evaluation protocol is: a :class:`Protocol` subclass in its own file of ``eval/protocols/``.

A protocol owns everything that is particular to it, so that adding one is adding a file:

- ``settings``: a pydantic model (:class:`Settings`: extra keys are errors); it is the config section
  ``eval.<name>`` (``eval.knn.k``) and the protocol's part of results.json's ``protocol`` record;
- ``run``: ``(data, settings, seed, log) -> {metric: value}``, where ``data`` is a :class:`FeatureSplits`
  (``inputs = "features"``: cached features of one row), an :class:`ImageTask` (``inputs = "images"``: the
  row's backbone and the labelled images) or an :class:`ImageTextTask` (``inputs = "image_text"``: the row's
  two towers and the image-text pairs; only rows of an image-text model have one);
- ``family``: the metric-name prefixes it writes, in display order within the protocol, and ``order``: where
  the protocol's columns stand among the others;
- ``scope_keys``: the settings that only say *which* values were computed (kNN's ``k``), never a reason
  for two values to be incomparable (see :mod:`selfsup.eval.compare`);
- ``not_scores``: metrics that are chosen settings rather than scores (kept in results.json, not in tables);
  ``plain_numbers``: scores that are not fractions (shown as numbers, not percentages);
- ``raw_pixels``: whether it applies to the raw-pixel row; ``default``: whether it runs unless
  ``eval.protocols`` says otherwise; ``in_all``: whether ``--protocols all`` includes it;
- ``title`` and ``description``: a line for the report; ``about``: fixed facts for the record;
  ``test_settings``: what makes it run in seconds on tiny data (the tests parametrized over the registry).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Literal

import torch
from selfsup.config import SettingsModel
from selfsup.views.preprocess import Preprocess

Log = Callable[[str], None]


class Settings(SettingsModel):
    """A protocol's settings: the ``eval.<protocol>`` config section; a misspelt key is an error."""


class NoSettings(Settings):
    """For a protocol with nothing to choose."""


@dataclass(frozen=True)
class FeatureSplits:
    """Cached features of one row (backbone or raw pixels): train = labelled bank, test = evaluation."""

    train: torch.Tensor
    train_labels: torch.Tensor
    test: torch.Tensor
    test_labels: torch.Tensor
    raw_pixels: bool = False  # the raw-pixel baseline row (protocols may bound their cost on its wide inputs)


@dataclass(frozen=True)
class ImageTask:
    """What an image protocol trains and tests on: one row's backbone (None for the raw-pixel row), the
    labelled images (DataSplits) and how pixels become the backbone's input."""

    backbone: torch.nn.Module | None
    splits: Any
    preprocess: Preprocess
    device: Any = "cpu"


@dataclass(frozen=True)
class ImageTextTask:
    """What an image-text protocol (zero-shot, image-text retrieval) runs on: one row's two towers
    (:class:`~selfsup.backbones.towers.ImageTextTowers`), the splits (the test split's captions and labels)
    and the image tower's transform."""

    towers: torch.nn.Module
    splits: Any
    preprocess: Preprocess
    device: Any = "cpu"
    batch_size: int = 256


class Protocol:
    """One evaluation protocol; subclasses set the class attributes and :meth:`run` (see the module doc)."""

    name: str = ""  # set by the registry
    settings: ClassVar[type[Settings]] = NoSettings
    inputs: ClassVar[Literal["features", "images", "image_text"]] = "features"
    family: ClassVar[tuple[str, ...]] = ()
    order: ClassVar[int] = 100
    scope_keys: ClassVar[frozenset[str]] = frozenset()
    not_scores: ClassVar[frozenset[str]] = frozenset()
    plain_numbers: ClassVar[frozenset[str]] = frozenset()
    raw_pixels: ClassVar[bool] = True
    default: ClassVar[bool] = False
    in_all: ClassVar[bool] = True
    uses_run_seed: ClassVar[bool] = False  # the record then holds the run's seed (random-init, head init, ...)
    title: ClassVar[str] = ""
    description: ClassVar[str] = ""
    about: ClassVar[dict] = {}
    test_settings: ClassVar[dict] = {}  # settings that make it run in seconds on tiny data (the registry tests)

    def run(self, data, settings: Settings, seed: int, log: Log | None = None) -> dict:
        raise NotImplementedError

    def record(self, settings: Settings, seed: int) -> dict | str:
        """This protocol's entry in results.json's ``protocol`` record: every setting that changes a number."""
        entry = {**settings.model_dump(mode="json"), **self.about}
        return {**entry, "seed": seed} if self.uses_run_seed else entry

    def writes(self, metric: str) -> int | None:
        """Length of the longest of this protocol's prefixes that ``metric`` starts with (None: not its metric)."""
        lengths = [len(prefix) for prefix in self.family if metric.startswith(prefix)]
        return max(lengths) if lengths else None

    def __repr__(self) -> str:
        return f"<evaluation protocol {self.name!r}>"


class ImageProtocol(Protocol):
    """A protocol that trains on the images: ``train(backbone or None, splits, preprocess=, settings=, seed=,
    device=, log=) -> {metric: value}`` runs it on one row."""

    inputs = "images"
    in_all = False  # trains for several epochs: named explicitly, not part of ``--protocols all``
    uses_run_seed = True
    train: ClassVar[Callable[..., dict]]

    def run(self, t: ImageTask, settings: Settings, seed: int, log: Log | None = None) -> dict:
        return type(self).train(t.backbone, t.splits, preprocess=t.preprocess, settings=settings, seed=seed,
                                device=t.device, log=log)
