from pathlib import Path

import pytest
import torch

from selfsup.cpu import cpu_flags, cpu_has_fast_bf16, cpu_model
from selfsup.engine.precision import resolve_precision

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# Two cores, and tests mostly run tiny tensors: one thread avoids oversubscription and sync overhead.
torch.set_num_threads(1)


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED_DATA / "cifar10-jpeg.zip").exists():
        pytest.skip(f"{SHARED_DATA}/cifar10-jpeg.zip not present (benchmark data lives in ../shared/data)")
    return SHARED_DATA


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Which precision ``train.precision=auto`` picks on this CPU, so that every test log says it: tests that
    compare numbers pin fp32, the others run as a user's run would (SELFSUP_CPU_BF16=0|1 emulates the other kind)."""
    flags = ", ".join(name for name, present in cpu_flags().items() if present is True)
    chosen = resolve_precision("auto", torch.device("cpu"))
    terminalreporter.write_line(f"selfsup: precision=auto picks {chosen} on this CPU (fast bf16: "
                                f"{cpu_has_fast_bf16()}; {cpu_model()}; flags: {flags or 'none'})")
