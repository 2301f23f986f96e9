"""The method-zoo losses and the feature queue, each against an independent reference written with explicit loops
over samples and dimensions in float64, plus edge cases (tiny batches, identical embeddings, bf16) and the
properties the papers rely on."""
import io
import math

import pytest
import torch
import torch.nn.functional as F

from selfsup.methods.parts.queue import FeatureQueue
from selfsup.losses import (barlow_twins, dino_loss, info_nce, mixed_barlow_regularizer, mochi_negatives,
                            negative_cosine, nt_xent, sinkhorn_knopp, supcon, swav_loss, update_center, vicreg)


# ---------------------------------------------------------------- loop references (float64, one element at a time)

def _unit_rows(x):
    rows = x.double().reshape(-1, x.shape[-1])
    return [row / math.sqrt(sum(float(v) ** 2 for v in row)) for row in rows]


def _dot(u, v):
    return sum(float(a) * float(b) for a, b in zip(u, v))


def _log_sum_exp(values):
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def info_nce_by_loops(query, key, negatives=None, temperature=0.2, extra=None):
    q, k = _unit_rows(query), _unit_rows(key)
    negs = _unit_rows(negatives) if negatives is not None else None
    losses = []
    for i in range(len(q)):
        positive = _dot(q[i], k[i]) / temperature
        if negs is not None:
            candidates = [positive] + [_dot(q[i], n) / temperature for n in negs]
        else:
            candidates = [_dot(q[i], k[j]) / temperature for j in range(len(k))]
        if extra is not None:
            candidates += [_dot(q[i], e) / temperature for e in _unit_rows(extra[i])]
        losses.append(_log_sum_exp(candidates) - positive)
    return sum(losses) / len(losses)


