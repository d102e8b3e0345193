"""The BENCHMARKS.md section of `python benchmarks/prefill_speed.py`: its heading, the setup and
machine, the speed-up table against the FLOPs-ideal one, the LLaVA-NeXT-shaped prompt's table
and the notes (ratio 0 against the unpruned path, time inside the hook, RandomPolicy rows,
parity with transformers)."""
from __future__ import annotations

import argparse
import datetime
import platform
import statistics
from typing import Dict, List, Optional

import torch
import transformers

from fitprune.lab.bench_timing import Timings, available_cores, contention_text, cpu_model
from llava.model.pruning.flops import DecoderDims, full_prefill_flops, full_reduction, paper_reduction

SECTION_HEADING = "## Prefill speed (benchmarks/prefill_speed.py)"


def machine_text(device: torch.device, threads: int) -> str:
    """The machine a run timed: the CPU, and the GPU when the models ran on one."""
    cpu = f"{cpu_model()}, {available_cores()} cores, {threads} torch threads"
    return cpu if device.type != "cuda" else f"{torch.cuda.get_device_name(device)} (host: {cpu})"


def section_heading(batch: int, label: str = "") -> str:
    """The BENCHMARKS.md heading a run writes under: one section per batch size and `--label`
    (batch 1 without a label: the main section)."""
    qualifiers = ([f"at batch {batch}"] if batch != 1 else []) + ([label] if label else [])
    return SECTION_HEADING.replace(" (", " " + ", ".join(qualifiers) + " (", 1) if qualifiers else SECTION_HEADING


LOGITS_TEXT = {
    "last": "logits of the last row per sample only (`num_logits_to_keep=1`, as a prefill that starts generation)",
    "all": "logits of every row left after the last layer (as a scoring pass)",
}


def logit_rows_of(args: argparse.Namespace) -> Optional[int]:
    """LM head rows per sample that `--logits` computes, in `full_prefill_flops`' terms (None: every row)."""
    return 1 if args.logits == "last" else None


