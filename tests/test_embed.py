"""``selfsup embed``: one row per good file in .npy / .parquet / .csv, equal to the backbone's own features; bad
files skipped and listed; a raw run's pixel window applied; an interrupted (or killed) embedding continues without
duplicating or losing a row; a changed folder or backbone refuses to continue."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from selfsup import api
from selfsup.backbones import build_backbone
from selfsup.cli import main
from selfsup.data.decode import decode_image
from selfsup.data.readers import read_raw
from selfsup.data.stats import load_stats
from selfsup.export import load_backbone, save_backbone
from selfsup.export.embedding_formats import read_embeddings
from selfsup.export.embeddings import ResumeRefused, bad_files_path, embed_folder, parts_dir
from selfsup.views.preprocess import Preprocess

SIZE = 16
BAD = {"b/cut.jpg": "truncated", "b/text.png": "not a recognised image", "b/empty.jpg": "empty file"}
FAST = dict(batch_size=3, num_workers=0, chunk_files=4, progress=False)


def _backbone_dir(path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    save_backbone(build_backbone("small_resnet", 3), path, image_size=SIZE, mean=[0.5, 0.4, 0.3], std=[0.25] * 3)
    return path


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    return _backbone_dir(tmp_path_factory.mktemp("backbone"))


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> Path:
    """Class folders of JPEGs and PNGs (a 16-bit gray one, an RGBA one), three bad files, a text file and a hidden
    file that are no images."""
    root = tmp_path_factory.mktemp("planted")
    rng = np.random.default_rng(0)
    (root / "a").mkdir(), (root / "b").mkdir()
    for i in range(7):
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(root / "a" / f"{i}.jpg")
    Image.fromarray(rng.integers(0, 65536, (18, 18)).astype(np.uint16)).save(root / "b" / "deep.png")
    Image.fromarray(rng.integers(0, 256, (18, 22, 4), dtype=np.uint8), "RGBA").save(root / "b" / "alpha.png")
    whole = (root / "a" / "0.jpg").read_bytes()
    (root / "b" / "cut.jpg").write_bytes(whole[: len(whole) // 2])
    (root / "b" / "text.png").write_text("these are notes, not a picture")
    (root / "b" / "empty.jpg").write_bytes(b"")
    (root / "b" / "notes.txt").write_text("ignored: not an image extension")
    (root / ".hidden.jpg").write_bytes(whole)
    return root


def _good(root: Path) -> list[str]:
    return sorted(f"{p.parent.name}/{p.name}" for p in root.glob("[ab]/*") if p.suffix != ".txt"
                  and f"{p.parent.name}/{p.name}" not in BAD)


def _direct(model_dir: Path, root: Path, paths: list[str]) -> np.ndarray:
    """The backbone's features of each file, computed here: decode, evaluation transform, forward in eval mode."""
    model = load_backbone(model_dir)
    meta = model.meta
    preprocess = Preprocess(meta["image_size"], meta["normalization"]["mean"], meta["normalization"]["std"])
    with torch.no_grad():
        return torch.cat([model(preprocess(decode_image(root / p, 3))[None]) for p in paths]).numpy()


@pytest.fixture(scope="module")
def expected(saved, planted) -> tuple[list[str], np.ndarray]:
    paths = _good(planted)
    return paths, _direct(saved, planted, paths)


def _paths_file_lines(out: Path) -> list[str]:
    return Path(f"{out}.paths.txt").read_text().splitlines()


def _bad_lines(out: Path) -> dict[str, str]:
    return dict(line.split("\t") for line in bad_files_path(out).read_text().splitlines())


@pytest.mark.parametrize("suffix", ["npy", "parquet", "csv"])
def test_one_row_per_good_file_equal_to_the_backbone_and_the_bad_files_listed(saved, planted, expected, tmp_path,
                                                                             suffix):
    if suffix == "parquet":
        pytest.importorskip("pyarrow")
    out = tmp_path / f"emb.{suffix}"
    result = api.embed(saved, planted, out, **{**FAST, "num_workers": 2 if suffix == "npy" else 0})
    paths, vectors = read_embeddings(out)
    assert paths == expected[0] and len(paths) == len(set(paths)) == result.rows == 9
    np.testing.assert_allclose(vectors, expected[1], rtol=1e-5, atol=1e-5)
    bad = _bad_lines(out)
    assert set(bad) == set(BAD) and all(BAD[p] in reason for p, reason in bad.items())
    assert (result.skipped, result.ignored, result.dims) == (3, 1, vectors.shape[1])
    assert not parts_dir(out).exists()
    if suffix == "npy":
        assert _paths_file_lines(out) == expected[0]
        with pytest.raises(FileExistsError, match="--restart"):  # a finished output is not silently replaced
            api.embed(saved, planted, out, **FAST)
        assert api.embed(saved, planted, out, restart=True, **FAST).rows == 9