def supcon_by_loops(embeddings, labels, temperature):
    batch, views, _ = embeddings.shape
    z = _unit_rows(embeddings)
    label = [int(labels[n // views]) for n in range(batch * views)]
    losses = []
    for i in range(len(z)):
        others = [a for a in range(len(z)) if a != i]
        log_denominator = _log_sum_exp([_dot(z[i], z[a]) / temperature for a in others])
        positives = [p for p in others if label[p] == label[i]]
        if not positives:
            continue
        losses.append(-sum(_dot(z[i], z[p]) / temperature - log_denominator for p in positives) / len(positives))
    return sum(losses) / len(losses)


def _standardised_columns(z, eps=1e-5):
    n, d = z.shape
    columns = []
    for j in range(d):
        values = [float(z[b, j]) for b in range(n)]
        mean = sum(values) / n
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / n + eps)
        columns.append([(v - mean) / std for v in values])
    return columns  # columns[j][b]


def _correlation(x_columns, y_columns):
    n = len(x_columns[0])
    return [[sum(x[b] * y[b] for b in range(n)) / n for y in y_columns] for x in x_columns]


def barlow_by_loops(z_a, z_b, lambd):
    c = _correlation(_standardised_columns(z_a), _standardised_columns(z_b))
    d = len(c)
    off_diagonal = sum(c[i][j] ** 2 for i in range(d) for j in range(d) if i != j)
    return sum((1 - c[i][i]) ** 2 for i in range(d)) + lambd * off_diagonal


def mixed_barlow_by_loops(z_a, z_b, z_m, permutation, mix, lambd, mixed_with="b"):
    a, b, m = _standardised_columns(z_a), _standardised_columns(z_b), _standardised_columns(z_m)
    b_shuffled = [[column[int(p)] for p in permutation] for column in (b if mixed_with == "b" else a)]
    c_ma, c_mb = _correlation(m, a), _correlation(m, b)
    c_aa, c_ab = _correlation(a, a), _correlation(a, b)
    c_sa, c_sb = _correlation(b_shuffled, a), _correlation(b_shuffled, b)
    d = len(a)
    total = 0.0
    for i in range(d):
        for j in range(d):
            total += (c_ma[i][j] - (mix * c_aa[i][j] + (1 - mix) * c_sa[i][j])) ** 2
            total += (c_mb[i][j] - (mix * c_ab[i][j] + (1 - mix) * c_sb[i][j])) ** 2
    return lambd / 2 * total


def vicreg_by_loops(z_a, z_b, sim_weight, var_weight, cov_weight, gamma, eps):
    n, d = z_a.shape
    invariance = sum((float(z_a[i, j]) - float(z_b[i, j])) ** 2 for i in range(n) for j in range(d)) / (n * d)

    def centred(z):
        means = [sum(float(z[i, j]) for i in range(n)) / n for j in range(d)]
        return [[float(z[i, j]) - means[j] for j in range(d)] for i in range(n)]

    def variance(z):
        c = centred(z)
        stds = [math.sqrt(sum(c[i][j] ** 2 for i in range(n)) / (n - 1) + eps) for j in range(d)]
        return sum(max(0.0, gamma - std) for std in stds) / d

    def covariance(z):
        c = centred(z)
        return sum((sum(c[i][p] * c[i][q] for i in range(n)) / (n - 1)) ** 2
                   for p in range(d) for q in range(d) if p != q) / d

    var_term = (variance(z_a) + variance(z_b)) / 2
    cov_term = covariance(z_a) + covariance(z_b)
    return sim_weight * invariance + var_weight * var_term + cov_weight * cov_term, (invariance, var_term, cov_term)


def _softmax(values):
    log_z = _log_sum_exp(values)
    return [math.exp(v - log_z) for v in values]


def dino_by_loops(students, teachers, center, student_temp, teacher_temp):
    total, pairs = 0.0, 0
    for i, teacher in enumerate(teachers):
        for j, student in enumerate(students):
            if i == j:
                continue
            per_sample = []
            for b in range(teacher.shape[0]):
                p = _softmax([(float(t) - float(c)) / teacher_temp for t, c in zip(teacher[b], center.flatten())])
                logits = [float(s) / student_temp for s in student[b]]
                log_z = _log_sum_exp(logits)
                per_sample.append(-sum(pk * (lk - log_z) for pk, lk in zip(p, logits)))
            total += sum(per_sample) / len(per_sample)
            pairs += 1
    return total / pairs


def sinkhorn_by_loops(scores, iterations, epsilon):
    """SwAV's algorithm as the paper's appendix writes it: Q = exp(C^T Z / eps), normalised to a total of 1, then
    rows (prototypes) to 1/K and columns (samples) to 1/B in turn, finally scaled so that columns sum to 1."""
    batch, k = scores.shape
    q = [[math.exp(float(scores[b, p]) / epsilon) for b in range(batch)] for p in range(k)]
    total = sum(map(sum, q))
    q = [[v / total for v in row] for row in q]
    for _ in range(iterations):
        for p in range(k):
            row_sum = sum(q[p])
            q[p] = [v / row_sum / k for v in q[p]]
        for b in range(batch):
            column_sum = sum(q[p][b] for p in range(k))
            for p in range(k):
                q[p][b] = q[p][b] / column_sum / batch
    return torch.tensor([[q[p][b] * batch for p in range(k)] for b in range(batch)], dtype=torch.float64)


def swav_by_loops(scores, assign_views, iterations, epsilon, temperature, queue_scores=None):
    total, pairs = 0.0, 0
    for n, i in enumerate(assign_views):
        target = scores[i] if queue_scores is None else torch.cat([queue_scores[n], scores[i]])
        codes = sinkhorn_by_loops(target, iterations, epsilon)[len(target) - len(scores[i]):]
        for v, view in enumerate(scores):
            if v == i:
                continue
            per_sample = []
            for b in range(view.shape[0]):
                logits = [float(s) / temperature for s in view[b]]
                log_z = _log_sum_exp(logits)
                per_sample.append(-sum(float(c) * (l - log_z) for c, l in zip(codes[b], logits)))
            total += sum(per_sample) / len(per_sample)
            pairs += 1
    return total / pairs


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------------ info_nce, MoCHi

@pytest.mark.parametrize("batch,dim,temperature", [(2, 3, 0.2), (6, 8, 0.5)])
def test_info_nce_in_batch_matches_loops(batch, dim, temperature):
    q, k = _randn(batch, dim, seed=1), _randn(batch, dim, seed=2)
    expected = info_nce_by_loops(q, k, None, temperature)
    assert info_nce(q, k, temperature=temperature).item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("batch,queue", [(2, 1), (5, 7)])
def test_info_nce_with_queue_matches_loops(batch, queue):
    q, k, negatives = _randn(batch, 4, seed=1), _randn(batch, 4, seed=2), _randn(queue, 4, seed=3)
    expected = info_nce_by_loops(q, k, negatives, 0.2)
    assert info_nce(q, k, negatives, temperature=0.2).item() == pytest.approx(expected, rel=1e-5)


def test_info_nce_with_extra_negatives_matches_loops():
    q, k, negatives, extra = _randn(3, 4, seed=1), _randn(3, 4, seed=2), _randn(5, 4, seed=3), _randn(3, 2, 4, seed=4)
    got = info_nce(q, k, negatives, temperature=0.3, extra_negatives=extra).item()
    assert got == pytest.approx(info_nce_by_loops(q, k, negatives, 0.3, extra), rel=1e-5)
    got = info_nce(q, k, temperature=0.3, extra_negatives=extra).item()
    assert got == pytest.approx(info_nce_by_loops(q, k, None, 0.3, extra), rel=1e-5)


def test_info_nce_properties():
    eye = torch.eye(4)
    assert info_nce(eye, eye, temperature=0.05).item() < 1e-3  # positives agree, other keys orthogonal
    same = torch.ones(4, 8)
    assert info_nce(same, same).item() == pytest.approx(math.log(4), rel=1e-5)  # uniform over 4 keys
    # an empty queue leaves only the positive: nothing to contrast against
    assert info_nce(_randn(3, 4), _randn(3, 4, seed=1), torch.empty(0, 4)).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="info_nce"):
        info_nce(torch.randn(3, 4), torch.randn(2, 4))


def test_mochi_negatives_shape_norm_detached_and_reproducible():
    query = _randn(5, 8, seed=1).requires_grad_(True)
    queue = _randn(40, 8, seed=2)
    mixes = mochi_negatives(query, queue, 6, 3, generator=torch.Generator().manual_seed(0), num_hard=10)
    assert mixes.shape == (5, 9, 8) and mixes.dtype == torch.float32 and not mixes.requires_grad
    assert torch.allclose(mixes.norm(dim=2), torch.ones(5, 9), atol=1e-5)
    again = mochi_negatives(query, queue, 6, 3, generator=torch.Generator().manual_seed(0), num_hard=10)
    assert torch.equal(mixes, again)


def test_mochi_negatives_are_harder_than_the_average_negative():
    query, queue = F.normalize(_randn(16, 16, seed=1), dim=1), F.normalize(_randn(256, 16, seed=2), dim=1)
    mixes = mochi_negatives(query, queue, 32, 16, generator=torch.Generator().manual_seed(0), num_hard=32)
    average = (query @ queue.T).mean()
    pair_similarity = torch.einsum("bd,bmd->bm", query, mixes[:, :32])
    query_similarity = torch.einsum("bd,bmd->bm", query, mixes[:, 32:])
    assert pair_similarity.mean() > average + 0.2 and query_similarity.mean() > pair_similarity.mean()
    # and harder negatives make the contrastive task harder: a larger loss
    key = F.normalize(query + 0.5 * _randn(16, 16, seed=3), dim=1)
    assert info_nce(query, key, queue, extra_negatives=mixes) > info_nce(query, key, queue)


def test_mochi_with_one_hard_negative_follows_the_mixing_rules():
    query, queue = _randn(4, 6, seed=1), _randn(10, 6, seed=2)
    mixes = mochi_negatives(query, queue, 3, 5, generator=torch.Generator().manual_seed(1), num_hard=1)
    q, n = F.normalize(query, dim=1), F.normalize(queue, dim=1)
    hardest = n[(q @ n.T).argmax(dim=1)]  # (B, D)
    # a pair mix of the only hard negative with itself is that negative
    assert torch.allclose(mixes[:, :3], hardest[:, None].expand(-1, 3, -1), atol=1e-5)
    for b in range(4):
        for m in mixes[b, 3:]:
            # beta < 1/2: the query-mix is harder than the hardest negative yet closer to it than to the query
            assert float(m @ q[b]) > float(hardest[b] @ q[b])
            assert float(m @ hardest[b]) > float(m @ q[b])


# ---------------------------------------------------------------------------------------------------------- SupCon

@pytest.mark.parametrize("batch,views,classes", [(2, 2, 1), (6, 2, 3), (5, 3, 2)])
def test_supcon_matches_loops(batch, views, classes):
    embeddings = _randn(batch, views, 4, seed=batch)
    labels = torch.arange(batch) % classes
    got = supcon(embeddings, labels, temperature=0.3).item()
    assert got == pytest.approx(supcon_by_loops(embeddings, labels, 0.3), rel=1e-5)


def test_supcon_with_distinct_labels_is_simclr_and_skips_anchors_without_positives():
    z_a, z_b = _randn(5, 4, seed=1), _randn(5, 4, seed=2)
    got = supcon(torch.stack([z_a, z_b], dim=1), torch.arange(5), temperature=0.5)
    assert got.item() == pytest.approx(nt_xent(z_a, z_b, temperature=0.5).item(), rel=1e-5)
    one_view = _randn(4, 1, 3)
    labels = torch.tensor([0, 0, 1, 2])  # only the two anchors of class 0 have a positive
    assert supcon(one_view, labels).item() == pytest.approx(supcon_by_loops(one_view, labels, 0.1), rel=1e-5)
    alone = supcon(one_view.requires_grad_(True), torch.arange(4))
    alone.backward()
    assert alone.item() == 0.0 and torch.equal(one_view.grad, torch.zeros_like(one_view))


# -------------------------------------------------------------------------------------------------- Barlow Twins

@pytest.mark.parametrize("batch,dim,lambd", [(2, 3, 0.5), (7, 4, 0.0051), (16, 5, 1.0)])
def test_barlow_twins_matches_loops(batch, dim, lambd):
    z_a, z_b = _randn(batch, dim, seed=1) * 3 + 1, _randn(batch, dim, seed=2)
    assert barlow_twins(z_a, z_b, lambd=lambd).item() == pytest.approx(barlow_by_loops(z_a, z_b, lambd), rel=1e-4)


def test_barlow_twins_is_zero_for_identical_decorrelated_embeddings():
    hadamard = torch.tensor([[1., 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]])
    z = hadamard[:, 1:] * 2.0 + 3.0  # zero-mean orthogonal columns after centring; scale and shift don't matter
    assert barlow_twins(z, z.clone()).item() == pytest.approx(0.0, abs=1e-8)
    assert barlow_twins(z, -z).item() == pytest.approx(3 * 4.0, rel=1e-4)  # C = -I: every (1 - C_ii)^2 is 4


@pytest.mark.parametrize("mixed_with", ["b", "a"])
def test_mixed_barlow_regularizer_matches_loops(mixed_with):
    z_a, z_b, z_m = _randn(6, 3, seed=1), _randn(6, 3, seed=2), _randn(6, 3, seed=3)
    permutation = torch.tensor([3, 0, 5, 1, 2, 4])
    got = mixed_barlow_regularizer(z_a, z_b, z_m, permutation, 0.3, lambd=0.2, mixed_with=mixed_with).item()
    expected = mixed_barlow_by_loops(z_a, z_b, z_m, permutation, 0.3, 0.2, mixed_with)
    assert got == pytest.approx(expected, rel=1e-4)


def test_mixed_barlow_regularizer_vanishes_at_the_end_points_of_the_mix():
    z_a, z_b = _randn(8, 4, seed=1), _randn(8, 4, seed=2)
    permutation = torch.randperm(8, generator=torch.Generator().manual_seed(0))
    # mix_lambda = 1: the mixed input is x_a itself; mix_lambda = 0: it is x_b[permutation]
    assert mixed_barlow_regularizer(z_a, z_b, z_a.clone(), permutation, 1.0).item() == pytest.approx(0.0, abs=1e-6)
    zero = mixed_barlow_regularizer(z_a, z_b, z_b[permutation], permutation, 0.0).item()
    assert zero == pytest.approx(0.0, abs=1e-6)
    assert mixed_barlow_regularizer(z_a, z_b, z_b[permutation], permutation, 1.0).item() > 1e-3
    # the non-paper convention: view A mixed with its own shuffle
    zero = mixed_barlow_regularizer(z_a, z_b, z_a[permutation], permutation, 0.0, mixed_with="a").item()
    assert zero == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="mixed_with"):
        mixed_barlow_regularizer(z_a, z_b, z_a, permutation, 0.5, mixed_with="c")


