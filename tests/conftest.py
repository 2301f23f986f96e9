import os
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# Two cores: keep each test process from oversubscribing them.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED_DATA / "cifar10-jpeg.zip").exists():
        pytest.skip(f"{SHARED_DATA}/cifar10-jpeg.zip not present (benchmark data lives in ../shared/data)")
    return SHARED_DATA
