"""The image-text losses (losses/image_text.py) in one process: values against explicit loops, gradients against
an independent float64 formula and finite differences, symmetry, the minimum at perfect alignment, the clamp of
the logit scale at 100, float32 results from bf16 inputs, shape errors."""
import math

import pytest
import torch
import torch.nn.functional as F

from selfsup.losses import clip_loss, convirt_loss, siglip_loss

LOG_100 = math.log(100)


def _pairs(batch, dim, seed):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, dim, generator=gen), torch.randn(batch, dim, generator=gen)


def _cosines(image, text):
    """cos(image_i, text_j) as nested Python lists, one pair at a time."""
    def norm(v):
        return math.sqrt(sum(float(x) ** 2 for x in v))
    return [[sum(float(a) * float(b) for a, b in zip(x, y)) / (norm(x) * norm(y)) for y in text] for x in image]


def _cross_entropy_by_loops(rows):
    """Mean cross entropy of rows of logits whose target is the row's own index (the matching pair)."""
    losses = [-row[i] + math.log(sum(math.exp(v) for v in row)) for i, row in enumerate(rows)]
    return sum(losses) / len(losses)


def _two_way_by_loops(image, text, scale, image_weight):
    cos = _cosines(image, text)
    n = len(cos)
    image_rows = [[scale * cos[i][j] for j in range(n)] for i in range(n)]
    text_rows = [[scale * cos[j][i] for j in range(n)] for i in range(n)]
    return (image_weight * _cross_entropy_by_loops(image_rows)
            + (1 - image_weight) * _cross_entropy_by_loops(text_rows))


def _siglip_by_loops(image, text, scale, bias):
    cos = _cosines(image, text)
    n = len(cos)
    total = 0.0
    for i in range(n):
        for j in range(n):
            z = 1.0 if i == j else -1.0
            total += math.log(1 + math.exp(-z * (scale * cos[i][j] + bias)))  # -log sigmoid(z * logit)
    return total / n


@pytest.mark.parametrize("batch,dim,log_scale", [(2, 3, 0.0), (5, 8, math.log(1 / 0.07)), (7, 4, 4.0)])
def test_clip_loss_matches_loops(batch, dim, log_scale):
    image, text = _pairs(batch, dim, batch)
    value = clip_loss(image, text, torch.tensor(log_scale)).item()
    assert value == pytest.approx(_two_way_by_loops(image, text, math.exp(log_scale), 0.5), rel=1e-5)
    # the local form is the same loss in one process
    assert clip_loss(image, text, torch.tensor(log_scale), local_loss=True).item() == pytest.approx(value, rel=1e-6)


@pytest.mark.parametrize("batch,dim,log_scale,bias", [(2, 3, math.log(10), -10.0), (5, 8, 1.0, 0.5),
                                                      (6, 4, 3.0, -2.0)])
def test_siglip_loss_matches_loops(batch, dim, log_scale, bias):
    image, text = _pairs(batch, dim, batch + 10)
    value = siglip_loss(image, text, torch.tensor(log_scale), torch.tensor(bias)).item()
    assert value == pytest.approx(_siglip_by_loops(image, text, math.exp(log_scale), bias), rel=1e-5)


@pytest.mark.parametrize("batch,dim,temperature,weight", [(2, 3, 0.1, 0.75), (5, 8, 0.5, 0.3), (6, 4, 1.0, 1.0)])
def test_convirt_loss_matches_loops(batch, dim, temperature, weight):
    image, text = _pairs(batch, dim, batch + 20)
    value = convirt_loss(image, text, temperature=temperature, weight=weight).item()
    assert value == pytest.approx(_two_way_by_loops(image, text, 1 / temperature, weight), rel=1e-5)


def test_gradients_to_embeddings_match_an_independent_float64_formula():
    image, text = _pairs(6, 5, 0)
    scale, bias = 3.0, -1.5
    formulas = {
        "clip": (lambda i, t: clip_loss(i, t, torch.tensor(math.log(scale)))),
        "siglip": (lambda i, t: siglip_loss(i, t, torch.tensor(math.log(scale)), torch.tensor(bias))),
        "convirt": (lambda i, t: convirt_loss(i, t, temperature=0.2, weight=0.75)),
    }

    def reference(name, i, t):  # float64, written with log_softmax and softplus instead of the losses' forms
        i, t = i / i.norm(dim=1, keepdim=True), t / t.norm(dim=1, keepdim=True)
        cos = i @ t.T
        if name == "siglip":
            signs = 2 * torch.eye(len(i), dtype=cos.dtype) - 1
            return F.softplus(-signs * (scale * cos + bias)).sum() / len(i)
        s, w = (scale, 0.5) if name == "clip" else (5.0, 0.75)
        image_to_text = (s * cos).log_softmax(1).diagonal().mean()
        text_to_image = (s * cos.T).log_softmax(1).diagonal().mean()
        return -(w * image_to_text + (1 - w) * text_to_image)

    for name, loss_fn in formulas.items():
        i32, t32 = image.clone().requires_grad_(True), text.clone().requires_grad_(True)
        loss_fn(i32, t32).backward()
        i64, t64 = image.double().requires_grad_(True), text.double().requires_grad_(True)
        reference(name, i64, t64).backward()
        assert torch.allclose(i32.grad.double(), i64.grad, atol=1e-5), name
        assert torch.allclose(t32.grad.double(), t64.grad, atol=1e-5), name