# ---------------------------------------------------------------------------------------------------------- VICReg

@pytest.mark.parametrize("batch,dim", [(2, 3), (9, 5)])
def test_vicreg_matches_loops(batch, dim):
    z_a, z_b = _randn(batch, dim, seed=1) * 0.7, _randn(batch, dim, seed=2) * 1.5
    loss, terms = vicreg(z_a, z_b, sim_weight=2.0, var_weight=3.0, cov_weight=0.5, gamma=1.2, eps=1e-3)
    expected, (invariance, variance, covariance) = vicreg_by_loops(z_a, z_b, 2.0, 3.0, 0.5, 1.2, 1e-3)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert terms == pytest.approx({"invariance": invariance, "variance": variance, "covariance": covariance}, rel=1e-5)
    assert all(isinstance(value, float) for value in terms.values())


def test_vicreg_collapse_is_penalised_and_finite():
    constant = torch.ones(4, 3, requires_grad=True)
    loss, terms = vicreg(constant, constant)
    loss.backward()
    assert terms["invariance"] == 0.0 and terms["covariance"] == 0.0
    assert terms["variance"] == pytest.approx(1 - math.sqrt(1e-4), rel=1e-5)
    assert torch.isfinite(constant.grad).all()


# ------------------------------------------------------------------------------------------ SimSiam / BYOL / DINO

