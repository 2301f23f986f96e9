from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# Two cores, and tests mostly run tiny tensors: one thread avoids oversubscription and sync overhead.
torch.set_num_threads(1)


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED_DATA / "cifar10-jpeg.zip").exists():
        pytest.skip(f"{SHARED_DATA}/cifar10-jpeg.zip not present (benchmark data lives in ../shared/data)")
    return SHARED_DATA
