"""Distillation from a frozen teacher (distill, dmae, simclrv2_distill): the teacher is frozen, outside the
optimizer, the checkpoint and the export; it comes from a saved backbone, a run or a named architecture; its
clean-view features are cached exactly; a student learns to give its features. (The generic method checks,
loss falling on a repeated batch included, are in test_method_contract.py and test_methods.py.)"""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from selfsup import api
from selfsup.backbones import build_backbone
from selfsup.config import ConfigError, OptimConfig
from selfsup.data.sources import ArraySource
from selfsup.engine.optim import build_optimizer
from selfsup.export import load_backbone, save_backbone
from selfsup.losses import similarity_distillation, soft_target_distillation
from selfsup.methods import build_method
from selfsup.methods.distill import TEST_TEACHER
from selfsup.methods.parts.teacher import block_output, save_head
from selfsup.views.spec import overhead_views
from method_utils import view_batch

SIZE = 16
WIDTHS = {"widths": [8, 8, 16, 16]}


def student():
    torch.manual_seed(0)
    return build_backbone("small_resnet", 3, **WIDTHS)


def tiny_vit(**extra):
    return build_backbone("vit_micro_cpu", 3, img_size=SIZE, embed_dim=32, depth=2, num_heads=2, **extra)


@pytest.fixture(scope="module")
def source():
    rng = np.random.default_rng(0)
    grid = torch.from_numpy(rng.random((16, 3, 4, 4))).float()  # smooth images that tell each other apart
    images = F.interpolate(grid, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    return ArraySource((images * 255).round().to(torch.uint8).numpy(), labels=np.arange(16) % 4)


@pytest.fixture(scope="module")
def saved_teacher(tmp_path_factory) -> Path:
    """A saved selfsup backbone (what a teacher run leaves): 24 px, its own normalisation."""
    torch.manual_seed(1)
    folder = tmp_path_factory.mktemp("teacher")
    save_backbone(build_backbone("small_resnet", 3, widths=[8, 16, 16, 32]), folder, image_size=24,
                  mean=[0.4, 0.5, 0.6], std=[0.2, 0.3, 0.25])
    return folder


def distill(options=None, backbone=None):
    return build_method("distill", backbone or student(), {"teacher": TEST_TEACHER, **(options or {})})


def test_the_teacher_is_frozen_outside_the_optimizer_the_checkpoint_and_the_export(source, tmp_path):
    method = distill({"teacher_view": "same", "projector_hidden_dim": 16})
    teacher = method.teacher.model
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    teacher_ids = {id(p) for p in teacher.parameters()}
    optimizer = build_optimizer(method, OptimConfig(name="adamw", lr=0.01), 8)
    assert not teacher_ids & {id(p) for group in optimizer.param_groups for p in group["params"]}
    method.train()
    assert not teacher.training and not method.teacher.training  # eval mode whatever the method's
    for step in range(3):
        out = method(view_batch(method, source, 8, epoch=step))
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert all(torch.equal(v, before[k]) for k, v in teacher.state_dict().items())  # BN statistics too
    assert [k for k in method.state_dict() if k.startswith("teacher")] == ["teacher.fingerprint"]
    save_backbone(method.backbone, tmp_path, image_size=SIZE, mean=[0.5] * 3, std=[0.25] * 3)
    assert json.loads((tmp_path / "backbone.json").read_text())["spec"]["widths"] == WIDTHS["widths"]  # the student


def test_a_resume_rebuilds_the_teacher_and_refuses_another_one(source):
    trained = distill({"loss": "seed", "queue_size": 32, "projector_hidden_dim": 16})
    trained(view_batch(trained, source, 8))
    state = trained.state_dict()
    distill({"loss": "seed", "queue_size": 32, "projector_hidden_dim": 16}).load_state_dict(state)  # strict
    other = distill({"loss": "seed", "queue_size": 32, "projector_hidden_dim": 16,
                     "teacher": {**TEST_TEACHER, "seed": 1}})
    with pytest.raises(RuntimeError, match="not the one this checkpoint was trained with"):
        other.load_state_dict(state)


def test_a_missing_teacher_fails_at_start_naming_the_key_and_the_fix(tmp_path):
    with pytest.raises(ConfigError, match=r"method_options\.teacher is not set.*method_options\.teacher=runs/"):
        build_method("distill", student(), {})
    with pytest.raises(ConfigError, match=r"method_options\.teacher\.weights.*does not exist"):
        build_method("distill", student(), {"teacher": str(tmp_path / "nowhere.safetensors")})
    with pytest.raises(ConfigError, match=r"no backbone in directory"):
        build_method("distill", student(), {"teacher": str(tmp_path)})
    with pytest.raises(ConfigError, match="random_init: true only for tests"):
        build_method("distill", student(), {"teacher": {"name": "resnet18"}})


def test_a_saved_teacher_brings_its_architecture_size_and_normalisation(saved_teacher, tmp_path):
    method = distill({"teacher": {"weights": str(saved_teacher), "views_mean": [0.5] * 3, "views_std": [0.25] * 3}})
    reference = load_backbone(saved_teacher)
    assert method.teacher.image_size == 24 and method.teacher.num_features == 32
    assert method.views.crops[-1].size is None  # teacher_view: same, the student's own view
    views = torch.randn(4, 3, SIZE, SIZE)
    pixels = views * 0.25 + 0.5  # what the views hold, renormalised with the teacher's statistics, at 24 px
    expected = (pixels - torch.tensor([0.4, 0.5, 0.6]).view(1, 3, 1, 1)) / torch.tensor([0.2, 0.3, 0.25]).view(1, 3, 1, 1)
    expected = F.interpolate(expected, size=(24, 24), mode="bilinear", align_corners=False)
    with torch.no_grad():
        assert torch.allclose(method.teacher.features(views), reference(expected), atol=1e-5)
    # The same weights as a plain state dict, with the architecture named: the same teacher.
    torch.save(reference.state_dict(), tmp_path / "teacher.pt")
    named = distill({"teacher": {"weights": str(tmp_path / "teacher.pt"), "name": "small_resnet",
                                 "options": {"widths": [8, 16, 16, 32]}}})
    assert torch.equal(named.teacher.fingerprint, method.teacher.fingerprint)
    with pytest.raises(ConfigError, match="does not say its architecture"):
        distill({"teacher": str(tmp_path / "teacher.pt")})


def test_the_clean_view_cache_gives_the_features_recomputing_gives(source):
    method = distill({"teacher_view": "clean", "projector_hidden_dim": 16})
    method.train()
    first = view_batch(method, source, 8)
    second = view_batch(method, source, 8, epoch=1)  # new crops; the clean views are the same
    assert torch.equal(first["views"][-1], second["views"][-1]) and not torch.equal(first["views"][0], second["views"][0])
    out = method(first)
    assert method.cache.misses == 8 and len(method.cache) == 8
    cached = method.cache(second["index"], second["views"][-1], lambda images: pytest.fail("recomputed"))
    assert torch.equal(cached, method.teacher.features(second["views"][-1]))
    method(second)
    assert method.cache.hits == 16 and out.metrics["teacher_cache_hits"] == 0.0
    shuffled = {key: value.flip(0) if key != "views" else [v.flip(0) for v in value] for key, value in second.items()}
    assert torch.equal(method.teacher_targets(shuffled, shuffled["views"][0])[0], cached.flip(0))
    hits = method.cache.hits
    method.views = overhead_views(method.views)  # data.overhead: random turns in every view, no cache
    method(second)
    assert method.cache.hits == hits == 24


def test_a_student_learns_to_give_the_teachers_features(source):
    torch.manual_seed(0)
    method = distill({"teacher_view": "clean", "projector_hidden_dim": 64, "num_views": 1, "crop_scale": [0.8, 1.0],
                      "colour_strength": 0.0, "grayscale_p": 0.0})
    batch = view_batch(method, source, 16)
    optimizer = torch.optim.AdamW([p for p in method.parameters() if p.requires_grad], lr=3e-3)
    method.train()
    for _ in range(40):
        out = method(batch)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    method.eval()
    with torch.no_grad():
        projected = method.projector(method.backbone(batch["views"][0]))
        cosine = F.cosine_similarity(projected, method.teacher.features(batch["views"][-1]), dim=1)
    assert cosine.min() > 0.95, cosine


def test_feature_map_distillation_puts_the_student_map_on_the_teacher_grid(source):
    teacher = {"name": "vit_micro_cpu", "random_init": True,
               "options": {"img_size": SIZE, "embed_dim": 32, "depth": 2, "num_heads": 2}}
    method = distill({"teacher": teacher, "patch_weight": 1.0, "patch_hidden_dim": 16, "projector_hidden_dim": 16})
    out = method(view_batch(method, source, 8))
    assert out.metrics["patch_loss"] > 0 and torch.isfinite(out.loss)
    with pytest.raises(ValueError, match="teacher_view: same"):
        distill({"teacher": teacher, "patch_weight": 1.0, "teacher_view": "clean"})


def test_dmae_teacher_reads_the_visible_patches_up_to_its_layer(source):
    teacher = {"name": "vit_micro_cpu", "random_init": True,
               "options": {"img_size": SIZE, "embed_dim": 32, "depth": 2, "num_heads": 2}}
    method = build_method("dmae", tiny_vit(), {"teacher": teacher, "teacher_layer": 1, "student_layer": 1,
                                               "decoder_dim": 16, "decoder_depth": 1, "decoder_heads": 2})
    batch = view_batch(method, source, 4)
    images, visible = batch["views"][0], batch["masks"]["visible"]
    model = method.teacher.model
    with torch.no_grad(), block_output(model, 1) as captured:  # the whole forward, for reference
        model.forward_tokens(images, keep_indices=visible)
    target = method.teacher_targets(images, visible, (4, 4))
    assert target.shape == (4, visible.shape[1], 32) and torch.equal(target, captured[0])
    out = method(batch)
    assert out.metrics["distillation"] > 0 and torch.isfinite(out.loss)
    # A ConvNet teacher (no patch grid) reads the whole view; its map is resampled to the student's grid.
    convnet = build_method("dmae", tiny_vit(), {"teacher": TEST_TEACHER, "decoder_dim": 16, "decoder_depth": 1,
                                                "decoder_heads": 2})
    assert convnet.teacher_targets(images, visible, (4, 4)).shape == (4, visible.shape[1], 16)
    with pytest.raises(ValueError, match="teacher_sees: full"):
        build_method("dmae", tiny_vit(), {"teacher": TEST_TEACHER, "teacher_sees": "visible"})(batch)


def test_simclrv2_distillation_reads_a_classifier_teacher(saved_teacher, tmp_path, source):
    with pytest.raises(ConfigError, match="save_head"):
        build_method("simclrv2_distill", student(), {"teacher": str(saved_teacher)})
    torch.manual_seed(0)
    head = torch.nn.Linear(32, 5)
    save_head(head, tmp_path / "head.safetensors")
    method = build_method("simclrv2_distill", student(), {"teacher": {"weights": str(saved_teacher),
                                                                       "head": str(tmp_path / "head.safetensors")}})
    views = torch.randn(4, 3, SIZE, SIZE)
    with torch.no_grad():
        expected = head(method.teacher.features(views))
    assert torch.allclose(method.teacher.logits(views), expected, atol=1e-6) and method.head[-1].out_features == 5
    out = method(view_batch(method, source, 8))
    assert out.targets.shape == (8, 5) and torch.allclose(out.targets.sum(1), torch.ones(8))


def test_the_losses_match_their_formulas():
    torch.manual_seed(0)
    s, t, support = torch.randn(6, 8, requires_grad=True), torch.randn(6, 8), torch.randn(20, 8)
    d = F.normalize(support, dim=1)
    p_t = torch.softmax(F.normalize(t, dim=1) @ d.T / 0.01, dim=1)
    log_p_s = torch.log_softmax(F.normalize(s, dim=1) @ d.T / 0.2, dim=1)
    assert torch.allclose(similarity_distillation(s, t, support), -(p_t * log_p_s).sum(1).mean(), atol=1e-6)
    logits_s, logits_t = torch.randn(6, 5), torch.randn(6, 5)
    expected = -(torch.softmax(logits_t / 2, 1) * torch.log_softmax(logits_s / 2, 1)).sum(1).mean()
    assert torch.allclose(soft_target_distillation(logits_s, logits_t, 2.0), expected)


def test_a_distill_run_trains_exports_the_student_and_resumes(saved_teacher, tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "tiny.npz", images=(rng.random((64, SIZE, SIZE, 3)) * 255).astype(np.uint8))
    common = [f"data.source={tmp_path / 'tiny.npz'}", f"runs_dir={tmp_path}", "name=student",
              f"method_options.teacher={saved_teacher}", "method_options.projector_hidden_dim=16",
              "method_options.queue_size=64", f"backbone.options={{widths: {WIDTHS['widths']}}}", "data.image_size=16",
              "train.budget=null", "train.batch_size=16", "train.max_steps=4", "train.progress=false",
              "train.precision=fp32", "data.num_workers=0", "data.mean=[0.5,0.5,0.5]", "data.std=[0.25,0.25,0.25]",
              "eval.enabled=false", "eval.report=false", "optim.schedule=wsd"]  # wsd: a run one may extend
    run = api.train("distill", common)
    assert json.loads((run / "backbone.json").read_text())["spec"]["widths"] == WIDTHS["widths"]
    checkpoint = torch.load(run / "checkpoints" / "last.pt", weights_only=False)
    assert [k for k in checkpoint["method"] if k.startswith("teacher")] == ["teacher.fingerprint"]
    api.train(resume=run, overrides=["train.max_steps=6"])
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1] == 6 and set(load_file(str(run / "backbone.safetensors"))) == set(student().state_dict())
