"""The training loop: plain PyTorch, one process per device.

The engine owns devices, precision, distributed wrapping, optimizer and schedule, clipping, accumulation,
checkpoints, logs and the collapse monitor; the method owns its views, heads and loss (docs/ARCHITECTURE.md). The pieces
are their own modules: the data (:mod:`~selfsup.engine.loader`), the placed model
(:mod:`~selfsup.engine.placement`), the schedule and stop decision (:mod:`~selfsup.engine.schedule`),
checkpoints (:mod:`~selfsup.engine.checkpoint`) and the metrics file (:mod:`~selfsup.engine.metrics`);
:func:`build_trainer` assembles them, for ``selfsup train`` and ``selfsup bench`` alike.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from selfsup.config import Config
from selfsup.dist import DistInfo, all_reduce_max, all_reduce_mean
from selfsup.engine.checkpoint import LoopState, load_training_state, save_training_state
from selfsup.engine.loader import TrainData, build_train_data, holds_images
from selfsup.engine.metrics import MetricsLog
from selfsup.engine.monitor import CollapseMonitor
from selfsup.engine.lr import LearningRate
from selfsup.engine.optim import build_optimizer
from selfsup.engine.placement import PlacedModel, uses_channels_last
from selfsup.engine.sharding import full_value
from selfsup.engine.precision import autocast, resolve_precision
from selfsup.engine.schedule import PREEMPTED, ProgressBar, Schedule, SegmentClock, StopSignal
from selfsup.engine.threads import TrainingThreads
from selfsup.methods import Method
from selfsup.runs import checkpoint_path, decay_checkpoint_path
from selfsup.views.preprocess import Preprocess


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class Trainer:
    """Trains a placed method on its data along a schedule; :func:`build_trainer` makes one."""

    def __init__(self, cfg: Config, run_dir: Path, data: TrainData, model: PlacedModel,
                 optimizer: torch.optim.Optimizer, schedule: Schedule, precision: str, dist_info: DistInfo,
                 log: Callable[[str], None]):
        self.cfg, self.run_dir, self.data, self.model = cfg, Path(run_dir), data, model
        self.optimizer, self.schedule, self.precision = optimizer, schedule, precision
        self.dist, self.device, self.log = dist_info, dist_info.device, log
        self.lr = LearningRate.from_config(cfg)
        self.state = LoopState()
        self.monitor = CollapseMonitor()

    @property
    def method(self) -> Method:
        return self.model.method

    @property
    def steps_per_epoch(self) -> int:
        return self.schedule.steps_per_epoch

    # -- checkpoints -----------------------------------------------------------------------------------------
    def save_checkpoint(self, path: Path | None = None) -> None:
        save_training_state(path or checkpoint_path(self.run_dir), self.method, self.optimizer, self.state,
                            self.cfg.model_dump(mode="json"), self.dist, sharded=self.model.sharded)

    def load_checkpoint(self, path: Path) -> None:
        """Continue from the checkpoint at ``path`` (a file, or a run directory)."""
        self.state = load_training_state(path, self.method, self.optimizer, self.dist, sharded=self.model.sharded)

    # -- the loop --------------------------------------------------------------------------------------------
    def training_threads(self) -> TrainingThreads:
        """The intra-op thread count of the steps from here on, as ``train.threads`` asks (a resumed run keeps
        the count it measured)."""
        tc = self.cfg.train
        return TrainingThreads(tc.threads, self.device, self.data.loader.num_workers, tc.deterministic,
                               self.state.threads, self.log if self.dist.is_main else lambda message: None)

    def fit(self) -> str:
        """Train until the schedule ends, the budget is spent or a stop signal arrives; returns why it stopped,
        "finished" or "preempted". A checkpoint is written every ``train.checkpoint_every`` steps and at the end."""
        tc = self.cfg.train
        stop, clock = StopSignal().install(), SegmentClock(self.state.elapsed)
        bar = ProgressBar(self.schedule, self.state, enabled=tc.progress and self.dist.is_main)
        metrics = MetricsLog(self.run_dir, self.state, enabled=self.dist.is_main)
        batches = self.data.step_batches(self.state)
        threads = self.training_threads()
        try:
            reason = self.schedule.stop_reason(self.state, stop)  # a finished run that is resumed stays finished
            while reason is None:
                before = self.schedule.progress(self.state)
                threads.start_step()
                out = self.step(next(batches))
                threads.end_step()
                self.state.threads = threads.measured
                self.state.images_seen += tc.batch_size
                self.state.elapsed = clock()
                if self.lr.enters_decay(before, self.schedule.progress(self.state)):  # where an extension resumes
                    self.save_checkpoint(decay_checkpoint_path(self.run_dir))
                reason = self.schedule.stop_reason(self.state, stop)
                # The last step is always logged, also when a budget or a signal ends the run.
                if self.state.step % tc.log_every == 0 or self.state.step == self.schedule.max_steps or reason:
                    record = metrics.record(self.state, out["loss"], self.optimizer.param_groups[0]["lr"],
                                            out["metrics"])
                    bar.show(record["loss"], record["images_per_s"], self.state.epoch)
                bar.advance(self.state)
                if self.state.step % tc.checkpoint_every == 0:
                    self.save_checkpoint()
            self.state.elapsed = clock()
            self.save_checkpoint()
        finally:
            batches.close()  # stops the DataLoader workers now
            threads.restore()
            stop.uninstall()
            bar.close()
            metrics.close()
        if reason == PREEMPTED:
            self.log(f"stop signal received: checkpoint saved at step {self.state.step}; resume with "
                     f"`selfsup train --resume {self.run_dir}`")
        return reason

    def step(self, micro_batches: list[dict]) -> dict:
        """One optimizer step, its gradients accumulated over ``micro_batches``; returns the loss (mean over
        micro-batches and ranks) and the step's metrics."""
        progress = self.schedule.progress(self.state)
        self.method.train()
        self.method.on_step(progress)
        lr = self.lr.apply(self.optimizer, progress)
        self.optimizer.zero_grad(set_to_none=True)
        total_loss = 0.0
        metrics: dict[str, float] = {}
        for i, batch in enumerate(micro_batches):
            batch = self.data.to_device(batch, progress)
            with self.model.no_sync(last_micro_batch=i == len(micro_batches) - 1):
                with autocast(self.precision, self.device):
                    out = self.model(batch)
                loss = out.loss.float()
                self._stop_if_diverged(loss, lr)
                (loss / len(micro_batches)).backward()
            total_loss += loss.detach() / len(micro_batches)
            metrics.update(out.metrics)
        if (size := self.data.view_size(progress)) is not None:
            metrics["view_size"] = size  # data.progressive_resize: the logged curve shows where the sizes grew
        if self.cfg.optim.grad_clip:
            grad_norm = torch.nn.utils.clip_grad_norm_(self.method.parameters(), self.cfg.optim.grad_clip)
            metrics["grad_norm"] = float(full_value(grad_norm))  # under FSDP, a norm over every rank's shards
        self.method.before_optimizer_step(progress)  # e.g. DINO/SwAV cancel head gradients early on
        self.optimizer.step()
        self.method.after_optimizer_step(progress)  # e.g. EMA teachers, prototype normalisation
        self.state.step += 1
        watched = out.embeddings is not None or out.targets is not None
        if watched and self.state.step % self.cfg.train.monitor_every == 0:
            monitor_metrics, warning = self.monitor(out.embeddings, out.targets)
            metrics.update(monitor_metrics)
            if warning and self.dist.is_main:
                self.log(f"warning at step {self.state.step}: {warning}")
        return {"loss": float(all_reduce_mean(total_loss)), "metrics": metrics}

    def _stop_if_diverged(self, loss: torch.Tensor, lr: float) -> None:
        """A NaN or infinite loss on any rank stops every rank, before its gradients touch the weights."""
        diverged = all_reduce_max(torch.tensor([0.0 if torch.isfinite(loss) else 1.0], device=loss.device))
        if diverged.item() > 0:
            raise TrainingDiverged(
                f"loss is {loss.item()} at step {self.state.step + 1} (lr {lr:.3g}); stopped without saving, the "
                f"last good checkpoint is {checkpoint_path(self.run_dir)}. Try a lower optim.lr, "
                "optim.grad_clip=1.0 or train.precision=fp32.")


def build_trainer(cfg: Config, run_dir: Path, method: Method, source, preprocess: Preprocess, dist_info: DistInfo,
                  log: Callable[[str], None]) -> Trainer:
    """The ready trainer of ``method`` on the data ``source``, as ``cfg`` sets it up (``selfsup train`` and
    ``selfsup bench`` both build theirs here). Nothing is written until :meth:`Trainer.fit`."""
    tc = cfg.train
    precision = resolve_precision(tc.precision, dist_info.device)
    # channels_last is a 4-D memory format: Conv3d weights and volume batches would be refused.
    channels_last = uses_channels_last(tc, dist_info.device) and holds_images(source)
    data = build_train_data(cfg, source, method.views, preprocess, dist_info, channels_last, log)
    model = PlacedModel(method, tc, dist_info, channels_last)
    lr = LearningRate.from_config(cfg)
    optimizer = build_optimizer(model.method, cfg.optim, tc.batch_size, backbone=method.backbone,
                                split_backbone=lr.freeze > 0)
    return Trainer(cfg, run_dir, data, model, optimizer, Schedule.from_config(tc, data.batches_per_epoch),
                   precision, dist_info, log)
