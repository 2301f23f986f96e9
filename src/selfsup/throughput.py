"""``selfsup bench``: the throughput of the real training pipeline, and where each step's time goes.

The pipeline is the one ``selfsup train`` runs: the same trainer, built by the same
:func:`selfsup.engine.trainer.build_trainer` (its DataLoader, views, method, optimizer, precision,
channels_last and compile settings), stepped by its own :meth:`~selfsup.engine.trainer.Trainer.step` on the
batches it would train on. Around it, the bench

1. runs ``warmup`` steps (compilation, allocator and worker start-up happen here), then ``steps`` measured
   steps, splitting each step's wall time into waiting for data, forward+backward (from the batch in hand to
   the optimizer step: host-to-device copy, forward, backward, clipping), the optimizer step, and the work
   after it (EMA teachers, the collapse monitor, the loss reduction);
2. reads the peak memory (CUDA: allocated by torch; CPU: the process's peak resident set);
3. counts the model FLOPs of one more real step with ``FlopCounterMode`` (matmuls and convolutions, forward
   and backward, teachers included), run eagerly so compiled code is counted too;
4. measures this device's matmul peak in fp32 and bf16 (square matmuls up to 4096 on a GPU, 2048 on a CPU,
   best of a few repeats), and reports MFU: achieved FLOP/s over the measured peak of the precision the run
   uses. A measured peak, not a data-sheet one: MFU says how much of what this machine can actually do the
   pipeline uses.
"""
from __future__ import annotations

import os
import resource
import shlex
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from selfsup.config import Config
from selfsup.dist import DistInfo, setup_distributed
from selfsup.engine.threads import MEASURED_STEPS, TrainingThreads
from selfsup.engine.trainer import Trainer, build_trainer
from selfsup.methods import validate_method_options
from selfsup.runs import build_run_method, environment, log, open_run_data, run_preprocess

SCHEMA = "selfsup.bench/1"
STEP_PARTS = ("data_wait", "forward_backward", "optimizer", "after_step")
PART_LABELS = {"data_wait": "waiting for data", "forward_backward": "forward+backward", "optimizer": "optimizer step",
               "after_step": "after the step"}
# Square matmul sizes for the peak, smallest first: a size is only tried while the previous one suggests it
# finishes in time (bf16 on a CPU without native bf16 is ~30x slower than fp32).
PEAK_SIZES = {"cuda": (2048, 4096), "cpu": (256, 512, 1024, 2048)}


def bench(cfg: Config, steps: int = 30, warmup: int = 5, peaks: dict | None = None, command: str | None = None) -> dict:
    """Measure ``cfg``'s training pipeline; returns the JSON-ready result (see README, "Measuring throughput").

    ``peaks`` (a previous result's ``peak_flops_per_s`` and ``peak_matmul_size``) skips the matmul peak
    measurement, e.g. when comparing switches in one process."""
    if steps < 1 or warmup < 0:
        raise ValueError(f"bench needs steps >= 1 and warmup >= 0 (got steps={steps}, warmup={warmup})")
    cfg = cfg.model_copy(deep=True)
    if cfg.train.threads == "auto":  # it decides within the warm-up, which is lengthened to hold its measurement
        warmup = max(warmup, MEASURED_STEPS)
    # The schedule (warm-up, cosine, EMA momentum) then runs over the bench, whatever length the recipe sets.
    cfg.train.max_steps = warmup + steps + 1
    dist_info = setup_distributed()
    device = dist_info.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    rss_before = _peak_rss_bytes()

    trainer = bench_trainer(cfg, dist_info)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    batches = trainer.data.step_batches(trainer.state)  # as Trainer.fit draws them, epoch after epoch
    log(f"bench: {warmup} warm-up + {steps} measured steps of {cfg.method} on {cfg.backbone.name}, batch "
        f"{cfg.train.batch_size}, {trainer.precision}, {device}")
    threads = trainer.training_threads()
    try:
        _timed_steps(trainer, batches, warmup, sync, threads)
        wall_start = time.perf_counter()
        parts, last_loss = _timed_steps(trainer, batches, steps, sync, threads)
        step_time = (time.perf_counter() - wall_start) / steps
        memory = _peak_memory(device, rss_before)  # before the FLOP count, whose eager step may need more
        micro_batches = next(batches)
        # Kernels that torch.compile generated are invisible to FlopCounterMode: the counted step runs eagerly.
        with torch.compiler.set_stance("force_eager") if trainer.model.compiled else nullcontext():
            flops_per_step = count_flops(lambda: trainer.step(micro_batches))
        training_threads = torch.get_num_threads()
    finally:
        batches.close()  # stops DataLoader workers now rather than at garbage collection
        threads.restore()

    peaks = peaks or measure_peaks(device)
    mfu_precision = "bf16" if trainer.precision == "bf16" else "fp32"
    achieved = flops_per_step / step_time
    mean_parts = {part: sum(p[part] for p in parts) / steps for part in STEP_PARTS}
    views_per_image = len(trainer.method.views.view_sizes(cfg.data.image_size))
    return {
        "schema": SCHEMA,
        "command": command,
        "steps": steps, "warmup": warmup,
        "batch_size": cfg.train.batch_size,
        "images_per_s": cfg.train.batch_size / step_time,
        "views_per_image": views_per_image,
        "views_per_s": cfg.train.batch_size * views_per_image / step_time,
        "step_time_s": step_time,
        "step_split": {part: {"mean_s": seconds, "percent": 100 * seconds / step_time}
                       for part, seconds in mean_parts.items()},
        "loss": last_loss,
        "memory": memory,
        "flops_per_step": flops_per_step,
        "achieved_flops_per_s": achieved,
        "peak_flops_per_s": peaks["peak_flops_per_s"],
        "peak_matmul_size": peaks["peak_matmul_size"],
        "mfu_precision": mfu_precision,
        "mfu": achieved / peaks["peak_flops_per_s"][mfu_precision],
        "settings": {
            "device": str(device), "world_size": dist_info.world_size, "precision": trainer.precision,
            "channels_last": trainer.model.channels_last, "compile": cfg.train.compile,
            "compiled": trainer.model.compiled, "augment": trainer.data.augment,
            "optimizer": _optimizer_kernel(trainer.optimizer), "accumulate": cfg.train.accumulate,
            "num_workers": cfg.data.num_workers, "torch_threads": training_threads,
            "threads": cfg.train.threads,
        },
        "machine": machine_info(dist_info, trainer.precision),
        "config": cfg.model_dump(mode="json"),
    }


