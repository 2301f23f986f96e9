"""The training loop: plain PyTorch, one process per device.

The engine owns devices, precision, distributed wrapping, optimizer and schedule, clipping, accumulation,
checkpoints, logs and the collapse monitor; the method owns its views, heads and loss (DESIGN.md).
"""
from __future__ import annotations

import itertools
import json
import math
import random
import signal
import time
import warnings
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from selfsup.config import Config, parse_duration
from selfsup.engine import checkpoint as ckpt
from selfsup.dist import all_reduce_max, all_reduce_mean, barrier
from selfsup.views.dataset import EpochBatchSampler, ViewCollate, ViewDataset, fixed_image_size
from selfsup.engine.optim import base_lr, build_optimizer, set_lr
from selfsup.schedules import warmup_cosine
from selfsup.engine.precision import autocast, resolve_precision
from selfsup.eval.diagnostics import CollapseMonitor
from selfsup.views.device import DeviceViews, seconds_per_batch


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class LoopState:
    step: int = 0  # optimizer steps taken
    epoch: int = 0
    batch_in_epoch: int = 0  # micro-batches of this epoch already consumed
    elapsed: float = 0.0  # seconds of training so far, over all segments of a resumed run
    images_seen: int = 0


class StopFlag:
    """SIGTERM / SIGUSR1 ask the loop to checkpoint at the next step boundary and exit cleanly."""

    def __init__(self):
        self.requested = False
        self._previous = {}

    def install(self):
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. a notebook worker): no signal handling
                pass
        return self

    def _handle(self, signum, frame):
        self.requested = True

    def uninstall(self):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def compile_backbone(backbone: torch.nn.Module) -> bool:
    """``train.compile``: compile the backbone in place (its state-dict keys, hence checkpoints and exports, stay
    as they are); False, with a warning, where torch.compile is unavailable on this machine."""
    try:
        backbone.compile()
    except Exception as error:
        warnings.warn(f"train.compile: torch.compile failed ({type(error).__name__}: {error}); training uncompiled",
                      stacklevel=2)
        return False
    return True


def _worker_init(worker_id: int) -> None:
    # Views draw from per-sample generators; keep stray global RNG use in workers distinct and seeded.
    info = torch.utils.data.get_worker_info()
    np.random.seed(info.seed % 2**32)
    random.seed(info.seed)