def test_negative_cosine_matches_loops_detaches_the_target_and_relates_to_byol():
    p, z = _randn(5, 4, seed=1).requires_grad_(True), _randn(5, 4, seed=2).requires_grad_(True)
    expected = -sum(_dot(a, b) for a, b in zip(_unit_rows(p.detach()), _unit_rows(z.detach()))) / 5
    loss = negative_cosine(p, z)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert z.grad is None and p.grad is not None
    byol = (F.normalize(p, dim=1) - F.normalize(z, dim=1)).pow(2).sum(dim=1).mean()
    assert byol.item() == pytest.approx(2 + 2 * loss.item(), rel=1e-5)


@pytest.mark.parametrize("teachers,students", [(1, 2), (2, 2), (2, 5)])
def test_dino_loss_matches_loops(teachers, students):
    student_logits = [_randn(3, 6, seed=10 + v) for v in range(students)]
    teacher_logits = [_randn(3, 6, seed=20 + v) for v in range(teachers)]
    center = _randn(1, 6, seed=30) * 0.1
    got = dino_loss(student_logits, teacher_logits, center, student_temp=0.2, teacher_temp=0.07).item()
    assert got == pytest.approx(dino_by_loops(student_logits, teacher_logits, center, 0.2, 0.07), rel=1e-5)


