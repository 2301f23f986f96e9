"""selfsup: self-supervised pre-training of visual backbones.

    import selfsup
    run_dir = selfsup.train("demo", ["train.budget=60s"])
    backbone = selfsup.load_backbone(run_dir)
    result = selfsup.bench("demo", steps=20)   # images/s, step-time split, memory, MFU
"""
__version__ = "0.1.0"

from selfsup.api import bench, evaluate, load_backbone, train  # noqa: E402

__all__ = ["train", "evaluate", "bench", "load_backbone", "__version__"]
