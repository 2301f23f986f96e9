"""``selfsup train``: a run from config to trained, exported, evaluated backbone and its report.

The run directory's layout and the loading of a run's parts live in :mod:`selfsup.runs`; the training loop in
:mod:`selfsup.engine`; evaluation in :mod:`selfsup.eval`; the report in :mod:`selfsup.report`.
"""
from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import torch

from selfsup import runs
from selfsup.artifacts import save_method_pictures
from selfsup.config import Config, apply_overrides, save_config, validate
from selfsup.data import DataSplits, write_bad_files
from selfsup.data.stats import save_stats
from selfsup.dist import DistInfo, barrier, setup_distributed
from selfsup.engine.extend import extension_checkpoint, relative_overrides
from selfsup.engine.sharding import full_method_state
from selfsup.engine.trainer import build_trainer
from selfsup.eval.evaluate import evaluate_run
from selfsup.export import save_backbone
from selfsup.export.towers_io import save_towers
from selfsup.methods import validate_method_options
from selfsup.report import write_report
from selfsup.runs import log


def _run_dir(cfg: Config, dist_info: DistInfo) -> Path:
    name = cfg.name or f"{cfg.method}-{cfg.backbone.name.replace(':', '-')}-{datetime.now():%Y%m%d-%H%M%S}"
    if dist_info.world_size > 1:
        box = [name]
        torch.distributed.broadcast_object_list(box, src=0)
        name = box[0]
    return Path(cfg.runs_dir) / name


def _resumed_config(run_dir: Path, overrides: list[str] | None) -> Config:
    """The run's config with the overrides applied (``train.budget=+10m``: relative to the run's own)."""
    cfg = runs.load_run_config(run_dir)
    if overrides:
        overrides = relative_overrides(cfg, overrides)
        cfg = validate(apply_overrides(cfg.model_dump(mode="json"), overrides), where="resume overrides")
    return cfg


def _make_run_dir(cfg: Config, resume: Path | None, dist_info: DistInfo) -> Path:
    run_dir = resume if resume is not None else _run_dir(cfg, dist_info)
    if resume is None and runs.is_run_dir(run_dir):
        raise FileExistsError(f"run directory {run_dir} already holds a run: continue it with "
                              f"`selfsup train --resume {run_dir}`, or choose another name=...")
    if dist_info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    barrier()
    return run_dir


def _open_training_data(cfg: Config, run_dir: Path, dist_info: DistInfo) -> DataSplits:
    splits = runs.open_run_data(cfg)
    bad = list(splits.train.bad_files) + (list(splits.test.bad_files) if splits.test is not None else [])
    if bad and dist_info.is_main:
        write_bad_files(bad, run_dir / runs.BAD_FILES)
        log(f"skipped {len(bad)} undecodable file(s), listed in {run_dir / runs.BAD_FILES}")
    stats = getattr(splits.train, "stats", None)
    if stats is not None:  # raw data: the window and normalisation of this run, for its eval, report, resume
        if dist_info.is_main:
            save_stats(stats, run_dir / runs.DATA_STATS_FILE)
        cfg.data.stats = str(run_dir / runs.DATA_STATS_FILE)
    return splits


