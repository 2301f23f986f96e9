"""Evaluation: cached features, kNN, linear probe, diagnostics, baselines."""
