"""How long a run trains and where it stands: the length from ``train.epochs`` / ``train.max_steps`` /
``train.budget``, progress in [0, 1], the stop decision (once per step, the same on every rank) and the
progress bar.

Progress is what every schedule of :mod:`selfsup.schedules` reads (learning rate, EMA momentum, temperatures):
the fraction of the steps done, or under a wall-clock budget alone the fraction of the budget spent.
"""
from __future__ import annotations

import math
import signal
import time
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from selfsup.config import TrainConfig, parse_duration
from selfsup.dist import all_reduce_max
from selfsup.engine.checkpoint import LoopState

FINISHED, PREEMPTED = "finished", "preempted"


class StopSignal:
    """SIGTERM / SIGUSR1 ask the loop to checkpoint at the next step boundary and exit cleanly."""

    def __init__(self):
        self.requested = False
        self._previous = {}

    def install(self) -> StopSignal:
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. a notebook worker): no signal handling
                pass
        return self

    def _handle(self, signum, frame):
        self.requested = True

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class SegmentClock:
    """Seconds of training over all segments of a run: those before this one (from the checkpoint) plus this
    segment's so far."""

    def __init__(self, elapsed_before: float):
        self.elapsed_before, self.start = elapsed_before, time.perf_counter()

    def __call__(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.start


@dataclass(frozen=True)
class Schedule:
    total_steps: int | None  # the schedule's length in steps; None: the budget's wall clock is the schedule
    max_steps: int | None  # where the run stops by steps, if it does (the shorter of the length and train.max_steps)
    budget: float | None  # seconds of training, if a budget is set
    steps_per_epoch: int

    @classmethod
    def from_config(cls, tc: TrainConfig, batches_per_epoch: int) -> Schedule:
        """``batches_per_epoch``: the micro-batches one rank takes per epoch."""
        budget = parse_duration(tc.budget) if tc.budget else None
        if tc.epochs:
            total_steps = max(1, math.ceil(tc.epochs * batches_per_epoch / tc.accumulate))
        elif tc.max_steps:
            total_steps = tc.max_steps
        elif budget is None:
            raise ValueError("set how long to train: train.epochs, train.budget (e.g. 10m) or train.max_steps")
        else:
            total_steps = None
        limits = [steps for steps in (total_steps, tc.max_steps) if steps]
        return cls(total_steps, min(limits) if limits else None, budget,
                   steps_per_epoch=max(1, batches_per_epoch // tc.accumulate))

    def progress(self, state: LoopState) -> float:
        if self.total_steps:
            return state.step / self.total_steps
        return state.elapsed / self.budget

    def stop_reason(self, state: LoopState, stop: StopSignal) -> str | None:
        """None while the run goes on; FINISHED when its steps are taken or its budget is spent (on the slowest
        rank); PREEMPTED when a stop signal reached any rank first. One all-reduce: every rank gets the same
        answer, so all of them stop at the same step."""
        flags = all_reduce_max(torch.tensor([float(stop.requested), state.elapsed], dtype=torch.float64))
        finished = (self.max_steps is not None and state.step >= self.max_steps) or (
            self.budget is not None and float(flags[1]) >= self.budget)
        if finished:
            return FINISHED
        return PREEMPTED if flags[0] > 0 else None


class ProgressBar:
    """A tqdm bar over the steps, or under a budget alone over its seconds; nothing when ``enabled`` is false."""

    def __init__(self, schedule: Schedule, state: LoopState, enabled: bool):
        self.by_steps = bool(schedule.total_steps)
        self.bar = None
        if not enabled:
            return
        if self.by_steps:
            self.bar = tqdm(total=schedule.max_steps or schedule.total_steps, initial=state.step, unit="step",
                            dynamic_ncols=True, desc="train")
        else:
            self.bar = tqdm(total=round(schedule.budget, 1), initial=round(state.elapsed, 1), unit="s",
                            dynamic_ncols=True, desc="train (budget)",
                            bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f}s [{elapsed}<{remaining}{postfix}]")

    def show(self, loss: float, images_per_s: float, epoch: int) -> None:
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.4f}", img_s=f"{images_per_s:.0f}", epoch=epoch)

    def advance(self, state: LoopState) -> None:
        if self.bar is None:
            return
        if self.by_steps:
            self.bar.update(1)
        else:  # a budget's last step ends a little after the budget: keep the bar within its total
            self.bar.n = min(round(state.elapsed, 1), self.bar.total)
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
