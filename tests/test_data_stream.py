"""Data beyond one disk (issue 19): manifests and tar shards as plain image sources, `selfsup data shard`, and
streamed shards (selfsup.data.stream, selfsup.data.stream_order): disjoint and complete coverage over processes
and DataLoader workers, and an exact resume in the middle of a shard after SIGKILL."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from selfsup.cli import main
from selfsup.data import DataError, ShardSource, open_data
from selfsup.data.stream import StreamedShards
from selfsup.data.stream_order import StreamBatchSampler, StreamOrder, buffered_order, shard_assignment
from selfsup.fields import IMAGE_FIELDS
from test_engine import run_beside_a_killed_twin

TESTS = Path(__file__).resolve().parent
SRC = TESTS.parent / "src"


def write_images(root: Path, n: int, classes: int = 2, size: int = 12) -> list[str]:
    """n PNGs in class folders; pixels from the image's number."""
    paths = []
    for i in range(n):
        path = root / f"c{i % classes}" / f"img{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
        paths.append(str(path.relative_to(root)))
    return paths


def test_manifest_without_captions_is_an_image_source(tmp_path):
    paths = write_images(tmp_path / "images", 6)
    (tmp_path / "images" / "broken.jpg").write_bytes(b"not a jpeg")
    rows = [f"images/{p},{p.split('/')[0]}" for p in paths] + ["images/broken.jpg,c0", "images/missing.png,c1"]
    manifest = tmp_path / "list.csv"
    manifest.write_text("image,label\n" + "\n".join(rows) + "\n")
    splits = open_data(manifest, holdout_fraction=0.0, max_bad_fraction=0.5)
    train = splits.train
    assert train.fields == IMAGE_FIELDS and train.captions is None and len(train) == 6
    assert train.classes == ["c0", "c1"] and list(train.labels) == [0, 0, 0, 1, 1, 1]  # sorted by path
    assert sorted(os.path.basename(p) for p, _ in train.bad_files) == ["broken.jpg", "missing.png"]
    jsonl = tmp_path / "list.jsonl"
    jsonl.write_text("".join(json.dumps({"path": f"images/{p}"}) + "\n" for p in paths) + "not json\n")
    unlabelled = open_data(jsonl, max_bad_fraction=0.5)
    assert unlabelled.train.labels is None and unlabelled.test is None and len(unlabelled.train) == 6
    assert [reason for _, reason in unlabelled.train.bad_files] == ["not valid JSON: Expecting value"]
    assert torch.equal(unlabelled.train.get_image(0), train.get_image(0))


@pytest.fixture(scope="module")
def shard_set(tmp_path_factory) -> Path:
    """`selfsup data shard` of 100 images (and one bad file) in shards of 12: 9 shards (the last of 4)."""
    root = tmp_path_factory.mktemp("stream")
    write_images(root / "images", 100)
    (root / "images" / "c0" / "bad.png").write_bytes(b"\x89PNG broken")
    assert main(["data", "shard", str(root / "images"), str(root / "shards"), "--shard-size", "12"]) == 0
    return root / "shards"


def test_data_shard_writes_shards_with_an_index(shard_set, tmp_path, capsys):
    index = json.loads((shard_set / "index.json").read_text())
    assert [s["count"] for s in index["shards"]] == [12] * 8 + [4] and index["samples"] == 100
    assert index["classes"] == ["c0", "c1"] and len(index["mean"]) == 3
    assert "bad.png" in (shard_set / "bad_files.txt").read_text()
    with tarfile.open(shard_set / "shard-000000.tar") as tar:
        names = tar.getnames()
    assert names[:3] == ["000000000.png", "000000000.cls", "000000000.json"]
    # The shards as a random-access source: plain image shards (no captions), labelled, every image intact.
    shards = open_data(shard_set, holdout_fraction=0.0).train
    assert isinstance(shards, ShardSource) and shards.fields == IMAGE_FIELDS and len(shards) == 100
    folder = open_data(shard_set.parent / "images", holdout_fraction=0.0, max_bad_fraction=0.5).train
    pixels = {folder.get_image(i).numpy().tobytes() for i in range(len(folder))}
    assert {shards.get_image(i).numpy().tobytes() for i in range(len(shards))} == pixels
    # A size in bytes closes shards by size.
    assert main(["data", "shard", str(shard_set.parent / "images"), str(tmp_path / "by_bytes"), "--shard-size",
                 "4KB", "--max-bad-fraction", "0.5"]) == 0
    counts = [s["count"] for s in json.loads((tmp_path / "by_bytes" / "index.json").read_text())["shards"]]
    assert sum(counts) == 100 and len(counts) > 9
    assert main(["data", "shard", str(shard_set.parent / "images"), str(tmp_path / "x"), "--shard-size", "3 apples"]) == 2
    assert "--shard-size '3 apples'" in capsys.readouterr().err