def train(cfg: Config | None, resume: str | Path | None = None, resume_overrides: list[str] | None = None) -> Path:
    """Pretrain, export the backbone and (when labels exist) evaluate; returns the run directory."""
    resume = Path(resume) if resume is not None else None
    if resume is not None:
        cfg = _resumed_config(resume, resume_overrides)
    validate_method_options(cfg.method, cfg.method_options)  # fail at start, before any data is read
    dist_info = setup_distributed()
    if cfg.train.deterministic:
        torch.use_deterministic_algorithms(True)
    run_dir = _make_run_dir(cfg, resume, dist_info)
    splits = _open_training_data(cfg, run_dir, dist_info)
    preprocess = runs.run_preprocess(cfg, splits.train)
    cfg.data.mean, cfg.data.std = list(preprocess.mean), list(preprocess.std)  # config.yaml: fully resolved

    method = runs.build_run_method(cfg, splits.train)
    if cfg.backbone.weights and dist_info.is_main and not (run_dir / runs.START_BACKBONE_DIR).exists():
        # the backbone at step 0, evaluated beside the trained one: were the features kept?
        save_backbone(method.backbone, run_dir / runs.START_BACKBONE_DIR, image_size=preprocess.image_size,
                      mean=list(preprocess.mean), std=list(preprocess.std), extra={"weights": cfg.backbone.weights})
    trainer = build_trainer(cfg, run_dir, method, splits.train, preprocess, dist_info, log)
    if resume is not None and runs.checkpoint_path(run_dir).exists():
        extension = extension_checkpoint(runs.load_run_config(run_dir), cfg, run_dir)
        trainer.load_checkpoint(extension or run_dir)
        log(f"{'extending' if extension else 'resumed'} {run_dir} at step {trainer.state.step} (epoch "
            f"{trainer.state.epoch}){', from the state before its final decay' if extension else ''}")
    if dist_info.is_main:
        save_config(cfg, run_dir / runs.CONFIG_FILE)
        (run_dir / runs.ENV_FILE).write_text(json.dumps(runs.environment(dist_info, trainer.precision), indent=2))
        log(f"run directory {run_dir}: {len(splits.train)} training images, {cfg.method} on {cfg.backbone.name}, "
            f"batch {cfg.train.batch_size}, {trainer.precision}, {dist_info.world_size} process(es) on {dist_info.device}")
    if trainer.fit() == "preempted":
        return run_dir
    if trainer.model.sharded:  # evaluation, pictures and export read an unsharded copy of the trained method
        method = _unsharded_copy(cfg, trainer, splits, dist_info)
    if dist_info.is_main:
        _finish(cfg, run_dir, trainer, method, splits, preprocess)
    barrier()
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return run_dir


def _unsharded_copy(cfg: Config, trainer, splits: DataSplits, dist_info: DistInfo):
    """The trained method of a sharded run as one ordinary module on the main rank (None elsewhere), built as
    the run built it and loaded with the gathered state; every rank takes part in the gathering."""
    state = full_method_state(trainer.method)
    if not dist_info.is_main:
        return None
    method = runs.build_run_method(cfg, splits.train)
    method.load_state_dict(state)
    return method


def _finish(cfg: Config, run_dir: Path, trainer, method, splits: DataSplits, preprocess) -> None:
    """After training, on the main process: the summary, the backbone, the method's pictures, the evaluation
    (when the data has labels and a held-out split) and the report."""
    state = trainer.state
    summary = {"steps": state.step, "epochs": state.step / trainer.steps_per_epoch,
               "wall_time_s": round(state.elapsed, 2),
               "images_per_s": round(state.images_seen / max(state.elapsed, 1e-9), 1)}
    (run_dir / runs.SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
    save_backbone(method.backbone, run_dir, image_size=preprocess.image_size, mean=list(preprocess.mean),
                  std=list(preprocess.std), extra={"method": cfg.method, "run": str(run_dir)})
    towers = method.image_text_towers()
    if towers is not None:  # zero-shot evaluation and image-text retrieval read both towers
        save_towers(towers, run_dir, image_size=preprocess.image_size, mean=list(preprocess.mean),
                    std=list(preprocess.std), extra={"method": cfg.method, "run": str(run_dir)})
    log(f"trained {summary['steps']} steps ({summary['epochs']:.2f} epochs) in {summary['wall_time_s']:.0f} s, "
        f"{summary['images_per_s']:.0f} images/s; backbone saved to {run_dir / 'backbone.safetensors'}")
    save_method_pictures(method, splits.test or splits.train, run_dir, preprocess, log)
    if cfg.eval.enabled and splits.test is not None and splits.train.labels is not None:
        evaluate_run(run_dir, splits=splits)
    if cfg.eval.report:
        write_run_report(run_dir, splits)


def write_run_report(run_dir: Path, splits=None) -> Path | None:
    """``report.html`` for a finished run; a failure is logged as a warning and never fails the run."""
    try:
        return write_report(run_dir, splits=splits, log=log)
    except Exception as error:  # the backbone and results are already saved: a report bug must not lose them
        log(f"warning: could not write the run report: {type(error).__name__}: {error} "
            f"(retry with `selfsup report {run_dir}`)")
        return None

