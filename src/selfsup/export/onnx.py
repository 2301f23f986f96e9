"""Export a backbone to ONNX (``selfsup export RUN --format onnx``): ``<name>.onnx`` and ``<name>.json`` beside it.

The graph computes what ``backbone(x)`` computes in selfsup: the pooled feature vector, input ``pixel_values``
(float32, ``(batch, C, H, W)``, or ``(batch, C, D, H, W)`` for a volume encoder) already normalised, output
``features`` ``(batch, num_features)``. The batch axis is dynamic; the spatial size is the one the backbone was
trained at (``image_size``). The JSON holds how it was made, the input and output, the normalisation and size to
preprocess with, the opset, the measured parity and runnable onnxruntime ``code``.

Exporter: ``torch.export`` with a dynamic batch dimension, then ``torch.onnx.export`` of that program (the
"dynamo" exporter, torch's default since 2.9; onnxscript translates the graph). Both run offline. The
TorchScript tracer (``dynamo=False``) is still in torch 2.14 but deprecated, and a tracer records a batch size
that the model reads as a Python int (``len(x)``) as a constant: its graph then runs at the traced batch size
only, silently. ``torch.export`` refuses such a model with a message naming the problem instead. The program is
captured here rather than inside ``torch.onnx.export`` because the latter, when the capture fails, falls back to
other strategies that drop the dynamic batch without an error (seen with a class token expanded to ``len(x)``, as the 3-D ViT once did).

Parity: onnxruntime (CPU) runs the written file on random inputs at batch sizes 1 and 3 (the traced example has
2, so a batch size frozen into the graph cannot pass) against PyTorch in eval mode in fp32; a maximum absolute
difference above :data:`PARITY_ATOL` fails the export, and the file is never put in place (it is written to a
temporary name and renamed only after the check).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from selfsup.backbones import backbone_from_spec
from selfsup.config import ConfigError
from selfsup.export.formats import EXPORT_FORMATS, ExportFormat, load_strictly, preprocess_text, spatial_dims
from selfsup.files import atomic_path, write_json_atomic

ONNX_EXTRA_MESSAGE = "the ONNX export needs the onnx extra: pip install 'selfsup[onnx]'"
INPUT_NAME, OUTPUT_NAME, BATCH_AXIS = "pixel_values", "features", "batch"
OPSET = 18  # the first opset the dynamo exporter targets natively; onnxruntime >= 1.14 runs it
PARITY_ATOL = 1e-4  # fp32: measured differences are 1e-7 to 5e-6 (small_resnet to 13-band resnet18, ViTs ~3e-6)
PARITY_BATCH_SIZES = (1, 3)
EXAMPLE_BATCH_SIZE = 2  # the traced example: neither parity batch size, so a frozen batch fails the check


class OnnxExtraMissing(ConfigError):
    """onnx, onnxscript or onnxruntime (the ``onnx`` extra) is needed and not installed."""


class OnnxExportError(ValueError):
    """The backbone did not export to ONNX, or the exported graph does not compute what the backbone does."""


def require_onnx_extra() -> Any:
    """The ``onnxruntime`` module once onnx, onnxscript (torch's ONNX exporter needs both) and onnxruntime
    import, or :class:`OnnxExtraMissing` saying how to install them."""
    try:
        import onnx  # noqa: F401  optional: the onnx extra (torch.onnx.export needs it)
        import onnxscript  # noqa: F401  optional: the onnx extra (torch.onnx.export translates with it)
        import onnxruntime
    except ImportError as error:
        raise OnnxExtraMissing(f"{ONNX_EXTRA_MESSAGE} (import failed: {error})") from None
    return onnxruntime


def _onnx_why_not(spec: dict[str, Any]) -> str | None:
    return None  # every registered backbone exports with a dynamic batch (the parity check guards the rest)


def input_shape(spec: dict[str, Any], image_size: int) -> tuple[int, ...]:
    """One sample's input shape: (C, S, S), or (C, S, S, S) for an encoder of volumes."""
    return (int(spec.get("in_channels", 3)), *([int(image_size)] * spatial_dims(spec)))


def export_onnx(model: nn.Module, path: str | Path, shape: tuple[int, ...]) -> int:
    """Write ``model`` (eval mode) as ONNX at ``path`` with a dynamic batch axis; returns the opset."""
    example = torch.randn(EXAMPLE_BATCH_SIZE, *shape, generator=torch.Generator().manual_seed(0))
    try:
        with torch.no_grad():  # inference graph (the ViTs keep torch's own attention kernel without gradients)
            program = torch.export.export(model, (example,), dynamic_shapes=({0: torch.export.Dim(BATCH_AXIS)},),
                                          strict=False)
    except Exception as error:  # torch.export's errors are many kinds; the message is what the user needs
        raise OnnxExportError(f"backbone '{model.spec['name']}' does not export with a dynamic batch size: "
                              f"torch.export says: {str(error)[:1500]}") from error
    onnx_program = torch.onnx.export(program, (example,), dynamo=True, input_names=[INPUT_NAME],
                                     output_names=[OUTPUT_NAME], opset_version=OPSET, verbose=False)
    graph = onnx_program.model.graph
    onnx_program.rename_axes({graph.inputs[0].shape[0]: BATCH_AXIS})
    onnx_program.save(str(path), external_data=False)  # one file: the backbones here are far below 2 GB
    return int(onnx_program.model.opset_imports.get("", OPSET))


def parity_difference(path: str | Path, model: nn.Module, shape: tuple[int, ...]) -> float:
    """The largest absolute difference between onnxruntime on the file at ``path`` and ``model`` (eval, fp32)
    over random inputs at each of :data:`PARITY_BATCH_SIZES`."""
    ort = require_onnx_extra()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    generator, worst = torch.Generator().manual_seed(1), 0.0
    for batch in PARITY_BATCH_SIZES:
        x = torch.randn(batch, *shape, generator=generator)
        with torch.no_grad():
            expected = model(x)
        got = torch.from_numpy(session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0])
        if got.shape != expected.shape:
            raise OnnxExportError(f"the ONNX graph gives features of shape {tuple(got.shape)} at batch size {batch}, "
                                  f"the backbone {tuple(expected.shape)}")
        worst = max(worst, (got - expected).abs().max().item())
    return worst


