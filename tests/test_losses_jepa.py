"""Losses of the predictive and masked-distillation methods (SIGReg, LeJEPA's view prediction, I-JEPA's latent
loss, iBOT's masked patch distillation), each against an independent float64 computation written with loops,
plus the edge cases: a batch of 2, identical embeddings, bf16 inputs; and T-JEPA's batch-standardised targets."""
import cmath
import math

import pytest
import torch
import torch.nn.functional as F

from selfsup.losses.distillation import masked_patch_distillation
from selfsup.losses.predictive import latent_prediction_loss, standardise_over_batch, view_prediction_loss
from selfsup.losses.sigreg import epps_pulley, sigreg, sigreg_directions


# -- SIGReg ---------------------------------------------------------------------------------------------------------
def epps_pulley_loops(samples: list[float], num_knots: int = 17, t_max: float = 3.0) -> float:
    """N * integral over [-t_max, t_max] of exp(-t^2/2) |ecf(t) - exp(-t^2/2)|^2 dt with the trapezoid rule on the
    SYMMETRIC grid of 2 * num_knots - 1 knots and complex exponentials (no use of the symmetry trick)."""
    n = len(samples)
    dt = t_max / (num_knots - 1)
    grid = [-t_max + j * dt for j in range(2 * num_knots - 1)]
    values = []
    for t in grid:
        ecf = sum(cmath.exp(1j * t * x) for x in samples) / n
        values.append(math.exp(-t * t / 2) * abs(ecf - math.exp(-t * t / 2)) ** 2)
    integral = sum((values[j] + values[j + 1]) / 2 * dt for j in range(len(values) - 1))
    return n * integral


def sigreg_loops(z: torch.Tensor, directions: torch.Tensor, num_knots: int = 17, t_max: float = 3.0) -> float:
    """Mean over leading dims and directions of the Epps-Pulley statistic of the projections, with loops."""
    z, directions = z.double().reshape(-1, *z.shape[-2:]), directions.double()
    stats = []
    for group in z:
        for s in range(directions.shape[1]):
            projected = [sum(float(group[i, d]) * float(directions[d, s]) for d in range(z.shape[-1]))
                         for i in range(group.shape[0])]
            stats.append(epps_pulley_loops(projected, num_knots, t_max))
    return sum(stats) / len(stats)


@pytest.mark.parametrize("shape", [(5, 3), (2, 3), (2, 4, 3)])  # (N, D), a batch of 2, (views, N, D)
def test_sigreg_matches_loops(shape):
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(*shape, generator=gen)
    directions = sigreg_directions(shape[-1], 4, step=7)
    assert sigreg(z, directions, num_knots=9, t_max=2.5).item() == pytest.approx(
        sigreg_loops(z, directions, num_knots=9, t_max=2.5), rel=1e-5)


