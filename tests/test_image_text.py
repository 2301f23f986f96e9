"""Image-text training end to end: the same pairs in every layout train to the same first step; a run saves its
two towers and is evaluated zero-shot and by image-text retrieval beside random-init towers; the evaluation
functions on hand-made embeddings; the view dataset's caption choice."""
import json

import numpy as np
import pytest
import torch

import selfsup
from method_utils import build_tiny_method
from caption_utils import make_pairs, manifest_rows, write_caption_folder, write_csv, write_shards
from selfsup.data.sources import ArraySource
from selfsup.eval.image_text import confusion_matrix, image_text_recall, zero_shot_scores
from selfsup.export.towers_io import has_towers, load_towers
from selfsup.methods import METHODS
from selfsup.views import CropSpec, TextSpec, ViewSpec
from selfsup.views.dataset import ViewCollate, ViewDataset
from selfsup.views.preprocess import Preprocess

pytest.importorskip("open_clip")

TINY = ["method_options.embed_dim=16", "method_options.text_options={width: 32, heads: 2, layers: 1, context_length: 16}",
        "backbone.name=small_resnet", "backbone.options={widths: [8, 8, 16, 16], stem_stride: 1}",
        "data.image_size=16", "data.num_workers=0", "train.batch_size=4", "train.precision=fp32", "seed=0",
        "train.log_every=1", "train.progress=false"]


def first_loss(run_dir) -> float:
    return json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])["loss"]


def test_manifest_caption_folder_and_shards_train_to_the_same_first_step_loss(tmp_path):
    pairs = make_pairs(12, labelled=True, classes=2)
    folder = write_caption_folder(tmp_path / "folder", pairs)
    manifest = write_csv(tmp_path / "pairs.csv", manifest_rows([p._replace(path=f"folder/{p.path}") for p in pairs]))
    shards = write_shards(tmp_path / "shards", pairs, per_shard=5)
    losses = []
    for name, source in (("folder", folder), ("manifest", manifest), ("shards", shards)):
        run = selfsup.train("clip", [*TINY, f"data.source={source}", "train.max_steps=1", "eval.enabled=false",
                                     "eval.report=false", f"runs_dir={tmp_path / 'runs'}", f"name={name}"])
        losses.append(first_loss(run))
    assert np.isfinite(losses[0]) and losses[0] > 0
    assert losses[1] == pytest.approx(losses[0], abs=1e-6) and losses[2] == pytest.approx(losses[0], abs=1e-6)


@pytest.mark.slow
def test_clip_run_saves_towers_and_is_evaluated_zero_shot_beside_random_init(tmp_path):
    run = selfsup.train("clip", [*TINY, "train.max_steps=30", "train.batch_size=32", "data.source=digits-captions",
                                 "eval.linear.raw_pixels_max_train=500",
                                 "eval.report=false", f"runs_dir={tmp_path}", "name=clip"])
    assert has_towers(run)
    towers = load_towers(run)
    assert towers.meta["spec"]["text"]["name"] == "text_micro_cpu" and towers.embed_dim == 16
    results = json.loads((run / "results.json").read_text())
    assert {"zero_shot", "image_text_retrieval"} <= set(results["protocol"]["protocols"])
    for row in ("pretrained", "random_init"):
        scores = results["results"][row]
        assert 0 <= scores["zero_shot_top1"] <= 1 and 0 <= scores["text_to_image_recall@1"] <= 1
        assert scores["zero_shot_top5"] >= scores["zero_shot_top1"]
    assert "zero_shot_top1" not in results["results"]["raw_pixels"]  # raw pixels have no text tower
    # The towers' image tower is the exported backbone.
    backbone = selfsup.load_backbone(run)
    images = torch.randn(2, 3, 16, 16)
    assert torch.allclose(backbone(images), towers.image(images), atol=1e-6)


def test_image_only_runs_skip_the_image_text_protocols(tmp_path):
    run = selfsup.train("demo", ["backbone.options={widths: [8, 8, 16, 16], stem_stride: 2}", "data.image_size=16",
                                 "train.max_steps=2", "train.batch_size=16", "data.num_workers=0", "eval.report=false",
                                 "eval.baselines=false", "eval.protocols=[knn, zero_shot]", f"runs_dir={tmp_path}",
                                 "name=demo"])
    results = json.loads((run / "results.json").read_text())
    assert results["protocol"]["protocols"] == ["knn"] and not has_towers(run)


def test_a_method_on_pairs_needs_captions():
    source = ArraySource(np.zeros((4, 3, 8, 8), np.uint8))
    views = ViewSpec(crops=(CropSpec(count=1),), text=TextSpec(context_length=8))
    with pytest.raises(ValueError, match="no captions.*manifest"):
        ViewDataset(source, views, 8, seed=0)


