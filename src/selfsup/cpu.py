"""What this CPU is and can do: its model name, the flags bf16 speed depends on, and whether bf16 is fast.

``train.precision=auto`` picks bf16 on a CPU only where it has native bf16 matmul (AVX512-BF16 or AMX); on
others (AVX2 only, or oneDNN held below AVX512_CORE_BF16 by ``ONEDNN_MAX_CPU_ISA``) bf16 is emulated and much
slower than fp32. The environment variable ``SELFSUP_CPU_BF16`` (``1`` or ``0``) overrides the detection: to
choose for yourself, or to make one machine choose as the other kind of CPU would (``SELFSUP_CPU_BF16=0 make
test``). Runs (``env.json``), ``selfsup bench`` and the benchmarks record :func:`cpu_flags` beside
:func:`cpu_model`, since two CPUs of one model name can differ.

A leaf module: it imports nothing of selfsup.
"""
from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

CPU_BF16_ENV = "SELFSUP_CPU_BF16"
# The /proc/cpuinfo flags recorded with benchmarks and runs.
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
CPUINFO = "/proc/cpuinfo"
# Variables that make torch, oneDNN and MKL use fewer instructions than the CPU has (ATEN_CPU_CAPABILITY=avx2
# ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 runs an AVX-512 machine as an AVX2-only one would):
# recorded when set.
ISA_LIMIT_ENV = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")


# oneDNN instruction-set limits below AVX512_CORE_BF16: bf16 matmul is emulated under them, whatever the CPU has.
ONEDNN_ISAS_WITHOUT_BF16 = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI")


def _detected_fast_bf16() -> bool:
    if os.environ.get("ONEDNN_MAX_CPU_ISA", "").strip().upper() in ONEDNN_ISAS_WITHOUT_BF16:
        return False
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def cpu_has_fast_bf16() -> bool:
    """bf16 pays off on CPUs with native bf16 matmul (AVX512-BF16 or AMX); elsewhere it is emulated and slower.

    ``SELFSUP_CPU_BF16`` (``1`` or ``0``), when set and not empty, overrides the detection; another value
    raises ValueError naming the variable."""
    value = os.environ.get(CPU_BF16_ENV, "").strip()
    if value == "":
        return _detected_fast_bf16()
    if value in ("0", "1"):
        return value == "1"
    raise ValueError(f"{CPU_BF16_ENV}={os.environ[CPU_BF16_ENV]!r}: set it to 1 (this CPU has fast bf16: "
                     "train.precision=auto picks bf16) or 0 (it has not: auto picks fp32), or unset it to detect")


def _cpuinfo(cpuinfo: str | os.PathLike) -> str | None:
    try:
        return Path(cpuinfo).read_text()
    except OSError:
        return None


def cpu_model(cpuinfo: str | os.PathLike = CPUINFO) -> str:
    """The CPU's model name (``model name`` of /proc/cpuinfo where it exists, else what platform says)."""
    for line in (_cpuinfo(cpuinfo) or "").splitlines():
        if line.startswith("model name") and ":" in line:
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "cpu"


def cpu_flags(cpuinfo: str | os.PathLike = CPUINFO) -> dict:
    """The CPU features precision depends on, for the record beside the CPU model name.

    ``{flag: bool}`` for :data:`CPU_FLAGS` as ``cpuinfo`` lists them (left out where that file does not exist),
    ``torch_cpu_capability`` (the kernels torch dispatches to: ``DEFAULT``, ``AVX2``, ``AVX512``, ...),
    ``fast_bf16`` (what ``precision=auto`` goes by; None for a bad override), and the ``SELFSUP_CPU_BF16``
    override and the :data:`ISA_LIMIT_ENV` variables when they are set."""
    out: dict = {}
    text = _cpuinfo(cpuinfo)
    if text is not None:
        listed = next((line.split(":", 1)[1].split() for line in text.splitlines()
                       if line.startswith(("flags", "Features")) and ":" in line), [])
        out.update({flag: flag in listed for flag in CPU_FLAGS})
    out["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    try:
        out["fast_bf16"] = cpu_has_fast_bf16()
    except ValueError:  # a bad override is reported where the precision is chosen, not by the record
        out["fast_bf16"] = None
    for name in (CPU_BF16_ENV, *ISA_LIMIT_ENV):
        if name in os.environ:
            out[name] = os.environ[name]
    return out
