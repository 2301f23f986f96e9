"""save_backbone / load_backbone round trips and export parity with timm and torchvision (CPU, 32 px)."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn
from safetensors import safe_open
from safetensors.torch import load_file

from selfsup.backbones import build_backbone
from selfsup.export import export_backbone, load_backbone, save_backbone, supported_formats

VIT = ("timm:vit_tiny_patch16_224", {"img_size": 32, "patch_size": 4})
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def _backbone(name: str, in_channels: int = 3, **options) -> nn.Module:
    """A backbone with random weights and non-trivial BatchNorm statistics, so buffers matter."""
    torch.manual_seed(0)
    model = build_backbone(name, in_channels=in_channels, **options)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model.eval()


def _save(model, run_dir, **kw):
    c = model.spec["in_channels"]
    kw.setdefault("mean", [0.5] * c)
    kw.setdefault("std", [0.25] * c)
    return save_backbone(model, run_dir, image_size=32, **kw)


def _features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


def _input(in_channels: int = 3) -> torch.Tensor:
    return torch.randn(2, in_channels, 32, 32, generator=torch.Generator().manual_seed(1))


def _assert_parity(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.shape == b.shape
    assert (a - b).abs().max().item() <= 1e-5


def _run_code(json_path, monkeypatch) -> nn.Module:
    """Build the model exactly as the export's JSON says (its ``code``, run from the export folder)."""
    info = json.loads(json_path.read_text())
    monkeypatch.chdir(json_path.parent)
    scope: dict = {}
    exec(info["code"], scope)
    return scope["model"]


# ------------------------------------------------------------------------------------------ round trip
@pytest.mark.parametrize("name, in_channels, options", [
    ("small_resnet", 3, {}),
    ("resnet18", 3, {"cifar_stem": True}),
    (VIT[0], 3, VIT[1]),
    ("small_resnet", 1, {"widths": (8, 16)}),
    ("resnet18", 5, {}),
    (VIT[0], 5, VIT[1]),
])
def test_round_trip_identical_features(tmp_path, name, in_channels, options):
    model = _backbone(name, in_channels, **options)
    weights = _save(model, tmp_path / "run", extra={"method": "simclr", "epochs": 3})
    assert weights == tmp_path / "run" / "backbone.safetensors"
    loaded = load_backbone(tmp_path / "run")
    assert not loaded.training
    x = _input(in_channels)
    assert torch.equal(_features(model, x), _features(loaded, x))
    sd, sd2 = model.state_dict(), loaded.state_dict()
    assert sd.keys() == sd2.keys() and all(torch.equal(sd[k], sd2[k]) for k in sd)
    assert loaded.meta["spec"] == json.loads(json.dumps(model.spec))
    assert loaded.meta["method"] == "simclr" and loaded.meta["format"] == "selfsup"


def test_saved_files(tmp_path):
    model = _backbone("resnet18", cifar_stem=True)
    _save(model, tmp_path, mean=CIFAR_MEAN, std=torch.tensor(CIFAR_STD))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backbone.json", "backbone.safetensors"]  # no temp files
    meta = json.loads((tmp_path / "backbone.json").read_text())
    assert meta["spec"] == {"name": "resnet18", "in_channels": 3, "cifar_stem": True}
    assert meta["num_features"] == 512 and meta["image_size"] == 32 and meta["format"] == "selfsup"
    assert meta["normalization"]["mean"] == list(CIFAR_MEAN)
    assert meta["normalization"]["std"] == pytest.approx(list(CIFAR_STD))
    assert isinstance(meta["selfsup_version"], str)
    tensors = load_file(tmp_path / "backbone.safetensors")
    assert tensors.keys() == model.state_dict().keys()
    assert all(t.is_contiguous() for t in tensors.values())
    assert {t.dtype for t in tensors.values()} == {torch.float32, torch.int64}  # int: BN num_batches_tracked
    with safe_open(str(tmp_path / "backbone.safetensors"), framework="pt") as f:
        assert json.loads(f.metadata()["selfsup"]) == meta