def test_dino_loss_is_minimal_when_the_student_matches_the_teacher():
    teacher, center = _randn(4, 5, seed=1), torch.zeros(5)
    target = F.softmax(teacher / 0.04, dim=1)
    # student logits whose softmax at student_temp equals the teacher's distribution: loss = teacher entropy
    matching = (0.1 * target.log()).requires_grad_(True)
    loss = dino_loss([_randn(4, 5, seed=2), matching], [teacher], center)
    loss.backward()
    entropy = -(target * target.log()).sum(dim=1).mean()
    assert loss.item() == pytest.approx(entropy.item(), rel=1e-4, abs=1e-6)
    assert matching.grad.abs().max() < 1e-5
    for seed in range(3):
        other = matching.detach() + 0.05 * _randn(4, 5, seed=seed)
        assert dino_loss([_randn(4, 5, seed=2), other], [teacher], center) > loss


def test_update_center_is_an_ema_of_the_batch_mean_and_returns_a_new_tensor():
    center = _randn(1, 4, seed=1)
    before = center.clone()
    views = [_randn(3, 4, seed=2), _randn(3, 4, seed=3)]
    new = update_center(center, views, momentum=0.7)
    for k in range(4):
        mean = sum(float(v[b, k]) for v in views for b in range(3)) / 6
        assert float(new[0, k]) == pytest.approx(0.7 * float(center[0, k]) + 0.3 * mean, rel=1e-5)
    assert torch.equal(center, before) and new is not center and new.shape == (1, 4)
    assert update_center(torch.zeros(4), views).shape == (4,)


# ---------------------------------------------------------------------------------------------------- SwAV