class Trainer:
    def __init__(self, cfg: Config, run_dir: Path, model: torch.nn.Module, train_source, mean, std, dist_info,
                 log):
        self.cfg, self.run_dir, self.method, self.dist, self.log = cfg, Path(run_dir), model, dist_info, log
        tc = cfg.train
        world = dist_info.world_size
        if tc.batch_size % (world * tc.accumulate):
            raise ValueError(f"train.batch_size={tc.batch_size} must be divisible by world size x train.accumulate "
                             f"= {world} x {tc.accumulate}")
        self.micro_batch = tc.batch_size // (world * tc.accumulate)
        self.device = dist_info.device
        self.precision = resolve_precision(tc.precision, self.device)
        self.channels_last = tc.channels_last and self.device.type in ("cpu", "cuda")
        if cfg.data.cache:  # an image folder decoded once into a memmap (selfsup.data.cache); the main rank builds it
            from selfsup.data.cache import open_cached

            train_source = open_cached(train_source, cfg.data.image_size, cfg.data.cache_size, cfg.runs_dir, log,
                                       build=dist_info.is_main, wait=barrier)
        self.sampler = EpochBatchSampler(len(train_source), self.micro_batch, cfg.seed, dist_info.rank, world)
        self.device_views = DeviceViews(model.views, cfg.data.image_size, mean, std)  # data.augment=device

        def make_loader(augment: str) -> DataLoader:
            dataset = ViewDataset(train_source, model.views, cfg.data.image_size, cfg.seed, augment)
            workers = cfg.data.num_workers
            return DataLoader(dataset, batch_sampler=self.sampler, num_workers=workers,
                              collate_fn=ViewCollate(mean, std), pin_memory=self.device.type == "cuda",
                              worker_init_fn=_worker_init if workers else None, persistent_workers=False,
                              prefetch_factor=4 if workers else None)

        self.augment = self._choose_augment(cfg.data.augment, train_source, make_loader)
        self.loader = make_loader(self.augment)
        self.method.to(self.device)
        if world > 1 and self._wants_sync_batchnorm(tc):
            self.method = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.method)
        if self.channels_last:
            self.method.to(memory_format=torch.channels_last)
        self.compiled = tc.compile and compile_backbone(self.method.backbone)  # True while it runs compiled
        self._compile_tried = False  # torch.compile is lazy: the first forward is where compilers fail
        self.optimizer = build_optimizer(self.method, cfg.optim, tc.batch_size)
        self.base_lr = base_lr(cfg.optim, tc.batch_size)
        self.batches_per_epoch = (len(train_source) // world) // self.micro_batch
        self.steps_per_epoch = max(1, self.batches_per_epoch // tc.accumulate)
        self.budget = parse_duration(tc.budget) if tc.budget else None
        if tc.epochs:
            self.total_steps = max(1, math.ceil(tc.epochs * self.batches_per_epoch / tc.accumulate))
        elif tc.max_steps:
            self.total_steps = tc.max_steps
        elif self.budget is None:
            raise ValueError("set how long to train: train.epochs, train.budget (e.g. 10m) or train.max_steps")
        else:
            self.total_steps = None
        self.max_steps = min(s for s in (self.total_steps, tc.max_steps) if s) if (self.total_steps or tc.max_steps) else None
        self.state = LoopState()
        self.monitor = CollapseMonitor()
        self.model = (DistributedDataParallel(self.method, device_ids=[self.device.index] if self.device.type == "cuda" else None)
                      if world > 1 else self.method)

    def _choose_augment(self, requested: str, source, make_loader) -> str:
        """Where views are made: ``data.augment`` as asked, "workers" where the images differ in size (raw
        images of a batch must stack), or for "auto" the path that delivers a batch's views faster, measured
        on a few batches of each (:func:`selfsup.views.device.seconds_per_batch`)."""
        if requested == "workers":
            return "workers"
        if fixed_image_size(source) is None:
            self.log(f"data.augment={requested}: the images of {source.name} differ in size, so batches of raw "
                     "images cannot be stacked; making views in the DataLoader workers instead (data.cache=true "
                     "decodes an image folder once to one size)")
            return "workers"
        if requested == "device":
            return "device"
        sync = (lambda: torch.cuda.synchronize(self.device)) if self.device.type == "cuda" else (lambda: None)
        rng = ckpt.rng_state()  # a DataLoader iterator draws its base seed from the global RNG: leave it as it was
        seconds = {}
        for mode in ("workers", "device"):
            loader = make_loader(mode)
            batches = itertools.chain.from_iterable(itertools.repeat(loader))  # epochs may be shorter than the test
            seconds[mode] = seconds_per_batch(batches, self._to_device, count=4, sync=sync)
            del batches  # stops this loader's workers before the next path is measured
        ckpt.set_rng_state(rng)
        # The mean over ranks, so that every rank makes the same choice.
        workers_s, device_s = all_reduce_mean(torch.tensor(list(seconds.values()), device=self.device)).tolist()
        choice = "device" if device_s < workers_s else "workers"
        self.log(f"data.augment=auto: {workers_s * 1e3:.1f} ms per batch with views made in the workers, "
                 f"{device_s * 1e3:.1f} ms with views made on {self.device} (data wait + augmentation, 4 batches "
                 f"each); using {choice}")
        return choice

    def _wants_sync_batchnorm(self, tc) -> bool:
        """train.sync_batchnorm, or (when unset) the method's own wish: methods whose loss reads batch
        statistics through BN (BYOL, SimSiam, SwAV, DINO with BN backbones) declare ``sync_batchnorm = True``."""
        if tc.sync_batchnorm is not None:
            return tc.sync_batchnorm
        return bool(getattr(self.method, "sync_batchnorm", False))

    # -- checkpoints -------------------------------------------------------------------------------------------
    def checkpoint_path(self) -> Path:
        return self.run_dir / "checkpoints" / "last.pt"

    def save_checkpoint(self) -> None:
        states = [None] * self.dist.world_size
        if self.dist.world_size > 1:
            dist.all_gather_object(states, ckpt.rng_state())
        else:
            states = [ckpt.rng_state()]
        if self.dist.is_main:
            ckpt.atomic_save({"method": self.method.state_dict(), "optimizer": self.optimizer.state_dict(),
                              "loop": asdict(self.state), "rng": states, "scaler": None,
                              "config": self.cfg.model_dump(mode="json")}, self.checkpoint_path())
        barrier()

    def load_checkpoint(self, path: Path) -> None:
        state = ckpt.load_checkpoint(path)
        self.method.load_state_dict(state["method"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.state = LoopState(**state["loop"])
        rng = state["rng"]
        if len(rng) != self.dist.world_size:
            warnings.warn(f"checkpoint has RNG states of {len(rng)} ranks, this run has {self.dist.world_size}: "
                          "the data order is unchanged but stochastic layers will differ from an uninterrupted run")
        ckpt.set_rng_state(rng[self.dist.rank % len(rng)])

    # -- the loop --------------------------------------------------------------------------------------------------
    def progress(self) -> float:
        if self.total_steps:
            return self.state.step / self.total_steps
        return self.state.elapsed / self.budget

    def _should_stop(self, stop: StopFlag, start_elapsed: float, segment_start: float) -> tuple[bool, bool]:
        """(stop signal received on any rank, schedule finished); every rank gets the same answer."""
        elapsed = start_elapsed + time.perf_counter() - segment_start
        flags = all_reduce_max(torch.tensor([float(stop.requested), elapsed], dtype=torch.float64))
        done = (self.max_steps is not None and self.state.step >= self.max_steps) or (
            self.budget is not None and float(flags[1]) >= self.budget)
        return bool(flags[0]), done

    def _to_device(self, batch: dict) -> dict:
        def move(value):  # views (or raw images and view parameters), labels, indices, masks (a dict of tensors)
            if isinstance(value, torch.Tensor):
                return value.to(self.device, non_blocking=True)
            if isinstance(value, dict):
                return {k: move(v) for k, v in value.items()}
            if isinstance(value, list):
                return [move(v) for v in value]
            return value

        batch = {key: move(value) for key, value in batch.items()}
        if "images" in batch:  # data.augment=device: the views are made here, a batch at a time
            batch = self.device_views(batch)
        if self.channels_last:
            batch["views"] = [v.contiguous(memory_format=torch.channels_last) for v in batch["views"]]
        return batch

    def fit(self) -> str:
        """Train until the schedule ends, the budget is spent or a stop signal arrives; return why it stopped."""
        tc = self.cfg.train
        stop = StopFlag().install()
        bar = self._progress_bar()
        segment_start = time.perf_counter()
        start_elapsed = self.state.elapsed
        last_log_time, last_log_images = segment_start, self.state.images_seen
        reason = "finished"
        metrics_file = open(self.run_dir / "metrics.jsonl", "a") if self.dist.is_main else None
        try:
            while True:
                preempted, done = self._should_stop(stop, start_elapsed, segment_start)
                if done or preempted:
                    reason = "preempted" if preempted and not done else "finished"
                    break
                self.sampler.set_epoch(self.state.epoch, self.state.batch_in_epoch)
                batches = iter(self.loader)
                while True:
                    micro_batches = []
                    for _ in range(tc.accumulate):
                        batch = next(batches, None)
                        if batch is None:
                            break
                        micro_batches.append(batch)
                    if len(micro_batches) < tc.accumulate:
                        break
                    out = self._step(micro_batches)
                    self.state.batch_in_epoch += tc.accumulate
                    self.state.images_seen += tc.batch_size
                    self.state.elapsed = start_elapsed + time.perf_counter() - segment_start
                    preempted, done = self._should_stop(stop, start_elapsed, segment_start)
                    # The last step is always logged, also when a budget or a signal ends the run.
                    if self.state.step % tc.log_every == 0 or self.state.step == self.max_steps or done or preempted:
                        now = time.perf_counter()
                        rate = (self.state.images_seen - last_log_images) / max(1e-9, now - last_log_time)
                        last_log_time, last_log_images = now, self.state.images_seen
                        record = {"step": self.state.step, "epoch": self.state.epoch, "loss": out["loss"],
                                  "lr": self.optimizer.param_groups[0]["lr"], "images_per_s": rate,
                                  "elapsed_s": self.state.elapsed, **out["metrics"]}
                        if metrics_file:
                            metrics_file.write(json.dumps(record) + "\n")
                            metrics_file.flush()
                        if bar is not None:
                            bar.set_postfix(loss=f"{out['loss']:.4f}", img_s=f"{rate:.0f}", epoch=self.state.epoch)
                    if bar is not None:
                        # A budget's last step ends a little after the budget: keep the bar within its total.
                        if self.total_steps:
                            bar.update(1)
                        else:
                            bar.n = min(round(self.state.elapsed, 1), bar.total)
                            bar.refresh()
                    if self.state.step % tc.checkpoint_every == 0:
                        self.save_checkpoint()
                    if done or preempted:
                        break
                if done or preempted:
                    reason = "preempted" if preempted and not done else "finished"
                    break
                self.state.epoch += 1
                self.state.batch_in_epoch = 0
            self.state.elapsed = start_elapsed + time.perf_counter() - segment_start
            self.save_checkpoint()
            if reason == "preempted":
                self.log(f"stop signal received: checkpoint saved at step {self.state.step}; resume with "
                         f"`selfsup train --resume {self.run_dir}`")
        finally:
            stop.uninstall()
            if bar is not None:
                bar.close()
            if metrics_file:
                metrics_file.close()
        return reason

    def _step(self, micro_batches: list[dict]) -> dict:
        tc = self.cfg.train
        self.method.train()
        if hasattr(self.method, "on_step"):
            self.method.on_step(self.progress())
        lr = self.base_lr * warmup_cosine(self.progress(), self.cfg.optim.warmup, self.cfg.optim.final_lr_fraction)
        set_lr(self.optimizer, lr)
        self.optimizer.zero_grad(set_to_none=True)
        total_loss = 0.0
        metrics: dict[str, float] = {}
        for i, batch in enumerate(micro_batches):
            batch = self._to_device(batch)
            sync = nullcontext() if (i == len(micro_batches) - 1 or not hasattr(self.model, "no_sync")) else self.model.no_sync()
            with sync:
                with autocast(self.precision, self.device):
                    out = self._forward(batch)
                loss = out.loss.float()
                finite = all_reduce_max(torch.tensor([0.0 if torch.isfinite(loss) else 1.0], device=loss.device))
                if finite.item() > 0:
                    raise TrainingDiverged(
                        f"loss is {loss.item()} at step {self.state.step + 1} (lr {lr:.3g}); stopped without "
                        f"saving, the last good checkpoint is {self.checkpoint_path()}. Try a lower optim.lr, "
                        "optim.grad_clip=1.0 or train.precision=fp32.")
                (loss / len(micro_batches)).backward()
            total_loss += loss.detach() / len(micro_batches)
            metrics.update(out.metrics)
        if self.cfg.optim.grad_clip:
            grad_norm = torch.nn.utils.clip_grad_norm_(self.method.parameters(), self.cfg.optim.grad_clip)
            metrics["grad_norm"] = float(grad_norm)
        if hasattr(self.method, "before_optimizer_step"):  # e.g. DINO/SwAV cancel head gradients early on
            self.method.before_optimizer_step(self.progress())
        self.optimizer.step()
        if hasattr(self.method, "after_optimizer_step"):  # e.g. EMA teachers, prototype normalisation
            self.method.after_optimizer_step(self.progress())
        self.state.step += 1
        if out.embeddings is not None and self.state.step % tc.monitor_every == 0:
            monitor_metrics, warning = self.monitor(out.embeddings)
            metrics.update(monitor_metrics)
            if warning and self.dist.is_main:
                self.log(f"warning at step {self.state.step}: {warning}")
        return {"loss": float(all_reduce_mean(total_loss)), "metrics": metrics}

    def _forward(self, batch: dict):
        if not self.compiled or self._compile_tried:
            return self.model(batch)
        self._compile_tried = True
        try:
            return self.model(batch)
        except Exception as error:  # a compiler that cannot run on this machine must not end the run
            self.method.backbone._compiled_call_impl = None  # undoes nn.Module.compile
            self.compiled = False
            reason = next(iter(str(error).strip().splitlines()), "")
            warnings.warn(f"train.compile: compiling the backbone failed ({type(error).__name__}: {reason}); "
                          "training uncompiled", stacklevel=2)
            return self.model(batch)

    def _progress_bar(self):
        if not (self.cfg.train.progress and self.dist.is_main):
            return None
        from tqdm.auto import tqdm

        if self.total_steps:
            total = self.max_steps or self.total_steps
            return tqdm(total=total, initial=self.state.step, unit="step", dynamic_ncols=True, desc="train")
        return tqdm(total=round(self.budget, 1), initial=round(self.state.elapsed, 1), unit="s",
                    dynamic_ncols=True, desc="train (budget)", bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f}s [{elapsed}<{remaining}{postfix}]")