def test_save_half_precision_and_wrapped(tmp_path):
    model = _backbone("small_resnet", widths=(8, 16))
    x = _input()
    reference = _features(model, x)
    wrapped = nn.DataParallel(model.to(torch.bfloat16))  # CPU DataParallel is a plain wrapper
    save_backbone(wrapped, tmp_path / "a", image_size=32, mean=0.5, std=0.25)
    tensors = load_file(tmp_path / "a" / "backbone.safetensors")
    assert not any(k.startswith("module.") for k in tensors)
    assert all(t.dtype == torch.float32 for k, t in tensors.items() if "num_batches" not in k)
    loaded = load_backbone(tmp_path / "a")
    assert next(loaded.parameters()).dtype == torch.float32
    torch.testing.assert_close(_features(loaded, x), reference, atol=0.1, rtol=0.05)  # bf16-rounded weights
    save_backbone(torch.compile(model.float()), tmp_path / "b", image_size=32, mean=0.5, std=0.25)  # OptimizedModule: no "_orig_mod." keys (never runs)
    assert load_file(tmp_path / "b" / "backbone.safetensors").keys() == model.state_dict().keys()


def test_load_accepts_folder_file_json_and_header_only(tmp_path):
    model = _backbone("small_resnet", widths=(8, 16))
    x = _input()
    expected = _features(model, x)
    weights = _save(model, tmp_path)
    for path in (tmp_path, str(tmp_path), weights, tmp_path / "backbone.json"):
        assert torch.equal(_features(load_backbone(path), x), expected)
    (tmp_path / "backbone.json").unlink()  # the safetensors header carries the same metadata
    loaded = load_backbone(weights)
    assert torch.equal(_features(loaded, x), expected) and loaded.meta["image_size"] == 32


