"""Loading never executes pickled code: a run's checkpoints (``--resume``) and weights files
(``backbone.weights``) are read with ``torch.load(weights_only=True)``; a file whose pickle would run code is
refused by name, and the code does not run. Checkpoints hold the RNG states as tensors, so they load safely and
a resume restores every generator exactly; checkpoints of earlier versions (a pickled numpy RNG state) still load."""
from __future__ import annotations

import ast
import pickle
import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn as nn

from selfsup import api
from selfsup.backbones import build_backbone
from selfsup.backbones.weights import load_weights_into
from selfsup.cli import main
from selfsup.engine.checkpoint import (LoopState, load_checkpoint, load_training_state, rng_state,
                                       save_training_state, set_rng_state)

SRC = Path(__file__).resolve().parents[1] / "src" / "selfsup"
TINY = ["method_options.projector_hidden_dim=32", "method_options.projector_out_dim=16",
        "backbone.options={widths: [8, 16, 16, 32], stem_stride: 1}", "data.image_size=16", "train.max_steps=2",
        "train.batch_size=16", "train.progress=false", "train.precision=fp32", "data.num_workers=0",
        "eval.enabled=false"]
ONE_PROCESS = SimpleNamespace(world_size=1, rank=0, is_main=True)


class RunsCode:
    """Unpickling this object runs ``exec(code)``: here, writing a marker file."""

    def __init__(self, marker: Path):
        self.code = f"open({str(marker)!r}, 'w').write('ran')"

    def __reduce__(self):
        return exec, (self.code,)


def test_the_payload_runs_code_when_unpickled_unsafely(tmp_path):
    """The malicious object of these tests is real: plain pickle runs it."""
    pickle.loads(pickle.dumps(RunsCode(tmp_path / "ran")))
    assert (tmp_path / "ran").read_text() == "ran"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("safe")
    np.savez(root / "tiny.npz", images=(rng.random((64, 16, 16, 3)) * 255).astype(np.uint8))
    return api.train("demo", [f"data.source={root / 'tiny.npz'}", f"runs_dir={root}", "name=run", *TINY])


# ------------------------------------------------------------------------------------------- checkpoints
def test_a_run_checkpoint_holds_only_tensors_and_plain_values(tiny_run):
    saved = torch.load(tiny_run / "checkpoints" / "last.pt", weights_only=True)  # no allowlist at all
    assert saved["loop"]["step"] == 2
    assert isinstance(saved["rng"][0]["numpy"]["keys"], torch.Tensor)


def test_a_malicious_checkpoint_is_refused_on_resume(tiny_run, tmp_path, capsys):
    received = tmp_path / "received"
    received.mkdir()
    for name in ("config.yaml",):
        (received / name).write_bytes((tiny_run / name).read_bytes())
    (received / "checkpoints").mkdir()
    marker = tmp_path / "marker"
    good = torch.load(tiny_run / "checkpoints" / "last.pt", weights_only=True)
    torch.save({**good, "rng": [RunsCode(marker)]}, received / "checkpoints" / "last.pt")
    with pytest.raises(ValueError) as error:
        load_checkpoint(received)
    message = str(error.value)
    assert str(received / "checkpoints" / "last.pt") in message and "builtins.exec" in message
    assert "selfsup loads only tensors" in message and "never runs code" in message
    assert not marker.exists()
    assert main(["train", "--resume", str(received)]) == 2  # selfsup train --resume RUN
    assert "selfsup loads only tensors" in capsys.readouterr().err
    assert not marker.exists()