def _code(onnx_name: str, shape: tuple[int, ...], mean: list[float], std: list[float], features: int) -> str:
    broadcast = (1, -1) + (1,) * (len(shape) - 1)
    return (
        f"# {onnx_name} is relative to the folder of this JSON\n"
        "import numpy as np\n"
        "import onnxruntime as ort\n\n"
        f"session = ort.InferenceSession({onnx_name!r}, providers=['CPUExecutionProvider'])\n"
        f"mean = np.array({mean!r}, dtype=np.float32).reshape{broadcast}\n"
        f"std = np.array({std!r}, dtype=np.float32).reshape{broadcast}\n"
        f"# pixels: float32 in [0, 1], preprocessed as the JSON's onnx.input.preprocess says; any batch size\n"
        f"pixels = np.random.default_rng(0).random((2, {', '.join(str(d) for d in shape)}), dtype=np.float32)\n"
        f"features = session.run([{OUTPUT_NAME!r}], {{{INPUT_NAME!r}: (pixels - mean) / std}})[0]  "
        f"# (2, {features})\n"
    )


def write_onnx(state: dict[str, torch.Tensor], info: dict[str, Any], out: Path) -> None:
    """The ``onnx`` format's writer (:class:`~selfsup.export.formats.ExportFormat`): ``out`` and its JSON."""
    ort = require_onnx_extra()
    spec = info["spec"]
    model = load_strictly(backbone_from_spec(spec), state, spec, "onnx").float().eval()
    shape = input_shape(spec, info["image_size"])
    with atomic_path(out) as tmp:  # renamed onto out only if the parity check passes
        opset = export_onnx(model, tmp, shape)
        difference = parity_difference(tmp, model, shape)
        if not difference <= PARITY_ATOL:  # also catches NaN
            raise OnnxExportError(f"ONNX export of '{spec['name']}' failed its parity check: onnxruntime and PyTorch "
                                  f"differ by up to {difference:.3g} (allowed {PARITY_ATOL:g}) at batch sizes "
                                  f"{list(PARITY_BATCH_SIZES)}; no file was written")
    norm = info["normalization"]
    info["onnx"] = {
        "opset": opset,
        "input": {"name": INPUT_NAME, "shape": [BATCH_AXIS, *shape], "dtype": "float32",
                  "preprocess": preprocess_text(spec, info["image_size"]) + " (mean, std: normalization)"},
        "output": {"name": OUTPUT_NAME, "shape": [BATCH_AXIS, int(model.num_features)], "dtype": "float32",
                   "what": "the backbone's pooled features (selfsup's backbone(x))"},
        "exporter": f"torch.export + torch.onnx.export (dynamo), torch {torch.__version__}",
        "parity": {"max_abs_difference": difference, "tolerance": PARITY_ATOL,
                   "batch_sizes": list(PARITY_BATCH_SIZES), "runtime": f"onnxruntime {ort.__version__} (CPU)"},
    }
    info["code"] = _code(out.name, shape, norm["mean"], norm["std"], int(model.num_features))
    write_json_atomic(out.with_suffix(".json"), info)


EXPORT_FORMATS.add("onnx", ExportFormat(_onnx_why_not, write=write_onnx, suffix=".onnx"))

__all__ = ["ONNX_EXTRA_MESSAGE", "OnnxExportError", "OnnxExtraMissing", "PARITY_ATOL", "export_onnx", "input_shape",
           "parity_difference", "require_onnx_extra", "write_onnx"]
