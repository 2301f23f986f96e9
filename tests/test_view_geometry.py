"""View geometry delivered with the batch (``ViewSpec.boxes``) and the matched feature locations of two views
(selfsup.views.geometry)."""
import numpy as np
import pytest
import torch

from selfsup.data.sources import ArraySource
from selfsup.views import CropSpec, ViewSpec
from selfsup.views.dataset import ViewCollate, ViewDataset
from selfsup.views.device import DeviceViews
from selfsup.views.geometry import cell_centres, matched_cells, positive_pairs
from selfsup.views.preprocess import Preprocess

SOURCE = 32


def coordinate_images(n=4):
    """Images whose pixels say where they are: channel 0 = 8 * row, channel 1 = 8 * column, channel 2 = 0."""
    rows, columns = np.meshgrid(np.arange(SOURCE), np.arange(SOURCE), indexing="ij")
    image = np.stack([8 * rows, 8 * columns, np.zeros_like(rows)]).astype(np.uint8)
    return np.repeat(image[None], n, axis=0)


def test_matched_positions_of_two_crops_with_a_known_overlap_are_the_true_correspondences():
    # view a: the top-left 16 x 16 quarter; view b: the 16 x 16 square at (8, 8), mirrored. They share the
    # square [8, 16) x [8, 16), i.e. cells (2..3, 2..3) of a's 4 x 4 map (4 px cells) and, mirrored, b's cells
    # (0..1, 2..3) with b's column 3 - (j - 2) showing a's column j.
    a = torch.tensor([[0, 0, 16, 16, 0, 0, 0]], dtype=torch.float32)
    b = torch.tensor([[8, 8, 16, 16, 1, 0, 0]], dtype=torch.float32)
    index, valid = matched_cells(a, b, (4, 4), (4, 4))
    expected = {(i, j): (i - 2, 3 - (j - 2)) for i in (2, 3) for j in (2, 3)}
    assert valid[0].view(4, 4).nonzero().tolist() == [list(cell) for cell in expected]
    for (i, j), (bi, bj) in expected.items():
        assert index[0, i * 4 + j].item() == bi * 4 + bj
    centres_a = cell_centres(a, (4, 4))[0]
    centres_b = cell_centres(b, (4, 4))[0]
    for (i, j), (bi, bj) in expected.items():  # the same point of the source image
        assert torch.equal(centres_a[i, j], centres_b[bi, bj])
    pairs = positive_pairs(a, b, (4, 4), (4, 4))
    assert pairs.sum().item() == 4 and pairs[0, 2 * 4 + 2, 0 * 4 + 3]


def test_quarter_turns_and_vertical_flips_map_back_to_the_source():
    # a whole-image view turned once: torch.rot90(k=1) puts the source's top-right corner at the view's top-left
    turned = torch.tensor([[0, 0, 32, 32, 0, 0, 1]], dtype=torch.float32)
    centres = cell_centres(turned, (2, 2))[0]
    assert centres[0, 0].tolist() == [8.0, 24.0]
    vflipped = torch.tensor([[0, 0, 32, 32, 0, 1, 0]], dtype=torch.float32)
    assert cell_centres(vflipped, (2, 2))[0, 0, 0].tolist() == [24.0, 8.0]


def _spec():
    crop = CropSpec(count=2, scale=(0.3, 1.0), jitter_p=0.0, grayscale_p=0.0, vflip_p=0.5, rot90=True)
    return ViewSpec(crops=(crop, CropSpec(count=1, size=8, scale=(0.2, 0.5), jitter_p=0.0, grayscale_p=0.0)),
                    boxes=True)


def test_boxes_say_where_every_view_pixel_came_from():
    source = ArraySource(coordinate_images())
    dataset = ViewDataset(source, _spec(), 16, seed=3)
    checked = 0
    for i in range(len(source)):
        sample = dataset[(0, i)]
        assert sample["boxes"].shape == (3, 7)
        for view, box in zip(sample["views"], sample["boxes"]):
            size = view.shape[-1]
            expected = cell_centres(box, (size, size)) - 0.5  # pixel k holds 8k at its centre k + 0.5
            found = torch.stack([view[0], view[1]], dim=-1) * 255 / 8
            inner = slice(2, size - 2)  # the resize filter is cut at the crop's edges
            error = (found[inner, inner] - expected[inner, inner]).abs().max().item()
            assert error < 0.3, (i, box.tolist(), error)
            checked += 1
    assert checked == 3 * len(source)


def test_device_and_worker_paths_deliver_the_same_boxes_and_views_are_unchanged():
    source = ArraySource(coordinate_images())
    spec = _spec()
    workers = ViewDataset(source, spec, 16, seed=5)
    device = ViewDataset(source, spec, 16, seed=5, augment="device")
    plain = ViewDataset(source, ViewSpec(crops=spec.crops), 16, seed=5)  # no boxes: the same views
    preprocess = Preprocess(16, [0.5] * 3, [0.25] * 3)
    collate = ViewCollate(preprocess)
    batch_w = collate([workers[(1, i)] for i in range(4)])
    batch_d = DeviceViews(spec, preprocess)(collate([device[(1, i)] for i in range(4)]))
    batch_p = collate([plain[(1, i)] for i in range(4)])
    assert batch_w["boxes"].shape == (4, 3, 7)
    assert torch.equal(batch_w["boxes"], batch_d["boxes"])
    assert "boxes" not in batch_p
    for w, d, p in zip(batch_w["views"], batch_d["views"], batch_p["views"]):
        assert torch.equal(w, p)
        assert torch.allclose(w, d, atol=1e-3)


def test_boxes_need_images():
    from selfsup.data.volumes import VolumeSource

    volumes = VolumeSource(np.zeros((2, 1, 8, 8, 8), dtype=np.uint8))
    with pytest.raises(ValueError, match="ViewSpec.boxes"):
        ViewDataset(volumes, ViewSpec(crops=(CropSpec(),), boxes=True), 8, seed=0)