@pytest.mark.parametrize("batch,prototypes,iterations,epsilon", [(2, 3, 3, 0.05), (6, 4, 3, 0.5), (5, 7, 10, 0.1)])
def test_sinkhorn_matches_loops(batch, prototypes, iterations, epsilon):
    scores = F.normalize(_randn(batch, 4, seed=batch), dim=1) @ F.normalize(_randn(prototypes, 4, seed=9), dim=1).T
    got = sinkhorn_knopp(scores, iterations=iterations, epsilon=epsilon)
    assert torch.allclose(got.double(), sinkhorn_by_loops(scores, iterations, epsilon), atol=1e-5)


def test_sinkhorn_rows_sum_to_one_and_prototypes_are_equipartitioned():
    scores = F.normalize(_randn(12, 4, seed=1), dim=1) @ F.normalize(_randn(3, 4, seed=2), dim=1).T
    codes = sinkhorn_knopp(scores, iterations=50, epsilon=0.3)
    assert torch.allclose(codes.sum(dim=1), torch.ones(12), atol=1e-6)
    assert torch.allclose(codes.sum(dim=0), torch.full((3,), 12 / 3), atol=1e-3)
    assert not codes.requires_grad
    # identical scores give uniform codes; huge score ranges stay finite
    assert torch.allclose(sinkhorn_knopp(torch.ones(4, 5)), torch.full((4, 5), 0.2))
    assert torch.isfinite(sinkhorn_knopp(_randn(6, 5) * 100, epsilon=0.01)).all()


@pytest.mark.parametrize("views,assign", [(2, (0, 1)), (4, (0, 1)), (3, (1,))])
def test_swav_loss_matches_loops(views, assign):
    prototypes = F.normalize(_randn(5, 4, seed=99), dim=1)
    scores = [F.normalize(_randn(6, 4, seed=v), dim=1) @ prototypes.T for v in range(views)]
    got = swav_loss(scores, assign_views=assign, iterations=3, epsilon=0.1, temperature=0.2).item()
    assert got == pytest.approx(swav_by_loops(scores, assign, 3, 0.1, 0.2), rel=1e-5)


def test_swav_loss_with_queue_matches_loops_and_differs_from_no_queue():
    prototypes = F.normalize(_randn(5, 4, seed=99), dim=1)
    scores = [F.normalize(_randn(3, 4, seed=v), dim=1) @ prototypes.T for v in range(2)]
    queue = [F.normalize(_randn(8, 4, seed=50 + v), dim=1) @ prototypes.T for v in range(2)]
    got = swav_loss(scores, epsilon=0.1, temperature=0.2, queue_scores=queue).item()
    assert got == pytest.approx(swav_by_loops(scores, (0, 1), 3, 0.1, 0.2, queue), rel=1e-5)
    assert abs(got - swav_loss(scores, epsilon=0.1, temperature=0.2).item()) > 1e-3


# ------------------------------------------------------------------------------ every loss: tiny batch, collapse, bf16

def _mix(z_a, z_b):
    return mixed_barlow_regularizer(z_a, z_b, 0.5 * z_a + 0.5 * z_b.flip(0), torch.arange(len(z_a)).flip(0), 0.5,
                                    lambd=1.0)


LOSSES = {
    "info_nce": lambda a, b: info_nce(a, b),
    "info_nce_queue": lambda a, b: info_nce(a, b, b.flip(1)),
    "supcon": lambda a, b: supcon(torch.stack([a, b], dim=1), torch.arange(len(a)) % 2),
    "barlow_twins": lambda a, b: barlow_twins(a, b),
    "mixed_barlow_regularizer": _mix,
    "vicreg": lambda a, b: vicreg(a, b)[0],
    "negative_cosine": lambda a, b: negative_cosine(a, b),
    "dino_loss": lambda a, b: dino_loss([a, b], [b.detach(), a.detach()], torch.zeros(a.shape[1])),
    "swav_loss": lambda a, b: swav_loss([F.normalize(a, dim=1), F.normalize(b, dim=1)]),
}