def test_streamed_source_reads_local_and_url_alike(shard_set):
    local = open_data(shard_set / "index.json").train
    url = open_data(f"file://{shard_set}/index.json").train
    assert isinstance(local, StreamedShards) and local.local and not url.local
    assert len(local) == len(url) == 100 and open_data(shard_set / "index.json").test is None
    for i in (0, 5, 3, 11, 12, 99, 40, 2):  # forward, back (reopens), across shards
        assert torch.equal(local.get_image(i), url.get_image(i)), i
    assert local.mean == json.loads((shard_set / "index.json").read_text())["mean"]


def test_stream_order_covers_each_epoch_disjointly_and_completely():
    counts = [12] * 8 + [4]
    order = StreamOrder(counts, batch_size=5, seed=3, world=2, streams=2, buffer=4, drop_last=False)
    for epoch in (0, 1):
        seen = np.concatenate([np.concatenate(order.rank_batches(epoch, r)) for r in range(2)])
        assert sorted(seen.tolist()) == list(range(100))
    assert not np.array_equal(np.concatenate(order.rank_batches(0, 0)), np.concatenate(order.rank_batches(1, 0)))
    # A shuffle buffer of b never emits a sample more than b positions ahead of the reading.
    emitted = buffered_order(50, 4, np.random.default_rng(0))
    assert sorted(emitted.tolist()) == list(range(50))
    assert all(position <= t + 4 for t, position in enumerate(emitted.tolist()))
    # Training: every rank takes the same number of full batches.
    train = StreamOrder(counts, batch_size=5, seed=3, world=2, streams=2, buffer=4)
    assert {len(train.rank_batches(0, r)) for r in range(2)} == {train.batches(0)}
    assert all(len(b) == 5 for r in range(2) for b in train.rank_batches(0, r))
    with pytest.raises(ValueError, match="at least as many shards as processes"):
        StreamOrder([10], batch_size=2, seed=0, world=2)


_READER = r'''
import json, sys
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info
from selfsup.data import open_data
from selfsup.data.stream_order import StreamBatchSampler, StreamOrder

rank, spec, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
source = open_data(spec).train

class Read(Dataset):
    def __getitem__(self, key):
        epoch, index = key
        source.get_image(index)  # read through this worker's cursors
        return {"index": index, "worker": get_worker_info().id}

order = StreamOrder(source.counts, batch_size=5, seed=7, world=2, streams=2, buffer=6, drop_last=False)
sampler = StreamBatchSampler(order, rank)
sampler.set_epoch(1)
loader = DataLoader(Read(), batch_sampler=sampler, num_workers=2, collate_fn=lambda samples: samples)
json.dump([s for batch in loader for s in batch], open(out, "w"))
'''


