"""The sample contract (docs/ARCHITECTURE.md, "Modalities"): a sample is a dict of named fields, each of a
registered field kind.

A data source declares the fields it yields (``source.fields``, e.g. ``{"image": "image", "label": "label"}``:
field name -> kind). Per field kind there are view operations (:data:`selfsup.views.dataset.FIELD_VIEWS`),
mask strategies over its token layout (:data:`selfsup.views.masks.MASK_STRATEGIES` for the image patch
grid) and encoders (:data:`selfsup.backbones.base.BACKBONES` for images). Methods are written against
encoders, views and masks, not pixels, so a new kind (volume, clip, audio, text, ...) is a new entry here
with its source, view operations, masks and encoders; every generic method then serves it.

Images are the first kind, volumes (3-D scans) and text the others. A leaf: this module imports nothing of selfsup but the registry helper.
"""
from __future__ import annotations

from dataclasses import dataclass

from selfsup.registry import Registry


@dataclass(frozen=True)
class FieldKind:
    name: str
    layout: str  # one value's layout, as a source returns it
    description: str
    raw_row: str = "raw pixels"  # what the evaluation's raw baseline row (``raw_pixels``) is called for this kind


FIELD_KINDS: Registry[FieldKind] = Registry("field kind")


def register_field_kind(name: str, layout: str, description: str, raw_row: str = "raw pixels") -> FieldKind:
    return FIELD_KINDS.add(name, FieldKind(name, layout, description, raw_row))


def raw_row_label(kind: str | None) -> str:
    """The display name of the raw baseline row on data of ``kind`` (None or unregistered: ``raw pixels``):
    tables, point clouds and graphs have features, not pixels."""
    return FIELD_KINDS.get(kind).raw_row if kind and kind in FIELD_KINDS else "raw pixels"


IMAGE = register_field_kind("image", "C x H x W tensor, any channel count, uint8",
                            "a picture (RGB, grayscale, multispectral): crops, colour, patch masks, image encoders")
LABEL = register_field_kind("label", "int, -1 when unknown",
                            "a class index: never seen by self-supervised methods; evaluation and supervised "
                            "references (SupCon) read it")

TEXT = register_field_kind("text", "list of str: the sample's captions (one or several phrasings)",
                           "a caption or report paired with an image: tokenized for a text encoder (the text "
                           "extra); image-text methods (CLIP, SigLIP, ConVIRT, SLIP) and zero-shot evaluation "
                           "read it")

VOLUME = register_field_kind("volume", "C x D x H x W tensor, any channel count, uint8 or float in [0, 1]",
                             "a 3-D scan (CT, MRI, microscopy stacks): 3-D crops and flips, intensity jitter, cube "
                             "and tube masks, 3-D encoders (vit3d_micro_cpu, resnet3d_small); data.slices=true "
                             "serves its depth slices as images instead")

AUDIO = register_field_kind("audio", "1 x L float tensor: a mono waveform in [-1, 1] at 16 kHz (selfsup.data.audio)",
                            "a sound: its views are log-mel spectrograms (1, n_mels, frames) with time crops, gain, "
                            "noise and SpecAugment masks (selfsup.views.audio), encoded by audio backbones "
                            "(vit_audio_micro_cpu, small_resnet_audio); SSAST and MAE mask its patches")
VIDEO = register_field_kind("video", "C x T x H x W uint8 tensor: the frames of a clip or a whole video",
                            "a video: its views are clips of T frames at a stride with one spatial augmentation for "
                            "every frame (selfsup.views.video), tube masks, video encoders (vit_video_micro_cpu, "
                            "resnet3d_video)")

TABLE = register_field_kind("table", "2 x F float tensor: encoded column values (standardised numbers, category "
                            "indices) and 1 where a value is present", "a row of a table (CSV, parquet): feature "
                            "masking, noise and swap views, feature-token transformers, T-JEPA", "raw features")
POINTS = register_field_kind("points", "N x 3 float tensor (N varies between clouds)",
                             "a point cloud (.npy, .ply, .xyz): rotation, scaling, jitter and dropout views, point "
                             "patches (farthest point sampling + kNN), Point-MAE", "raw features")
GRAPH = register_field_kind("graph", "selfsup.data.graphs.Graph: node features (V x D), edges (2 x E), optional "
                            "root node", "a small graph or a node's neighbourhood: feature masking, edge dropping and "
                            "subgraph views, GIN / GCN encoders, GraphMAE", "raw features")

#: What every image source yields.
IMAGE_FIELDS = {"image": IMAGE.name, "label": LABEL.name}
#: What a volume source yields (selfsup.data.volumes): the field keeps the name "image", so that every source
#: is read through ``get_image``; its kind says that the value is a volume.
VOLUME_FIELDS = {"image": VOLUME.name, "label": LABEL.name}
#: What an audio source (selfsup.data.audio) and a video source (selfsup.data.video) yield: the field keeps the
#: name "image" as volumes do.
AUDIO_FIELDS = {"image": AUDIO.name, "label": LABEL.name}
VIDEO_FIELDS = {"image": VIDEO.name, "label": LABEL.name}
#: What table, point-cloud and graph sources yield (the field keeps the name "image", as volumes do).
TABLE_FIELDS = {"image": TABLE.name, "label": LABEL.name}
POINTS_FIELDS = {"image": POINTS.name, "label": LABEL.name}
GRAPH_FIELDS = {"image": GRAPH.name, "label": LABEL.name}
#: What an image-text source yields (a source with captions).
IMAGE_TEXT_FIELDS = {"image": IMAGE.name, "text": TEXT.name, "label": LABEL.name}


def check_fields(fields: dict[str, str], where: str) -> None:
    """Every field of ``fields`` (name -> kind) has a registered kind."""
    for name, kind in fields.items():
        if kind not in FIELD_KINDS:
            raise ValueError(f"{where}: field '{name}' has kind '{kind}', which is not registered "
                             f"(registered field kinds: {', '.join(FIELD_KINDS)})")
