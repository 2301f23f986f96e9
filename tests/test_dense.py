"""Dense self-supervision: the embedded dense digits, images + masks folders, the dense probe (mIoU) and the dense
methods' use of the views' geometry."""
import numpy as np
import pytest
import torch
from PIL import Image

from selfsup.backbones import build_backbone
from selfsup.data import open_data
from selfsup.data.dense import CANVAS, IGNORE, MASK_CLASSES, has_masks, make_dense_digits, open_dense_folder
from selfsup.data.sources import ArraySource, DataSplits
from selfsup.eval.protocol import ProtocolSettings
from selfsup.eval.protocols.dense import (DenseSettings, HypercolumnHead, confusion, dense_probe, probe_maps,
                                          segmentation_scores, with_dense_when_masked)
from selfsup.methods import build_method
from selfsup.methods.pixpro import pair_consistency
from selfsup.views.preprocess import Preprocess
from method_utils import view_batch


@pytest.fixture(scope="module")
def dense_digits():
    return open_data("digits-dense")


def test_dense_digits_hold_several_digits_with_pixel_labels(dense_digits):
    train, test = dense_digits.train, dense_digits.test
    assert has_masks(train) and has_masks(test) and train.mask_classes == MASK_CLASSES
    assert train.get_image(0).shape == (3, CANVAS, CANVAS) and train.masks.shape == (len(train), CANVAS, CANVAS)
    digits_per_image = [len(set(np.unique(m)) - {0}) for m in train.masks[:200]]
    assert np.mean(digits_per_image) > 2.3 and max(digits_per_image) == 3
    pixels, labels = train.images[:50, 0].astype(float), train.masks[:50]
    assert pixels[labels > 0].mean() > pixels[labels == 0].mean() + 40  # labels sit on the digits
    assert (labels[pixels > 170] > 0).mean() > 0.97  # and every stroke carries a digit's label
    assert 0.15 < (labels > 0).mean() < 0.5
    assert set(np.unique(train.masks)) == set(range(11))
    again = make_dense_digits()
    assert np.array_equal(again["train_images"], train.images)  # generated, deterministic


def test_scores_from_a_confusion_matrix():
    target = torch.tensor([[0, 0, 1, 1], [2, 2, IGNORE, 0]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 2, 0]])
    matrix = confusion(pred, target, 3)
    assert matrix.sum() == 7  # the ignored pixel is not counted
    scores = segmentation_scores(matrix)
    # IoU: class 0 2/(3+3-2)=0.5, class 1 2/(2+3-2)=2/3, class 2 1/(2+1-1)=0.5
    assert scores["dense_miou"] == pytest.approx((0.5 + 2 / 3 + 0.5) / 3)
    assert scores["dense_pixel_acc"] == pytest.approx(5 / 7)


def _small(splits, n_train=96, n_test=48):
    def cut(source, n):
        small = ArraySource(source.images[:n], labels=source.labels[:n], mean=source.mean, std=source.std)
        small.masks, small.mask_classes = source.masks[:n], source.mask_classes
        return small
    return DataSplits(cut(splits.train, n_train), cut(splits.test, n_test))


def test_the_dense_probe_learns_pixel_classes_from_features(dense_digits):
    splits = _small(dense_digits)
    preprocess = Preprocess(32, splits.train.mean, splits.train.std)
    settings = DenseSettings(epochs=15, batch_size=16, lr=0.05)
    torch.manual_seed(0)
    backbone = build_backbone("small_resnet", 3, widths=(8, 16, 16, 32))
    scores = dense_probe(backbone, splits, preprocess=preprocess, settings=settings, seed=0)
    raw = dense_probe(None, splits, preprocess=preprocess, settings=settings, seed=0)
    assert set(scores) == {"dense_miou", "dense_pixel_acc"}
    background = float((splits.test.masks == 0).mean())
    assert raw["dense_pixel_acc"] > background - 0.15  # near the background share: raw pixels cannot tell digits apart
    assert 0 < scores["dense_miou"] < 1 and 0 < raw["dense_miou"] < 1
    again = dense_probe(backbone, splits, preprocess=preprocess, settings=settings, seed=0)
    assert again == scores  # seeded


