"""The coding-rate losses of EMP-SSL (losses/coding_rate.py): known values (orthonormal, collapsed and zero
embeddings), a float64 log-det reference, the gradient's direction, and the patch invariance term."""
import math

import pytest
import torch
import torch.nn.functional as F

from selfsup.losses import emp_ssl_loss, patch_invariance, total_coding_rate


def _reference_rate(z: torch.Tensor, eps: float) -> float:
    """1/2 logdet(I_d + d / (m eps) Z^T Z) in float64, on the d x d matrix of MCR2's formula."""
    z = z.double()
    m, d = z.shape
    return 0.5 * float(torch.logdet(torch.eye(d, dtype=torch.float64) + d / (m * eps) * z.T @ z))


def test_known_values_orthonormal_collapsed_and_zero():
    d, m, eps = 8, 4, 0.2
    orthonormal = torch.eye(d)[:m]
    collapsed = torch.zeros(m, d)
    collapsed[:, 0] = 1.0
    assert float(total_coding_rate(orthonormal, eps)) == pytest.approx(m / 2 * math.log(1 + d / (m * eps)), rel=1e-5)
    assert float(total_coding_rate(collapsed, eps)) == pytest.approx(0.5 * math.log(1 + d / eps), rel=1e-5)
    assert float(total_coding_rate(torch.zeros(m, d), eps)) == pytest.approx(0.0, abs=1e-6)
    # spread beats collapsed: the rate counts the directions the embeddings span
    assert float(total_coding_rate(orthonormal, eps)) > 2 * float(total_coding_rate(collapsed, eps))


@pytest.mark.parametrize("m, d", [(5, 12), (12, 5)])  # both Gram matrices (Sylvester's identity)
def test_matches_the_logdet_reference_and_batches_patch_sets(m, d):
    gen = torch.Generator().manual_seed(0)
    z = F.normalize(torch.randn(3, m, d, generator=gen), dim=-1)
    rates = total_coding_rate(z, eps=0.5)
    assert rates.shape == (3,)
    for k in range(3):
        assert float(rates[k]) == pytest.approx(_reference_rate(z[k], 0.5), rel=1e-5)
        assert float(total_coding_rate(z[k], eps=0.5)) == pytest.approx(float(rates[k]), rel=1e-6)


def test_a_smaller_eps_codes_more_finely():
    z = F.normalize(torch.randn(6, 4, generator=torch.Generator().manual_seed(1)), dim=1)
    assert float(total_coding_rate(z, eps=0.05)) > float(total_coding_rate(z, eps=0.2)) > float(
        total_coding_rate(z, eps=1.0))


def test_gradient_ascent_on_the_rate_spreads_collapsed_embeddings():
    """Minimising -R from nearly collapsed unit vectors pulls them apart: the rate's gradient points away
    from collapse (one small step raises the rate and lowers the mean pairwise cosine)."""
    gen = torch.Generator().manual_seed(2)
    base = torch.zeros(8, 6)
    base[:, 0] = 1.0
    z = (base + 0.05 * torch.randn(8, 6, generator=gen)).requires_grad_(True)
    loss = -total_coding_rate(F.normalize(z, dim=1))
    loss.backward()
    with torch.no_grad():
        stepped = F.normalize(z - 0.01 * z.grad, dim=1)
        before = F.normalize(z, dim=1)

        def mean_cosine(u):
            return float((u @ u.T).sum() - len(u)) / (len(u) * (len(u) - 1))

        assert float(total_coding_rate(stepped)) > float(total_coding_rate(before))
        assert mean_cosine(stepped) < mean_cosine(before)


def test_bf16_autocast_keeps_float32():
    z = F.normalize(torch.randn(2, 16, 32, generator=torch.Generator().manual_seed(3)), dim=-1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        rates = total_coding_rate(z)
    assert rates.dtype == torch.float32
    assert torch.allclose(rates, total_coding_rate(z), rtol=1e-6)


def test_patch_invariance_known_values_and_gradient():
    agree = F.normalize(torch.randn(1, 5, 8, generator=torch.Generator().manual_seed(4)), dim=-1).expand(4, 5, 8)
    assert float(patch_invariance(agree)) == pytest.approx(1.0, abs=1e-6)
    # two patches of one image pointing along e0 and e1: each has cosine 1/sqrt(2) with their mean
    pair = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    assert float(patch_invariance(pair)) == pytest.approx(2 ** -0.5, rel=1e-6)
    # opposite patches: the mean is 0 and cosine_similarity's eps keeps it finite (0)
    assert float(patch_invariance(torch.tensor([[[1.0, 0.0]], [[-1.0, 0.0]]]))) == pytest.approx(0.0, abs=1e-6)
    # ascending the invariance pulls the patches of an image together
    z = torch.randn(3, 4, 6, generator=torch.Generator().manual_seed(5)).requires_grad_(True)
    (-patch_invariance(z)).backward()
    with torch.no_grad():
        assert float(patch_invariance(z - 0.05 * z.grad)) > float(patch_invariance(z))
    with pytest.raises(ValueError, match="K >= 2"):
        patch_invariance(torch.randn(1, 4, 6))


def test_emp_ssl_loss_combines_the_terms_with_lambda():
    z = F.normalize(torch.randn(4, 6, 10, generator=torch.Generator().manual_seed(6)), dim=-1)
    loss, terms = emp_ssl_loss(z, eps=0.2, invariance_weight=200.0)
    rate = float(total_coding_rate(z, eps=0.2).mean())
    invariance = float(patch_invariance(z))
    assert terms == pytest.approx({"tcr": rate, "invariance": invariance})
    assert float(loss) == pytest.approx(-(rate + 200.0 * invariance), rel=1e-6)
    # lambda = 0 leaves the coding rate alone
    assert float(emp_ssl_loss(z, invariance_weight=0.0)[0]) == pytest.approx(-rate, rel=1e-6)