def test_sigreg_gradient_matches_float64_autograd_of_the_definition():
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(6, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    directions = sigreg_directions(4, 3, step=0).double()
    sigreg(z.float(), directions).backward()
    ours = z.grad.clone()
    z.grad = None
    # the definition in complex float64: mean_s N * sum_t w(t) |mean_n exp(i t x_ns) - phi(t)|^2 (doubled trapezoid)
    t = torch.linspace(-3, 3, 33, dtype=torch.float64)
    trapezoid = torch.full_like(t, 6 / 32)
    trapezoid[[0, -1]] /= 2
    x = (z @ directions)[:, :, None] * t  # (N, S, T)
    ecf = torch.complex(x.cos(), x.sin()).mean(dim=0)
    phi = torch.exp(-t ** 2 / 2)
    reference = (6 * ((ecf - phi).abs() ** 2 * phi * trapezoid).sum(dim=-1)).mean()
    reference.backward()
    assert torch.allclose(ours, z.grad, atol=1e-5)


def test_sigreg_is_small_for_gaussian_and_large_for_collapsed_or_low_rank():
    gen = torch.Generator().manual_seed(0)
    n, d = 1024, 16
    directions = sigreg_directions(d, 64, step=0)
    gaussian = sigreg(torch.randn(n, d, generator=gen), directions).item()
    # under N(0, 1) the statistic's mean is about integral of (1 - phi^2) phi = 1.06 whatever N
    assert gaussian < 2.0
    collapsed = sigreg(torch.zeros(n, d), directions).item()
    constant = sigreg(torch.ones(n, d) * 0.5, directions).item()
    basis = torch.linalg.qr(torch.randn(d, 2, generator=gen))[0]  # 2 orthonormal directions
    low_rank = sigreg(torch.randn(n, 2, generator=gen) @ basis.T, directions).item()  # unit variance on a plane
    scaled = sigreg(3 * torch.randn(n, d, generator=gen), directions).item()  # isotropic but not unit variance
    for value in (collapsed, constant, low_rank, scaled):
        assert value > 20 * gaussian, (value, gaussian)


def test_sigreg_identical_embeddings_are_finite_with_finite_gradients():
    z = torch.ones(2, 8, requires_grad=True)  # a batch of 2, both the same
    loss = sigreg(z, sigreg_directions(8, 16, step=0))
    loss.backward()
    assert torch.isfinite(loss) and loss > 0 and torch.isfinite(z.grad).all()


def test_sigreg_bf16_inputs_match_float32_of_the_same_values():
    z = torch.randn(64, 8, generator=torch.Generator().manual_seed(3)).bfloat16()
    directions = sigreg_directions(8, 16, step=2)
    low = sigreg(z, directions)
    assert low.dtype == torch.float32
    assert low.item() == pytest.approx(sigreg(z.float(), directions).item(), rel=1e-6)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast off inside: still the float32 value
        assert sigreg(z, directions).item() == pytest.approx(low.item(), rel=1e-6)


def test_sigreg_directions_depend_on_step_only_and_are_unit_vectors():
    a, b = sigreg_directions(10, 5, step=3), sigreg_directions(10, 5, step=3)
    assert torch.equal(a, b) and a.shape == (10, 5) and a.dtype == torch.float32
    assert torch.allclose(a.norm(dim=0), torch.ones(5), atol=1e-6)
    assert not torch.allclose(a, sigreg_directions(10, 5, step=4))
    assert not torch.allclose(a, sigreg_directions(10, 5, step=3, seed=1))


def test_epps_pulley_of_a_whole_column_set_and_bad_arguments():
    x = torch.randn(50, 3, generator=torch.Generator().manual_seed(4))
    stats = epps_pulley(x)
    assert stats.shape == (3,)
    for s in range(3):
        assert stats[s].item() == pytest.approx(epps_pulley_loops(x[:, s].tolist()), rel=1e-5)
    with pytest.raises(ValueError, match="width"):
        sigreg(torch.randn(4, 3), torch.randn(5, 2))
    with pytest.raises(ValueError, match="num_knots"):
        epps_pulley(x, num_knots=1)


def test_sigreg_gradient_descent_gaussianizes_a_collapsed_cloud():
    """The regulariser alone spreads a nearly collapsed sample towards N(0, I) (what prevents collapse)."""
    gen = torch.Generator().manual_seed(5)
    z = (0.01 * torch.randn(256, 4, generator=gen)).requires_grad_()
    optimizer = torch.optim.Adam([z], lr=0.05)
    for step in range(200):
        loss = sigreg(z, sigreg_directions(4, 32, step=step))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    cov = torch.cov(z.detach().T)
    assert torch.allclose(cov, torch.eye(4), atol=0.25), cov


# -- LeJEPA view prediction -------------------------------------------------------------------------------------------
def test_view_prediction_loss_matches_loops():
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(4, 2, 3, generator=gen)  # 4 views (2 global), a batch of 2, 3 dims
    total = 0.0
    for b in range(2):
        centre = [(float(z[0, b, k]) + float(z[1, b, k])) / 2 for k in range(3)]
        for v in range(4):
            total += sum((centre[k] - float(z[v, b, k])) ** 2 for k in range(3))
    assert view_prediction_loss(z, num_global=2).item() == pytest.approx(total / (4 * 2 * 3), rel=1e-6)
    assert view_prediction_loss(z.bfloat16(), 2).dtype == torch.float32
    assert view_prediction_loss(z[:, :1].expand(4, 2, 3), 2).item() >= 0
    same = torch.ones(3, 2, 5, requires_grad=True)
    loss = view_prediction_loss(same, 2)
    loss.backward()
    assert loss.item() == 0 and torch.isfinite(same.grad).all()
    with pytest.raises(ValueError, match="num_global"):
        view_prediction_loss(z, num_global=5)


# -- I-JEPA latent loss ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["smooth_l1", "l2"])
def test_latent_prediction_loss_matches_loops(kind):
    gen = torch.Generator().manual_seed(0)
    prediction, target = 1.5 * torch.randn(2, 3, 2, 4, generator=gen), torch.randn(2, 3, 2, 4, generator=gen)
    values = []
    for p, t in zip(prediction.double().flatten().tolist(), target.double().flatten().tolist()):
        error = abs(p - t)
        values.append(error ** 2 if kind == "l2" else (0.5 * error ** 2 if error < 1.0 else error - 0.5))
    assert latent_prediction_loss(prediction, target, kind).item() == pytest.approx(sum(values) / len(values), rel=1e-6)
    assert latent_prediction_loss(prediction.bfloat16(), target.bfloat16(), kind).dtype == torch.float32
    assert latent_prediction_loss(target, target, kind).item() == 0


def test_latent_prediction_loss_detaches_the_target_and_checks_shapes():
    prediction, target = torch.randn(2, 3, requires_grad=True), torch.randn(2, 3, requires_grad=True)
    latent_prediction_loss(prediction, target).backward()
    assert prediction.grad is not None and target.grad is None
    with pytest.raises(ValueError, match="shape"):
        latent_prediction_loss(torch.randn(2, 3), torch.randn(3, 2))
    with pytest.raises(ValueError, match="kind"):
        latent_prediction_loss(torch.randn(2, 3), torch.randn(2, 3), kind="l1")


# -- iBOT masked patch distillation ------------------------------------------------------------------------------------
def masked_patch_loops(students, teachers, masks, center, student_temp, teacher_temp) -> float:
    per_view = []
    for student, teacher, mask in zip(students, teachers, masks):
        images = []
        for b in range(student.shape[0]):
            losses = []
            for n in range(student.shape[1]):
                if not mask[b, n]:
                    continue
                t = [(float(teacher[b, n, k]) - float(center[0, k])) / teacher_temp for k in range(student.shape[2])]
                s = [float(student[b, n, k]) / student_temp for k in range(student.shape[2])]
                t_max, s_max = max(t), max(s)
                t_norm = sum(math.exp(v - t_max) for v in t)
                s_log_norm = s_max + math.log(sum(math.exp(v - s_max) for v in s))
                losses.append(-sum(math.exp(tv - t_max) / t_norm * (sv - s_log_norm) for tv, sv in zip(t, s)))
            images.append(sum(losses) / len(losses) if losses else 0.0)
        per_view.append(sum(images) / len(images))
    return sum(per_view) / len(per_view)


def test_masked_patch_distillation_matches_loops_and_ignores_visible_patches():
    gen = torch.Generator().manual_seed(0)
    b, n, k = 2, 5, 4  # a batch of 2
    students = [torch.randn(b, n, k, generator=gen) for _ in range(2)]
    teachers = [torch.randn(b, n, k, generator=gen) for _ in range(2)]
    masks = [torch.rand(b, n, generator=gen) < 0.5 for _ in range(2)]
    masks[1][1] = False  # an image with no masked patch contributes 0
    masks[0][0, 0] = True
    center = torch.randn(1, k, generator=gen)
    value = masked_patch_distillation(students, teachers, masks, center, student_temp=0.2, teacher_temp=0.07)
    assert value.item() == pytest.approx(masked_patch_loops(students, teachers, masks, center, 0.2, 0.07), rel=1e-5)
    # changing visible patches of the student changes nothing
    changed = [s.clone() for s in students]
    changed[0][~masks[0]] += 10.0
    again = masked_patch_distillation(changed, teachers, masks, center, student_temp=0.2, teacher_temp=0.07)
    assert again.item() == pytest.approx(value.item(), rel=1e-6)
    low = masked_patch_distillation([s.bfloat16() for s in students], [t.bfloat16() for t in teachers], masks,
                                    center.bfloat16(), student_temp=0.2, teacher_temp=0.07)
    assert low.dtype == torch.float32 and torch.isfinite(low)


def test_masked_patch_distillation_identical_outputs_finite_and_teacher_detached():
    logits = torch.zeros(2, 3, 4, requires_grad=True)
    teacher = torch.zeros(2, 3, 4, requires_grad=True)
    mask = torch.ones(2, 3, dtype=torch.bool)
    loss = masked_patch_distillation([logits], [teacher], [mask], torch.zeros(1, 4))
    loss.backward()
    assert loss.item() == pytest.approx(math.log(4)) and torch.isfinite(logits.grad).all() and teacher.grad is None
    with pytest.raises(ValueError, match="per view"):
        masked_patch_distillation([logits], [], [mask], torch.zeros(1, 4))
    assert F.softmax(torch.zeros(4), 0).sum() == 1  # sanity of the uniform case above


def test_standardise_over_batch_keeps_only_what_differs_between_samples():
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randn(16, 5, 8, generator=gen)
    out = standardise_over_batch(tokens, eps=0.0)
    assert torch.allclose(out.mean(dim=0), torch.zeros(5, 8), atol=1e-5)
    assert torch.allclose(out.var(dim=0, unbiased=False), torch.ones(5, 8), atol=1e-4)
    # a per-position constant (a column's identity) and a per-position scale are gone from the targets
    shifted = tokens * torch.rand(1, 5, 8, generator=gen).add(0.5) + 10 * torch.randn(1, 5, 8, generator=gen)
    assert torch.allclose(standardise_over_batch(shifted, eps=0.0), out, atol=1e-4)
    with pytest.raises(ValueError, match="batch, tokens, dim"):
        standardise_over_batch(tokens[0])
