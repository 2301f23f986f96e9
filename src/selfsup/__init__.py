"""selfsup: self-supervised pre-training of visual backbones.

    import selfsup
    run_dir = selfsup.train("demo", ["train.budget=60s"])
    backbone = selfsup.load_backbone(run_dir)
"""
__version__ = "0.1.0"

from selfsup.api import evaluate, load_backbone, train  # noqa: E402

__all__ = ["train", "evaluate", "load_backbone", "__version__"]