def test_image_text_symmetry_and_norm_invariance():
    image, text = _pairs(5, 6, 1)
    scale, bias = torch.tensor(2.0), torch.tensor(-1.0)
    assert clip_loss(image, text, scale).item() == pytest.approx(clip_loss(text, image, scale).item(), rel=1e-6)
    assert siglip_loss(image, text, scale, bias).item() == pytest.approx(siglip_loss(text, image, scale, bias).item(),
                                                                         rel=1e-6)
    # ConVIRT's lambda weighs the image -> text direction: swapping the towers swaps lambda and 1 - lambda
    assert convirt_loss(image, text, weight=0.75).item() == pytest.approx(
        convirt_loss(text, image, weight=0.25).item(), rel=1e-6)
    assert convirt_loss(image, text, weight=0.75).item() != pytest.approx(
        convirt_loss(text, image, weight=0.75).item(), rel=1e-3)
    # embeddings are normalised inside: the norm of a row does not matter
    rescale = torch.linspace(0.5, 3.0, 5)[:, None]
    assert clip_loss(image * rescale, text, scale).item() == pytest.approx(clip_loss(image, text, scale).item(),
                                                                           rel=1e-5)


def test_perfect_alignment_gives_a_loss_near_its_minimum():
    aligned = torch.eye(8)  # matching pairs identical, other pairs orthogonal
    shuffled = aligned.roll(1, dims=0)
    assert clip_loss(aligned, aligned, torch.tensor(LOG_100 - 1e-3)).item() < 1e-3  # log(1 + 7 e^-100) ~ 0
    assert convirt_loss(aligned, aligned).item() < 1e-3  # tau 0.1: log(1 + 7 e^-10) ~ 3e-4
    # SigLIP at scale 100 and bias -50: positives at +50, negatives at -50, every term ~ e^-50
    assert siglip_loss(aligned, aligned, torch.tensor(LOG_100 - 1e-3), torch.tensor(-50.0)).item() < 1e-6
    for loss_fn in (lambda i, t: clip_loss(i, t, torch.tensor(2.0)), lambda i, t: convirt_loss(i, t),
                    lambda i, t: siglip_loss(i, t, torch.tensor(2.0), torch.tensor(-1.0))):
        assert loss_fn(aligned, aligned).item() < loss_fn(aligned, shuffled).item()


def _finite_difference(fn, value, step=1e-3):
    return (fn(value + step) - fn(value - step)) / (2 * step)


def test_gradients_flow_into_logit_scale_and_logit_bias():
    image, text = _pairs(6, 5, 2)
    log_scale = torch.tensor(1.5, requires_grad=True)
    bias = torch.tensor(-1.0, requires_grad=True)
    clip_loss(image, text, log_scale).backward()
    expected = _finite_difference(lambda v: clip_loss(image, text, torch.tensor(v)).item(), 1.5)
    assert log_scale.grad.item() != 0 and log_scale.grad.item() == pytest.approx(expected, rel=1e-3)
    log_scale.grad = None
    siglip_loss(image, text, log_scale, bias).backward()
    assert log_scale.grad.item() == pytest.approx(
        _finite_difference(lambda v: siglip_loss(image, text, torch.tensor(v), bias.detach()).item(), 1.5), rel=1e-3)
    assert bias.grad.item() == pytest.approx(
        _finite_difference(lambda v: siglip_loss(image, text, log_scale.detach(), torch.tensor(v)).item(), -1.0),
        rel=1e-3)


