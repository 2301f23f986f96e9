"""Backbone export: save / load a backbone with its metadata, and export it to timm, torchvision, plain
safetensors, ONNX or a Hugging Face-style folder (see :mod:`selfsup.export.formats` for which backbone goes where).
Importing the package registers every format (``onnx`` and ``hf`` register where they are defined)."""
from selfsup.export.backbone_io import (META_NAME, WEIGHTS_NAME, load_backbone, read_backbone,
                                        resolve_backbone_files, save_backbone)
from selfsup.export.formats import EXPORT_FORMATS, export_backbone, supported_formats
from selfsup.export.hf_folder import write_hf_folder
from selfsup.export.onnx import OnnxExportError, OnnxExtraMissing

__all__ = [
    "EXPORT_FORMATS",
    "META_NAME",
    "OnnxExportError",
    "OnnxExtraMissing",
    "WEIGHTS_NAME",
    "export_backbone",
    "load_backbone",
    "read_backbone",
    "resolve_backbone_files",
    "save_backbone",
    "supported_formats",
    "write_hf_folder",
]
