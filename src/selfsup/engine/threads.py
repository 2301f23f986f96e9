"""How many intra-op threads the training step uses: ``train.threads``.

On a CPU the DataLoader workers that make the views run beside the step's own intra-op threads, and where
they share too few cores both slow down: MoCo v2 on 2 Xeon cores with 2 workers spent 2-5.6 ms per BatchNorm
call against 0.1-0.4 ms without workers, and trained at 566 images/s with 2 intra-op threads against 989 with
1 (README, "Threads beside the workers"). Which count wins depends on the machine and the recipe (one thread
cost the demo 11% on an AMD EPYC), so ``auto`` measures it in the run's own first steps: a few warm-up
steps, then steps that alternate between all threads and all threads less one per worker, each timed from
asking for its batch to the end of its update. The faster count trains on, is logged and kept in the
checkpoint (a resumed run starts with it), and the two are timed again every ``RETIME_EVERY`` steps, since
other programs' load changes during a run. An integer sets the count; evaluation after training gets every
thread back.
"""
from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable

import torch

from selfsup.dist import all_reduce_mean

WARMUP_STEPS = 3  # the first steps allocate and fill the DataLoader's queue: not representative
ROUNDS = 4  # timed steps per candidate count, alternated so that drift in the data queue hits both alike
MEASURED_STEPS = WARMUP_STEPS + 2 * ROUNDS  # the steps auto takes to decide between its two counts
MIN_GAIN = 0.03  # fewer threads must be this much faster to be chosen: ties keep every thread
# Steps between re-timings: what other programs do to the cores changes during a run, and a count chosen under
# a burst of load should not hold for hours. The re-timing costs at most half its 2 x ROUNDS steps at the slower count.
RETIME_EVERY = 500


class TrainingThreads:
    """Sets the intra-op thread count around each training step, as ``train.threads`` asks.

    ``chosen`` is the count in use once decided (an integer request, a resumed run's saved choice, or the
    last timing's winner); None until ``auto`` first decides, and for good where it has nothing to choose."""

    def __init__(self, requested: int | str, device: torch.device, workers: int, deterministic: bool,
                 saved: int | None, log: Callable[[str], None], clock: Callable[[], float] = time.perf_counter):
        self.initial = torch.get_num_threads()
        self.auto = requested == "auto"
        self.workers, self.log, self.clock = workers, log, clock
        self.chosen: int | None = None
        self.candidates: list[int] = []
        self.times: dict[int, list[float]] = {}
        self._steps, self._start, self._current = 0, 0.0, None
        self._window = WARMUP_STEPS  # the step where the next timed window begins
        fewer = max(1, self.initial - workers)
        if requested != "auto":
            self.chosen = int(requested)
            return
        if device.type != "cpu" or fewer == self.initial:
            return  # nothing to choose: a GPU trains, or no worker shares the cores
        if "OMP_NUM_THREADS" in os.environ:
            log(f"train.threads=auto: OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} is set, so training keeps "
                f"its {self.initial} intra-op thread(s)")
            return
        if deterministic:
            log(f"train.threads=auto: train.deterministic=true keeps {self.initial} intra-op thread(s) (a count "
                "measured per run could differ between runs); set train.threads=N to choose one")
            return
        self.candidates = [fewer, self.initial]
        self.times = {count: [] for count in self.candidates}
        if saved is not None:  # the count a resumed run measured, until the next re-timing
            self.chosen, self._window = saved, RETIME_EVERY
            log(f"train.threads=auto: {saved} intra-op thread(s), as measured when this run started")

    @property
    def measured(self) -> int | None:
        """The count ``auto`` measured (or a resumed run's), what the checkpoint keeps; None otherwise."""
        return self.chosen if self.auto else None

    @property
    def steps_to_decide(self) -> int:
        """Steps still to take before ``auto`` first decides (0 once it has, or where nothing is timed)."""
        if not self.candidates or self.chosen is not None:
            return 0
        return max(0, self._window + 2 * ROUNDS - self._steps)

    def _timed_index(self) -> int | None:
        """This step's place in the current timed window, or None outside one."""
        index = self._steps - self._window
        return index if self.candidates and 0 <= index < 2 * ROUNDS else None

    def start_step(self) -> None:
        """Before a step asks for its batch: the count for this step."""
        index = self._timed_index()
        if index is not None:
            count = self.candidates[index % len(self.candidates)]
        else:
            count = self.chosen if self.chosen is not None else self.initial
        if count != self._current:
            torch.set_num_threads(count)
            self._current = count
        self._start = self.clock()

    def end_step(self) -> None:
        """After the step's update: records its time inside a timed window, and decides after its last step."""
        index = self._timed_index()
        if index is not None:
            self.times[self._current].append(self.clock() - self._start)
        self._steps += 1
        if index == 2 * ROUNDS - 1:
            self._decide()
            self._window = self._steps + RETIME_EVERY

    def _decide(self) -> None:
        fewer, every = self.candidates
        # The mean over ranks of each count's median, so that every rank makes the same choice.
        medians = all_reduce_mean(torch.tensor([statistics.median(self.times[c]) for c in self.candidates],
                                               dtype=torch.float64)).tolist()
        self.times = {count: [] for count in self.candidates}
        previous, self.chosen = self.chosen, fewer if medians[0] < (1 - MIN_GAIN) * medians[1] else every
        if self.chosen != previous:  # the first decision, and every change after a re-timing
            self.log(f"train.threads=auto at step {self._steps}: {medians[1] * 1e3:.0f} ms per step with {every} "
                     f"intra-op threads, {medians[0] * 1e3:.0f} ms with {fewer} beside {self.workers} DataLoader "
                     f"worker(s) (median of {ROUNDS} steps each); training with {self.chosen}")

    def restore(self) -> None:
        """Every thread back, for what runs after training (evaluation, export)."""
        if self._current is not None and self._current != self.initial:
            torch.set_num_threads(self.initial)
        self._current = None