def test_logit_scale_is_clamped_at_100_with_no_gradient_above():
    image, text = _pairs(6, 5, 3)
    for loss_fn in (lambda s: clip_loss(image, text, s), lambda s: siglip_loss(image, text, s, torch.tensor(-5.0))):
        above = torch.tensor(LOG_100 + 0.5, requires_grad=True)
        loss = loss_fn(above)
        loss.backward()
        assert above.grad.item() == 0.0  # the scale is the constant 100 there
        # the value is that of scale 100 (exp(log 100) in float32 is 100.0000076, clamped to 100)
        assert loss.item() == pytest.approx(loss_fn(torch.tensor(LOG_100)).item(), rel=1e-6)
        assert loss.item() != pytest.approx(loss_fn(torch.tensor(LOG_100 - 0.5)).item(), rel=1e-3)
        below = torch.tensor(LOG_100 - 0.5, requires_grad=True)
        loss_fn(below).backward()
        assert below.grad.item() != 0.0


def test_bf16_inputs_give_a_float32_result_computed_in_float32():
    image, text = _pairs(8, 16, 4)
    image16, text16 = image.bfloat16(), text.bfloat16()
    cases = {
        "clip": lambda i, t, s, b: clip_loss(i, t, s),
        "siglip": lambda i, t, s, b: siglip_loss(i, t, s, b),
        "convirt": lambda i, t, s, b: convirt_loss(i, t),
    }
    scale, bias = torch.tensor(3.0), torch.tensor(-2.0)
    for name, loss_fn in cases.items():
        exact = loss_fn(image16.float(), text16.float(), scale, bias)
        low = loss_fn(image16, text16, scale.bfloat16(), bias.bfloat16())
        with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast would run the matmuls in bf16
            autocast = loss_fn(image16, text16, scale, bias)
        for result in (low, autocast):
            assert result.dtype == torch.float32, name
            assert result.item() == pytest.approx(exact.item(), rel=1e-6), name


def test_gather_in_one_process_is_the_local_loss():
    image, text = _pairs(4, 3, 5)
    scale, bias = torch.tensor(2.0), torch.tensor(-1.0)
    assert clip_loss(image, text, scale).item() == clip_loss(image, text, scale, gather=False).item()
    assert siglip_loss(image, text, scale, bias).item() == siglip_loss(image, text, scale, bias, gather=False).item()
    assert convirt_loss(image, text).item() == convirt_loss(image, text, gather=False).item()


def test_the_same_values_as_open_clip():
    loss_module = pytest.importorskip("open_clip.loss")  # the text extra: an independent implementation
    image, text = _pairs(6, 5, 6)
    log_scale, bias = torch.tensor(2.5), torch.tensor(-3.0)
    image_n, text_n = F.normalize(image, dim=1), F.normalize(text, dim=1)
    assert clip_loss(image, text, log_scale).item() == pytest.approx(
        loss_module.ClipLoss()(image_n, text_n, log_scale.exp()).item(), rel=1e-6)
    assert siglip_loss(image, text, log_scale, bias).item() == pytest.approx(
        loss_module.SigLipLoss()(image_n, text_n, log_scale.exp(), bias).item(), rel=1e-6)


@pytest.mark.parametrize("loss_fn", [lambda i, t: clip_loss(i, t, torch.tensor(1.0)),
                                     lambda i, t: siglip_loss(i, t, torch.tensor(1.0), torch.tensor(0.0)),
                                     lambda i, t: convirt_loss(i, t)], ids=["clip", "siglip", "convirt"])
def test_shapes_are_checked(loss_fn):
    with pytest.raises(ValueError, match="one text per image"):
        loss_fn(torch.randn(4, 3), torch.randn(5, 3))
    with pytest.raises(ValueError, match="one embedding space"):
        loss_fn(torch.randn(4, 3), torch.randn(4, 5))
    with pytest.raises(ValueError, match=r"\(B, D\)"):
        loss_fn(torch.randn(4), torch.randn(4))
    with pytest.raises(ValueError, match="at least one"):
        loss_fn(torch.randn(0, 3), torch.randn(0, 3))


def test_scalar_arguments_are_checked():
    image, text = _pairs(4, 3, 7)
    with pytest.raises(ValueError, match="logit_scale .* must be a scalar"):
        clip_loss(image, text, torch.ones(2))
    with pytest.raises(ValueError, match="logit_bias must be a scalar"):
        siglip_loss(image, text, torch.tensor(1.0), torch.zeros(3))
    with pytest.raises(ValueError, match="temperature must be positive"):
        convirt_loss(image, text, temperature=0.0)
    with pytest.raises(ValueError, match=r"weight .* must be in \[0, 1\]"):
        convirt_loss(image, text, weight=1.5)
    # a one-element tensor or a fixed number is fine
    assert clip_loss(image, text, torch.ones(1)).item() == pytest.approx(clip_loss(image, text, 1.0).item())