def test_caption_choice_follows_seed_epoch_and_index():
    captions = [[f"caption {j} of {i}" for j in range(4)] for i in range(6)]
    source = ArraySource(np.zeros((6, 3, 8, 8), np.uint8), captions=captions)
    views = ViewSpec(crops=(CropSpec(count=1),), text=TextSpec(context_length=8))
    dataset = ViewDataset(source, views, 8, seed=0)
    collate = ViewCollate(Preprocess(8, [0.5] * 3, [0.25] * 3))
    batch = collate([dataset[(0, i)] for i in range(6)])
    assert batch["text"].shape == (6, 8) and batch["text"].dtype == torch.int64
    again = collate([dataset[(0, i)] for i in range(6)])
    assert torch.equal(batch["text"], again["text"])  # reproducible
    epochs = torch.stack([collate([dataset[(e, 0)]])["text"][0] for e in range(12)])
    assert len(torch.unique(epochs, dim=0)) > 1  # a different phrasing in different epochs


def test_zero_shot_scores_and_confusion_on_hand_made_similarities():
    similarities = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.1, 0.7], [0.1, 0.8, 0.3], [0.5, 0.4, 0.1]])
    labels = torch.tensor([0, 1, 1, 2])
    scores = zero_shot_scores(similarities, labels, top_k=(1, 2, 5))
    assert scores == {"zero_shot_top1": 0.5, "zero_shot_top2": 0.5}  # top-5 > 3 classes: not reported
    assert confusion_matrix(similarities, labels).tolist() == [[1, 0, 0], [0, 1, 1], [1, 0, 0]]


def test_image_text_recall_counts_any_of_an_images_captions():
    images = torch.eye(3)
    # image 1's caption is nearest to image 2 and vice versa (each second nearest to its own); text 3, image 2's
    # second caption, is nearest to image 0
    texts = torch.tensor([[1.0, 0, 0], [0, 0.2, 1.0], [0, 1.0, 0.3], [0.9, 0.1, 0.05]])
    owner = torch.tensor([0, 1, 2, 2])
    scores = image_text_recall(images, texts, owner, recall_at=(1, 2))
    assert scores["image_to_text_recall@1"] == pytest.approx(1 / 3)  # only image 0 finds its own caption first
    assert scores["image_to_text_recall@2"] == pytest.approx(1.0)
    assert scores["text_to_image_recall@1"] == pytest.approx(1 / 4)
    assert scores["text_to_image_recall@2"] == pytest.approx(3 / 4)


@pytest.mark.parametrize("name", ["clip", "siglip", "convirt", "slip"])
def test_image_text_methods_expose_their_towers(name):
    assert METHODS[name].needs_vit is False  # any backbone is an image tower
    method = build_tiny_method(name)
    towers = method.image_text_towers()
    assert towers is not None and method.backbone is towers.image
    assert method.views.text is not None and method.views.text.context_length == towers.context_length


def test_an_open_clip_model_continues_training_on_pairs_and_exports_to_open_clip(tmp_path):
    open_clip = pytest.importorskip("open_clip")
    from safetensors.torch import save_file

    from selfsup.export.open_clip import export_open_clip

    config = tmp_path / "selfsup-test-continue.json"
    config.write_text(json.dumps({"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32,
                                                                  "head_width": 16, "patch_size": 8},
                                  "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2,
                                               "layers": 1}}))
    open_clip.add_model_config(config)
    torch.manual_seed(0)
    start = open_clip.create_model("selfsup-test-continue", pretrained=None).eval()
    weights = tmp_path / "start.safetensors"
    save_file({k: v.contiguous() for k, v in start.state_dict().items()}, weights)
    pairs = write_caption_folder(tmp_path / "pairs", make_pairs(12, labelled=False))
    tower = f"open_clip:{config}"
    mean, std = list(open_clip.OPENAI_DATASET_MEAN), list(open_clip.OPENAI_DATASET_STD)
    run = selfsup.train("clip", [f"data.source={pairs}", f"backbone.name={tower}",
                                 f"backbone.options={{weights: {weights}}}", f"method_options.text_encoder={tower}",
                                 f"method_options.text_options={{weights: {weights}}}", "data.image_size=32",
                                 f"data.mean={mean}", f"data.std={std}", "data.num_workers=0", "train.batch_size=4",
                                 "train.max_steps=2", "train.precision=fp32", "train.progress=false",
                                 "eval.report=false", f"runs_dir={tmp_path / 'runs'}", "name=continued"])
    towers = load_towers(run)
    assert isinstance(towers.image_projection, torch.nn.Identity)  # open_clip's own projections, nothing added
    exported = export_open_clip(towers, tmp_path / "exported")
    assert exported.is_file()
    model = open_clip.create_model(f"local-dir:{tmp_path / 'exported'}").eval()
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, start.state_dict()[k])]
    assert changed  # trained, and open_clip reads it back strictly
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model.encode_image(images), towers.encode_image(images, normalize=False), atol=1e-5)
