"""Text views: a sample's caption, chosen reproducibly, and tokenized to a fixed context length.

Tokens are CLIP's byte-level BPE (Radford et al., "Learning Transferable Visual Models From Natural Language
Supervision", ICML 2021; the vocabulary of 49,408 tokens, lower-cased, ``<start_of_text>`` ... ``<end_of_text>``
then zero padding), through open_clip's bundled ``SimpleTokenizer``: the ids equal ``open_clip.tokenize`` /
``open_clip.get_tokenizer("ViT-B-32")`` ones, so text towers loaded from open_clip see what they were trained
on. A caption longer than the context is cut and its last token replaced by ``<end_of_text>``, as open_clip
does, so EOT pooling always finds one.

open_clip is the optional ``text`` extra: this module imports without it and fails, naming the extra, only
when a tokenizer or a text encoder is needed (:func:`require_text_extra`, which the text encoders call too).

Speed (one process, ``nice -n 19`` on a shared 2-core EPYC, open_clip 3.3): 256 captions of 12 words tokenize
in about 9 ms (11-13 ms when every caption also has a word never seen before), ~40 us a caption; building the
tokenizer takes 0.06 s once per process, importing open_clip 1.5-2.5 s. Tokenizing in the DataLoader workers
is far from the bottleneck.
"""
from __future__ import annotations

import functools
import random
from types import ModuleType
from typing import Any, Sequence

import torch

from selfsup.config import ConfigError

TEXT_EXTRA_MESSAGE = "image-text training needs the text extra: pip install 'selfsup[text]'"
#: Size of the BPE vocabulary (open_clip's ``SimpleTokenizer``; ids 49406/49407 are start/end of text).
BPE_VOCAB_SIZE = 49408


class TextExtraMissing(ConfigError):
    """open_clip (the ``text`` extra) is needed and not installed."""


def require_text_extra() -> ModuleType:
    """The ``open_clip`` module, or :class:`TextExtraMissing` saying how to install it."""
    try:
        import open_clip  # optional: the text extra (image-only users never need it)
    except ImportError as error:
        raise TextExtraMissing(f"{TEXT_EXTRA_MESSAGE} (import open_clip failed: {error})") from None
    return open_clip


@functools.lru_cache(maxsize=1)
def _tokenizer() -> Any:
    # One per process: building it reads and merges the bundled 49k-entry vocabulary, and its
    # per-word BPE cache then makes repeated words free. DataLoader workers inherit or rebuild their own.
    return require_text_extra().SimpleTokenizer()


def tokenize(texts: Sequence[str] | str, context_length: int) -> torch.Tensor:
    """``(len(texts), context_length)`` int64 token ids of ``texts`` (one string is one text)."""
    if isinstance(texts, str):
        texts = [texts]
    if isinstance(context_length, bool) or not isinstance(context_length, int) or context_length < 2:
        raise ValueError(f"context_length must be an int >= 2 (start and end of text), got {context_length!r}")
    texts = list(texts)
    if not all(isinstance(t, str) for t in texts):
        raise TypeError(f"tokenize takes strings, got {sorted({type(t).__name__ for t in texts})}")
    return _tokenizer()(texts, context_length=context_length)


def choose_caption(captions: Sequence[str], generator: random.Random | torch.Generator) -> str:
    """One of ``captions``, uniformly, drawn from ``generator``: the sample's own (``random.Random`` from
    :func:`selfsup.views.augment.sample_generator`, seeded by seed, epoch and index, so a sample's caption does
    not depend on workers, ranks or resumes), or a torch generator."""
    if len(captions) == 0:
        raise ValueError("choose_caption needs at least one caption")
    if isinstance(generator, random.Random):
        return captions[generator.randrange(len(captions))]
    return captions[int(torch.randint(len(captions), (), generator=generator))]


__all__ = ["BPE_VOCAB_SIZE", "TEXT_EXTRA_MESSAGE", "TextExtraMissing", "choose_caption", "require_text_extra",
           "tokenize"]
