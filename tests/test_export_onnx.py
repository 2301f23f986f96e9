"""ONNX export: onnxruntime against PyTorch at two batch sizes (ResNets, ViTs, 13 bands, a volume encoder), the
JSON's runnable code, the CLI on a tiny trained run, a failed parity check, and the missing extra (CPU, fp32)."""
from __future__ import annotations

import ast
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

import selfsup
import selfsup.export.onnx as onnx_export
from selfsup.cli import main
from selfsup.export import OnnxExportError, OnnxExtraMissing, export_backbone, load_backbone, supported_formats

from export_utils import saved_random_backbone

ort = pytest.importorskip("onnxruntime")  # the onnx extra (`make test` installs it)


def _saved(folder, name: str, channels: int, size: int = 32, **options) -> nn.Module:
    return saved_random_backbone(folder, name, channels, size, method="simclr", **options)


def _max_difference(onnx_path, model: nn.Module, shape: tuple[int, ...], batch: int) -> float:
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    x = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(batch))
    with torch.no_grad():
        expected = model(x)
    got = session.run(["features"], {"pixel_values": x.numpy()})[0]
    assert got.shape == tuple(expected.shape)
    return float(np.abs(got - expected.numpy()).max())


def _run_code(json_path, monkeypatch) -> dict:
    """The export JSON's ``code``, run as a user would from the export folder; returns its variables."""
    monkeypatch.chdir(json_path.parent)
    scope: dict = {}
    exec(json.loads(json_path.read_text())["code"], scope)
    return scope


@pytest.mark.parametrize("name, channels, size, options", [
    ("small_resnet", 13, 32, {"widths": (8, 16, 32)}),  # 13 bands
    ("vit_micro_cpu", 3, 32, {}),
    ("vit_micro_cpu", 13, 16, {"channelwise": True}),  # bands as tokens (ChannelViT)
    ("resnet3d_small", 1, 16, {}),  # volumes (batch, C, D, H, W)
])  # torchvision's resnet18 (CIFAR stem) and a 13-band timm ViT: tests/test_export_hf.py, every format
def test_onnx_matches_pytorch_at_two_batch_sizes(tmp_path, monkeypatch, name, channels, size, options):
    model = _saved(tmp_path, name, channels, size, **options)
    out = export_backbone(tmp_path, "onnx")
    assert out == tmp_path / "export" / "backbone-onnx.onnx"
    assert sorted(p.name for p in out.parent.iterdir()) == ["backbone-onnx.json", "backbone-onnx.onnx"]
    info = json.loads(out.with_suffix(".json").read_text())
    shape = (channels, *([size] * (3 if name == "resnet3d_small" else 2)))
    assert info["format"] == "onnx" and info["weights"] == out.name and info["spec"] == json.loads(json.dumps(model.spec))
    assert info["onnx"]["input"]["name"] == "pixel_values" and info["onnx"]["input"]["shape"] == ["batch", *shape]
    assert info["onnx"]["output"]["shape"] == ["batch", model.num_features] and info["onnx"]["opset"] >= 17
    assert info["normalization"]["mean"] == [0.4] * channels and info["image_size"] == size
    assert info["onnx"]["parity"]["max_abs_difference"] <= 1e-4
    for batch in (1, 3):  # the traced example had batch 2: a frozen batch size cannot pass
        assert _max_difference(out, model, shape, batch) <= 1e-4
    scope = _run_code(out.with_suffix(".json"), monkeypatch)  # onnxruntime code with selfsup's normalisation
    normalised = (torch.from_numpy(scope["pixels"]) - 0.4) / 0.2
    with torch.no_grad():
        expected = model(normalised).numpy()
    assert np.abs(scope["features"] - expected).max() <= 1e-4


def test_cli_exports_a_trained_run(tmp_path, capsys):
    runs = tmp_path / "runs"
    tiny = ["backbone.options={widths: [8, 16], stem_stride: 2}", "method_options.projector_hidden_dim=16",
            "train.budget=null", "train.max_steps=2", "train.batch_size=16", "train.progress=false",
            "train.precision=fp32", "data.num_workers=0", "data.image_size=16", "eval.enabled=false",
            "eval.report=false"]
    assert main(["train", "demo", "--name", "tiny", f"runs_dir={runs}", *tiny]) == 0
    run = runs / "tiny"
    capsys.readouterr()
    assert main(["export", str(run), "--format", "onnx"]) == 0
    out = run / "export" / "backbone-onnx.onnx"
    assert capsys.readouterr().out.strip() == str(out)
    info = json.loads(out.with_suffix(".json").read_text())
    assert info["method"] == "simclr" and info["onnx"]["input"]["shape"] == ["batch", 3, 16, 16]
    model = load_backbone(run)
    assert _max_difference(out, model, (3, 16, 16), 3) <= 1e-4
    assert "onnx" in supported_formats(info["spec"])


def test_the_3d_vit_exports_with_a_dynamic_batch(tmp_path):
    _saved(tmp_path, "vit3d_micro_cpu", 1, 16)
    out = export_backbone(tmp_path, "onnx")
    assert _max_difference(out, load_backbone(tmp_path), (1, 16, 16, 16), 3) <= 1e-4


def test_failed_parity_check_leaves_no_file(tmp_path, monkeypatch):
    _saved(tmp_path, "small_resnet", 3, 16, widths=(8, 16))
    monkeypatch.setattr(onnx_export, "parity_difference", lambda *args: 0.25)
    with pytest.raises(OnnxExportError, match=r"differ by up to 0\.25 \(allowed 0\.0001\)"):
        export_backbone(tmp_path, "onnx", out=tmp_path / "x.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backbone.json", "backbone.safetensors"]  # no temp files


@pytest.mark.parametrize("module", ["onnxruntime", "onnxscript", "onnx"])
def test_without_the_onnx_extra(tmp_path, monkeypatch, capsys, module):
    _saved(tmp_path, "small_resnet", 3, 16, widths=(8, 16))
    monkeypatch.setitem(sys.modules, module, None)  # `import <module>` now fails, as without the extra
    with pytest.raises(OnnxExtraMissing, match=re.escape("pip install 'selfsup[onnx]'")):
        export_backbone(tmp_path, "onnx")
    assert main(["export", str(tmp_path), "--format", "onnx"]) == 2
    assert "pip install 'selfsup[onnx]'" in capsys.readouterr().err
    assert not (tmp_path / "export").exists()
    assert load_backbone(export_backbone(tmp_path, "hf")).meta["format"] == "hf"  # the other formats are untouched


def test_the_onnx_modules_are_imported_only_inside_functions():
    """So that selfsup imports without the extra (a subprocess would say the same, at the price of an import)."""
    extra = {"onnx", "onnxscript", "onnxruntime"}
    for path in Path(selfsup.__file__).parent.rglob("*.py"):
        tree = ast.parse(path.read_text())
        top_level = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        names = {a.name.split(".")[0] for n in top_level if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module.split(".")[0] for n in top_level if isinstance(n, ast.ImportFrom) and n.module and not n.level}
        assert not names & extra, f"{path} imports {names & extra} at import time"
