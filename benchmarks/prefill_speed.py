"""Prefill speed of FitPrune pruning on a LLaVA-shaped random decoder, on CPU
(`python benchmarks/prefill_speed.py`).

Measures the prefill forward of our `LlamaForCausalLM` with no pruner (the unpruned path,
what `reduction_ratio=0` resolves to), with a pruner whose recipe keeps every token
(ratio 0), and with pruners at the other budgets; and of `transformers.LlamaForCausalLM`
(eager attention) with the same weights on the same embeddings. The LM head runs on the last
row per sample, as a prefill that starts generation does (`--logits last`, the default), or on
every row (`--logits all`, as a scoring pass). Reports the achieved speed-up against the
FLOPs-ideal one (full convention, counting the LM head rows actually computed) and writes the
table into BENCHMARKS.md. The model, prompt and keep counts are
`fitprune.lab.prefill_setup`'s.

Run: ``python benchmarks/prefill_speed.py [--repeats 7] [--batch 1] [--logits last] [--output BENCHMARKS.md]``.
"""
from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import transformers

from fitprune.lab.bench_timing import (
    Timings,
    add_timing_flags,
    apply_timing_flags,
    available_cores,
    clock_of,
    contention_text,
    cpu_model,
    time_rounds,
    too_contended,
)
from fitprune.lab.benchmarks_file import command_line, write_section
from fitprune.lab.prefill_setup import BENCHMARK_SIZES, build_config, build_prompt, fit_keep_counts
from llava.model.language_model.modeling_llama import LlamaForCausalLM
from llava.model.language_model.attention_scores import AttentionQuery
from llava.model.language_model.layer_probe import LayerProbe
from llava.model.language_model.sequence_layout import SequenceLayout
from llava.model.pruning.flops import DecoderDims, full_prefill_flops, full_reduction, paper_reduction
from llava.model.pruning.policies import FitPrunePolicy, RandomPolicy
from llava.model.pruning.pruner import TokenPruner
from llava.model.pruning.schedules import RecipeSchedule
from llava.model.pruning.ratio import parse_reduction_ratio

REPO_ROOT = Path(__file__).resolve().parents[2]
COMMAND = "python benchmarks/prefill_speed.py"
DEFAULT_RATIOS = (0.0, 30.0, 60.0, 90.0)
ANYRES_VISUAL_TOKENS = 2880  # ok: benchmark preset, LLaVA-NeXT at its largest grid (5 views of 576)
ANYRES_RATIOS = (60.0, 90.0)
SECTION_HEADING = "## Prefill speed (benchmarks/prefill_speed.py)"


DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


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


class TimedHook:
    """Wraps a prefill hook and adds up the time spent inside it (scoring, ranking, gather); its
    `policy` and `schedule` are the wrapped pruner's, so a policy acting in the vision tower
    (VisionZip) still sees them."""

    def __init__(self, hook: TokenPruner):
        self.hook = hook
        self.policy, self.schedule = hook.policy, hook.schedule
        self.seconds = 0.0

    def before_layer(
        self, layer_idx: int, hidden: torch.Tensor, layout: SequenceLayout, probe: LayerProbe
    ) -> Tuple[torch.Tensor, SequenceLayout]:
        """The wrapped hook's drop before the layer (DART, DivPrune, PyramidDrop), timed."""
        return self._timed(hidden.device, lambda: self.hook.before_layer(layer_idx, hidden, layout, probe))

    def _timed(self, device: torch.device, work):
        """`work()`, its time added (on a GPU from the queued work before it to its own finished work)."""
        _wait_for(device)
        start = time.perf_counter()
        result = work()
        _wait_for(device)
        self.seconds += time.perf_counter() - start
        return result

    def attention_query(self, layer_idx: int, layout: SequenceLayout) -> Optional[AttentionQuery]:
        """The wrapped hook's statistics request, timed."""
        start = time.perf_counter()
        query = self.hook.attention_query(layer_idx, layout)
        self.seconds += time.perf_counter() - start
        return query

    def after_attention(
        self, layer_idx: int, hidden: torch.Tensor, attention_sums: Optional[torch.Tensor], layout: SequenceLayout
    ) -> Tuple[torch.Tensor, SequenceLayout]:
        """The wrapped hook's pruning (scoring, ranking, gather), timed (on a GPU from the layer's
        finished attention to the hook's finished work)."""
        return self._timed(hidden.device, lambda: self.hook.after_attention(layer_idx, hidden, attention_sums, layout))