@pytest.mark.parametrize("name", list(LOSSES))
def test_batch_of_two_and_identical_embeddings_stay_finite(name):
    for z_a, z_b in [(_randn(2, 6, seed=1), _randn(2, 6, seed=2)), (torch.ones(4, 6), torch.ones(4, 6))]:
        z_a = z_a.clone().requires_grad_(True)
        loss = LOSSES[name](z_a, z_b.clone())
        loss.backward()
        assert loss.dtype == torch.float32 and torch.isfinite(loss), (name, loss)
        assert torch.isfinite(z_a.grad).all(), name


@pytest.mark.parametrize("name", list(LOSSES))
def test_bf16_inputs_give_a_float32_loss_close_to_fp32(name):
    z_a, z_b = _randn(16, 8, seed=1), _randn(16, 8, seed=2)
    loss32 = LOSSES[name](z_a, z_b)
    loss16 = LOSSES[name](z_a.bfloat16(), z_b.bfloat16())
    assert loss16.dtype == torch.float32 and torch.isfinite(loss16)
    assert loss16.item() == pytest.approx(loss32.item(), rel=3e-2, abs=1e-2)


# -------------------------------------------------------------------------------------------------- FeatureQueue

def test_feature_queue_fills_then_wraps_around():
    queue = FeatureQueue(5, 2)
    assert len(queue) == 0 and queue.get().shape == (0, 2)
    first, second = torch.arange(6.0).reshape(3, 2), torch.arange(6.0, 12.0).reshape(3, 2)
    queue.enqueue(first)
    assert torch.equal(queue.get(), first) and not queue.full
    queue.enqueue(second)
    # rows 0-2 then 3, 4 and back to 0
    assert torch.equal(queue.features, torch.cat([second[2:], first[1:], second[:2]]))
    assert int(queue.pointer) == 1 and len(queue) == 5 and queue.full


def test_feature_queue_batch_larger_than_the_queue_equals_one_key_at_a_time():
    keys = _randn(13, 3)
    bulk, single = FeatureQueue(5, 3), FeatureQueue(5, 3)
    bulk.enqueue(keys[:2])
    bulk.enqueue(keys[2:])
    for row in keys:
        single.enqueue(row[None])
    assert torch.equal(bulk.features, single.features) and int(bulk.pointer) == int(single.pointer) == 13 % 5


def test_feature_queue_state_dict_round_trip():
    queue = FeatureQueue(6, 3)
    queue.enqueue(_randn(4, 3, seed=1))
    buffer = io.BytesIO()
    torch.save(queue.state_dict(), buffer)
    restored = FeatureQueue(6, 3)
    restored.load_state_dict(torch.load(io.BytesIO(buffer.getvalue())))
    assert set(queue.state_dict()) == {"features", "pointer", "filled"}
    assert torch.equal(restored.get(), queue.get()) and int(restored.pointer) == 4 and len(restored) == 4
    more = _randn(4, 3, seed=2)
    queue.enqueue(more)
    restored.enqueue(more)
    assert torch.equal(restored.features, queue.features)


def test_feature_queue_get_is_a_copy_so_moco_can_enqueue_before_backward():
    queue = FeatureQueue(8, 4)
    queue.enqueue(_randn(8, 4, seed=1))
    query = _randn(3, 4, seed=2).requires_grad_(True)
    keys = _randn(3, 4, seed=3)
    loss = info_nce(query, keys, queue.get())
    queue.enqueue(keys)  # MoCo enqueues inside the forward, before the backward
    loss.backward()
    assert torch.isfinite(query.grad).all()
    snapshot = queue.get()
    snapshot.zero_()
    assert queue.get().abs().sum() > 0


def test_feature_queue_nearest_neighbour_by_cosine():
    queue = FeatureQueue(10, 3)
    support = _randn(7, 3, seed=1) * torch.arange(1.0, 8.0)[:, None]  # different norms: cosine, not dot product
    queue.enqueue(support)
    query = _randn(5, 3, seed=2)
    got = queue.nearest(query)
    for b in range(5):
        similarities = [_dot(_unit_rows(query[b:b + 1])[0], s) for s in _unit_rows(support)]
        assert torch.equal(got[b], support[similarities.index(max(similarities))])
    assert queue.nearest(query.bfloat16()).dtype == torch.bfloat16
    empty = FeatureQueue(4, 3)
    assert torch.equal(empty.nearest(query), query)
    with pytest.raises(ValueError, match="FeatureQueue"):
        queue.enqueue(torch.zeros(2, 4))
