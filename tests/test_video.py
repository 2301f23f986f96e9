"""Videos (the field kind ``video``): the moving-digits set, temporally consistent clip views, tube and dual
masks, the video ViT's token dropping, VideoMAE (V1 and V2), CVRL and RSP, folders of real files with planted bad
files, and CVRL's loss over two processes."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from torch.nn.parallel import DistributedDataParallel

import selfsup
from distributed_utils import run_distributed
from selfsup.backbones import build_backbone
from selfsup.backbones.vit import gather_tokens
from selfsup.data import open_data
from selfsup.data.video import VideoSource
from selfsup.losses import nt_xent
from selfsup.methods import build_method
from selfsup.views import CropSpec, TubeMask
from selfsup.views.dataset import ViewCollate, ViewDataset, viewed_field
from selfsup.views.preprocess import Preprocess
from selfsup.views.video import ClipSpec, make_video_view
from selfsup.views.video_masks import DualTubeMask, running_cell

TINY = ["train.max_steps=3", "train.batch_size=8", "train.precision=fp32", "eval.baselines=false",
        "eval.report=false", "data.num_workers=0", "train.progress=false", "eval.protocols=[knn]"]
SMALL_DECODER = ["method_options.decoder_dim=16", "method_options.decoder_depth=1", "method_options.decoder_heads=2"]


@pytest.fixture(scope="module")
def moving():
    return open_data("moving-digits")


def _centroid(frame: np.ndarray) -> np.ndarray:
    weight = np.clip(frame.astype(np.float32) - 80, 0, None)
    ys, xs = np.mgrid[:frame.shape[0], :frame.shape[1]]
    return np.array([(weight * ys).sum(), (weight * xs).sum()]) / weight.sum()


def test_moving_digits_move_by_class(moving):
    assert isinstance(moving.train, VideoSource) and viewed_field(moving.train) == ("image", "video")
    assert len(moving.train) == 1000 and len(moving.test) == 500 and moving.train.channels == 1
    video = moving.train.get_image(0)
    assert video.shape == (1, 32, 32, 32) and video.dtype == torch.uint8
    # Over the first 3 frames (before any bounce can matter much) the digit moves faster for higher classes.
    speeds = {}
    for i in range(200):
        frames = moving.train.get_image(i)[0].numpy()
        step = np.linalg.norm(_centroid(frames[3]) - _centroid(frames[0])) / 3
        speeds.setdefault(int(moving.train.labels[i]), []).append(step)
    assert np.median(speeds[9]) > np.median(speeds[0]) * 1.3


def test_clip_views_share_one_augmentation_over_time_and_differ_between_clips():
    frame = torch.randint(0, 255, (3, 1, 24, 24), dtype=torch.uint8)
    still = frame.expand(-1, 20, -1, -1).contiguous()  # a video whose frames are all the same
    spec = ClipSpec(count=2, scale=(0.3, 0.8), jitter_p=1.0, grayscale_p=0.5, flip_p=0.5)
    gen = random.Random(0)
    clip_a, params = make_video_view(still, spec, 8, gen)
    clip_b, _ = make_video_view(still, spec, 8, gen)
    assert clip_a.shape == (3, 8, 8, 8) and params.numel() == 0
    for t in range(1, 8):  # the same crop, flip and colour in every frame
        assert torch.equal(clip_a[:, t], clip_a[:, 0]) and torch.equal(clip_b[:, t], clip_b[:, 0])
    assert not torch.equal(clip_a, clip_b)  # independent between clips
    counting = torch.arange(40, dtype=torch.uint8).view(1, 40, 1, 1).expand(1, 40, 4, 4).contiguous()
    plain = dict(scale=(1.0, 1.0), ratio=(1.0, 1.0), jitter_p=0.0, flip_p=0.0, grayscale_p=0.0)
    slow, _ = make_video_view(counting, ClipSpec(stride=1, **plain), 4, random.Random(3))
    fast, _ = make_video_view(counting, ClipSpec(stride=2, **plain), 4, random.Random(3))
    values = lambda clip: (clip[0, :, 0, 0] * 255).round().tolist()  # noqa: E731
    assert np.diff(values(slow)).tolist() == [1, 1, 1] and np.diff(values(fast)).tolist() == [2, 2, 2]
    short, _ = make_video_view(counting[:, :2], CropSpec(**plain), 4, random.Random(0))
    assert values(short) == [0, 1, 1, 1]  # a video shorter than the clip repeats its last frame


def test_tube_masks_hide_the_same_spatial_pattern_in_every_frame():
    for seed in range(5):
        out = TubeMask(0.75)((4, 4, 4), random.Random(seed))
        frames = out["mask"].view(4, 16)
        assert all(torch.equal(frames[t], frames[0]) for t in range(4)) and int(frames[0].sum()) == 12
    dual = DualTubeMask(0.9, 0.5)((4, 4, 4), random.Random(0))
    masked, decoded = set(dual["masked"].tolist()), dual["decoded"].tolist()
    assert len(decoded) == 32 and set(decoded) <= masked and decoded == sorted(decoded)
    assert all(torch.equal(dual["mask"].view(4, 16)[t], dual["mask"].view(4, 16)[0]) for t in range(4))
    # running cell first: of the 56 hidden tokens, the 28 on the running-cell pattern are all decoded
    cells = [i for i in masked if running_cell(i // 16, (i // 4) % 4, i % 4)]
    assert set(cells) <= set(decoded)


def test_video_vit_token_dropping_is_the_full_model_on_the_kept_tokens():
    torch.manual_seed(0)
    vit = build_backbone("vit_video_micro_cpu", 1, embed_dim=32, depth=2, num_heads=2).eval()
    assert vit.field_kind == "video" and vit.spec["name"] == "vit_video_micro_cpu"
    x = torch.randn(2, 1, 16, 16, 16)
    order = torch.stack([torch.randperm(64) for _ in range(2)])
    with torch.no_grad():
        full = vit.forward_tokens(x)
        permuted = vit.forward_tokens(x, keep_indices=order)
        keep = order[:, :10].sort(dim=1).values
        kept = vit.forward_tokens(x, keep_indices=keep)
        assembled = vit.forward_blocks(gather_tokens(vit.embed_patches(x), keep))
    # every token kept (in any order): exactly the full model's tokens, in that order; a subset: the blocks on
    # the kept tokens' embeddings (their positions travel with them)
    assert torch.allclose(permuted["patches"], gather_tokens(full["patches"], order), atol=1e-5)
    assert torch.allclose(permuted["cls"], full["cls"], atol=1e-5)
    assert torch.equal(kept["patches"], assembled["patches"]) and kept["patches"].shape == (2, 10, 32)


@pytest.mark.parametrize("recipe_options", [{}, {"decoder_mask_ratio": 0.5}])
def test_videomae_v1_and_v2_losses_on_clips(moving, recipe_options):
    vit = build_backbone("vit_video_micro_cpu", 1, embed_dim=32, depth=1, num_heads=2)
    method = build_method("videomae", vit, {"decoder_dim": 16, "decoder_depth": 1, "decoder_heads": 2,
                                            **recipe_options})
    # clips at the paper's temporal stride 2: 16 frames span the 32-frame video, as the evaluation view does
    assert isinstance(method.views.crops[0], ClipSpec) and method.views.crops[0].stride == 2
    assert method.views.crops[0].jitter_p == 0 and method.views.crops[0].scale == (0.5, 1.0)
    dataset = ViewDataset(moving.train, method.views, 16, seed=0)
    batch = ViewCollate(Preprocess(16, moving.train.mean, moving.train.std))([dataset[(0, i)] for i in range(3)])
    assert batch["views"][0].shape == (3, 1, 16, 16, 16) and batch["masks"]["visible"].shape == (3, 8)
    if recipe_options:
        assert batch["masks"]["decoded"].shape == (3, 32)
    out = method(batch)
    out.loss.backward()
    assert torch.isfinite(out.loss) and vit.patch_embed.weight.grad.abs().sum() > 0


def test_cvrl_and_rsp_take_clips_at_their_speeds(moving):
    resnet = build_backbone("resnet3d_video", 1, widths=[8, 8, 16])
    for name in ("cvrl", "rsp"):
        method = build_method(name, resnet, {"projector_hidden_dim": 16, "projector_out_dim": 8})
        dataset = ViewDataset(moving.train, method.views, 16, seed=0)
        batch = ViewCollate(Preprocess(16, moving.train.mean, moving.train.std))([dataset[(0, i)] for i in range(4)])
        out = method(batch)
        out.loss.backward()
        assert torch.isfinite(out.loss)
    assert [getattr(c, "stride", 1) for c in method.views.crops] == [1, 2]  # rsp: two clips at 1x, one at 2x


def _write_mp4(path, frames: np.ndarray, fps: int = 8):
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.fixture(scope="module")
def video_folder(tmp_path_factory):
    """Real files: two classes (a bar moving left or right) as .mp4 (PyAV) and as .frames folders, plus a
    truncated mp4, a zero-length mp4 and a text file."""
    pytest.importorskip("av")
    from PIL import Image

    root = tmp_path_factory.mktemp("videos")
    for label, name in enumerate(("left", "right")):
        (root / name).mkdir()
        for i in range(6):
            frames = np.zeros((20, 32, 32, 3), np.uint8)
            for t in range(20):
                x = (4 + i + t * (1 if label else -1)) % 28
                frames[t, 8:24, x:x + 4] = (200, 120 + 10 * i, 60)
            if i < 4:
                _write_mp4(root / name / f"{name}{i}.mp4", frames)
            else:
                folder = root / name / f"{name}{i}.frames"
                folder.mkdir()
                for t, frame in enumerate(frames):
                    Image.fromarray(frame).save(folder / f"{t:03d}.png")
    whole = (root / "left" / "left0.mp4").read_bytes()
    (root / "left" / "truncated.mp4").write_bytes(whole[: len(whole) // 3])
    (root / "right" / "empty.mp4").write_bytes(b"")
    (root / "right" / "readme.txt").write_text("not a video")
    return root


def test_a_video_folder_opens_and_lists_each_bad_file(video_folder):
    splits = open_data(str(video_folder), max_bad_fraction=0.5)
    assert isinstance(splits.train, VideoSource) and splits.train.classes == ["left", "right"]
    assert len(splits.train) + len(splits.test) == 12
    assert splits.train.get_image(0).shape[:2] == (3, 20)
    reasons = {name.rsplit("/", 1)[-1]: reason for name, reason in splits.train.bad_files}
    assert set(reasons) == {"truncated.mp4", "empty.mp4", "readme.txt"}
    assert "zero-length" in reasons["empty.mp4"] and "not a video file" in reasons["readme.txt"]


def test_videomae_trains_on_moving_digits_and_on_a_folder_listing_its_bad_files(video_folder, tmp_path):
    run_dir = selfsup.train("videomae", [*TINY, *SMALL_DECODER, f"runs_dir={tmp_path}", "name=vmae"])
    results = json.loads((run_dir / "results.json").read_text())
    assert results["run"]["steps"] == 3 and "knn_top1@20" in results["results"]["pretrained"]
    folder_run = selfsup.train("videomae-v2", [*TINY, *SMALL_DECODER, f"runs_dir={tmp_path}", "name=vmae-folder",
                                               "train.batch_size=4", f"data.source={video_folder}",
                                               "data.max_bad_fraction=0.5"])
    listed = (folder_run / "bad_files.txt").read_text()
    for name in ("truncated.mp4", "empty.mp4", "readme.txt"):
        assert name in listed


def _ddp_cvrl(rank, world_size):
    gen = torch.Generator().manual_seed(0)
    clips_a, clips_b = torch.randn(8, 6, generator=gen), torch.randn(8, 6, generator=gen)
    projector = torch.nn.Linear(6, 5)
    torch.nn.init.normal_(projector.weight, generator=gen)
    torch.nn.init.zeros_(projector.bias)
    model = DistributedDataParallel(projector) if world_size > 1 else projector
    local = slice(rank * 8 // world_size, (rank + 1) * 8 // world_size)
    loss = nt_xent(model(clips_a[local]), model(clips_b[local]), temperature=0.1)  # CVRL's loss and temperature
    loss.backward()
    total = loss.detach().clone()
    if world_size > 1:
        torch.distributed.all_reduce(total)
    return {"loss": total / world_size, "grad": projector.weight.grad}


@pytest.mark.distributed
def test_cvrl_loss_over_two_processes_equals_one_process_on_the_whole_batch():
    results = run_distributed(_ddp_cvrl, 2)
    reference = _ddp_cvrl(0, 1)
    for result in results:
        assert torch.allclose(result["loss"], reference["loss"], atol=1e-5)
        assert torch.allclose(result["grad"], reference["grad"], atol=1e-5)


def test_the_report_shows_videos_as_frames_and_sounds_as_spectrograms(moving):
    from selfsup.data import open_data as open_named
    from selfsup.report.media import shown_input

    frames = shown_input(moving.train, 0, 32)
    assert frames.shape == (1, 32, 32) and frames.max() <= 1  # four frames, 16 x 16 each, in a square
    video = moving.train.get_image(0)
    assert torch.allclose(frames[0, :16, :16], torch.nn.functional.interpolate(
        video[:, :1].float().div(255), size=(16, 16), mode="bilinear", antialias=True)[0, 0], atol=1e-5)
    sound = shown_input(open_named("sounds").train, 0, 32)
    assert sound.shape == (1, 32, 32)
