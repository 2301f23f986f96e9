"""Generate benchmarks/RESULTS.md from benchmarks/results/*.json (never edit RESULTS.md by hand)."""
from __future__ import annotations

import json

from common import RESULTS_DIR, ROOT
from selfsup.config import parse_duration
from selfsup.cpu import CPU_BF16_ENV, CPU_FLAGS, ISA_LIMIT_ENV

SHOWN_FLAGS = [flag for flag in CPU_FLAGS if flag != "avx512f"]  # torch's capability says AVX512 already


def pct(value) -> str:
    return f"{100 * value:.1f}" if isinstance(value, (int, float)) else "-"


def machine_cell(row: dict) -> str:
    """The machine's name, then the CPU flags bf16 speed depends on, e.g. ``AMD EPYC, 2 cores (avx2, avx512_bf16;
    torch AVX512)``; rows written before flags were recorded show the name alone."""
    flags = row.get("cpu_flags")
    if not flags:
        return row["machine"]
    parts = []
    if any(flag in flags for flag in CPU_FLAGS):  # absent where /proc/cpuinfo was not there to read
        parts.append(", ".join(flag for flag in SHOWN_FLAGS if flags.get(flag)) or "no " + "/".join(SHOWN_FLAGS))
    if flags.get("torch_cpu_capability"):
        parts.append(f"torch {flags['torch_cpu_capability']}")
    parts += [f"{name}={flags[name]}" for name in (CPU_BF16_ENV, *ISA_LIMIT_ENV) if name in flags]
    return f"{row['machine']} ({'; '.join(parts)})" if parts else row["machine"]


