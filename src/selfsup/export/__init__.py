"""Backbone export: save / load a backbone with its metadata, and export it to timm, torchvision or
plain safetensors (see :mod:`selfsup.export.formats` for which backbone goes where)."""
from selfsup.export.backbone_io import (META_NAME, WEIGHTS_NAME, load_backbone, read_backbone,
                                        resolve_backbone_files, save_backbone)
from selfsup.export.formats import EXPORT_FORMATS, export_backbone, supported_formats

__all__ = [
    "EXPORT_FORMATS",
    "META_NAME",
    "WEIGHTS_NAME",
    "export_backbone",
    "load_backbone",
    "read_backbone",
    "resolve_backbone_files",
    "save_backbone",
    "supported_formats",
]
