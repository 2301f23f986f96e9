"""``train.precision`` choices (selfsup.engine.precision, selfsup.cpu): what ``auto`` picks on each kind of CPU
and on CUDA (all mocked, so every machine checks every branch), the ``SELFSUP_CPU_BF16`` override, and what
``cpu_flags`` / ``cpu_model`` record."""
import pytest
import torch

import selfsup.cpu
from selfsup.cpu import CPU_BF16_ENV, cpu_flags, cpu_has_fast_bf16, cpu_model
from selfsup.engine.precision import resolve_precision

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.fixture
def cpu_kind(monkeypatch):
    """Set what the detection finds: ``cpu_kind(True)`` a CPU with AVX512-BF16 / AMX, ``cpu_kind(False)`` AVX2 only."""
    monkeypatch.delenv(CPU_BF16_ENV, raising=False)

    def set_kind(fast: bool) -> None:
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: fast)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    return set_kind


@pytest.mark.parametrize("fast, picked", [(True, "bf16"), (False, "fp32")])
def test_auto_on_cpu_follows_the_bf16_detection(cpu_kind, fast, picked):
    cpu_kind(fast)
    assert cpu_has_fast_bf16() is fast
    assert resolve_precision("auto", CPU) == picked


def test_amx_alone_counts_as_fast_bf16(monkeypatch):
    monkeypatch.delenv(CPU_BF16_ENV, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert resolve_precision("auto", CPU) == "bf16"


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("requested", ["fp32", "bf16"])
def test_explicit_precision_is_kept_on_every_cpu_and_on_cuda(cpu_kind, monkeypatch, fast, requested):
    cpu_kind(fast)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: not fast)
    assert resolve_precision(requested, CPU) == requested
    assert resolve_precision(requested, CUDA) == requested


@pytest.mark.parametrize("supported, picked", [(True, "bf16"), (False, "fp32")])
def test_auto_on_cuda_follows_the_device_not_the_cpu(cpu_kind, monkeypatch, supported, picked):
    cpu_kind(not supported)  # the CPU's answer must not matter on CUDA
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: supported)
    assert resolve_precision("auto", CUDA) == picked


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("value, picked", [("1", "bf16"), ("0", "fp32"), (" 1 ", "bf16")])
def test_env_override_wins_over_the_detection(cpu_kind, monkeypatch, fast, value, picked):
    cpu_kind(fast)
    monkeypatch.setenv(CPU_BF16_ENV, value)
    assert resolve_precision("auto", CPU) == picked
    assert resolve_precision("fp32", CPU) == "fp32"  # explicit choices stay explicit


def test_empty_env_override_means_detect(cpu_kind, monkeypatch):
    cpu_kind(False)
    monkeypatch.setenv(CPU_BF16_ENV, "")
    assert resolve_precision("auto", CPU) == "fp32"


@pytest.mark.parametrize("value", ["yes", "true", "2", "bf16"])
def test_bad_env_override_names_the_variable(monkeypatch, value):
    monkeypatch.setenv(CPU_BF16_ENV, value)
    with pytest.raises(ValueError, match=f"{CPU_BF16_ENV}='{value}'.*1.*0"):
        resolve_precision("auto", CPU)


def test_override_reaches_the_trainer(monkeypatch):
    """What ``SELFSUP_CPU_BF16=0 make test`` relies on: the run's precision follows the variable."""
    from selfsup.config import build_config
    from selfsup.dist import DistInfo
    from selfsup.throughput import bench_trainer

    tiny = ["data.source=digits-plain", "data.image_size=16", "data.num_workers=0", "train.batch_size=8",
            "train.max_steps=1", "train.budget=null", "train.progress=false", "eval.enabled=false",
            "backbone.options={widths: [8, 8, 8, 8], stem_stride: 1}"]
    for value, picked in (("0", "fp32"), ("1", "bf16")):
        monkeypatch.setenv(CPU_BF16_ENV, value)
        assert bench_trainer(build_config("demo", tiny), DistInfo()).precision == picked


CPUINFO = """processor\t: 0
model name\t: Some CPU
flags\t\t: fpu sse2 avx avx2 avx512f avx512_bf16 amx_tile
"""


def test_cpu_model_reads_cpuinfo_or_falls_back(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text(CPUINFO)
    assert cpu_model(info) == "Some CPU"
    assert cpu_model(tmp_path / "missing")  # platform's answer, never empty


def test_cpu_flags_read_cpuinfo_and_torch(tmp_path, monkeypatch):
    monkeypatch.delenv(CPU_BF16_ENV, raising=False)
    info = tmp_path / "cpuinfo"
    info.write_text(CPUINFO)
    flags = cpu_flags(info)
    assert flags["avx2"] and flags["avx512_bf16"] and flags["amx_tile"] and not flags["amx_bf16"]
    assert flags["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert flags["fast_bf16"] == selfsup.cpu._detected_fast_bf16()
    assert CPU_BF16_ENV not in flags


def test_cpu_flags_without_cpuinfo_and_with_the_override(tmp_path, monkeypatch):
    monkeypatch.setenv(CPU_BF16_ENV, "0")
    flags = cpu_flags(tmp_path / "missing")
    assert "avx2" not in flags and flags["torch_cpu_capability"]  # no /proc/cpuinfo: only what torch says
    assert flags["fast_bf16"] is False and flags[CPU_BF16_ENV] == "0"
    monkeypatch.setenv(CPU_BF16_ENV, "maybe")
    assert cpu_flags(tmp_path / "missing")["fast_bf16"] is None  # the record never raises


def test_an_isa_limit_is_recorded_and_holds_auto_to_fp32_below_bf16(monkeypatch):
    monkeypatch.delenv(CPU_BF16_ENV, raising=False)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx2")  # an AVX-512 machine run as an AVX2-only one
    assert cpu_has_fast_bf16() is False
    assert cpu_flags()["ONEDNN_MAX_CPU_ISA"] == "avx2" and "ATEN_CPU_CAPABILITY" not in cpu_flags()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "ALL")  # no limit: the CPU decides
    assert cpu_has_fast_bf16() == (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def test_env_json_records_the_cpu_model_and_flags():
    from selfsup.dist import DistInfo
    from selfsup.runs import environment

    env = environment(DistInfo(), "fp32")
    assert env["cpu_model"] == cpu_model() and env["cpu_flags"]["torch_cpu_capability"]


def test_bench_json_records_the_cpu_flags():
    from selfsup.dist import DistInfo
    from selfsup.throughput import machine_info

    assert machine_info(DistInfo(), "fp32")["cpu_flags"]["torch_cpu_capability"]
