"""``selfsup bench`` and the speed switches it compares: the measurement on a tiny demo run, the FLOP counter
against an analytic count, the matmul peak, the compile fallback, and channels_last / fused AdamW against the
plain path."""
import json

import pytest
import torch

import selfsup
from selfsup.cli import main
from selfsup.config import OptimConfig, build_config
from selfsup.dist import DistInfo
from selfsup.engine.optim import build_optimizer
from selfsup.throughput import bench_trainer, count_flops, measure_peaks

TINY = ["data.source=digits-plain", "data.image_size=16", "data.num_workers=0", "train.batch_size=16",
        "train.progress=false", "backbone.options={widths: [8, 16, 16, 32], stem_stride: 1}",
        "method_options.projector_hidden_dim=32", "method_options.projector_out_dim=16"]


@pytest.fixture(scope="module")
def peaks():
    """A short real measurement (small matmuls), shared by the tests below so each stays quick."""
    return measure_peaks(torch.device("cuda" if torch.cuda.is_available() else "cpu"), max_seconds=0.5)


@pytest.fixture(scope="module")
def demo_bench(peaks, tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "bench.json"
    return selfsup.bench("demo", TINY, steps=3, warmup=1, json_path=path, peaks=peaks), path


def test_bench_measures_the_demo_pipeline(demo_bench):
    result, _ = demo_bench
    assert result["images_per_s"] > 0
    assert result["views_per_image"] == 2 and result["views_per_s"] == pytest.approx(2 * result["images_per_s"])
    split = result["step_split"]
    assert set(split) == {"data_wait", "forward_backward", "optimizer", "after_step"}
    assert all(part["mean_s"] >= 0 for part in split.values())
    assert sum(part["mean_s"] for part in split.values()) == pytest.approx(result["step_time_s"], rel=0.1)
    assert split["forward_backward"]["mean_s"] > 0 and split["optimizer"]["mean_s"] > 0
    assert result["flops_per_step"] > 0
    assert result["mfu_precision"] == result["settings"]["precision"]
    assert 0 < result["mfu"] < 1.5
    assert result["memory"]["peak_bytes"] > 0
    assert result["settings"]["channels_last"] is True and result["settings"]["compiled"] is False
    assert result["config"]["train"]["batch_size"] == 16 and result["config"]["data"]["mean"] is not None
    assert result["command"].startswith("selfsup bench demo data.source=digits-plain")
    assert result["machine"]["torch"] == torch.__version__ and result["machine"]["cpu_model"]


def test_bench_json_file_is_the_result(demo_bench):
    result, path = demo_bench
    assert json.loads(path.read_text()) == json.loads(json.dumps(result))


def test_flop_count_of_a_linear_layer_is_analytic():
    batch, n_in, n_out = 8, 64, 32
    layer = torch.nn.Linear(n_in, n_out)
    x = torch.randn(batch, n_in, requires_grad=True)
    forward = 2 * batch * n_in * n_out
    assert count_flops(lambda: layer(x)) == forward
    # Backward: one matmul for the input's gradient, one for the weight's.
    assert count_flops(lambda: layer(x).sum().backward()) == 3 * forward


def test_matmul_peaks_are_measured(peaks):
    for precision in ("fp32", "bf16"):
        assert peaks["peak_flops_per_s"][precision] > 0
        assert peaks["peak_matmul_size"][precision] >= 256


def test_cli_bench_prints_a_table_and_writes_json(tmp_path, peaks, monkeypatch, capsys):
    monkeypatch.setattr("selfsup.throughput.measure_peaks", lambda device: peaks)
    out = tmp_path / "b.json"
    assert main(["bench", "demo", *TINY, "--steps", "1", "--warmup", "0", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "images/s" in table and "MFU (" in table and "waiting for data" in table
    assert json.loads(out.read_text())["steps"] == 1


def test_bf16_run_is_measured_against_the_bf16_peak(peaks):
    result = selfsup.bench("demo", [*TINY, "train.precision=bf16"], steps=1, warmup=0, peaks=peaks)
    assert result["settings"]["precision"] == result["mfu_precision"] == "bf16"
    assert result["mfu"] == pytest.approx(result["achieved_flops_per_s"] / peaks["peak_flops_per_s"]["bf16"])
    assert result["flops_per_step"] > 0 and torch.isfinite(torch.tensor(result["loss"]))


def test_compile_unavailable_warns_and_trains_eagerly(monkeypatch, peaks):
    def no_compiler(*args, **kwargs):
        raise RuntimeError("no compiler on this machine")

    monkeypatch.setattr(torch, "compile", no_compiler)
    with pytest.warns(UserWarning, match="train.compile"):
        result = selfsup.bench("demo", [*TINY, "train.compile=true"], steps=1, warmup=0, peaks=peaks)
    assert result["settings"]["compile"] is True and result["settings"]["compiled"] is False
    assert result["images_per_s"] > 0


def test_compile_failing_at_first_call_falls_back_to_eager(monkeypatch):
    def compiles_lazily_then_fails(fn, *args, **kwargs):
        def compiled(*a, **kw):
            raise RuntimeError("backend compiler failed")
        return compiled

    monkeypatch.setattr(torch, "compile", compiles_lazily_then_fails)
    trainer = bench_trainer(build_config("demo", [*TINY, "train.compile=true", "train.max_steps=2"]), DistInfo())
    assert trainer.model.compiled
    batch = next(iter(trainer.data.loader))
    with pytest.warns(UserWarning, match="compiling the backbone failed"):
        loss = trainer.step([batch])["loss"]
    assert not trainer.model.compiled and torch.isfinite(torch.tensor(loss))
    trainer.step([batch])  # eager from now on, no second warning needed


def _losses(overrides: list[str], steps: int = 2, expect_compiled: bool = False) -> list[float]:
    cfg = build_config("demo", [*TINY, "train.precision=fp32", f"train.max_steps={steps}", *overrides])
    trainer = bench_trainer(cfg, DistInfo())
    batches = iter(trainer.data.loader)
    losses = [trainer.step([next(batches)])["loss"] for _ in range(steps)]
    assert trainer.model.compiled == expect_compiled
    return losses


def test_bf16_autocast_gives_the_same_losses_within_bf16_precision():
    # bf16 keeps 8 bits of mantissa (~0.4% per rounding); the loss is a long reduction of such values.
    assert _losses(["train.precision=bf16"]) == pytest.approx(_losses([]), rel=2e-2)


@pytest.mark.slow
def test_compiled_backbone_gives_the_same_losses_as_eager():
    """A real torch.compile (inductor on this machine's compiler), not the monkeypatched fallbacks above."""
    compiled = _losses(["train.compile=true"], expect_compiled=True)
    assert compiled == pytest.approx(_losses([]), abs=1e-4)


def test_channels_last_gives_the_same_losses_as_the_plain_path():
    # Step 1 compares the forward pass; step 2 also the backward and the update that preceded it.
    assert _losses(["train.channels_last=true"]) == pytest.approx(_losses(["train.channels_last=false"]), abs=1e-4)


@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_fused_optimizer_matches_foreach(name):
    def one_step(fused):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.LayerNorm(16), torch.nn.Linear(16, 4))
        optimizer = build_optimizer(model, OptimConfig(name=name, fused=fused), global_batch=256)
        model(torch.randn(5, 8)).square().mean().backward()
        optimizer.step()
        return optimizer, torch.cat([p.detach().flatten() for p in model.parameters()])

    fused_optimizer, fused_params = one_step(True)
    foreach_optimizer, foreach_params = one_step(False)
    auto_optimizer, _ = one_step(None)
    assert fused_optimizer.defaults["fused"] and foreach_optimizer.defaults["foreach"]
    assert auto_optimizer.defaults["foreach"]  # None on CPU: foreach (fused is the CUDA default)
    torch.testing.assert_close(fused_params, foreach_params, rtol=1e-6, atol=1e-6)
