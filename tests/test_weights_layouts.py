"""backbone.weights reads public weight layouts from local files (selfsup.backbones.weights / weight_layouts):
plain and wrapped state dicts, Hugging Face-style folders, DINOv2 and open_clip checkpoints. Every file is made
here from a real architecture at a tiny size with its keys renamed into the public layout (nothing is downloaded),
and the loaded backbone must compute what the source model computes; CPU, fp32."""
from __future__ import annotations

import json

import pytest
import timm
import torch
import torch.nn as nn
import torchvision
from safetensors.torch import save_file

from selfsup.backbones import build_backbone
from selfsup.backbones.weights import load_weights_into

VIT = "timm:vit_tiny_patch16_224"
VIT_OPTIONS = {"img_size": 32, "depth": 2}
DINOV2 = {"img_size": 28, "embed_dim": 32, "depth": 2, "num_heads": 2}  # ViT-S/14's layout at a 2x2 grid


def _images(size: int = 32, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))


def _contiguous(state: dict) -> dict:
    return {k: v.contiguous() for k, v in state.items()}


def _load(name: str, weights, **options) -> tuple[nn.Module, list[str]]:
    """A freshly built (seed 99, so not the source's init) backbone with ``weights`` loaded, and the log."""
    torch.manual_seed(99)
    backbone = build_backbone(name, 3, **options)
    lines: list[str] = []
    load_weights_into(backbone, weights, lines.append)
    return backbone.eval(), lines


def _assert_same(model: nn.Module, reference: torch.Tensor, size: int = 32, atol: float = 1e-5) -> None:
    with torch.no_grad():
        torch.testing.assert_close(model(_images(size)), reference, atol=atol, rtol=1e-5)


@pytest.fixture(scope="module")
def timm_vit():
    """(timm's own ViT, its outputs on _images()) at 32 px, 2 blocks."""
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, **VIT_OPTIONS).eval()
    with torch.no_grad():
        return model, model(_images())


# ------------------------------------------------------------------------------- plain and wrapped dicts
@pytest.mark.parametrize("layout", ["plain.safetensors", "ddp.pt", "wrapped.pth", "backbone-prefix.bin",
                                    "selfsup-own.safetensors"])
def test_plain_and_wrapped_state_dicts(tmp_path, timm_vit, layout):
    model, expected = timm_vit
    plain = _contiguous(model.state_dict())
    path = tmp_path / layout
    if layout == "plain.safetensors":
        save_file(plain, path)
    elif layout == "ddp.pt":  # DDP's module. prefix inside a training checkpoint
        torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in plain.items()}}, path)
    elif layout == "wrapped.pth":
        # {"model": timm's keys} is the backbone's own layout (its timm model is .model)
        torch.save({"model": plain, "optimizer": {"state": {0: {"exp_avg": torch.zeros(3)}}}}, path)
    elif layout == "backbone-prefix.bin":  # a method's state dict: the backbone beside a head
        torch.save({**{f"backbone.{k}": v for k, v in plain.items()}, "head.weight": torch.zeros(4, 192)}, path)
    else:
        save_file({f"model.{k}": v for k, v in plain.items()}, path)
    backbone, log = _load(VIT, path, **VIT_OPTIONS)
    _assert_same(backbone, expected)
    loaded = next(line for line in log if line.startswith("loaded"))
    assert f"loaded {len(plain)} tensors of {path}" in loaded
    wanted = {"plain.safetensors": "a plain timm state dict", "ddp.pt": "under 'state_dict.module.'",
              "wrapped.pth": "the backbone's own keys", "backbone-prefix.bin": "under 'backbone.'",
              "selfsup-own.safetensors": "the backbone's own keys"}[layout]
    assert wanted in loaded
    if layout == "backbone-prefix.bin":
        assert any("ignored 1 tensor(s)" in line and "head.weight" in line for line in log)