def format_section(
    args: argparse.Namespace,
    command: str,
    config: transformers.LlamaConfig,
    dims: DecoderDims,
    keep_counts: Dict[float, List[int]],
    final_visual: Dict[float, int],
    parity: float,
    timings: Timings,
    threads: int,
    anyres_counts: Dict[float, List[int]],
) -> str:
    """The Markdown section: setup, machine, the tables and the notes."""
    num_visual = args.visual_tokens
    num_other = args.prefix_tokens + args.text_tokens
    times = timings.seconds
    median = {name: statistics.median(values) for name, values in times.items()}
    fastest = {name: min(values) for name, values in times.items()}
    logit_rows = logit_rows_of(args)
    unpruned_flops = full_prefill_flops(dims, [num_visual] * dims.num_layers, num_visual, num_other, logit_rows)

    def ideal(counts: List[int]) -> float:
        return unpruned_flops / full_prefill_flops(dims, counts, num_visual, num_other, logit_rows)

    header = ("| ratio | paper % | full % | visual left | median ms | min ms | speed-up vs unpruned | ideal "
              "| efficiency | speed-up vs transformers |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    lines.append(
        f"| unpruned (no hook) | 0.00 | 0.00 | {num_visual} | {1e3 * median['unpruned']:.0f} "
        f"| {1e3 * fastest['unpruned']:.0f} | 1.00 | 1.00 | 1.00 | {median['transformers'] / median['unpruned']:.2f} |"
    )
    for ratio, counts in keep_counts.items():
        name = f"fitprune {ratio:g}"
        achieved = median["unpruned"] / median[name]
        lines.append(
            f"| {ratio:g} | {paper_reduction(dims, counts, num_visual):.2f} "
            f"| {full_reduction(dims, counts, num_visual, num_other, logit_rows):.2f} | {final_visual[ratio]} "
            f"| {1e3 * median[name]:.0f} | {1e3 * fastest[name]:.0f} | {achieved:.2f} | {ideal(counts):.2f} "
            f"| {achieved / ideal(counts):.2f} | {median['transformers'] / median[name]:.2f} |"
        )
    lines.append(
        f"| transformers (eager) | 0.00 | 0.00 | {num_visual} | {1e3 * median['transformers']:.0f} "
        f"| {1e3 * fastest['transformers']:.0f} | {median['unpruned'] / median['transformers']:.2f} | 1.00 | - | 1.00 |"
    )

    anyres_lines = format_anyres_rows(args, dims, anyres_counts, median) if anyres_counts else []
    def paired(row: str, baseline: str) -> float:
        """Median over rounds of the row's time / the baseline's in the same round (drifts cancel)."""
        return statistics.median(a / b for a, b in zip(times[row], times[baseline]))

    notes = []
    if "fitprune 0" in times:
        gap = 100.0 * (median["fitprune 0"] / median["unpruned"] - 1.0)
        notes.append(
            f"- Ratio 0 (pruner installed, recipe keeps all {num_visual}) vs the unpruned path (`prefill_hook` None, "
            f"what `reduction_ratio=0` resolves to): {gap:+.1f}% time from the medians, "
            f"{100.0 * (paired('fitprune 0', 'unpruned') - 1.0):+.1f}% as the median of the per-round ratios."
        )
    hook_parts = [
        f"{ratio:g}: {1e3 * statistics.median(timings.inner[name]):.1f} ms "
        f"({100 * statistics.median(timings.inner[name]) / median[name]:.1f}%)"
        for ratio in keep_counts
        if (name := f"fitprune {ratio:g}") in timings.inner
    ]
    notes.append(
        "- Time inside the pruner hook per prefill (ranking and gather; the statistics are computed in the layer's "
        "attention), median over the rounds and its share of the row's median: " + ", ".join(hook_parts) + "."
    )
    random_parts = [
        f"{ratio:g}: median {1e3 * median[f'random {ratio:g}']:.0f} ms, efficiency "
        f"{median['unpruned'] / median[f'random {ratio:g}'] / ideal(counts):.2f}, FitPrune / random "
        f"{paired(f'fitprune {ratio:g}', f'random {ratio:g}'):.3f} (median of per-round ratios)"
        for ratio, counts in keep_counts.items()
        if f"random {ratio:g}" in times
    ]
    if random_parts:
        notes.append(
            "- Same keep counts with `RandomPolicy` (reads no attention, so fused SDPA at every layer; the gap to the "
            "FitPrune rows is the cost of the statistics pass that gives FitPrune its scores): "
            + "; ".join(random_parts) + "."
        )
    notes.append(f"- Unpruned logits of every row vs transformers': max |diff| = {parity:.1e} (the transformers row "
                 "times its decoder and its LM head on the same rows as ours).")

    contention = contention_text(args, timings)
    clock = "wall clock" if args.clock == "wall" else "process CPU time"
    return "\n".join([
        section_heading(args.batch, args.label),
        "",
        f"Prefill forward of a random LLaMA decoder: {config.num_hidden_layers} layers, hidden "
        f"{config.hidden_size}, FFN {config.intermediate_size}, {config.num_attention_heads} heads "
        f"({config.num_key_value_heads} KV), vocab {config.vocab_size}, {args.dtype}, batch {args.batch} (the same prompt "
        f"in every sample); prompt {args.prefix_tokens} prefix + {num_visual} visual + {args.text_tokens} text "
        f"tokens as random embeddings; {LOGITS_TEXT[args.logits]}. "
        f"Keep counts: the `{args.shape}` shape fitted by bisection to each budget (no calibration on a random "
        "model); policy FitPrune (cross × self on head-max attention).",
        "",
        f"- Machine: {machine_text(args.device, threads)}; torch {torch.__version__}, "
        f"transformers {transformers.__version__}, Python {platform.python_version()}.",
        f"- Date: {datetime.date.today().isoformat()}. Command: `{command}`.",
        f"- Timing: {args.warmup} warm-up + {args.repeats} timed rounds, each row once per round (alternating), "
        f"{clock}; took {timings.wall:.0f} s; {contention}.",
        "- paper % / full %: FLOPs removed under the paper convention (visual tokens only) and the full one "
        f"(all {num_visual + num_other} tokens, the LM head on the rows it runs on). Ideal = unpruned / pruned "
        "full-convention FLOPs; "
        "speed-up = median unpruned time / median time of the row; efficiency = speed-up / ideal; "
        "speed-up vs transformers = transformers' median / the row's.",
        "",
        *lines,
        "",
        *anyres_lines,
        *notes,
        "",
        "Keep counts after each layer:",
        "",
        *[f"- {ratio:g}: {counts}" for ratio, counts in keep_counts.items()],
        "",
    ])


def format_anyres_rows(
    args: argparse.Namespace, dims: DecoderDims, anyres_counts: Dict[float, List[int]], median: Dict[str, float]
) -> List[str]:
    """The LLaVA-NeXT-shaped prompt's table (its own unpruned row and FitPrune rows), then a blank line."""
    num_visual = args.anyres_visual_tokens
    num_other = args.prefix_tokens + args.text_tokens
    logit_rows = logit_rows_of(args)
    unpruned_flops = full_prefill_flops(dims, [num_visual] * dims.num_layers, num_visual, num_other, logit_rows)
    header = "| ratio | paper % | full % | visual left | median ms | speed-up vs unpruned | ideal | efficiency |"
    lines = [
        f"LLaVA-NeXT-shaped prompt: {args.prefix_tokens} prefix + {num_visual} visual + {args.text_tokens} text "
        f"tokens, the same decoder; keep counts of the same shape fitted to {num_visual} visual tokens.",
        "",
        header,
        "|" + "---|" * (header.count("|") - 1),
        f"| unpruned (no hook) | 0.00 | 0.00 | {num_visual} | {1e3 * median['anyres unpruned']:.0f} | 1.00 | 1.00 "
        "| 1.00 |",
    ]
    for ratio, counts in anyres_counts.items():
        achieved = median["anyres unpruned"] / median[f"anyres fitprune {ratio:g}"]
        ideal = unpruned_flops / full_prefill_flops(dims, counts, num_visual, num_other, logit_rows)
        lines.append(
            f"| {ratio:g} | {paper_reduction(dims, counts, num_visual):.2f} "
            f"| {full_reduction(dims, counts, num_visual, num_other, logit_rows):.2f} | {counts[-1]} "
            f"| {1e3 * median[f'anyres fitprune {ratio:g}']:.0f} | {achieved:.2f} | {ideal:.2f} "
            f"| {achieved / ideal:.2f} |"
        )
    return lines + [""]
