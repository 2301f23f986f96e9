import math

import pytest
import torch
import torch.nn.functional as F

from selfsup.losses import nt_xent


def nt_xent_by_loops(z_a, z_b, temperature):
    """Independent reference: SimCLR eq. 1, one anchor at a time."""
    z = torch.cat([F.normalize(z_a, dim=1), F.normalize(z_b, dim=1)])
    n = len(z_a)
    losses = []
    for i in range(2 * n):
        positive = i + n if i < n else i - n
        numerator = math.exp(float(z[i] @ z[positive]) / temperature)
        denominator = sum(math.exp(float(z[i] @ z[k]) / temperature) for k in range(2 * n) if k != i)
        losses.append(-math.log(numerator / denominator))
    return sum(losses) / len(losses)


@pytest.mark.parametrize("batch,dim,temperature", [(2, 3, 0.5), (5, 8, 0.1), (16, 4, 1.0)])
def test_nt_xent_matches_loop_reference(batch, dim, temperature):
    torch.manual_seed(batch)
    z_a, z_b = torch.randn(batch, dim), torch.randn(batch, dim)
    assert nt_xent(z_a, z_b, temperature).item() == pytest.approx(nt_xent_by_loops(z_a, z_b, temperature), rel=1e-5)


def test_nt_xent_identical_embeddings_and_perfect_pairs():
    same = torch.ones(4, 8)
    # all embeddings identical: every candidate is equally likely, loss = log(2N - 1)
    assert nt_xent(same, same, 0.5).item() == pytest.approx(math.log(7), rel=1e-5)
    eye = torch.eye(4)
    assert nt_xent(eye, eye, 0.05).item() < 1e-3  # views agree, negatives orthogonal


def test_nt_xent_bf16_inputs_and_gradient():
    torch.manual_seed(0)
    z_a = torch.randn(8, 16, requires_grad=True)
    z_b = torch.randn(8, 16)
    loss32 = nt_xent(z_a, z_b, 0.2)
    loss16 = nt_xent(z_a.bfloat16(), z_b.bfloat16(), 0.2)
    assert loss16.dtype == torch.float32
    assert loss16.item() == pytest.approx(loss32.item(), rel=2e-2)
    loss32.backward()
    assert torch.isfinite(z_a.grad).all() and z_a.grad.abs().sum() > 0


def test_nt_xent_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="nt_xent"):
        nt_xent(torch.randn(4, 3), torch.randn(5, 3))