def test_torchvision_resnet_with_classifier_and_old_batchnorm(tmp_path):
    torch.manual_seed(0)
    source = torchvision.models.resnet18(weights=None)
    with torch.no_grad():  # BatchNorm statistics that are not the identity
        source.train()(_images(batch=4))
    state = {k: v for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")}  # older files
    save_file(_contiguous(state), tmp_path / "resnet18.safetensors")
    source.fc = nn.Identity()
    with torch.no_grad():
        expected = source.eval()(_images())
    backbone, log = _load("resnet18", tmp_path / "resnet18.safetensors")
    _assert_same(backbone, expected)
    assert any("a plain torchvision state dict" in line for line in log)
    assert any("ignored 2 tensor(s)" in line and "fc.weight" in line for line in log)


# ------------------------------------------------------------------------------- Hugging Face-style folders
@pytest.mark.parametrize("files", ["safetensors", "bin", "sharded"])
def test_hugging_face_folder(tmp_path, timm_vit, files):
    model, expected = timm_vit
    plain = _contiguous(model.state_dict())
    folder = tmp_path / "vit_tiny"
    folder.mkdir()
    # timm's layout on the hub: config.json names the architecture, the weights are a plain timm state dict
    (folder / "config.json").write_text(json.dumps({"architecture": "vit_tiny_patch16_224", "num_classes": 0,
                                                    "pretrained_cfg": {"input_size": [3, 32, 32]}}))
    if files == "safetensors":
        save_file(plain, folder / "model.safetensors")
    elif files == "bin":
        torch.save(plain, folder / "pytorch_model.bin")
    else:
        keys = sorted(plain)
        shards = {"model-00001-of-00002.safetensors": keys[:10], "model-00002-of-00002.safetensors": keys[10:]}
        for shard, names in shards.items():
            save_file({k: plain[k] for k in names}, folder / shard)
        (folder / "model.safetensors.index.json").write_text(json.dumps(
            {"weight_map": {k: shard for shard, names in shards.items() for k in names}}))
    backbone, log = _load(VIT, folder, **VIT_OPTIONS)
    _assert_same(backbone, expected)
    assert any(line.startswith("loaded") and "a plain timm state dict" in line for line in log)
    # the wrong backbone: the folder's config.json says which one to use
    with pytest.raises(ValueError, match=r"backbone.name=timm:vit_tiny_patch16_224") as error:
        _load("small_resnet", folder)
    message = str(error.value)
    assert f"{folder}/" in message and "expects keys like stem.0.weight" in message
    assert "the file's keys are like cls_token" in message or "the file's keys are like blocks.0.attn" in message


def test_transformers_folder_is_named_as_such(tmp_path, timm_vit):
    folder = tmp_path / "dinov2-small"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "dinov2", "hidden_size": 384}))
    save_file({"embeddings.cls_token": torch.zeros(1, 1, 192)}, folder / "model.safetensors")
    with pytest.raises(ValueError, match="transformers config \\(model_type 'dinov2'\\)"):
        _load(VIT, folder, **VIT_OPTIONS)


# ---------------------------------------------------------------------------------------------- DINOv2
def _dinov2(name: str = "vit_small_patch14_dinov2", **options) -> tuple[nn.Module, dict]:
    """timm's DINOv2 ViT (layer scale) and its state dict in DINOv2's own layout (timm's names + mask_token)."""
    torch.manual_seed(1)
    model = timm.create_model(name, pretrained=False, num_classes=0, **{**DINOV2, **options}).eval()
    with torch.no_grad():
        for block in model.blocks:  # layer scale far from its 1e-5 init, so that it matters
            block.ls1.gamma.uniform_(0.5, 1.5)
            block.ls2.gamma.uniform_(0.5, 1.5)
    state = {**_contiguous(model.state_dict()), "mask_token": torch.zeros(1, model.embed_dim)}
    return model, state


def test_dinov2_pretrain_checkpoint(tmp_path):
    model, state = _dinov2()
    assert "blocks.0.ls1.gamma" in state and "blocks.1.attn.qkv.weight" in state and "norm.weight" in state
    torch.save(state, tmp_path / "dinov2_vits14_pretrain.pth")
    with torch.no_grad():
        expected = model(_images(28))
    backbone, log = _load("timm:vit_small_patch14_dinov2", tmp_path / "dinov2_vits14_pretrain.pth", **DINOV2)
    _assert_same(backbone, expected, 28)
    assert any("a DINOv2 ViT state dict, renamed to timm's names" in line for line in log)
    assert any("ignored 1 tensor(s)" in line and "mask_token" in line for line in log)


def test_dinov2_position_embedding_of_another_grid_is_interpolated(tmp_path):
    model, state = _dinov2(dynamic_img_size=True)  # timm resamples its positions at any input size
    torch.save(state, tmp_path / "dinov2.pth")
    with torch.no_grad():
        expected = model(_images(42))  # a 3x3 grid
    backbone, log = _load("timm:vit_small_patch14_dinov2", tmp_path / "dinov2.pth", **{**DINOV2, "img_size": 42})
    _assert_same(backbone, expected, 42)
    assert any("interpolated model.pos_embed from a 2x2 to a 3x3 patch grid" in line for line in log)