def test_rng_states_round_trip_exactly_through_a_checkpoint(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    random.gauss(0, 1), np.random.randn()  # cached Gaussians are part of both states
    method = nn.Linear(2, 2)
    optimizer = torch.optim.SGD(method.parameters(), lr=0.1)
    save_training_state(tmp_path / "last.pt", method, optimizer, LoopState(step=7), {"seed": 0}, ONE_PROCESS)

    def draws():
        return random.random(), random.gauss(0, 1), np.random.randn(3).tolist(), torch.rand(3).tolist()

    expected = draws()
    assert load_training_state(tmp_path / "last.pt", method, optimizer, ONE_PROCESS).step == 7
    assert draws() == expected


def test_a_checkpoint_of_the_earlier_format_still_loads(tmp_path):
    """Earlier checkpoints pickled python's state as a tuple and numpy's with an ndarray: they load (numpy's
    ndarray and dtype are the only types allowed beyond weights_only's own) and restore the same streams."""
    method = nn.Linear(2, 2)
    optimizer = torch.optim.SGD(method.parameters(), lr=0.1)
    np.random.seed(5), random.seed(6)
    legacy = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    torch.save({"method": method.state_dict(), "optimizer": optimizer.state_dict(), "loop": {"step": 3},
                "rng": [legacy], "scaler": None, "config": {}}, tmp_path / "old.pt")
    expected = np.random.randn(2).tolist(), random.random()
    assert load_training_state(tmp_path / "old.pt", method, optimizer, ONE_PROCESS).step == 3
    assert (np.random.randn(2).tolist(), random.random()) == expected
    set_rng_state(rng_state())  # the new format restores through the same function


def test_the_numpy_allowance_runs_no_code_either(tmp_path):
    """An object-dtype ndarray unpickles its elements with the same restricted unpickler: still refused."""
    marker = tmp_path / "marker"
    payload = np.empty(1, dtype=object)
    payload[0] = RunsCode(marker)
    torch.save({"method": {}, "optimizer": {}, "loop": {}, "rng": [payload]}, tmp_path / "last.pt")
    with pytest.raises(ValueError, match="builtins.exec"):
        load_checkpoint(tmp_path / "last.pt")
    assert not marker.exists()


def test_a_file_that_is_no_checkpoint_is_named(tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "last.pt")
    with pytest.raises(ValueError, match="last.pt is not a selfsup checkpoint"):
        load_checkpoint(tmp_path / "last.pt")
    (tmp_path / "cut.pt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ValueError, match="cut.pt is not a readable torch checkpoint"):
        load_checkpoint(tmp_path / "cut.pt")


# ------------------------------------------------------------------------------------------ weights files
def test_a_malicious_weights_file_is_refused(tmp_path):
    marker = tmp_path / "marker"
    backbone = build_backbone("small_resnet", 3, widths=[8, 16, 16, 32])
    weights = tmp_path / "weights.pt"
    torch.save({"state_dict": backbone.state_dict(), "extra": RunsCode(marker)}, weights)
    with pytest.raises(ValueError) as error:
        load_weights_into(backbone, weights, log=lambda _: None)
    message = str(error.value)
    assert str(weights) in message and "builtins.exec" in message and "selfsup loads only tensors" in message
    assert "convert its tensors once" in message and "weights.safetensors" in message  # a trusted file's way
    assert not marker.exists()


def test_a_malicious_weights_file_fails_the_run_at_start(tiny_run, tmp_path):
    marker = tmp_path / "marker"
    torch.save(RunsCode(marker), tmp_path / "evil.pth")
    data = f"data.source={tiny_run.parent / 'tiny.npz'}"
    with pytest.raises(Exception, match="config key 'backbone.weights'.*selfsup loads only tensors"):
        api.train("demo", [data, f"runs_dir={tmp_path}", "name=evil", f"backbone.weights={tmp_path / 'evil.pth'}",
                           *TINY])
    assert not marker.exists()


def test_every_torch_load_in_the_package_is_weights_only():
    unsafe = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load" \
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch":
                flags = {k.arg: k.value for k in node.keywords}
                if not (isinstance(flags.get("weights_only"), ast.Constant) and flags["weights_only"].value is True):
                    unsafe.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert not unsafe, f"torch.load without weights_only=True: {unsafe}"
