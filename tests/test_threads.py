"""train.threads: the intra-op thread count of the training steps (selfsup.engine.threads)."""
from __future__ import annotations

import pytest
import torch

import selfsup
from selfsup.config import ConfigError, build_config
from selfsup.engine import threads as threads_module
from selfsup.engine.threads import MEASURED_STEPS, ROUNDS, WARMUP_STEPS, TrainingThreads

CPU = torch.device("cpu")


@pytest.fixture
def two_threads(monkeypatch):
    """Two intra-op threads (the suite runs with one), OMP_NUM_THREADS unset, and the count put back after."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


class FakeClock:
    """A step lasts ``seconds[threads]``, whatever the machine does."""

    def __init__(self, seconds: dict[int, float]):
        self.seconds, self.now = seconds, 0.0

    def __call__(self) -> float:
        return self.now

    def run(self, threads: TrainingThreads, steps: int) -> list[int]:
        counts = []
        for _ in range(steps):
            threads.start_step()
            counts.append(torch.get_num_threads())
            self.now += self.seconds[torch.get_num_threads()]
            threads.end_step()
        return counts


def make(requested="auto", workers=2, clock=None, saved=None, deterministic=False, device=CPU):
    messages = []
    threads = TrainingThreads(requested, device, workers, deterministic, saved, messages.append,
                              **({"clock": clock} if clock else {}))
    return threads, messages


@pytest.mark.parametrize(("seconds", "expected"), [({1: 0.2, 2: 0.4}, 1),  # workers and threads contend
                                                   ({1: 0.4, 2: 0.2}, 2),  # two threads scale
                                                   ({1: 0.198, 2: 0.2}, 2)])  # within 3%: keep every thread
def test_auto_times_both_counts_and_keeps_the_faster(two_threads, seconds, expected):
    clock = FakeClock(seconds)
    threads, messages = make(clock=clock)
    assert threads.steps_to_decide == MEASURED_STEPS
    counts = clock.run(threads, MEASURED_STEPS)
    # Warm-up steps at every thread, then the two counts alternate, ROUNDS steps each.
    assert counts[:WARMUP_STEPS] == [2] * WARMUP_STEPS
    assert counts[WARMUP_STEPS:] == [1, 2] * ROUNDS
    assert threads.chosen == threads.measured == expected
    assert threads.steps_to_decide == 0
    assert clock.run(threads, 5) == [expected] * 5  # the rest of the run
    assert len(messages) == 1 and f"training with {expected}" in messages[0]
    assert "beside 2 DataLoader worker(s)" in messages[0]
    threads.restore()
    assert torch.get_num_threads() == 2  # evaluation gets every thread back


def test_auto_times_again_and_follows_a_change(two_threads, monkeypatch):
    monkeypatch.setattr(threads_module, "RETIME_EVERY", 6)
    clock = FakeClock({1: 0.2, 2: 0.4})
    threads, messages = make(clock=clock)
    assert clock.run(threads, MEASURED_STEPS + 6) == [2] * WARMUP_STEPS + [1, 2] * ROUNDS + [1] * 6
    clock.seconds = {1: 0.4, 2: 0.2}  # say another program has stopped competing for the cores
    assert clock.run(threads, 2 * ROUNDS + 3) == [1, 2] * ROUNDS + [2] * 3
    assert threads.chosen == threads.measured == 2
    assert len(messages) == 2 and "training with 1" in messages[0] and "training with 2" in messages[1]
    assert clock.run(threads, 6 + 2 * ROUNDS) == [2] * 3 + [1, 2] * ROUNDS + [2] * 3
    assert len(messages) == 2  # the same choice again is not logged


def test_fewer_threads_are_all_but_one_per_worker_and_at_least_one(two_threads):
    clock = FakeClock({1: 0.1, 2: 0.3})
    threads, _ = make(workers=8, clock=clock)
    assert set(clock.run(threads, MEASURED_STEPS)) == {1, 2}
    assert threads.chosen == 1


def test_a_number_sets_the_count_and_is_not_saved(two_threads):
    clock = FakeClock({1: 0.1, 2: 0.1})
    threads, messages = make(requested=1, clock=clock)
    assert clock.run(threads, 4) == [1] * 4
    assert threads.measured is None and not messages
    threads.restore()
    assert torch.get_num_threads() == 2


def test_a_resumed_run_starts_with_the_count_it_measured(two_threads, monkeypatch):
    monkeypatch.setattr(threads_module, "RETIME_EVERY", 5)
    clock = FakeClock({1: 0.4, 2: 0.1})  # 2 wins when it times again
    threads, messages = make(saved=1, clock=clock)
    assert threads.steps_to_decide == 0
    assert clock.run(threads, 5 + 2 * ROUNDS + 1) == [1] * 5 + [1, 2] * ROUNDS + [2]
    assert threads.measured == 2
    assert "as measured when this run started" in messages[0]


@pytest.mark.parametrize(("case", "message"), [("no workers", None), ("gpu", None),
                                                ("omp", "OMP_NUM_THREADS=2 is set"),
                                                ("deterministic", "train.deterministic=true")])
def test_auto_keeps_every_thread_where_it_has_nothing_to_measure(two_threads, monkeypatch, case, message):
    if case == "omp":
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
    clock = FakeClock({1: 0.1, 2: 9.0})  # one thread would win, were it measured
    threads, messages = make(workers=0 if case == "no workers" else 2, deterministic=case == "deterministic",
                             device=torch.device("cuda") if case == "gpu" else CPU, clock=clock)
    assert threads.steps_to_decide == 0 and threads.measured is None
    assert clock.run(threads, MEASURED_STEPS) == [2] * MEASURED_STEPS
    if message is None:
        assert not messages
    else:
        assert len(messages) == 1 and message in messages[0]


def test_threads_config_is_checked():
    assert build_config("demo", ["train.threads=1"]).train.threads == 1
    assert build_config("demo", []).train.threads == "auto"
    with pytest.raises(ConfigError, match="train.threads"):
        build_config("demo", ["train.threads=0"])
    with pytest.raises(ConfigError, match="train.threads"):
        build_config("demo", ["train.threads=many"])


def test_a_run_measures_saves_its_count_and_gives_every_thread_back(two_threads, tmp_path, capfd):
    run = selfsup.train("demo", [f"runs_dir={tmp_path}", "name=threads", f"train.max_steps={MEASURED_STEPS + 2}",
                                 "train.batch_size=32", "data.num_workers=1", "eval.enabled=false",
                                 "train.progress=false", "train.precision=fp32",
                                 "backbone.options={widths: [8, 16, 16, 16], stem_stride: 2}"])
    err = capfd.readouterr().err
    assert f"train.threads=auto at step {MEASURED_STEPS}:" in err and "beside 1 DataLoader worker(s)" in err
    chosen = int(err.split("training with ")[1].split()[0])
    loop = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["loop"]
    assert loop["threads"] == chosen in (1, 2)
    assert torch.get_num_threads() == 2