def test_interrupted_embedding_continues_where_it_stopped(saved, planted, expected, tmp_path):
    out, seen = tmp_path / "emb.npy", []

    def stop_after_two(done, total):
        seen.append(done)
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        api.embed(saved, planted, out, on_chunk=stop_after_two, **FAST)
    assert not out.exists() and len(list(parts_dir(out).glob("chunk-*.npz"))) == 2
    seen.clear()
    result = api.embed(saved, planted, out, on_chunk=lambda done, total: seen.append(done), **FAST)
    assert seen == [3] and result.resumed_chunks == 2  # only the chunk that was left is computed
    paths, vectors = read_embeddings(out)
    assert paths == expected[0]
    np.testing.assert_allclose(vectors, expected[1], rtol=1e-5, atol=1e-5)
    assert set(_bad_lines(out)) == set(BAD)


def test_killed_process_continues_without_duplicates(saved, planted, expected, tmp_path):
    out = tmp_path / "emb.csv"
    script = textwrap.dedent(f"""
        import os, signal
        from selfsup import api
        def kill_after_one(done, total):
            if done == 1:
                os.kill(os.getpid(), signal.SIGKILL)  # no clean-up of any kind, as a lost machine
        api.embed({str(saved)!r}, {str(planted)!r}, {str(out)!r}, on_chunk=kill_after_one, batch_size=3,
                  num_workers=0, chunk_files=4, progress=False)
    """)
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert killed.returncode == -9, killed.stderr
    assert not out.exists() and len(list(parts_dir(out).glob("chunk-*.npz"))) == 1
    result = api.embed(saved, planted, out, **FAST)
    assert result.resumed_chunks == 1
    paths, vectors = read_embeddings(out)
    assert paths == expected[0]
    np.testing.assert_allclose(vectors, expected[1], rtol=1e-5, atol=1e-4)  # CSV keeps 9 digits


