"""Every registered method, parametrized: builds from its options, runs a training step on real views, sends
gradients to the backbone, keeps its state (teachers, queues, centres) in the state dict, and has a recipe."""
import copy

import numpy as np
import pytest
import torch

from selfsup.config import build_config, load_recipe, recipe_names
from selfsup.data.sources import ArraySource
from selfsup.methods.parts.ema import ema_update, frozen_copy
from selfsup.schedules import cosine_momentum
from method_utils import SIZE, build_tiny_method, captions_for, view_batch
from selfsup.methods import METHODS, validate_method_options
from selfsup.methods.common import encode_by_resolution

BATCH = 8


def test_every_method_declares_valid_tiny_test_options():
    # test_options is the method's own: a new method file is tested without editing this one.
    for name in METHODS:
        options = validate_method_options(name, METHODS[name].test_options)
        assert isinstance(options, METHODS[name].Options)


@pytest.fixture(scope="module")
def source():
    rng = np.random.default_rng(0)
    images = (rng.random((32, 3, SIZE, SIZE)) * 255).astype(np.uint8)
    # captions for the image-text methods (unused by the others): one distinct caption per image
    return ArraySource(images, labels=np.arange(32) % 4, captions=captions_for(32))


def make_batch(method, source, epoch=0):
    return view_batch(method, source, BATCH, epoch)


def build(name):
    return build_tiny_method(name)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_training_step(name, source):
    method = build(name)
    method.train()
    optimizer = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.1)
    before = copy.deepcopy(method.state_dict())
    for step in range(2):  # two steps: queues and centres are used after being filled once
        batch = make_batch(method, source, epoch=step)
        assert len(batch["views"]) == method.views.num_views
        progress = 0.6 * step
        method.on_step(progress)
        out = method(batch)
        assert out.loss.ndim == 0 and torch.isfinite(out.loss), out.loss
        optimizer.zero_grad()
        out.loss.backward()
        grads = [p.grad for p in method.backbone.parameters() if p.grad is not None]
        assert grads and any(g.abs().sum() > 0 for g in grads), "no gradient reached the backbone"
        method.before_optimizer_step(progress)
        optimizer.step()
        method.after_optimizer_step(progress)
        if out.embeddings is not None:
            assert out.embeddings.shape[0] == BATCH and not out.embeddings.requires_grad
        for value in out.metrics.values():
            assert np.isfinite(value)
    after = method.state_dict()
    assert after.keys() == before.keys()
    changed = [k for k in after if after[k].dtype.is_floating_point and not torch.equal(after[k], before[k])]
    assert any(k.startswith(("backbone.", "towers.image.")) for k in changed)
    # Teachers, queues and centres live in the state dict (so checkpoints hold them) and move with training.
    for prefix in ("key_backbone.", "target_backbone.", "teacher_backbone.", "queue.", "support_set.", "center"):
        keys = [k for k in after if k.startswith(prefix)]
        if keys:
            assert any(k in changed for k in keys), f"{prefix} never changed"
    fresh = build(name)
    fresh.load_state_dict(after)  # strict round trip


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_has_a_recipe_that_validates(name):
    recipes = [r for r in recipe_names() if load_recipe(r).get("method") == name]
    assert recipes, f"no recipe for {name}"
    for recipe in recipes:
        cfg = build_config(recipe)
        validate_method_options(cfg.method, cfg.method_options)
        # trains on the embedded data without edits (image-text methods: the captioned digits; mae-3d: volumes;
        # tjepa, point-mae, graphmae: an embedded table, point-shapes, graph-sbm)
        assert cfg.data.source in ("digits", "digits-captions", "volumes", "table-wine", "point-shapes", "graph-sbm",
                                   "moving-digits", "sounds")  # videos and sounds (selfsup.data.moving_digits, .sounds)


def test_unknown_method_option_names_the_key():
    with pytest.raises(Exception, match="method_options.temprature.*temperature"):
        validate_method_options("dino", {"temprature": 0.1})


def test_dino_freezes_the_last_layer_early_and_warms_the_teacher_temperature(source):
    method = build("dino")
    method.on_step(0.0)
    cold = method.teacher_temperature
    out = method(make_batch(method, source))
    out.loss.backward()
    assert method.head.last_layer.grad is not None
    method.before_optimizer_step(0.1)
    assert method.head.last_layer.grad is None
    method.on_step(1.0)
    assert method.teacher_temperature == method.options.teacher_temperature and cold == method.options.warmup_teacher_temperature


def test_rotnet_targets_match_rotations(source):
    method = build("rotnet")
    method.eval()
    batch = make_batch(method, source)
    out = method(batch)
    assert 0.0 <= out.metrics["rotation_accuracy"] <= 1.0


def test_supcon_refuses_unlabelled_batches(source):
    method = build("supcon")
    batch = make_batch(method, source)
    batch["label"] = torch.full_like(batch["label"], -1)
    with pytest.raises(ValueError, match="needs a label"):
        method(batch)


# -- shared machinery ---------------------------------------------------------------------------------------------

def test_cosine_momentum_schedule():
    assert cosine_momentum(0.0, 0.996) == pytest.approx(0.996)
    assert cosine_momentum(1.0, 0.996) == pytest.approx(1.0)
    assert cosine_momentum(0.5, 0.99) == pytest.approx(0.995)
    values = [cosine_momentum(p / 10, 0.9) for p in range(11)]
    assert values == sorted(values)


def test_ema_update_matches_the_formula():
    torch.manual_seed(0)
    student = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    teacher = frozen_copy(student)
    assert all(not p.requires_grad for p in teacher.parameters())
    old = {k: v.clone() for k, v in teacher.state_dict().items()}
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
        student(torch.randn(8, 3))  # moves BN running stats and num_batches_tracked
    ema_update(teacher, student, momentum=0.9)
    new, current = teacher.state_dict(), student.state_dict()
    for key in old:
        if old[key].dtype.is_floating_point:
            assert torch.allclose(new[key], 0.9 * old[key] + 0.1 * current[key], atol=1e-6), key
        else:
            assert torch.equal(new[key], current[key])


def test_encode_by_resolution_groups_views_and_keeps_order():
    calls = []

    def encode(x):
        calls.append(tuple(x.shape))
        return x.mean(dim=(1, 2, 3))[:, None] * torch.ones(1, 5)

    views = [torch.randn(4, 3, 16, 16), torch.randn(4, 3, 16, 16), torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8),
             torch.randn(4, 3, 8, 8)]
    outputs = encode_by_resolution(encode, views)
    assert calls == [(8, 3, 16, 16), (12, 3, 8, 8)]
    for view, out in zip(views, outputs):
        assert torch.allclose(out, encode(view))