def test_the_probe_reads_every_stage_of_a_convnet_and_the_last_map_of_a_vit():
    images = torch.randn(2, 3, 32, 32)
    resnet = build_backbone("small_resnet", 3, widths=(8, 16, 16, 32)).eval()
    assert [tuple(m.shape[1:]) for m in probe_maps(resnet, images)] == [(8, 32, 32), (16, 16, 16), (16, 8, 8),
                                                                        (32, 4, 4)]
    assert [tuple(m.shape[1:]) for m in probe_maps(resnet, images, "last")] == [(32, 4, 4)]
    vit = build_backbone("vit_micro_cpu", 3).eval()
    (tokens,) = probe_maps(vit, images)
    assert tokens.shape[0] == 2 and tokens.ndim == 4


def test_the_hypercolumn_head_is_a_1x1_head_on_the_upsampled_concatenation():
    torch.manual_seed(0)
    maps = [torch.randn(3, 4, 8, 8), torch.randn(3, 6, 4, 4), torch.randn(3, 5, 2, 2)]
    head = HypercolumnHead(maps, num_classes=7, size=8)
    standardised = [(m - m.mean(dim=(0, 2, 3), keepdim=True)) / m.std(dim=(0, 2, 3), keepdim=True) for m in maps]
    upsampled = torch.cat([torch.nn.functional.interpolate(m, size=(8, 8), mode="bilinear", align_corners=False)
                           for m in standardised], dim=1)
    weight = torch.cat([conv.weight for conv in head.convs], dim=1)
    expected = torch.nn.functional.conv2d(upsampled, weight, head.convs[0].bias)
    assert torch.allclose(head(maps), expected, atol=1e-5)


def test_dense_runs_by_default_only_on_data_with_masks(dense_digits):
    settings = ProtocolSettings()
    assert "dense" not in settings.protocols
    assert with_dense_when_masked(settings, dense_digits).protocols == (*settings.protocols, "dense")
    plain = DataSplits(ArraySource(np.zeros((4, 3, 8, 8), np.uint8), labels=np.arange(4)),
                       ArraySource(np.zeros((4, 3, 8, 8), np.uint8), labels=np.arange(4)))
    assert with_dense_when_masked(settings, plain) is settings