def test_changed_folder_or_backbone_refuses_to_resume(saved, planted, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for p in _good(planted):
        (folder / p.replace("/", "_")).write_bytes((planted / p).read_bytes())
    out = tmp_path / "emb.npy"

    def stop(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        api.embed(saved, folder, out, on_chunk=stop, **FAST)
    other = _backbone_dir(tmp_path / "other", seed=1)
    with pytest.raises(ResumeRefused, match="backbone weights"):
        api.embed(other, folder, out, **FAST)
    with pytest.raises(ResumeRefused, match="image size"):
        api.embed(saved, folder, out, image_size=SIZE * 2, **FAST)
    (folder / "new.png").write_bytes((planted / "b" / "alpha.png").read_bytes())
    with pytest.raises(ResumeRefused, match=r"1 added \(e.g. new.png\).*--restart"):
        api.embed(saved, folder, out, **FAST)
    assert len(list(parts_dir(out).glob("chunk-*.npz"))) == 1  # the refusal kept the finished chunk
    result = api.embed(saved, folder, out, restart=True, **FAST)
    assert result.rows == 10 and result.resumed_chunks == 0 and "new.png" in read_embeddings(out)[0]


def _band_folder(folder: Path) -> Path:
    """12 good 4-band uint16 .npy tiles, a 3-band one and a float one with a NaN pixel."""
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(12):
        np.save(folder / f"tile{i:02d}.npy", rng.integers(1000, 6000, (4, 16, 16)).astype(np.uint16))
    np.save(folder / "three.npy", rng.integers(1000, 6000, (3, 16, 16)).astype(np.uint16))
    nan = rng.integers(1000, 6000, (4, 16, 16)).astype(np.float32)
    nan[0, 0, 0] = np.nan
    np.save(folder / "nan.npy", nan)
    return folder


def test_a_raw_run_embeds_through_its_pixel_window(tmp_path):
    """A tiny real run on 4-band uint16 .npy files: the embeddings use its data_stats.json window and its
    normalisation; a 3-band file and a NaN file are bad files with their reasons."""
    folder = _band_folder(tmp_path / "bands")
    run = api.train("simclr-small", [f"data.source={folder}", f"runs_dir={tmp_path / 'runs'}", "name=raw",
                                     f"data.image_size={SIZE}", "train.max_steps=1", "train.batch_size=8",
                                     "train.progress=false", "eval.enabled=false", "eval.report=false",
                                     "train.precision=fp32", "data.num_workers=0", "data.max_bad_fraction=0.5"])
    out = folder / "emb.npy"  # inside the folder: neither it nor its parts are files to embed
    result = api.embed(run, folder, out, **FAST)
    paths, vectors = read_embeddings(out)
    good = [f"tile{i:02d}.npy" for i in range(12)]
    assert paths == good and result.rows == 12
    assert api.embed(run, folder, out, restart=True, **FAST).rows == 12
    bad = _bad_lines(out)
    assert set(bad) == {"three.npy", "nan.npy"} and "3 bands where the backbone takes 4" in bad["three.npy"]
    assert "NaN" in bad["nan.npy"]
    model, cfg_clip = load_backbone(run), json.loads((run / "backbone.json").read_text())
    window = load_stats(run / "data_stats.json").window((1.0, 99.0))
    preprocess = Preprocess(SIZE, cfg_clip["normalization"]["mean"], cfg_clip["normalization"]["std"])
    with torch.no_grad():
        direct = torch.cat([model(preprocess(window.apply(read_raw(folder / p)))[None]) for p in good]).numpy()
    np.testing.assert_allclose(vectors, direct, rtol=1e-5, atol=1e-5)


def test_a_window_measured_at_start_is_kept_for_the_resume(tmp_path):
    """A saved 4-band backbone without statistics: the window is measured once, kept in the parts, reused."""
    folder = _band_folder(tmp_path / "bands")
    torch.manual_seed(0)
    save_backbone(build_backbone("small_resnet", 4), tmp_path / "bb", image_size=SIZE, mean=[0.5] * 4, std=[0.2] * 4)
    out, said = tmp_path / "emb.npy", []

    def stop(done, total):
        raise KeyboardInterrupt

    model = load_backbone(tmp_path / "bb")
    kwargs = dict(image_size=SIZE, mean=[0.5] * 4, std=[0.2] * 4, log=said.append, **FAST)
    with pytest.raises(KeyboardInterrupt):
        embed_folder(model, folder, out, on_chunk=stop, **kwargs)
    assert (parts_dir(out) / "stats.json").is_file()
    result = embed_folder(model, folder, out, **kwargs)
    assert result.resumed_chunks == 1 and result.rows == 12 and result.skipped == 2
    assert sum("computing the pixel statistics" in line for line in said) == 1


def test_cli_embeds_a_saved_backbone_and_a_named_one(saved, planted, expected, tmp_path, capsys):
    out = tmp_path / "emb.npy"
    common = ["--data", str(planted), "--batch-size", "4", "--num-workers", "0", "--no-progress"]
    assert main(["embed", str(saved), "--out", str(out), *common]) == 0
    assert "wrote 9 rows" in capsys.readouterr().out and read_embeddings(out)[0] == expected[0]
    assert main(["embed", str(saved), "--out", str(out), *common]) == 2
    assert "--restart" in capsys.readouterr().err
    named = tmp_path / "named.csv"  # random init, normalisation measured on the folder
    assert main(["embed", "--backbone", "small_resnet", "--out", str(named), "--image-size", str(SIZE), *common]) == 0
    paths, vectors = read_embeddings(named)
    assert paths == expected[0] and np.isfinite(vectors).all()
    assert main(["embed", str(saved), "--out", str(tmp_path / "emb.txt"), *common]) == 2
    assert "embeddings format" in capsys.readouterr().err


def test_parquet_without_pyarrow_names_the_extra(saved, planted, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(ValueError, match=r"selfsup\[parquet\]"):
        api.embed(saved, planted, tmp_path / "emb.parquet", **FAST)
    assert not parts_dir(tmp_path / "emb.parquet").exists()  # it failed before any work
