"""Point clouds: the readers (.npy, .ply ascii and binary little-endian, .xyz; bad files listed), farthest point
sampling, kNN grouping and the Chamfer distance against brute-force references, the views, and the point
encoder's patches."""
import random

import numpy as np
import pytest
import torch

from selfsup.backbones import build_backbone
from selfsup.backbones.point_ops import farthest_point_sample, group_points, knn_indices
from selfsup.data import open_data
from selfsup.data.points import PointFileError, read_points
from selfsup.losses.chamfer import chamfer_distance
from selfsup.views.points import PointViewSpec, eval_points, make_point_view


def write_ply(path, points, binary=False):
    header = ["ply", f"format {'binary_little_endian' if binary else 'ascii'} 1.0", "comment made by a test",
              f"element vertex {len(points)}", "property float x", "property float y", "property float z",
              "property uchar red", "element face 0", "property list uchar int vertex_indices", "end_header"]
    with open(path, "wb") as f:
        f.write(("\n".join(header) + "\n").encode())
        if binary:
            rows = np.zeros(len(points), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1")])
            rows["x"], rows["y"], rows["z"] = points.T
            f.write(rows.tobytes())
        else:
            f.write("".join(f"{x} {y} {z} 7\n" for x, y, z in points).encode())


def brute_fps(points: np.ndarray, count: int) -> list[int]:
    chosen = [0]
    for _ in range(count - 1):
        distance = [min(float(((p - points[c]) ** 2).sum()) for c in chosen) for p in points]
        chosen.append(int(np.argmax(distance)))
    return chosen


def test_farthest_point_sampling_matches_brute_force():
    rng = np.random.default_rng(0)
    points = rng.standard_normal((3, 50, 3)).astype(np.float32)
    fast = farthest_point_sample(torch.from_numpy(points), 12)
    for b in range(3):
        assert fast[b].tolist() == brute_fps(points[b], 12)


def test_knn_and_grouping_match_brute_force():
    rng = np.random.default_rng(1)
    points = torch.from_numpy(rng.standard_normal((2, 40, 3)).astype(np.float32))
    queries = points[:, :5]
    fast = knn_indices(points, queries, 6)
    for b in range(2):
        for g in range(5):
            distances = [float(((points[b, i] - queries[b, g]) ** 2).sum()) for i in range(40)]
            assert set(fast[b, g].tolist()) == set(np.argsort(distances)[:6].tolist())
    centres, groups = group_points(points, 4, 6)
    assert centres.shape == (2, 4, 3) and groups.shape == (2, 4, 6, 3)
    assert torch.allclose(groups[:, :, 0], torch.zeros(2, 4, 3), atol=1e-6)  # a centre is its own nearest point


def test_chamfer_distance_matches_brute_force():
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((3, 7, 3)), rng.standard_normal((3, 9, 3))
    expected = []
    for x, y in zip(a, b):
        d = ((x[:, None] - y[None]) ** 2).sum(-1)
        expected.append(d.min(1).mean() + d.min(0).mean())
    got = chamfer_distance(torch.from_numpy(a), torch.from_numpy(b))
    assert got.item() == pytest.approx(float(np.mean(expected)), rel=1e-6)
    assert chamfer_distance(torch.from_numpy(a), torch.from_numpy(a)).item() == pytest.approx(0.0, abs=1e-12)


def test_readers_and_bad_files(tmp_path):
    rng = np.random.default_rng(3)
    cloud = rng.standard_normal((20, 3)).astype(np.float32)
    write_ply(tmp_path / "a.ply", cloud)
    write_ply(tmp_path / "b.ply", cloud, binary=True)
    np.save(tmp_path / "c.npy", np.concatenate([cloud, np.ones((20, 3), np.float32)], axis=1))  # normals: dropped
    (tmp_path / "d.xyz").write_text("# x y z\n" + "".join(f"{x} {y} {z}\n" for x, y, z in cloud))
    for name in ("a.ply", "b.ply", "c.npy", "d.xyz"):
        assert np.allclose(read_points(tmp_path / name), cloud, atol=1e-5), name
    write_ply(tmp_path / "empty.ply", np.zeros((0, 3), np.float32))
    with pytest.raises(PointFileError, match="no vertices"):
        read_points(tmp_path / "empty.ply")
    (tmp_path / "e.xyz").write_text("")
    with pytest.raises(PointFileError, match="empty"):
        read_points(tmp_path / "e.xyz")


def test_a_folder_of_ply_with_class_folders_skips_and_lists_the_bad_files(tmp_path):
    rng = np.random.default_rng(4)
    for c in ("a", "b"):
        (tmp_path / "clouds" / c).mkdir(parents=True)
        for i in range(10):
            write_ply(tmp_path / "clouds" / c / f"{i}.ply", rng.standard_normal((30, 3)), binary=i % 2 == 0)
    write_ply(tmp_path / "clouds" / "a" / "empty.ply", np.zeros((0, 3)))
    splits = open_data(tmp_path / "clouds", holdout_fraction=0.2)
    assert splits.train.classes == ["a", "b"] and len(splits.train) + len(splits.test) == 20
    assert [(p.endswith("empty.ply"), "no vertices" in r) for p, r in splits.train.bad_files] == [(True, True)]


def test_views_are_seeded_normalised_and_sized():
    cloud = torch.randn(100, 3) * 5 + 3
    spec = PointViewSpec(num_points=64, dropout=0.3)
    a, _ = make_point_view(cloud, spec, 0, random.Random(1))
    b, _ = make_point_view(cloud, spec, 0, random.Random(1))
    c, _ = make_point_view(cloud, spec, 0, random.Random(2))
    assert a.shape == (64, 3) and torch.equal(a, b) and not torch.equal(a, c)
    assert a.norm(dim=1).max() < 1.6  # unit sphere, then scaled by at most 1.2 per axis and jittered
    small, _ = make_point_view(torch.randn(10, 3), spec, 0, random.Random(0))  # fewer points: with replacement
    assert small.shape == (64, 3)
    assert eval_points(cloud).shape == (256, 3)


def test_the_point_encoder_is_invariant_to_the_order_of_points():
    torch.manual_seed(0)
    encoder = build_backbone("point_transformer_tiny", 1, num_groups=8, group_size=8, embed_dim=32, depth=1,
                             num_heads=2, tokenizer_dim=16).eval()
    points = torch.randn(2, 64, 3)
    shuffled = points[:, torch.cat([torch.zeros(1, dtype=torch.long), torch.randperm(63) + 1])]  # FPS starts at 0
    with torch.no_grad():
        assert encoder(points).shape == (2, 64)
        assert torch.allclose(encoder(points), encoder(shuffled), atol=1e-5)