def test_dinov2_training_checkpoint_reads_the_teacher(tmp_path):
    teacher, state = _dinov2()
    torch.manual_seed(5)
    student = {k: torch.randn_like(v) for k, v in state.items()}
    torch.save({"teacher": {**{f"backbone.{k}": v for k, v in state.items()},
                            "dino_head.last_layer.weight": torch.zeros(8, 4)},
                "student": {f"backbone.{k}": v for k, v in student.items()}, "iteration": 1250},
               tmp_path / "teacher_checkpoint.pth")
    with torch.no_grad():
        expected = teacher(_images(28))
    backbone, log = _load("timm:vit_small_patch14_dinov2", tmp_path / "teacher_checkpoint.pth", **DINOV2)
    _assert_same(backbone, expected, 28)
    loaded = next(line for line in log if line.startswith("loaded"))
    assert "under 'teacher.backbone.'" in loaded and "student.backbone." in loaded
    ignored = next(line for line in log if line.startswith("ignored"))
    assert ignored.startswith(f"ignored {2 + len(student)} tensor(s)") and "teacher.backbone.mask_token" in ignored


def test_dinov2_with_registers(tmp_path):
    """DINOv2 with registers adds a position to its class token; timm's (and ours) adds none: it is folded in."""
    model, state = _dinov2("vit_small_patch14_reg4_dinov2")
    class_pos = torch.randn(1, 1, model.embed_dim, generator=torch.Generator().manual_seed(2))
    dinov2 = {k: v for k, v in state.items() if k not in ("reg_token", "cls_token", "pos_embed")}
    dinov2.update(register_tokens=state["reg_token"], cls_token=state["cls_token"] - class_pos,
                  pos_embed=torch.cat([class_pos, state["pos_embed"]], dim=1))
    torch.save(dinov2, tmp_path / "dinov2_vits14_reg4_pretrain.pth")
    with torch.no_grad():
        expected = model(_images(28))
    backbone, log = _load("timm:vit_small_patch14_reg4_dinov2", tmp_path / "dinov2_vits14_reg4_pretrain.pth",
                          **DINOV2)
    torch.testing.assert_close(backbone.model.cls_token, model.cls_token, atol=1e-6, rtol=0)  # (cls - p) + p
    # the rounding of that sum, 1e-7, grows to 2e-5 in the class token's final norm of this 32-wide ViT
    _assert_same(backbone, expected, 28, atol=1e-4)
    assert any("folded the class token's position embedding" in line for line in log)


def test_dinov2_layout_into_a_registered_vit(tmp_path):
    """A DINOv2-style file (class-token position) into selfsup's vit_micro_cpu (no position on the class token)."""
    torch.manual_seed(3)
    source = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=32, patch_size=4,
                               embed_dim=128, depth=2, num_heads=4).eval()
    torch.save({**_contiguous(source.state_dict()), "mask_token": torch.zeros(1, 128)}, tmp_path / "dinov2.pth")
    with torch.no_grad():
        expected = source(_images())
    backbone, log = _load("vit_micro_cpu", tmp_path / "dinov2.pth", depth=2)
    _assert_same(backbone, expected)
    assert any("folded" in line for line in log) and any("mask_token" in line for line in log)


# -------------------------------------------------------------------------------------------- open_clip
VISION = {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8}
TEXT = {"context_length": 16, "vocab_size": 100, "width": 32, "heads": 2, "layers": 1}


@pytest.fixture(scope="module")
def open_clip_model(tmp_path_factory):
    """(config file, open_clip CLIP model in eval mode, its full state dict as safetensors)."""
    open_clip = pytest.importorskip("open_clip")  # the text extra
    folder = tmp_path_factory.mktemp("open_clip")
    config = {"embed_dim": 32, "vision_cfg": VISION, "text_cfg": TEXT}
    (folder / "tiny-clip.json").write_text(json.dumps(config))
    torch.manual_seed(4)
    model = open_clip.CLIP(**config).eval()
    save_file(_contiguous(model.state_dict()), folder / "open_clip.safetensors")
    return folder / "tiny-clip.json", model, folder / "open_clip.safetensors"


