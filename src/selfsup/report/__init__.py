"""The run report: ``report.html``, one self-contained page (inline SVG plots, inline PNG images, no scripts).

Sections: the run at a glance; loss and learning-rate curves; collapse-monitor, probe and method metric
curves; the final metrics with baselines; a 2-D map of test features coloured by label (PCA; t-SNE on request;
UMAP when installed); a nearest-neighbour retrieval grid; for an image-text run (its two towers saved), zero-shot
classification (prompts, top-1, confusion matrix, misclassified images) and image-text retrieval (images and
the captions they retrieve, captions and the images they retrieve); the augmented views as the method saw them;
images the run saved (MAE reconstructions); and ViT class-token attention maps. A section whose inputs are missing
shows "not available: <reason>".

Written at the end of every run (``eval.report``) and by ``selfsup report RUN_DIR``.
"""
from selfsup.report.page import REPORT_FILE, write_report
from selfsup.report.projection import PROJECTIONS

__all__ = ["PROJECTIONS", "REPORT_FILE", "write_report"]