def _wait_for(device: torch.device) -> None:
    """Waits until the GPU `device` has finished its queued work (nothing to wait for on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------- report


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


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds (median reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    for key, value in BENCHMARK_SIZES.items():
        parser.add_argument("--" + key.replace("_", "-"), type=int, default=value, dest=key)
    parser.add_argument("--reduction-ratio", dest="reduction_ratios", metavar="R",
                        type=parse_reduction_ratio, nargs="+", default=list(DEFAULT_RATIOS),
                        help="budgets, percent (60) or fraction (0.6) of paper-convention FLOPs removed")
    parser.add_argument("--shape", choices=("geometric", "published"), default="geometric",
                        help="one-parameter keep-count shape fitted to each budget")
    add_timing_flags(parser, max_seconds=600.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=1, help="samples per prefill (copies of the one prompt)")
    parser.add_argument("--logits", choices=tuple(LOGITS_TEXT), default="last",
                        help="LM head on the last row per sample (generation) or on every row left")
    parser.add_argument("--no-random-policy", action="store_true",
                        help="skip the diagnostic rows with RandomPolicy (no attention probabilities needed)")
    parser.add_argument("--anyres-visual-tokens", type=int, default=ANYRES_VISUAL_TOKENS,
                        help="visual tokens of the LLaVA-NeXT-shaped prompt timed too (0 skips it)")
    parser.add_argument("--anyres-reduction-ratio", dest="anyres_reduction_ratios", metavar="R",
                        type=parse_reduction_ratio, nargs="+", default=list(ANYRES_RATIOS),
                        help="budgets timed on the LLaVA-NeXT-shaped prompt, percent (60) or fraction (0.6)")
    parser.add_argument("--device", default="cpu", help="where the models run (cpu, cuda, cuda:1, ...)")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="float32",
                        help="the models' dtype (RoPE tables stay float32, as in generation)")
    parser.add_argument("--label", default="",
                        help="words the section heading adds, so that a run at other sizes keeps its own section "
                             "(e.g. 'at LLaVA-7B layer width')")
    parser.add_argument("--output", default=str(REPO_ROOT / "BENCHMARKS.md"),
                        help="Markdown file to write the section into ('-' only prints it)")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0 or args.batch < 1:
        parser.error(f"--repeats and --batch must be >= 1 and --warmup >= 0, got {args.repeats}, {args.batch} "
                     f"and {args.warmup}")
    try:
        device = torch.device(args.device)
    except RuntimeError as err:
        parser.error(f"--device {args.device}: {err}")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: no CUDA device here (torch {torch.__version__})")
    args.device = device
    args.threads_used = apply_timing_flags(parser, args)
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Builds the models, times every row, prints the section and writes it into `--output`.

    Returns:
        0, or 3 when most rounds were contended and nothing was written.
    """
    args = parse_args(argv)
    command = command_line(COMMAND, sys.argv[1:] if argv is None else argv)
    threads = args.threads_used
    torch.manual_seed(args.seed)

    config = build_config(args)
    dims = DecoderDims.from_config(config)
    num_visual = args.visual_tokens
    num_other = args.prefix_tokens + args.text_tokens
    device, dtype = args.device, DTYPES[args.dtype]
    ours = LlamaForCausalLM(config).eval()
    reference = transformers.LlamaForCausalLM(config).eval()
    reference.load_state_dict(ours.state_dict(), strict=True)
    ours.to(device=device, dtype=dtype)
    reference.to(device=device, dtype=dtype)
    embeds, layout = build_prompt(args.prefix_tokens, num_visual, args.text_tokens, args.hidden, args.seed,
                                  args.batch, device, dtype)
    logits_to_keep = logit_rows_of(args) or 0  # num_logits_to_keep: 0 is every row
    print(f"model: {config.num_hidden_layers} layers, hidden {config.hidden_size}, FFN {config.intermediate_size}, "
          f"{config.num_attention_heads} heads, vocab {config.vocab_size}, {args.dtype} on {device}; prompt {args.prefix_tokens} prefix + "
          f"{num_visual} visual + {args.text_tokens} text = {embeds.shape[1]} rows, batch {args.batch}, logits "
          f"{args.logits}; {threads} threads")

    keep_counts = {ratio: fit_keep_counts(dims, args.shape, ratio, num_visual) for ratio in args.reduction_ratios}
    for ratio, counts in keep_counts.items():
        print(f"ratio {ratio:g}: keep {counts}  paper {paper_reduction(dims, counts, num_visual):.2f}%  "
              f"full {full_reduction(dims, counts, num_visual, num_other, logit_rows_of(args)):.2f}%")

    def prefill(hook: Optional[TimedHook], logits: int = logits_to_keep):
        with ours.prefill_hook_installed(hook):
            out = ours(inputs_embeds=embeds, sequence_layout=layout, use_cache=False, num_logits_to_keep=logits)
        _wait_for(device)
        return out

    def reference_prefill() -> None:
        """transformers' decoder, its LM head on the rows ours computes logits for."""
        hidden = reference.model(inputs_embeds=embeds, use_cache=False).last_hidden_state
        reference.lm_head(hidden[:, -logits_to_keep:] if logits_to_keep else hidden)
        _wait_for(device)

    def timed_prefill(hook: Optional[TimedHook]) -> Optional[float]:
        """One prefill; returns the seconds spent inside the pruner, if any."""
        if hook is not None:
            hook.seconds = 0.0
        prefill(hook)
        return None if hook is None else hook.seconds

    pruners = {ratio: TimedHook(TokenPruner(FitPrunePolicy(), RecipeSchedule(counts, num_visual)))
               for ratio, counts in keep_counts.items()}
    runs: Dict[str, Callable[[], Optional[float]]] = {
        "transformers": reference_prefill,
        "unpruned": lambda: timed_prefill(None),
    }
    for ratio, counts in keep_counts.items():
        runs[f"fitprune {ratio:g}"] = lambda hook=pruners[ratio]: timed_prefill(hook)
        if not args.no_random_policy and min(counts) < num_visual:
            random_pruner = TimedHook(TokenPruner(RandomPolicy(args.seed), RecipeSchedule(counts, num_visual)))
            runs[f"random {ratio:g}"] = lambda hook=random_pruner: timed_prefill(hook)

    anyres_counts: Dict[float, List[int]] = {}
    if args.anyres_visual_tokens:
        anyres_embeds, anyres_layout = build_prompt(args.prefix_tokens, args.anyres_visual_tokens, args.text_tokens,
                                                    args.hidden, args.seed, args.batch, device, dtype)

        def anyres_prefill(hook: Optional[TokenPruner]) -> None:
            with ours.prefill_hook_installed(hook):
                ours(inputs_embeds=anyres_embeds, sequence_layout=anyres_layout, use_cache=False,
                     num_logits_to_keep=logits_to_keep)
            _wait_for(device)

        runs["anyres unpruned"] = lambda: anyres_prefill(None)
        for ratio in args.anyres_reduction_ratios:
            counts = fit_keep_counts(dims, args.shape, ratio, args.anyres_visual_tokens)
            anyres_counts[ratio] = counts
            pruner = TokenPruner(FitPrunePolicy(), RecipeSchedule(counts, args.anyres_visual_tokens))
            runs[f"anyres fitprune {ratio:g}"] = lambda hook=pruner: anyres_prefill(hook)

    with torch.inference_mode():
        expected = reference(inputs_embeds=embeds, use_cache=False).logits
        parity = (prefill(None, logits=0).logits - expected).abs().max().item()
        print(f"unpruned logits vs transformers: max |diff| = {parity:.2e}")
        final_visual = {ratio: int(prefill(hook).pruning_trace.counts()[-1, 0]) for ratio, hook in pruners.items()}
        timings = time_rounds(runs, args.warmup, args.repeats, args.quiet_cores, args.max_seconds, clock_of(args))
    for name, values in timings.seconds.items():
        print(f"{name:>16}: median {1e3 * statistics.median(values):8.1f} ms  (min {1e3 * min(values):.1f}, "
              f"max {1e3 * max(values):.1f})")

    section = format_section(args, command, config, dims, keep_counts, final_visual, parity, timings, threads,
                             anyres_counts)
    print()
    print(section)
    if args.output == "-":
        return 0
    if too_contended(args, timings):
        return 3
    write_section(Path(args.output), section_heading(args.batch, args.label), section)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