def test_open_clip_checkpoint_into_an_open_clip_tower(open_clip_model):
    config, model, weights = open_clip_model
    with torch.no_grad():
        expected = model.encode_image(_images())
    backbone, log = _load(f"open_clip:{config}", weights)
    _assert_same(backbone, expected)
    assert any("a plain open_clip state dict" in line for line in log)
    text_tower = [k for k in model.state_dict() if not k.startswith("visual.")]
    assert any(line.startswith(f"ignored {len(text_tower)} tensor(s)") and "text_projection" in line for line in log)


def test_open_clip_vit_into_a_timm_vit(open_clip_model):
    """open_clip's ViT (OpenAI CLIP's names) as timm's CLIP ViT: the same features before the joint projection."""
    _, model, weights = open_clip_model
    backbone, log = _load("timm:vit_base_patch32_clip_224", weights, img_size=32, patch_size=8, embed_dim=64,
                          depth=2, num_heads=2)
    with torch.no_grad():
        projected = backbone(_images()) @ model.visual.proj
        torch.testing.assert_close(projected, model.encode_image(_images()), atol=1e-5, rtol=1e-5)
    loaded = next(line for line in log if line.startswith("loaded"))
    assert "OpenAI CLIP / open_clip ViT" in loaded and "under 'visual.'" in loaded
    assert any(line.startswith("ignored") and "visual.proj" in line for line in log)


def test_open_clip_with_a_timm_image_tower(tmp_path, timm_vit):
    """open_clip's timm-tower layout (visual.trunk.* is the timm model, visual.head.* its projection)."""
    model, expected = timm_vit
    state = {**{f"visual.trunk.{k}": v for k, v in model.state_dict().items()},
             "visual.head.proj.weight": torch.zeros(32, 192), "token_embedding.weight": torch.zeros(100, 32)}
    save_file(_contiguous(state), tmp_path / "open_clip_timm.safetensors")
    backbone, log = _load(VIT, tmp_path / "open_clip_timm.safetensors", **VIT_OPTIONS)
    _assert_same(backbone, expected)
    assert any("under 'visual.trunk.'" in line for line in log)


# ----------------------------------------------------------------------------------------------- errors
def test_another_architecture_names_what_the_file_holds(tmp_path, timm_vit):
    model, _ = timm_vit
    save_file(_contiguous(model.state_dict()), tmp_path / "vit.safetensors")
    with pytest.raises(ValueError) as error:
        _load("small_resnet", tmp_path / "vit.safetensors")
    message = str(error.value)
    for part in ("vit.safetensors does not fit small_resnet", "read as no layout", "expects keys like stem.0.weight",
                 "the file's keys are like blocks.0.attn.proj.bias", "the file holds a ViT (width 192, 2 blocks, 16 px patches)"):
        assert part in message, message
    with pytest.raises(ValueError, match="30 tensor.s. have other shapes .model.cls_token: .1, 1, 192. in the file, .1, 1, 96. in the backbone"):
        _load(VIT, tmp_path / "vit.safetensors", **VIT_OPTIONS, embed_dim=96, num_heads=2)
    with pytest.raises(ValueError, match="12 of its 42 tensors are missing when the file is read as a plain timm state dict .e.g. model.blocks.2"):
        _load(VIT, tmp_path / "vit.safetensors", img_size=32, depth=3)
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        _load(VIT, tmp_path / "absent.safetensors", **VIT_OPTIONS)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        _load(VIT, tmp_path / "empty", **VIT_OPTIONS)


def test_selfsup_hf_folder_names_its_backbone(tmp_path):
    """A folder as selfsup's hf export writes it for a backbone timm cannot build: the backbone's own keys, and
    config.json's `backbone` spec, which the error for another backbone names."""
    torch.manual_seed(0)
    source = build_backbone("small_resnet", 3, widths=[8, 16, 16, 32]).eval()
    folder = tmp_path / "hf"
    folder.mkdir()
    save_file(_contiguous(source.state_dict()), folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps({"architecture": "small_resnet", "library_name": "selfsup",
                                                    "backbone": source.spec}))
    with torch.no_grad():
        expected = source(_images())
    backbone, log = _load("small_resnet", folder, widths=[8, 16, 16, 32])
    _assert_same(backbone, expected)
    assert any("read as the backbone's own keys" in line for line in log)
    with pytest.raises(ValueError, match=r"selfsup backbone small_resnet: set backbone.name=small_resnet and "
                                         r"backbone.options=\{\"widths\": \[8, 16, 16, 32\]"):
        _load("resnet18", folder)