def bench_trainer(cfg: Config, dist_info: DistInfo) -> Trainer:
    """``cfg``'s trainer as ``selfsup train`` builds it (same data, normalisation, seeded method and
    :func:`~selfsup.engine.trainer.build_trainer`), minus the run directory: the bench never checkpoints,
    logs metrics or exports, so nothing is written. Fills ``cfg.data.mean`` / ``std`` as training does."""
    validate_method_options(cfg.method, cfg.method_options)
    if cfg.train.deterministic:
        torch.use_deterministic_algorithms(True)
    source = open_run_data(cfg).train
    preprocess = run_preprocess(cfg, source)
    cfg.data.mean, cfg.data.std = list(preprocess.mean), list(preprocess.std)
    method = build_run_method(cfg, source)
    return build_trainer(cfg, Path(cfg.runs_dir), method, source, preprocess, dist_info, log)


def _timed_steps(trainer: Trainer, batches: Iterator[list[dict]], steps: int, sync: Callable[[], None],
                 threads: TrainingThreads):
    """Run ``steps`` optimizer steps; per step, the seconds of each part of STEP_PARTS, and the last loss.

    The optimizer's own step hooks mark where forward+backward ends and the update begins; on CUDA each mark
    synchronizes first, so queued kernels are charged to the part that launched them."""
    marks: dict[str, float] = {}

    def before_update(optimizer, args, kwargs):
        sync()
        marks["update_start"] = time.perf_counter()

    def after_update(optimizer, args, kwargs):
        sync()
        marks["update_end"] = time.perf_counter()

    hooks = [trainer.optimizer.register_step_pre_hook(before_update),
             trainer.optimizer.register_step_post_hook(after_update)]
    parts, loss = [], None
    try:
        for _ in range(steps):
            threads.start_step()
            start = time.perf_counter()
            micro_batches = next(batches)
            have_data = time.perf_counter()
            loss = trainer.step(micro_batches)["loss"]
            sync()
            end = time.perf_counter()
            threads.end_step()
            parts.append({"data_wait": have_data - start, "forward_backward": marks["update_start"] - have_data,
                          "optimizer": marks["update_end"] - marks["update_start"],
                          "after_step": end - marks["update_end"]})
    finally:
        for hook in hooks:
            hook.remove()
    return parts, loss


def count_flops(step: Callable[[], object]) -> int:
    """FLOPs of the matmuls, convolutions and attention that ``step`` runs (forward and, if it calls
    ``backward``, backward too), as torch's FlopCounterMode counts them; element-wise work is not counted,
    as is usual for MFU."""
    with FlopCounterMode(display=False) as counter:
        step()
    return int(counter.get_total_flops())


