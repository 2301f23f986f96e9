"""selfsup.files: the one atomic-write primitive every writer of checkpoints, backbones, reports, feature and
data caches goes through."""
import json
import os
import stat

import pytest
import torch

from selfsup.engine.checkpoint import atomic_save
from selfsup.files import atomic_path, copy_file_atomic, write_atomic, write_json_atomic


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_atomic_path_replaces_the_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "sub" / "out.bin"  # the folder is created
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(".out.bin.") and tmp.exists()
        tmp.write_bytes(b"new")
        assert not target.exists()  # nothing at the target until the block ends
    assert target.read_bytes() == b"new" and _leftovers(target.parent) == []


def test_an_error_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("disk full")
    assert target.read_text() == "old" and _leftovers(tmp_path) == []


def test_unserializable_json_writes_nothing(tmp_path):
    with pytest.raises(TypeError):
        write_json_atomic(tmp_path / "x.json", {"a": object()})
    assert list(tmp_path.iterdir()) == []


def test_writers(tmp_path):
    write_json_atomic(tmp_path / "a.json", {"a": 1})
    assert (tmp_path / "a.json").read_text() == '{\n  "a": 1\n}\n'
    write_json_atomic(tmp_path / "b.json", {"a": 1}, indent=None)
    assert (tmp_path / "b.json").read_text() == '{"a": 1}'
    write_atomic(tmp_path / "c.html", "é")
    assert (tmp_path / "c.html").read_bytes() == "é".encode("utf-8")
    copy_file_atomic(tmp_path / "c.html", tmp_path / "d.html")
    assert (tmp_path / "d.html").read_bytes() == (tmp_path / "c.html").read_bytes()
    assert json.loads((tmp_path / "b.json").read_text()) == {"a": 1} and _leftovers(tmp_path) == []


def test_permissions_follow_the_umask_like_a_plain_open(tmp_path):
    old = os.umask(0o022)
    try:
        write_atomic(tmp_path / "a.txt", "x")
        (tmp_path / "b.txt").write_text("x")
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "a.txt").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "b.txt").stat().st_mode) == 0o644


def test_checkpoint_atomic_save_round_trip_and_failure(tmp_path):
    path = tmp_path / "checkpoints" / "last.pt"
    atomic_save({"w": torch.arange(3)}, path)
    assert torch.equal(torch.load(path)["w"], torch.arange(3))

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle")

    with pytest.raises(RuntimeError):
        atomic_save({"w": Unpicklable()}, path)
    assert torch.equal(torch.load(path)["w"], torch.arange(3)) and _leftovers(path.parent) == []