def test_missing_files_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="backbone.safetensors"):
        load_backbone(tmp_path)  # an empty run directory
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(FileNotFoundError, match="may not have finished"):
        load_backbone(tmp_path)
    with pytest.raises(FileNotFoundError, match="nope"):
        load_backbone(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        export_backbone(tmp_path / "nope.safetensors", "timm")


def test_save_rejects_bad_arguments(tmp_path):
    model = _backbone("small_resnet", in_channels=1, widths=(8, 16))
    with pytest.raises(ValueError, match="3 values but the backbone takes 1"):
        save_backbone(model, tmp_path, image_size=32, mean=CIFAR_MEAN, std=CIFAR_STD)
    with pytest.raises(ValueError, match="spec"):
        save_backbone(model, tmp_path, image_size=32, mean=0.5, std=0.25, extra={"spec": {}})
    with pytest.raises(TypeError):
        save_backbone(model, tmp_path, image_size=32, mean=0.5, std=0.25, extra={"bad": object()})
    with pytest.raises(TypeError, match="spec"):
        save_backbone(nn.Linear(2, 2), tmp_path, image_size=32, mean=0.5, std=0.25)
    assert list(tmp_path.iterdir()) == []  # nothing half-written
    save_backbone(model, tmp_path, image_size=32, mean=0.5, std=0.25)  # one number for all channels
    assert load_backbone(tmp_path).meta["normalization"] == {"mean": [0.5], "std": [0.25]}


# ------------------------------------------------------------------------------------------- parity
@pytest.mark.parametrize("cifar_stem, in_channels", [(False, 3), (True, 3), (True, 1), (False, 5)])
def test_torchvision_export_parity(tmp_path, monkeypatch, cifar_stem, in_channels):
    import torchvision

    model = _backbone("resnet18", in_channels, cifar_stem=cifar_stem)
    _save(model, tmp_path)
    out = export_backbone(tmp_path, "torchvision")
    assert out == tmp_path / "export" / "backbone-torchvision.safetensors"
    info = json.loads(out.with_suffix(".json").read_text())
    assert info["format"] == "torchvision" and info["weights"] == out.name
    tv = info["torchvision"]
    assert tv["arch"] == "resnet18" and tv["cifar_stem"] is cifar_stem and tv["in_channels"] == in_channels
    assert tv["replace_modules"]["fc"] == "nn.Identity()"
    assert ("maxpool" in tv["replace_modules"]) is cifar_stem
    x = _input(in_channels)
    expected = _features(model, x)
    # 1. the JSON's code, as a user would run it
    _assert_parity(_features(_run_code(out.with_suffix(".json"), monkeypatch), x), expected)
    # 2. by hand from the structured fields
    ref = torchvision.models.resnet18(weights=None)
    for attr, expr in tv["replace_modules"].items():
        setattr(ref, attr, eval(expr, {"nn": nn}))
    ref.load_state_dict(load_file(out), strict=True)
    _assert_parity(_features(ref, x), expected)
    if cifar_stem:
        assert ref.conv1.kernel_size == (3, 3) and isinstance(ref.maxpool, nn.Identity)


@pytest.mark.parametrize("name, options", [("resnet18", {}), VIT])
def test_timm_export_parity(tmp_path, monkeypatch, name, options):
    import timm

    model = _backbone(name, **options)
    _save(model, tmp_path)
    out = export_backbone(tmp_path, "timm", out=tmp_path / "to-timm")
    assert out == tmp_path / "to-timm" / "backbone-timm.safetensors"
    info = json.loads(out.with_suffix(".json").read_text())
    call = info["create_model"]
    assert call["model_name"] == name.removeprefix("timm:") and call["pretrained"] is False
    assert call["num_classes"] == 0 and call["in_chans"] == 3
    assert {k: call[k] for k in options} == options
    x = _input()
    expected = _features(model, x)
    ref = timm.create_model(**call)
    ref.load_state_dict(load_file(out), strict=True)
    _assert_parity(_features(ref, x), expected)
    _assert_parity(_features(_run_code(out.with_suffix(".json"), monkeypatch), x), expected)


def test_exports_load_back_into_selfsup(tmp_path):
    model = _backbone(VIT[0], **VIT[1])
    _save(model, tmp_path, extra={"method": "mae"})
    x = _input()
    expected = _features(model, x)
    for fmt in ("safetensors", "timm"):
        out = export_backbone(tmp_path, fmt)
        assert out.name == f"backbone-{fmt}.safetensors" and out.with_suffix(".json").is_file()
        loaded = load_backbone(out)
        assert torch.equal(_features(loaded, x), expected)
        assert loaded.meta["format"] == fmt and loaded.meta["method"] == "mae"
    again = export_backbone(tmp_path / "export" / "backbone-timm.safetensors", "safetensors", out=tmp_path / "b.safetensors")
    assert load_file(again).keys() == load_file(tmp_path / "backbone.safetensors").keys()


@pytest.mark.parametrize("name, options, fmt, hint", [
    ("small_resnet", {"widths": (8, 16)}, "timm", "safetensors"),
    ("small_resnet", {"widths": (8, 16)}, "torchvision", "safetensors"),
    ("resnet18", {"cifar_stem": True}, "timm", "torchvision"),
    (VIT[0], VIT[1], "torchvision", "timm"),
    ("resnet18", {}, "tflite", "torchvision"),  # an unknown format lists the registered ones
])
def test_unsupported_combinations(tmp_path, name, options, fmt, hint):
    _save(_backbone(name, **options), tmp_path)
    with pytest.raises(ValueError, match=hint):
        export_backbone(tmp_path, fmt)
    assert not (tmp_path / "export").exists()


def test_supported_formats():
    assert supported_formats({"name": "small_resnet", "in_channels": 3}) == ["safetensors", "hf", "onnx"]
    assert supported_formats({"name": "resnet50", "in_channels": 3, "cifar_stem": False}) == [
        "safetensors", "torchvision", "timm", "hf", "onnx"]
    assert supported_formats({"name": "resnet50", "in_channels": 3, "cifar_stem": True}) == [
        "safetensors", "torchvision", "hf", "onnx"]
    assert supported_formats({"name": "timm:convnext_atto", "in_channels": 3}) == ["safetensors", "timm", "hf", "onnx"]
    assert supported_formats({"name": "vit3d_micro_cpu", "in_channels": 1}) == ["safetensors", "hf", "onnx"]