def ssl_rows(rows: list[dict]) -> list[str]:
    lines = ["| benchmark | backbone | kNN@20 pretrained | kNN@20 random-init | kNN@20 raw pixels | linear pretrained "
             "| epochs | train wall time | images/s | machine | date | command |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        r = row["results"]
        lines.append(
            f"| {row['title']} | {row['backbone']} | {pct(r['pretrained'].get('knn_top1@20'))} "
            f"| {pct(r.get('random_init', {}).get('knn_top1@20'))} | {pct(r.get('raw_pixels', {}).get('knn_top1@20'))} "
            f"| {pct(r['pretrained'].get('linear_top1'))} | {row['epochs']} | {row['train_wall_time_s']:.0f} s "
            f"| {row['images_per_s']:.0f} | {machine_cell(row)} | {row['date']} | `{row['command']}` |")
    return lines


def method_rows(rows: list[dict]) -> list[str]:
    """The method zoo under one budget: one row per method; baselines come from whichever row carries them."""
    baselines = next((r["results"] for r in rows if "random_init" in r["results"]), {})
    lines = ["| method | recipe | backbone | kNN@20 | epochs | train wall time | images/s | peak memory | machine "
             "| date | command |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, label in (("random_init", "random-init (same backbone)"), ("raw_pixels", "raw pixels")):
        if name in baselines:
            lines.append(f"| {label} | - | - | {pct(baselines[name].get('knn_top1@20'))} | - | - | - | - | - | - | - |")
    for row in sorted(rows, key=lambda r: -r["results"]["pretrained"].get("knn_top1@20", 0)):
        lines.append(
            f"| {row['method']} | {row['recipe']} | {row['backbone']} | {pct(row['results']['pretrained'].get('knn_top1@20'))} "
            f"| {row['epochs']} | {row['train_wall_time_s']:.0f} s | {row['images_per_s']:.0f} "
            f"| {row['peak_memory_mib']} MiB | {machine_cell(row)} | {row['date']} | `{row['command']}` |")
    return lines


def digits_learning_rows(rows: list[dict]) -> list[str]:
    """One row per method: kNN@20 on the held-out digits after each budget, and its margin over random-init."""
    budgets = sorted({run["budget"] for row in rows for run in row["runs"]}, key=parse_duration)
    lines = ["| method | recipe | backbone | kNN@20 random-init | "
             + " | ".join(f"kNN@20 after {b} (margin, steps)" for b in budgets) + " | machine | date | command |",
             "|---|---|---|---|" + "---|" * len(budgets) + "---|---|---|"]
    for row in sorted(rows, key=lambda r: -max(run["margin"] for run in r["runs"])):
        by_budget = {run["budget"]: run for run in row["runs"]}
        random_init = row["runs"][0]["knn_random_init"]
        cells = []
        for budget in budgets:
            run = by_budget.get(budget)
            cells.append("-" if run is None else
                         f"{pct(run['knn_pretrained'])} ({100 * run['margin']:+.1f}, {run['steps']})")
        lines.append(f"| {row['method']} | {row['recipe']} | {row['backbone']} | {pct(random_init)} | "
                     + " | ".join(cells) + f" | {machine_cell(row)} | {row['date']} | `{row['command']}` |")
    return lines


LEARNING_TITLES = {"cifar10": "CIFAR-10 (test split)", "digits": "the embedded digits (held-out handwriting)"}
#: the margin over random-init features, in kNN@20 points, below which a method counts as not learning
LEARNING_MARGIN = 5.0


def mean_cell(values: list[float]) -> str:
    """Percent, with the spread over seeds where there are several."""
    values = [v for v in values if isinstance(v, (int, float))]
    if not values:
        return "-"
    mean = sum(values) / len(values)
    if len(values) == 1:
        return f"{100 * mean:.1f}"
    spread = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
    return f"{100 * mean:.1f} ± {100 * spread:.1f} ({len(values)} seeds)"


def per_seed_cell(seeds: list[dict], cell) -> str:
    """One value for a single seed; with several, each distinct value with the seeds it came from (the seeds of
    one recipe may have run on different machines, days or commands)."""
    groups: dict[str, list[int]] = {}
    for row in seeds:
        groups.setdefault(cell(row), []).append(row["seed"])
    if len(groups) == 1:
        return next(iter(groups))
    return "; ".join(f"{value} (seed{'s' if len(ks) > 1 else ''} {', '.join(map(str, ks))})"
                     for value, ks in groups.items())


def learning_rows(rows: list[dict]) -> list[str]:
    """One row per (recipe): its scores (mean over seeds), the random-init and raw-pixel baselines of the same
    backbone configuration (whichever row of that dataset computed them) and the margin; flagged when the kNN
    margin over random-init is under LEARNING_MARGIN points."""
    baselines: dict[tuple, dict] = {}
    for row in rows:
        if "random_init" in row["results"]:
            baselines[(row["backbone_key"], row["seed"])] = row["results"]
    raw = next((r["results"]["raw_pixels"] for r in rows if "raw_pixels" in r["results"]), {})
    by_recipe: dict[str, list[dict]] = {}
    for row in rows:
        by_recipe.setdefault(row["recipe"], []).append(row)
    lines = ["| method | recipe | backbone | kNN@20 | random-init kNN@20 | margin | linear | random-init linear | epochs "
             "| images/s | peak memory | collapse monitor at the end | machine | date | command |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    table = []
    for recipe, seeds in by_recipe.items():
        knn = [r["results"]["pretrained"].get("knn_top1@20") for r in seeds]
        linear = [r["results"]["pretrained"].get("linear_top1") for r in seeds]
        base = [baselines.get((r["backbone_key"], r["seed"]), {}).get("random_init", {}) for r in seeds]
        base_knn = [b.get("knn_top1@20") for b in base if b]
        margin = (100 * (sum(knn) / len(knn) - sum(base_knn) / len(base_knn))) if base_knn else None
        table.append((margin if margin is not None else -1e9, recipe, seeds, knn, linear, base, margin))
    for _, recipe, seeds, knn, linear, base, margin in sorted(table, key=lambda t: -t[0]):
        first = seeds[0]
        flag = "" if margin is None or margin >= LEARNING_MARGIN else f" (under +{LEARNING_MARGIN:.0f})"
        monitor = first.get("monitor") or {}
        seen = [f"eff. rank {monitor['monitor/effective_rank']:.1f}"] if "monitor/effective_rank" in monitor else []
        if "monitor/target_entropy_fraction" in monitor:
            seen.append(f"target entropy {monitor['monitor/target_entropy_fraction']:.2f} ln K")
        if first.get("warnings"):
            seen.append("warned: " + "; ".join(w.split(": ", 1)[-1][:60] for w in first["warnings"]))
        margin_cell = "-" if margin is None else f"{margin:+.1f}{flag}"
        epochs = per_seed_cell(seeds, lambda r: str(r["epochs"]))
        speed = per_seed_cell(seeds, lambda r: f"{r['images_per_s']:.0f}")
        machine = per_seed_cell(seeds, machine_cell)
        date = per_seed_cell(seeds, lambda r: r["date"])
        command = per_seed_cell(seeds, lambda r: f"`{r['command']}`")
        lines.append(
            f"| {first['method']}{' (labels)' if first['method'] == 'supcon' else ''} | {recipe} | {first['backbone']} "
            f"| {mean_cell(knn)} | {mean_cell([b.get('knn_top1@20') for b in base if b])} | {margin_cell} "
            f"| {mean_cell(linear)} | {mean_cell([b.get('linear_top1') for b in base if b])} "
            f"| {epochs} | {speed} | {first['peak_memory_mib']} MiB | {', '.join(seen) or '-'} | {machine} | {date} "
            f"| {command} |")
    if raw:
        lines.append(f"| raw pixels | - | - | {pct(raw.get('knn_top1@20'))} | - | - | {pct(raw.get('linear_top1'))} "
                     "| - | - | - | - | - | - | - | - |")
    return lines


def image_text_rows(rows: list[dict]) -> list[str]:
    """One row per image-text recipe: its scores, each with the random-init towers' in brackets."""
    columns = [("zero_shot_top1", "zero-shot top-1"), ("zero_shot_top5", "zero-shot top-5"),
               ("image_to_text_recall@1", "image-to-text R@1"), ("text_to_image_recall@1", "text-to-image R@1"),
               ("knn_top1@20", "kNN@20"), ("linear_top1", "linear")]
    lines = ["| method | recipe | backbone | " + " | ".join(title for _, title in columns)
             + " | epochs | images/s | peak memory | machine | date | command |",
             "|---|---|---|" + "---|" * len(columns) + "---|---|---|---|---|---|"]
    for row in sorted(rows, key=lambda r: -r["results"]["pretrained"].get("zero_shot_top1", 0)):
        trained, fresh = row["results"]["pretrained"], row["results"].get("random_init", {})
        cells = [f"{pct(trained.get(key))} ({pct(fresh.get(key))})" for key, _ in columns]
        lines.append(f"| {row['method']} | {row['recipe']} | {row['backbone']} | " + " | ".join(cells)
                     + f" | {row['epochs']} | {row['images_per_s']:.0f} | {row['peak_memory_mib']} MiB "
                     f"| {machine_cell(row)} | {row['date']} | `{row['command']}` |")
    raw = next((r["results"]["raw_pixels"] for r in rows if "raw_pixels" in r["results"]), None)
    if raw:
        lines.append("| raw pixels | - | - | - | - | - | - | " + f"{pct(raw.get('knn_top1@20'))} | "
                     f"{pct(raw.get('linear_top1'))} | - | - | - | - | - | - |")
    return lines


def domain_rows(rows: list[dict]) -> list[str]:
    """One row per domain-data run (benchmarks/domain.py, benchmarks/volumes.py): kNN@20 and linear of the
    pretrained, random-init and raw-pixel features, and the margins."""
    lines = ["| data | method | backbone | steps (epochs) | kNN@20 | random-init | raw pixels | margin over "
             "random-init / raw | linear | images/s | train time | machine | date | command |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        scores = row["results"]
        trained, fresh, raw = scores["pretrained"], scores.get("random_init", {}), scores.get("raw_pixels", {})
        margins = row.get("knn20_margin_points", {})
        lines.append(
            f"| {row['dataset']} | {row['method']} | {row['backbone']} | {row['steps']} ({row['epochs']}) "
            f"| {pct(trained.get('knn_top1@20'))} | {pct(fresh.get('knn_top1@20'))} | {pct(raw.get('knn_top1@20'))} "
            f"| {margins.get('over_random_init', '-'):+} / {margins.get('over_raw_pixels', '-'):+} "
            f"| {pct(trained.get('linear_top1'))} ({pct(fresh.get('linear_top1'))}, {pct(raw.get('linear_top1'))}) "
            f"| {row['images_per_s']:.0f} | {row['train_wall_time_s']:.0f} s | {machine_cell(row)} | {row['date']} "
            f"| `{row['command']}` |")
    return lines


def kind_rows(rows: list[dict]) -> list[str]:
    """One row per table / point-cloud / graph run (benchmarks/kinds.py): kNN@20 and linear of the pretrained,
    random-init and raw-feature rows, the margins over random-init, and (tables) the GBDT on the raw features."""
    lines = ["| data | method | backbone | steps (epochs) | kNN@20 (random-init, raw) | linear (random-init, raw) "
             "| margin over random-init: kNN / linear | GBDT on raw | samples/s | train time | machine | date | command |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        scores = row["results"]
        trained, fresh, raw = scores["pretrained"], scores.get("random_init", {}), scores.get("raw_pixels", {})
        margins = row.get("margins_points", {})
        lines.append(
            f"| {row['dataset']} | {row['method']} | {row['backbone']} | {row['steps']} ({row['epochs']}) "
            f"| {pct(trained.get('knn_top1@20'))} ({pct(fresh.get('knn_top1@20'))}, {pct(raw.get('knn_top1@20'))}) "
            f"| {pct(trained.get('linear_top1'))} ({pct(fresh.get('linear_top1'))}, {pct(raw.get('linear_top1'))}) "
            f"| {margins.get('knn20_over_random_init', '-'):+} / {margins.get('linear_over_random_init', '-'):+} "
            f"| {pct(raw.get('gbdt_top1'))} | {row['images_per_s']:.0f} | {row['train_wall_time_s']:.0f} s "
            f"| {machine_cell(row)} | {row['date']} | `{row['command']}` |")
    return lines


def method_variant(row: dict) -> str:
    """The method, with the ``method_options.*`` overrides of its command: ``densecl (contrast=simclr)``."""
    options = [word.split(".", 1)[1] for word in row["command"].split() if word.startswith("method_options.")]
    return f"{row['method']} ({', '.join(options)})" if options else row["method"]


def dense_rows(rows: list[dict]) -> list[str]:
    """One row per dense run (benchmarks/dense.py): the dense probe's mIoU and pixel accuracy of the pretrained,
    random-init and raw-pixel rows, the mIoU margins, and kNN@20 beside them."""
    lines = ["| data | method | backbone | steps (epochs) | probe reads | mIoU | random-init | raw pixels | margin over random-init "
             "/ raw | pixel acc. (random-init, raw) | kNN@20 (random-init) | images/s | train time | machine | date "
             "| command |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    # Rows written before the probe read the hypercolumn have no probe_reads: they read the last map.
    for row in sorted(rows, key=lambda r: (r.get("probe_reads", "last map"),
                                           -r["results"]["pretrained"].get("dense_miou", 0))):
        scores = row["results"]
        trained, fresh, raw = scores["pretrained"], scores.get("random_init", {}), scores.get("raw_pixels", {})
        margins = row.get("miou_margin_points", {})
        lines.append(
            f"| {row['dataset']} | {method_variant(row)} | {row['backbone']} | {row['steps']} ({row['epochs']}) "
            f"| {row.get('probe_reads', 'last map')} | {pct(trained.get('dense_miou'))} | {pct(fresh.get('dense_miou'))} | {pct(raw.get('dense_miou'))} "
            f"| {margins.get('over_random_init', '-'):+} / {margins.get('over_raw_pixels', '-'):+} "
            f"| {pct(trained.get('dense_pixel_acc'))} ({pct(fresh.get('dense_pixel_acc'))}, "
            f"{pct(raw.get('dense_pixel_acc'))}) | {pct(trained.get('knn_top1@20'))} ({pct(fresh.get('knn_top1@20'))}) "
            f"| {row['images_per_s']:.0f} | {row['train_wall_time_s']:.0f} s | {machine_cell(row)} | {row['date']} "
            f"| `{row['command']}` |")
    return lines


def distill_rows(rows: list[dict]) -> list[str]:
    """One row per distillation run (benchmarks/distill.py): the teacher and the student, their sizes, budgets and
    kNN@20, and the student's kNN@20 as a fraction of the teacher's against the target."""
    lines = ["| data | teacher | teacher kNN@20 | student | student kNN@20 | student / teacher (target) | parameters "
             "| student images/s | normalisation shared | machine | date | command |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        t, s = row["teacher"], row["student"]

        def side(run: dict) -> str:
            budget = f"{run['budget']} budget, " if run.get("budget") else ""
            return f"{run['method']} on {run['backbone']} ({run['parameters'] / 1e6:.2f} M), {budget}{run['steps']} steps"

        ratio = row.get("knn_ratio")
        verdict = "-" if ratio is None else f"{100 * ratio:.1f}% ({100 * row['target_ratio']:.0f}%: " \
            f"{'met' if row['meets_target'] else 'not met'})"
        lines.append(f"| {row['dataset']} | {side(t)} | {pct(t.get('knn_top1@20'))} | {side(s)} "
                     f"| {pct(s.get('knn_top1@20'))} | {verdict} | x{row['parameter_ratio']} "
                     f"| {s['images_per_s']:.0f} | {'yes' if row.get('normalization_matched') else 'no'} "
                     f"| {machine_cell(row)} | {row['date']} | `{row['command']}` |")
    return lines


def continued_rows(rows: list[dict]) -> list[str]:
    """One row per continued pre-training run (benchmarks/continued.py): kNN@20 at step 0, after the budget and
    after the extension, and the logged losses where the extension joins the first segment."""
    lines = ["| data | from (weights format) | recipe, backbone | budget + extension | kNN@20 at step 0 "
             "| after the budget | after the extension | losses before / after the junction | machine | date "
             "| command |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        losses = f"{', '.join(map(str, row['loss_before_branch']))} / {', '.join(map(str, row['loss_after_branch']))}"
        lines.append(f"| {row['dataset']} | {row['source_run']} ({row['weights_format']}) | {row['recipe']}, "
                     f"{row['backbone']} | {row['budget']} + {row['extend']} | {pct(row['knn_at_start'])} "
                     f"| {pct(row['knn_after_budget'])} | {pct(row['knn_after_extension'])} | {losses} "
                     f"| {machine_cell(row)} | {row['date']} | `{row['command']}` |")
    return lines


def other_rows(rows: list[dict]) -> list[str]:
    lines = ["| benchmark | result | wall time | machine | date | command |", "|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['title']} | {row.get('summary', '')} | {row.get('wall_time_s', 0):.1f} s | {machine_cell(row)} "
                     f"| {row['date']} | `{row['command']}` |")
    return lines


def throughput_rows(row: dict) -> list[str]:
    """One `throughput_switches.py` result: a line per variant, speed-up relative to the plain path."""
    peaks = row.get("peak_flops_per_s") or {}
    lines = [f"{row['title']}: batch {row.get('batch_size')}, {row['steps']} measured steps per run, median over runs; "
             f"measured matmul peak fp32 {peaks.get('fp32', 0) / 1e9:.1f} GFLOP/s, bf16 {peaks.get('bf16', 0) / 1e9:.1f} "
             f"GFLOP/s; load average at start {row.get('load_average_1m')}; {machine_cell(row)}, {row['date']}, "
             f"{row['wall_time_s']:.0f} s in all; `{row['command']}`", "",
             "| variant | what | images/s | speed-up vs plain | MFU | waiting for data | peak memory (RSS) | runs |",
             "|---|---|---|---|---|---|---|---|"]
    same = [(a["variant"], b["variant"]) for i, a in enumerate(row["variants"]) for b in row["variants"][i + 1:]
            if a.get("settings") and a.get("settings") == b.get("settings")]
    if same:  # honest noise floor: variants that ran the very same settings
        lines[0] += " Variants with identical effective settings (" + "; ".join(f"{a} = {b}" for a, b in same) + \
            ") show the run-to-run spread: differences of that size between other rows are not effects."
    for v in row["variants"]:
        if "error" in v:
            lines.append(f"| {v['variant']} | {v['what']} | failed: {v['error']} | | | | | |")
            continue
        mfu = f"{100 * v['mfu']:.0f}% ({v.get('mfu_precision')})" if v.get("mfu") is not None else "-"
        lines.append(f"| {v['variant']} | {v['what']} | {v['images_per_s']:.1f} | x{v['speedup']} | {mfu} "
                     f"| {v['data_wait_percent']:.1f}% | {v['peak_memory_mib']} MiB "
                     f"| {', '.join(str(x) for x in v['images_per_s_runs'])} |")
    return lines


def lightly_rows(rows: list[dict]) -> list[str]:
    lines = ["| comparison | selfsup images/s | lightly images/s | ratio median (min-max) | selfsup settings | wall time "
             "| machine | date | command |", "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        s = row["selfsup_settings"]
        lines.append(f"| {row['title']} | {row['images_per_s']:.1f} | {row['lightly_images_per_s']:.1f} "
                     f"| {row['ratio_median']} ({row['ratio_min']}-{row['ratio_max']}) "
                     f"| {s.get('precision')}, channels_last={s.get('channels_last')}, {s.get('optimizer')} "
                     f"| {row['wall_time_s']:.0f} s | {machine_cell(row)} | {row['date']} | `{row['command']}` |")
    return lines


def time_to_accuracy_rows(rows: list[dict]) -> list[str]:
    lines = ["| budget | selfsup recipe | selfsup kNN@20 (linear) | epochs, images/s | lightly's example kNN@20 | epochs, "
             "images/s | ratio | selfsup reaches lightly's accuracy within | default evaluation (share of the budget) "
             "| exact protocol | machine | date | command |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        ours, theirs = row["selfsup"], row["lightly"]
        linear = ours["results"]["pretrained"].get("linear_top1")
        catch_up = ", ".join(f"{c['budget']}: {c['knn20']}" for c in row["catch_up"])
        exact = "-"
        if "exact" in ours:
            default, full = ours["results"], ours["exact"]["results"]
            exact = "; ".join(
                f"{name.replace('_', '-')} kNN@20 {pct(full[name].get('knn_top1@20'))}, linear "
                f"{pct(full[name].get('linear_top1'))} (default {pct(default[name].get('linear_top1'))})"
                for name in ("pretrained", "raw_pixels") if name in full and name in default)
            exact += f"; {ours['exact']['eval_time_s']:.0f} s"
        lines.append(
            f"| {row['budget']} | {row['recipe']} | {ours['knn20']} ({pct(linear)}) | {ours['epochs']}, "
            f"{ours['images_per_s']:.0f} | {theirs['knn20']} | {theirs['epochs']}, {theirs['images_per_s']:.0f} "
            f"| x{row['ratio_knn20']} | {row['selfsup_reaches_lightly_within'] or 'not within the budgets tried'} "
            f"({catch_up}) | {ours['eval_time_s']:.0f} s ({100 * ours['eval_share']:.0f}%) | {exact} "
            f"| {machine_cell(row)} | {row['date']} | `{row['command']}` |")
    return lines


def main() -> None:
    rows = [json.loads(p.read_text()) for p in sorted(RESULTS_DIR.glob("*.json"))]
    ssl = [r for r in rows if r.get("benchmark") == "cifar10_simclr"]
    methods = [r for r in rows if r.get("benchmark") == "cifar10_methods"]
    speed = [r for r in rows if r.get("benchmark") == "throughput_switches"]
    lightly = [r for r in rows if r.get("benchmark") == "lightly_side_by_side"]
    digits = [r for r in rows if r.get("benchmark") == "digits_learning"]
    learning = [r for r in rows if r.get("benchmark") == "learning"]
    image_text = [r for r in rows if r.get("benchmark") == "image_text"]
    domain = [r for r in rows if r.get("benchmark") in ("domain", "volumes")]
    media = [r for r in rows if r.get("benchmark") == "media"]
    distill = [r for r in rows if r.get("benchmark") == "distill"]
    dense = [r for r in rows if r.get("benchmark") == "dense"]
    kinds = [r for r in rows if r.get("benchmark") == "kinds"]
    continued = [r for r in rows if r.get("benchmark") == "continued"]
    time_to_accuracy = [r for r in rows if r.get("benchmark") == "time_to_accuracy"]
    own = ("time_to_accuracy", "continued", "cifar10_simclr", "cifar10_methods", "throughput_switches", "lightly_side_by_side", "digits_learning",
           "learning", "image_text", "domain", "volumes", "media", "distill", "dense", "kinds")
    other = [r for r in rows if r.get("benchmark") not in own]
    out = ["# Benchmark results", "",
           "Generated by `python benchmarks/make_results.py` from `benchmarks/results/*.json`; do not edit by hand.",
           "Protocol: kNN on L2-normalized frozen features, cosine similarity, T=0.07, test split of CIFAR-10;",
           "random-init = same architecture untrained; raw pixels = the normalized image as a vector.", ""]
    for dataset, title in LEARNING_TITLES.items():
        chosen = [r for r in learning if r["dataset"] == dataset]
        if not chosen:
            continue
        budgets = ", ".join(sorted({r["budget"] for r in chosen}))
        out += [f"## Does every method learn? Each method's own recipe on {title}, {budgets} CPU budget", "",
                "`benchmarks/learning.py`: the recipe unchanged but for the data and `train.budget`; the default "
                "evaluation (kNN@20, linear probe). Random-init: the same backbone configuration untrained (it "
                "differs between recipes that configure the backbone differently). Margin = kNN@20 points over "
                f"random-init; under +{LEARNING_MARGIN:.0f} is marked. Sorted by margin.", "",
                *learning_rows(chosen), ""]
    if image_text:
        budgets = ", ".join(sorted({r["budget"] for r in image_text}))
        out += [f"## Image-text methods on the embedded captioned digits, {budgets} CPU budget", "",
                "`benchmarks/image_text.py`: each recipe unchanged but for `train.budget`; held-out digits "
                "(handwriting never seen in training, 1,000 images with 4-6 captions each; chance 10%). Zero-shot: "
                "the data's prompt templates with the class names; recall: each held-out image against all "
                "held-out captions and back. In brackets: the same towers at random init.", "",
                *image_text_rows(image_text), ""]
    if domain:
        out += ["## Domain images: multispectral GeoTIFFs and 3-D volumes", "",
                "`benchmarks/domain.py`: the synthetic 13-band uint16 `spectral` set written as GeoTIFF files "
                "(5,000 train, 1,000 test; `selfsup data demo`), statistics by `selfsup data stats`, each recipe "
                "with `data.overhead=true data.cache=true` for a fixed number of steps (so the accuracy does not "
                "depend on the machine's load; the wall time does). `benchmarks/volumes.py`: the generated 3-D "
                "volumes. In the linear column, brackets: random-init, raw pixels.", "",
                *domain_rows(domain), ""]
    if media:
        out += ["## Video and audio: the generated moving digits and sounds", "",
                "`benchmarks/media.py`: each recipe unchanged but for a fixed number of steps (so the accuracy does "
                "not depend on the machine's load; the wall time does), kNN@20 on the held-out split (moving digits: "
                "500 videos of held-out handwriting, 10 classes; sounds: 600 clips from another generator stream, 6 "
                "classes). Raw pixels: the evaluation clip's voxels / the evaluation spectrogram's values. Clips/s "
                "in the images/s column; measured on the shared 2-core machine while other runs were going (load "
                "2-10): the wall times and clips/s are a busy machine's, the accuracy at a fixed step count does "
                "not depend on it.", "",
                *domain_rows(media), ""]
    if kinds:
        out += ["## Tables, point clouds and graphs: T-JEPA, Point-MAE, GraphMAE on the embedded demos", "",
                "`benchmarks/kinds.py`: each recipe on an embedded set for a fixed number of steps (the accuracy does "
                "not depend on the machine's load; the wall time does), kNN@20 and the linear probe on the held-out "
                "split. In brackets: the same encoder at random init, and the raw features (tables: standardised "
                "columns; clouds: the 256 evaluation points' coordinates; graphs: mean node features and size, a "
                "node's own features). GBDT: scikit-learn's HistGradientBoostingClassifier on the raw features.", "",
                *kind_rows(kinds), ""]
    if dense:
        out += ["## Dense features: the dense probe on the embedded dense digits", "",
                "`benchmarks/dense.py`: each recipe on `digits-dense` (three digits per 48 px image, per-pixel "
                "labels: background + 10 classes) for the same fixed number of steps on the same backbone; the "
                "dense probe is a 1x1 linear head on the frozen backbone's maps, upsampled to the labels, trained "
                "on the train split's masks; mIoU and pixel accuracy on the test split. It reads the hypercolumn "
                "(every stage's map, the default since the last map alone, 6 x 6 cells at stride 8, scores mostly "
                "the upsampling's outlines) or, in older rows, the last map; the baselines of a row are read "
                "the same way. Sorted by what the probe reads, then mIoU.", "",
                *dense_rows(dense), ""]
    if distill:
        out += ["## Distillation: a small student from a frozen teacher", "",
                "`benchmarks/distill.py`: a teacher run (or an existing one), then the `distill` recipe's student "
                "with the teacher's clean-view features cached, for a shorter budget; both by the default "
                "evaluation. The target: the student's kNN@20 within 95% of the teacher's.", "",
                *distill_rows(distill), ""]
    if continued:
        out += ["## Continued pre-training from a saved checkpoint", "",
                "`benchmarks/continued.py`: a finished run's backbone exported with timm / torchvision key names, a "
                "new run from that file (`backbone.weights`, heads first, `optim.schedule=wsd`), then extended with "
                "`--resume RUN train.budget=+...` from its state before the decay. kNN@20 on the test split; the "
                "losses are the five logged steps on each side of the point the extension continues from.", "",
                *continued_rows(continued), ""]
    if time_to_accuracy:
        out += ["## Time to accuracy: selfsup against lightly's SimCLR example, CIFAR-10, same CPU budget", "",
                "`benchmarks/time_to_accuracy.py`, one invocation: lightly 1.6.0's SimCLR example (torchvision "
                "ResNet-18, its SimCLRTransform at 32 px without blur, NT-Xent, SGD lr 0.06, batch 256, 8 workers, "
                "fp32, as the example runs) and selfsup's recipe, each trained for the budget on the 50,000 train "
                "JPEGs, both scored by selfsup's kNN (k=20, T=0.07) on the 10,000 test images. Catch-up: selfsup "
                "runs of shorter budgets until one reaches lightly's accuracy (each budget a full schedule). The "
                "default evaluation's time is selfsup's kNN + linear probe + baselines (read from the baseline "
                "cache when present); the exact protocol re-evaluates the run with fp32 features, the raw-pixel probe "
                "on every training image and no cache. Rows of commits before `eval.precision` (8b93506 and "
                "earlier) evaluated in fp32 by default; `benchmarks/eval_cost.py` (Other measurements) times the "
                "default evaluation of the same run since then.", "", *time_to_accuracy_rows(time_to_accuracy), ""]
    if ssl:
        out += ["## Pre-training under a CPU budget", "", *ssl_rows(ssl), ""]
    resnet_methods = [r for r in methods if r["backbone"] != "vit_micro_cpu"]
    vit_methods = [r for r in methods if r["backbone"] == "vit_micro_cpu"]
    if resnet_methods:
        budgets = sorted({r["budget"] for r in resnet_methods})
        out += [f"## Every method, CIFAR-10, same backbone and CPU budget ({', '.join(budgets)})", "",
                "`small_resnet` [16, 32, 64, 128] with a stride-1 stem, 32 px, batch 128, each method's own recipe "
                "otherwise; SupCon uses the labels (the supervised reference).", "", *method_rows(resnet_methods), ""]
        compared = RESULTS_DIR / "compare_methods.md"
        if compared.exists():  # the same runs as `selfsup compare` tables them (see its command in the file)
            out += ["The same runs, as `selfsup compare` tables them:", "", compared.read_text().strip(), ""]
    if vit_methods:
        budgets = sorted({r["budget"] for r in vit_methods})
        out += [f"## Masked and predictive methods on a ViT, CIFAR-10, same CPU budget ({', '.join(budgets)})", "",
                "`vit_micro_cpu` (4 px patches on 32 px images), batch 128, each method's own recipe otherwise; "
                "MoCo v3 on the same ViT as the joint-embedding reference.", "", *method_rows(vit_methods), ""]
    if digits:
        out += ["## How long each method needs: the embedded digits, each method's own recipe", "",
                "kNN@20 on the held-out digits (handwriting never seen in training; chance 10%) after each CPU "
                "budget, its margin over random-init features of the same backbone in points, and the optimizer "
                "steps the budget allowed. Each method's recipe unchanged but for `train.budget`.", "",
                *digits_learning_rows(digits), ""]
    if speed or lightly:
        out += ["## Throughput", ""]
        for row in speed:
            out += [*throughput_rows(row), ""]
        if lightly:
            out += [*lightly_rows(lightly), ""]
    if other:
        out += ["## Other measurements", "", *other_rows(other), ""]
    (ROOT / "benchmarks" / "RESULTS.md").write_text("\n".join(out))
    print(ROOT / "benchmarks" / "RESULTS.md")


if __name__ == "__main__":
    main()
