"""A run from config to evaluated, exported backbone; the run directory layout of DESIGN.md."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import torch

from selfsup.config import Config, ConfigError, apply_overrides, load_config, save_config, validate
from selfsup.dist import barrier, setup_distributed

RESULTS_FILE = "results.json"


def log(message: str) -> None:
    print(f"[selfsup] {message}", file=sys.stderr, flush=True)


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def environment(dist_info, precision: str) -> dict:
    import timm
    import torchvision

    from selfsup import __version__

    return {
        "selfsup": __version__, "python": platform.python_version(), "torch": torch.__version__,
        "torchvision": torchvision.__version__, "timm": timm.__version__, "platform": platform.platform(),
        "processor": platform.processor(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "world_size": dist_info.world_size, "device": str(dist_info.device), "precision": precision,
        "git_commit": _git_commit(), "command": sys.argv, "started": datetime.now().isoformat(timespec="seconds"),
    }


def _run_dir(cfg: Config, dist_info) -> Path:
    name = cfg.name or f"{cfg.method}-{cfg.backbone.name.replace(':', '-')}-{datetime.now():%Y%m%d-%H%M%S}"
    if dist_info.world_size > 1:
        box = [name]
        torch.distributed.broadcast_object_list(box, src=0)
        name = box[0]
    return Path(cfg.runs_dir) / name


def normalization(cfg: Config, source) -> tuple[list[float], list[float]]:
    if cfg.data.mean is not None and cfg.data.std is not None:
        return cfg.data.mean, cfg.data.std
    if hasattr(source, "mean") and hasattr(source, "std"):
        return [float(v) for v in source.mean], [float(v) for v in source.std]
    from selfsup.data import channel_stats

    mean, std = channel_stats(source)
    return [float(v) for v in mean], [float(v) for v in std]


def build_run_method(cfg: Config, train_source):
    """The seeded backbone and method of a run, checked against its data, as ``train`` and ``bench`` build them.

    ``data.hflip`` (None: the data's own ``flips_preserve_labels``, True when it does not say) turns horizontal
    flips off in every view of the method."""
    from selfsup.backbones import build_backbone
    from selfsup.engine.trainer import seed_everything
    from selfsup.methods import build_method
    from selfsup.views.spec import without_flips

    seed_everything(cfg.seed)
    backbone = build_backbone(cfg.backbone.name, cfg.data.channels, **cfg.backbone.options)
    method = build_method(cfg.method, backbone, cfg.method_options)
    if getattr(method, "needs_labels", False) and train_source.labels is None:
        raise ConfigError(f"config key 'method': '{cfg.method}' is supervised and needs labels, but "
                          f"{cfg.data.source} has none: use class sub-folders or an npz with labels, or a "
                          "self-supervised method")
    flips = cfg.data.hflip if cfg.data.hflip is not None else getattr(train_source, "flips_preserve_labels", True)
    if not flips:
        method.views = without_flips(method.views)
    return method


def train(cfg: Config, resume: str | Path | None = None, resume_overrides: list[str] | None = None) -> Path:
    """Pretrain, export the backbone and (when labels exist) evaluate; returns the run directory."""
    from selfsup.data import open_data, write_bad_files
    from selfsup.engine.trainer import Trainer
    from selfsup.export import save_backbone
    from selfsup.methods import validate_method_options

    if resume is not None:
        run_dir = Path(resume)
        if not (run_dir / "config.yaml").exists():
            raise FileNotFoundError(f"{run_dir} is not a run directory (no config.yaml)")
        cfg = load_config(run_dir / "config.yaml")
        if resume_overrides:
            cfg = validate(apply_overrides(cfg.model_dump(mode="json"), resume_overrides), where="resume overrides")
    validate_method_options(cfg.method, cfg.method_options)  # fail at start, before any data is read
    dist_info = setup_distributed()
    if cfg.train.deterministic:
        torch.use_deterministic_algorithms(True)
    run_dir = Path(resume) if resume is not None else _run_dir(cfg, dist_info)
    if resume is None and (run_dir / "config.yaml").exists():
        raise FileExistsError(f"run directory {run_dir} already holds a run: continue it with "
                              f"`selfsup train --resume {run_dir}`, or choose another name=...")
    if dist_info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    barrier()

    splits = open_data(cfg.data.source, channels=cfg.data.channels, max_bad_fraction=cfg.data.max_bad_fraction,
                       seed=cfg.seed, holdout_fraction=cfg.data.holdout_fraction)
    bad = list(splits.train.bad_files) + (list(splits.test.bad_files) if splits.test is not None else [])
    if bad and dist_info.is_main:
        write_bad_files(bad, run_dir / "bad_files.txt")
        log(f"skipped {len(bad)} undecodable file(s), listed in {run_dir / 'bad_files.txt'}")
    mean, std = normalization(cfg, splits.train)
    cfg.data.mean, cfg.data.std = mean, std

    method = build_run_method(cfg, splits.train)
    trainer = Trainer(cfg, run_dir, method, splits.train, mean, std, dist_info, log)
    if resume is not None and (run_dir / "checkpoints" / "last.pt").exists():
        trainer.load_checkpoint(run_dir)
        log(f"resumed {run_dir} at step {trainer.state.step} (epoch {trainer.state.epoch})")
    if dist_info.is_main:
        save_config(cfg, run_dir / "config.yaml")
        (run_dir / "env.json").write_text(json.dumps(environment(dist_info, trainer.precision), indent=2))
        log(f"run directory {run_dir}: {len(splits.train)} training images, {cfg.method} on {cfg.backbone.name}, "
            f"batch {cfg.train.batch_size}, {trainer.precision}, {dist_info.world_size} process(es) on {dist_info.device}")
    reason = trainer.fit()
    if reason == "preempted":
        return run_dir
    if dist_info.is_main:
        summary = {"steps": trainer.state.step, "epochs": trainer.state.step / trainer.steps_per_epoch,
                   "wall_time_s": round(trainer.state.elapsed, 2),
                   "images_per_s": round(trainer.state.images_seen / max(trainer.state.elapsed, 1e-9), 1)}
        (run_dir / "train_summary.json").write_text(json.dumps(summary, indent=2))
        save_backbone(method.backbone, run_dir, image_size=cfg.data.image_size, mean=mean, std=std,
                      extra={"method": cfg.method, "run": str(run_dir)})
        log(f"trained {summary['steps']} steps ({summary['epochs']:.2f} epochs) in {summary['wall_time_s']:.0f} s, "
            f"{summary['images_per_s']:.0f} images/s; backbone saved to {run_dir / 'backbone.safetensors'}")
        from selfsup.artifacts import save_method_pictures  # methods with a `reconstruct` hook (MAE, SimMIM)

        save_method_pictures(method, splits.test or splits.train, run_dir, cfg.data.image_size, mean, std, log)
        if cfg.eval.enabled and splits.test is not None and splits.train.labels is not None:
            evaluate_run(run_dir, splits=splits)
        if cfg.eval.report:
            write_run_report(run_dir, splits)
    barrier()
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return run_dir


def write_run_report(run_dir: Path, splits=None) -> Path | None:
    """``report.html`` for a finished run; a failure is logged as a warning and never fails the run."""
    try:
        from selfsup.report import write_report

        return write_report(run_dir, splits=splits, log=log)
    except Exception as error:  # the backbone and results are already saved: a report bug must not lose them
        log(f"warning: could not write the run report: {type(error).__name__}: {error} "
            f"(retry with `selfsup report {run_dir}`)")
        return None


def evaluate_run(run_dir: str | Path, data: str | None = None, splits=None, cfg: Config | None = None) -> dict:
    """Evaluate a run's exported backbone (and the baselines) and write ``results.json``.

    ``cfg`` (default: the run's config.yaml) gives the eval settings, e.g. with ``eval.*`` overrides applied."""
    from selfsup.data import open_data
    from selfsup.eval.evaluate import evaluate_and_record
    from selfsup.eval.protocol import ProtocolSettings
    from selfsup.export import load_backbone

    run_dir = Path(run_dir)
    cfg = cfg or load_config(run_dir / "config.yaml")
    backbone = load_backbone(run_dir)
    meta = backbone.meta
    if splits is None:
        splits = open_data(data or cfg.data.source, channels=meta["spec"]["in_channels"],
                           max_bad_fraction=cfg.data.max_bad_fraction, seed=cfg.seed,
                           holdout_fraction=cfg.data.holdout_fraction)
    summary_path = run_dir / "train_summary.json"
    run_info = {"method": cfg.method, "backbone": cfg.backbone.name, "seed": cfg.seed,
                **(json.loads(summary_path.read_text()) if summary_path.exists() else {})}
    return evaluate_and_record(
        backbone, splits, run_dir, settings=ProtocolSettings.from_eval_config(cfg.eval, cfg.seed),
        image_size=meta["image_size"], mean=meta["normalization"]["mean"], std=meta["normalization"]["std"],
        data_name=data or cfg.data.source, run_info=run_info, baselines=cfg.eval.baselines,
        batch_size=cfg.eval.batch_size, log=log)
