"""The Hugging Face-style folder (config.json + model.safetensors + README.md): selfsup and timm read it back
with identical features; and a 13-band backbone through every export format that applies to it (CPU, fp32)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

import selfsup
from selfsup.export import export_backbone, load_backbone, supported_formats

from export_utils import saved_random_backbone


def _saved(folder, name: str, channels: int, size: int = 32, **options) -> nn.Module:
    return saved_random_backbone(folder, name, channels, size, method="byol", **options)


def _features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


@pytest.mark.parametrize("name, channels, size, options, library", [
    ("small_resnet", 3, 32, {"widths": (8, 16)}, "selfsup"),
    ("vit_micro_cpu", 13, 32, {"depth": 2}, "timm"),  # timm's layout, in_chans=13
    ("resnet3d_small", 1, 16, {}, "selfsup"),  # volumes
])
def test_hf_folder_round_trip(tmp_path, name, channels, size, options, library):
    model = _saved(tmp_path / "run", name, channels, size, **options)
    folder = export_backbone(tmp_path / "run", "hf", out=tmp_path / "my-backbone")
    assert folder == tmp_path / "my-backbone"
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((folder / "config.json").read_text())
    spec = json.loads(json.dumps(model.spec))
    assert config["library_name"] == library and config["backbone"] == spec
    assert config["architecture"] == (name if library == "selfsup" else "vit_tiny_patch16_224")
    assert config["num_channels"] == channels and config["image_size"] == size
    assert config["mean"] == [0.4] * channels and config["std"] == [0.2] * channels
    assert config["num_features"] == model.num_features
    assert config["pretrained_cfg"]["input_size"] == [channels, *([size] * (3 if name == "resnet3d_small" else 2))]
    assert config["selfsup"]["spec"] == spec and config["selfsup"]["method"] == "byol"
    weights = load_file(folder / "model.safetensors")
    own = model.state_dict().keys()
    assert weights.keys() == (set(own) if library == "selfsup" else {k.removeprefix("model.") for k in own})
    card = (folder / "README.md").read_text()
    assert f"library_name: {library}" in card and "selfsup.load_backbone('my-backbone')" in card
    assert ("timm.create_model('local-dir:my-backbone', pretrained=True)" in card) is (library == "timm")

    x = torch.randn(2, channels, *([size] * (3 if name == "resnet3d_small" else 2)))
    expected = _features(model, x)
    for path in (folder, str(folder), folder / "config.json", folder / "model.safetensors"):
        loaded = selfsup.load_backbone(path)
        assert torch.equal(_features(loaded, x), expected)
        assert loaded.meta["format"] == "hf" and loaded.meta["method"] == "byol"
    (folder / "config.json").unlink()  # the safetensors header carries the same metadata
    assert torch.equal(_features(load_backbone(folder / "model.safetensors"), x), expected)


def test_timm_loads_the_folder(tmp_path):
    timm = pytest.importorskip("timm")
    model = _saved(tmp_path / "run", "vit_micro_cpu", 13, depth=2)
    folder = export_backbone(tmp_path / "run", "hf")
    assert folder == tmp_path / "run" / "export" / "backbone-hf"
    reference = timm.create_model(f"local-dir:{folder}", pretrained=True)
    x = torch.randn(3, 13, 32, 32)
    assert torch.equal(_features(reference, x), _features(model, x))
    data = timm.data.resolve_data_config({}, model=reference)
    assert data["input_size"] == (13, 32, 32) and list(data["mean"]) == [0.4] * 13
    again = export_backbone(folder, "safetensors", out=tmp_path / "again.safetensors")  # hf in, another format out
    assert torch.equal(_features(load_backbone(again), x), _features(model, x))


def test_a_folder_of_another_library_is_named_as_such(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architecture": "resnet18", "num_classes": 1000}))
    save_file({"fc.weight": torch.zeros(2, 2)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match=r"not written by `selfsup export --format hf`.*local-dir"):
        load_backbone(tmp_path)
    _saved(tmp_path / "run", "small_resnet", 3, 16, widths=(8, 16))
    with pytest.raises(ValueError, match="is a file"):
        export_backbone(tmp_path / "run", "hf", out=tmp_path / "config.json")


# --------------------------------------------------------------------------- 13 bands, every format that applies
@pytest.mark.parametrize("name, options, formats", [
    ("resnet18", {"cifar_stem": True}, ["safetensors", "torchvision", "hf", "onnx"]),
    ("vit_micro_cpu", {"depth": 2}, ["safetensors", "timm", "hf", "onnx"]),
])
def test_thirteen_bands_through_every_format(tmp_path, monkeypatch, name, options, formats):
    model = _saved(tmp_path, name, 13, **options)
    assert sorted(supported_formats(model.spec)) == sorted(formats)
    x = torch.randn(3, 13, 32, 32, generator=torch.Generator().manual_seed(2))
    expected = _features(model, x)
    for fmt in supported_formats(model.spec):
        out = export_backbone(tmp_path, fmt)
        if fmt == "onnx":  # selfsup does not read ONNX back: onnxruntime does
            ort = pytest.importorskip("onnxruntime")
            session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
            for batch in (1, 3):
                got = session.run(["features"], {"pixel_values": x[:batch].numpy()})[0]
                assert np.abs(got - expected[:batch].numpy()).max() <= 1e-4
            assert json.loads(out.with_suffix(".json").read_text())["onnx"]["input"]["shape"] == ["batch", 13, 32, 32]
            continue
        loaded = load_backbone(out)
        assert loaded.spec["in_channels"] == 13 and torch.equal(_features(loaded, x), expected), fmt
        if fmt in ("timm", "torchvision"):  # the JSON's own code builds a 13-band model
            info = json.loads(out.with_suffix(".json").read_text())
            assert (info["create_model"]["in_chans"] if fmt == "timm" else info["torchvision"]["in_channels"]) == 13
            monkeypatch.chdir(out.parent)
            scope: dict = {}
            exec(info["code"], scope)
            assert torch.equal(_features(scope["model"], x), expected), fmt