def measure_matmul_peak(device: torch.device, dtype: torch.dtype, sizes=None, repeats: int = 3,
                        max_seconds: float = 4.0) -> tuple[float, int]:
    """(best FLOP/s, matmul size that reached it) of square ``dtype`` matmuls on ``device``.

    Sizes are tried smallest first; the next (8x the work) only while its predicted time stays within
    ``max_seconds``."""
    sizes = sizes or PEAK_SIZES["cuda" if device.type == "cuda" else "cpu"]
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    best_rate, best_size = 0.0, sizes[0]
    for n in sizes:
        a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
        torch.matmul(a, b)  # library initialisation and kernel selection are not part of the peak
        sync()
        start = time.perf_counter()
        torch.matmul(a, b)
        sync()
        one = time.perf_counter() - start
        calls = max(1, min(50, int(0.02 / max(one, 1e-9))))  # short matmuls: time a burst, not timer noise
        best_time = one
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(calls):
                torch.matmul(a, b)
            sync()
            best_time = min(best_time, (time.perf_counter() - start) / calls)
        rate = 2 * n**3 / best_time
        if rate > best_rate:
            best_rate, best_size = rate, n
        if 8 * best_time * (repeats + 2) > max_seconds:
            break
    return best_rate, best_size


def measure_peaks(device: torch.device, max_seconds: float = 4.0) -> dict:
    peaks = {dtype_name: measure_matmul_peak(device, dtype, max_seconds=max_seconds)
             for dtype_name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))}
    return {"peak_flops_per_s": {name: rate for name, (rate, _) in peaks.items()},
            "peak_matmul_size": {name: size for name, (_, size) in peaks.items()}}


def _peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB, macOS bytes


def _peak_memory(device: torch.device, rss_before: int) -> dict:
    if device.type == "cuda":
        return {"kind": "cuda_max_memory_allocated", "peak_bytes": torch.cuda.max_memory_allocated(device)}
    peak = _peak_rss_bytes()
    # ru_maxrss is a high-water mark over the process's life: growth is 0 when something before the bench
    # (an earlier run in the same process) had already used more. DataLoader workers are not included.
    return {"kind": "cpu_peak_rss", "peak_bytes": peak, "growth_bytes": max(0, peak - rss_before)}


def _optimizer_kernel(optimizer: torch.optim.Optimizer) -> str:
    defaults = optimizer.defaults
    kernel = "fused" if defaults.get("fused") else "foreach" if defaults.get("foreach") else "per-parameter"
    return f"{type(optimizer).__name__} ({kernel})"


def machine_info(dist_info, precision: str) -> dict:
    info = environment(dist_info, precision)
    info["argv"] = info.pop("command")
    info.pop("started")
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    device = dist_info.device
    info.update(cpu_cores_usable=usable,  # cpu_model and cpu_flags come with the environment
                device_name=torch.cuda.get_device_name(device) if device.type == "cuda" else info["cpu_model"])
    if hasattr(os, "getloadavg"):  # above the core count, other work shared the CPUs: figures are indicative
        info["load_average_1m"] = round(os.getloadavg()[0], 2)
    if device.type == "cuda":
        info["cuda_matmul_tf32"] = torch.backends.cuda.matmul.allow_tf32  # fp32 peak is TF32's when on
    return info


def command_line(recipe, overrides, steps: int, warmup: int) -> str:
    """The ``selfsup bench`` command that reproduces a measurement (also for the Python API)."""
    words = ["selfsup", "bench", *([str(recipe)] if recipe else []), *(overrides or []),
             "--steps", str(steps), "--warmup", str(warmup)]
    return shlex.join(words)


def summary_table(result: dict) -> str:
    s = result["settings"]
    compile_state = "off" if not s["compile"] else "on" if s["compiled"] else "requested, fell back to eager"
    lines = [f"{result['command']}",
             f"  {result['machine']['device_name']} ({s['device']}), {s['precision']}, channels_last "
             f"{'on' if s['channels_last'] else 'off'}, compile {compile_state}, {s['optimizer']}, "
             f"{s['torch_threads']} threads, {s['num_workers']} workers",
             f"{'images/s':<22}{result['images_per_s']:>12.1f}   (views/s {result['views_per_s']:.1f})",
             f"{'step time':<22}{result['step_time_s'] * 1e3:>12.2f} ms"]
    for part in STEP_PARTS:
        split = result["step_split"][part]
        lines.append(f"  {PART_LABELS[part]:<20}{split['mean_s'] * 1e3:>12.2f} ms {split['percent']:>6.1f} %")
    memory = result["memory"]
    growth = f" (+{memory['growth_bytes'] / 2**20:.1f} MiB during the bench)" if "growth_bytes" in memory else ""
    lines.append(f"{'peak memory':<22}{memory['peak_bytes'] / 2**20:>12.1f} MiB {memory['kind']}{growth}")
    lines.append(f"{'FLOPs per step':<22}{result['flops_per_step'] / 1e9:>12.3f} GFLOP")
    lines.append(f"{'achieved':<22}{result['achieved_flops_per_s'] / 1e9:>12.2f} GFLOP/s")
    for name, rate in result["peak_flops_per_s"].items():
        lines.append(f"{'matmul peak ' + name:<22}{rate / 1e9:>12.2f} GFLOP/s (n={result['peak_matmul_size'][name]})")
    lines.append(f"{'MFU (' + result['mfu_precision'] + ')':<22}{100 * result['mfu']:>12.2f} %")
    return "\n".join(lines)