def test_two_processes_with_two_workers_read_disjoint_complete_shares(shard_set, tmp_path):
    spec = f"file://{shard_set}/index.json"  # streamed through fsspec cursors
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", _READER, str(r), spec, str(tmp_path / f"rank{r}.json")],
                              env=env, stderr=subprocess.PIPE, text=True) for r in range(2)]
    for proc in procs:
        assert proc.wait(timeout=120) == 0, proc.stderr.read()[-2000:]
    read = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    indices = [[s["index"] for s in rank] for rank in read]
    assert sorted(indices[0] + indices[1]) == list(range(100))  # complete, and disjoint (no index twice)
    offsets = np.concatenate([[0], np.cumsum([12] * 8 + [4])])
    shard_of = lambda i: int(np.searchsorted(offsets, i, side="right")) - 1  # noqa: E731
    order = StreamOrder([12] * 8 + [4], batch_size=5, seed=7, world=2, streams=2, buffer=6, drop_last=False)
    for r, rank in enumerate(read):
        shards_of_worker = {}
        for sample in rank:
            shards_of_worker.setdefault(sample["worker"], set()).add(shard_of(sample["index"]))
        assert set(shards_of_worker) == {0, 1}
        # Worker w read the shards of one stream until the streams' batches ran unevenly at the epoch's end.
        streams = [set(order.stream_samples(1, r, s).tolist()) for s in range(2)]
        for worker, shards in shards_of_worker.items():
            own = {shard_of(i) for i in streams[worker]}
            assert len(shards & own) >= len(own) - 1


def _train(*args, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "selfsup.cli", "train", "demo", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _losses(run: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())}


def test_sigkill_in_the_middle_of_a_shard_resumes_with_exactly_the_unseen_samples(shard_set, tmp_path):
    spec = f"file://{shard_set}/index.json"
    common = [f"runs_dir={tmp_path}", f"data.source={spec}", "train.max_steps=14", "train.batch_size=8",
              "train.budget=null", "train.progress=false", "train.log_every=1", "eval.enabled=false",
              "eval.report=false", "data.image_size=12", "train.deterministic=true", "train.precision=fp32",
              "data.num_workers=2", "data.shuffle_buffer=5", "train.checkpoint_every=1",
              "method_options.projector_hidden_dim=32", "method_options.projector_out_dim=16",
              "backbone.options={widths: [8, 8, 16, 16], stem_stride: 1}"]
    run = tmp_path / "killed"
    run_beside_a_killed_twin(["train", "demo", "name=straight", *common], ["train", "demo", "name=killed", *common],
                             run, 5)
    loop = torch.load(run / "checkpoints" / "last.pt", weights_only=False)["loop"]
    order = StreamOrder([12] * 8 + [4], batch_size=8, seed=0, world=1, streams=2, buffer=5)
    epoch, consumed = loop["epoch"], loop["batch_in_epoch"]
    assert loop["step"] < 14 and 0 < consumed < order.batches(epoch)
    # Killed in the middle of a shard: some stream's position is not at a shard boundary.
    boundaries = [set(np.cumsum([0] + [12 if j < 8 else 4 for j in shards]).tolist())
                  for shards in shard_assignment(9, 0, epoch, 1, 2)[0]]
    assert any(p not in b for p, b in zip(loop["stream_positions"][0], boundaries)), loop
    resumed = _train("--resume", str(run))
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err[-2000:]
    assert _losses(run) == _losses(tmp_path / "straight")  # every step's loss: the same samples, the same views
    # What the resumed epoch reads: exactly the batches after the checkpoint's position.
    sampler = StreamBatchSampler(order)
    sampler.set_epoch(epoch, consumed)
    rest = [i for batch in sampler for _, i in batch]
    seen = np.concatenate(order.rank_batches(epoch, 0)[:consumed]).tolist()
    assert not set(rest) & set(seen) and len(rest) + len(seen) == order.batches(epoch) * 8
    assert order.positions(epoch, consumed) == loop["stream_positions"]


def test_stream_errors_name_the_fix(tmp_path, shard_set):
    (tmp_path / "index.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(DataError, match="not a shard index.*selfsup data shard"):
        open_data(tmp_path / "index.json")
    broken = json.loads((shard_set / "index.json").read_text())
    broken["shards"][0]["count"] = 13
    (tmp_path / "shards").mkdir()
    for name in ("shard-000000.tar",):
        (tmp_path / "shards" / name).write_bytes((shard_set / name).read_bytes())
    broken["shards"] = broken["shards"][:1]
    (tmp_path / "shards" / "index.json").write_text(json.dumps(broken))
    with pytest.raises(DataError, match="the index says 13 samples, the shard holds 12"):
        open_data(tmp_path / "shards" / "index.json")