def test_a_folder_of_images_and_a_folder_of_masks(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    rng = np.random.default_rng(0)
    for i in range(10):
        label = np.zeros((20, 20), np.uint8)
        label[5:15, 5:15] = 1 + i % 2
        label[0, 0] = IGNORE
        Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(images / f"img{i}.jpg")
        Image.fromarray(label).save(masks / f"img{i}.png")
    (images / "orphan.png").write_bytes(b"not a picture")  # no mask of that name: listed
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(images / "bad.png")
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(masks / "bad.png")  # wrong size: listed
    splits = open_dense_folder(images, masks, size=16, holdout_fraction=0.2)
    assert len(splits.train) == 8 and len(splits.test) == 2
    assert splits.train.masks.shape == (8, 16, 16) and splits.train.get_image(0).shape == (3, 16, 16)
    assert set(np.unique(splits.train.masks)) == {0, 1, 2, IGNORE}
    assert sorted(name for name, _ in splits.train.bad_files) == ["bad.png", "orphan.png"]
    assert set(splits.train.labels.tolist()) <= {1, 2}


def test_a_folder_with_images_and_masks_is_a_data_source_and_trains_from_the_cli(tmp_path):
    root = tmp_path / "segmentation"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(1)
    for i in range(12):
        label = np.zeros((24, 20), np.uint8)  # not square: data.image_size resizes images and masks alike
        label[4:16, 4:14] = 1 + i % 2
        Image.fromarray(rng.integers(0, 255, (24, 20, 3), dtype=np.uint8)).save(root / "images" / f"s{i}.png")
        Image.fromarray(label).save(root / "masks" / f"s{i}.png")
    splits = open_data(root, image_size=16)
    assert has_masks(splits.train) and splits.train.masks.shape[1:] == (16, 16)
    assert len(splits.train) + len(splits.test) == 12
    runs = tmp_path / "runs"
    from selfsup.cli import main  # the whole path: data.source names the folder, the dense probe runs
    assert main(["train", "densecl", f"data.source={root}", f"runs_dir={runs}", "--name", "seg", "data.image_size=16",
                 "train.budget=null", "train.max_steps=1", "train.batch_size=4", "train.progress=false",
                 "data.num_workers=0", "train.precision=fp32"]) == 0
    import json
    results = json.loads((runs / "seg" / "results.json").read_text())["results"]
    assert "dense_miou" in results["pretrained"] and "dense_miou" in results["random_init"]


def test_pixpro_consistency_reads_only_positive_pairs():
    online = torch.randn(2, 4, 3)
    target = torch.randn(2, 4, 5)
    pairs = torch.zeros(2, 3, 5, dtype=torch.bool)
    pairs[0, 1, 2] = True  # one pair in image 0, none in image 1 (it does not count)
    expected = 1 - torch.nn.functional.cosine_similarity(online[0, :, 1], target[0, :, 2], dim=0)
    assert pair_consistency(online, target, pairs).item() == pytest.approx(expected.item(), rel=1e-5)
    moved = target.clone()
    moved[0, :, 0] += 10  # an unmatched cell changes nothing
    assert pair_consistency(online, moved, pairs).item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("name,options", [("pixpro", {}), ("densecl", {}), ("densecl", {"match": "feature"}),
                                          ("densecl", {"symmetric": True}), ("densecl", {"contrast": "simclr"})])
def test_dense_methods_train_on_the_dense_digits(name, options, dense_digits):
    from selfsup.methods import METHODS

    torch.manual_seed(0)
    backbone = build_backbone("small_resnet", 3, widths=(8, 8, 16, 16))
    method = build_method(name, backbone, {**METHODS[name].test_options, **options})
    assert method.views.boxes == (options.get("match", "geometry") == "geometry")
    batch = view_batch(method, _small(dense_digits, 8, 8).train, 8, size=32)
    out = method(batch)
    out.loss.backward()
    assert torch.isfinite(out.loss) and backbone.stem[0].weight.grad.abs().sum() > 0
    if "boxes" in batch:
        with pytest.raises(ValueError, match="boxes"):
            method({key: value for key, value in batch.items() if key != "boxes"})


def test_symmetric_densecl_does_not_depend_on_the_order_of_the_views(dense_digits):
    import copy

    from selfsup.methods import METHODS

    torch.manual_seed(0)
    backbone = build_backbone("small_resnet", 3, widths=(8, 8, 16, 16))
    method = build_method("densecl", backbone, {**METHODS["densecl"].test_options, "symmetric": True})
    batch = view_batch(method, _small(dense_digits, 8, 8).train, 8, size=32)
    swapped = {**batch, "views": batch["views"][::-1], "boxes": batch["boxes"].flip(1)}
    losses = [copy.deepcopy(method)(b).loss.item() for b in (batch, swapped)]
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    one_way = build_method("densecl", copy.deepcopy(backbone), METHODS["densecl"].test_options)
    one_way.load_state_dict(method.state_dict())
    assert one_way(batch).loss.item() != pytest.approx(losses[0], rel=1e-3)


def test_dense_info_nce_contrasts_each_cell_with_the_other_images_only():
    from selfsup.losses import dense_info_nce

    gen = torch.Generator().manual_seed(0)
    queries, positives = torch.randn(5, 8, generator=gen), torch.randn(5, 8, generator=gen)
    owners, keys = torch.tensor([0, 0, 1, 2, 2]), torch.randn(3, 8, generator=gen)
    n = torch.nn.functional.normalize
    expected = []
    for m in range(5):
        others = [j for j in range(3) if j != owners[m]]
        logits = torch.cat([(n(queries[m], dim=0) * n(positives[m], dim=0)).sum()[None],
                            n(keys[others], dim=1) @ n(queries[m], dim=0)]) / 0.2
        expected.append(-torch.log_softmax(logits, dim=0)[0])
    loss = dense_info_nce(queries, positives, owners, keys, temperature=0.2)
    assert loss.item() == pytest.approx(torch.stack(expected).mean().item(), rel=1e-5)
    moved = keys.clone()
    moved[1] = -moved[1]  # image 1's own vector is not a negative of image 1's cell, but is of the others'
    assert dense_info_nce(queries[2:3], positives[2:3], owners[2:3], moved).item() == pytest.approx(
        dense_info_nce(queries[2:3], positives[2:3], owners[2:3], keys).item(), rel=1e-6)
    assert dense_info_nce(queries, positives, owners, moved).item() != pytest.approx(loss.item(), rel=1e-4)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the products are bf16 there; the loss stays float32
        under_bf16 = dense_info_nce(queries, positives, owners, keys, temperature=0.2)
    assert under_bf16.dtype == torch.float32 and under_bf16.item() == pytest.approx(loss.item(), rel=0.05)


def test_symmetric_with_the_in_batch_contrast_fails_at_start_naming_the_key():
    from selfsup.methods.densecl import DenseCLOptions

    with pytest.raises(ValueError, match="method_options.symmetric"):
        DenseCLOptions(symmetric=True, contrast="simclr")
