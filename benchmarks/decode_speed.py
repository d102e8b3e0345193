"""Decode speed and KV-cache size of FitPrune pruning on a LLaVA-shaped random decoder, on CPU
(`python benchmarks/decode_speed.py`).

The prompt of the prefill benchmark (`fitprune.lab.prefill_setup`: the same random decoder,
prefix + visual + text rows as random embeddings) is prefilled once at batch 1 per budget,
unpruned and with FitPrune at each ratio; the `PrunedKVCache` it leaves is repeated B times
(`PrunedKVCache.reorder`, as a prefill of the prompt repeated B times would leave it), and
`--steps` greedy decode steps run from it through our `LlamaForCausalLM`, the new tokens fed
as ids through `embed_tokens`. Reports decode tokens/s per batch size and budget, the speed-up
against the unpruned cache, the cache's bytes and the FLOPs-ideal speed-up, and writes the
table into BENCHMARKS.md.

Run: ``python benchmarks/decode_speed.py [--steps 12] [--repeats 3] [--output BENCHMARKS.md]``.
"""
from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import transformers

from fitprune.lab.benchmarks_file import command_line, write_section
from fitprune.lab.prefill_setup import BENCHMARK_SIZES, build_config, build_prompt, fit_keep_counts
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
from llava.model.language_model.kv_cache import PrunedKVCache
from llava.model.language_model.modeling_llama import LlamaForCausalLM
from llava.model.language_model.sequence_layout import SequenceLayout
from llava.model.pruning.flops import DecoderDims, full_decode_step_flops
from llava.model.pruning.policies import FitPrunePolicy
from llava.model.pruning.pruner import TokenPruner
from llava.model.pruning.schedules import RecipeSchedule
from llava.model.pruning.ratio import parse_reduction_ratio

REPO_ROOT = Path(__file__).resolve().parents[1]
COMMAND = "python benchmarks/decode_speed.py"
DEFAULT_BATCH_SIZES = (1, 8, 32)
DEFAULT_RATIOS = (60.0, 90.0)
SECTION_HEADING = "## Decode speed (benchmarks/decode_speed.py)"
UNPRUNED = 0.0  # the budget key of the unpruned prefill (no hook)


@dataclass
class PrefilledPrompt:
    """The batch-1 prefill of one budget, the start of every decode of that budget.

    Attributes:
        cache: the cache the prefill left, (1, H_kv, S_l, D) per layer.
        first_token: (1,) the greedy token after the prompt.
        keep_counts: visual tokens left after each layer (all of them when unpruned).
    """

    cache: PrunedKVCache
    first_token: torch.Tensor
    keep_counts: List[int]


def repeat_cache(cache: PrunedKVCache, batch: int) -> PrunedKVCache:
    """A new cache holding batch row 0 of `cache` `batch` times (copied, contiguous)."""
    return cache.reorder(torch.zeros(batch, dtype=torch.long))


def decode_steps(model: LlamaForCausalLM, cache: PrunedKVCache, first_tokens: torch.Tensor, steps: int) -> torch.Tensor:
    """Greedy decoding of `steps` tokens per sample from a copy of `cache` (left unchanged).

    Args:
        model: the decoder.
        cache: the cache after the prompt, batch B.
        first_tokens: (B,) the tokens fed at the first step.
        steps: decode steps (forwards of one token per sample).

    Returns:
        (B, steps) the tokens fed, the first one included.
    """
    cache = cache.fork()
    tokens, fed = first_tokens, []
    for _ in range(steps):
        fed.append(tokens)
        out = model(input_ids=tokens[:, None], past_key_values=cache, use_cache=True, num_logits_to_keep=1)
        cache = out.past_key_values
        tokens = out.logits[:, -1].argmax(dim=-1)  # (B,)
    return torch.stack(fed, dim=1)


def prefill_prompt(model: LlamaForCausalLM, embeds: torch.Tensor, layout: SequenceLayout, num_visual: int,
                   keep_counts: Optional[List[int]]) -> PrefilledPrompt:
    """Prefills the batch-1 prompt (`embeds` (1, T, D) with its `layout`, `num_visual` visual rows),
    FitPrune-pruned to `keep_counts` (None: unpruned, no hook)."""
    hook = None if keep_counts is None else TokenPruner(FitPrunePolicy(), RecipeSchedule(keep_counts, num_visual))
    with model.prefill_hook_installed(hook):
        out = model(inputs_embeds=embeds, sequence_layout=layout, use_cache=True, num_logits_to_keep=1)
    counts = ([num_visual] * len(model.model.layers) if keep_counts is None
              else out.pruning_trace.counts()[:, 0].tolist())
    return PrefilledPrompt(out.past_key_values, out.logits[:, -1].argmax(dim=-1), counts)


def decode_run(model: LlamaForCausalLM, cache: PrunedKVCache, first_tokens: torch.Tensor, steps: int
               ) -> Callable[[], None]:
    """A timed run of `time_rounds`: `decode_steps` from `cache`, returning nothing."""
    def run() -> None:
        decode_steps(model, cache, first_tokens, steps)

    return run


def ideal_speedup(dims: DecoderDims, unpruned: PrunedKVCache, pruned: PrunedKVCache, steps: int) -> float:
    """Unpruned over pruned full-convention FLOPs of `steps` decode steps from the two caches."""
    def flops(cache: PrunedKVCache) -> float:
        lengths = cache.layer_lengths()
        return sum(full_decode_step_flops(dims, [length + step for length in lengths]) for step in range(steps))

    return flops(unpruned) / flops(pruned)


def run_name(batch: int, ratio: float) -> str:
    """The timed run of one batch size and budget."""
    return f"B{batch} " + ("unpruned" if ratio == UNPRUNED else f"fitprune {ratio:g}")


# ----------------------------------------------------------------------------- report


def format_table(args: argparse.Namespace, dims: DecoderDims, prompts: Dict[float, PrefilledPrompt],
                 caches: Dict[Tuple[int, float], PrunedKVCache], timings: Timings) -> List[str]:
    """The table: one row per batch size and budget, unpruned first."""
    median = {name: statistics.median(values) for name, values in timings.seconds.items()}
    header = ("| batch | ratio | visual left | KV cache MiB | cache vs unpruned | ms / step | tokens/s "
              "| speed-up vs unpruned | ideal |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for batch in args.batch_sizes:
        base_seconds = median[run_name(batch, UNPRUNED)]
        base_bytes = caches[batch, UNPRUNED].nbytes()
        for ratio, prompt in prompts.items():
            seconds = median[run_name(batch, ratio)]
            size = caches[batch, ratio].nbytes()
            ideal = ideal_speedup(dims, caches[batch, UNPRUNED], caches[batch, ratio], args.steps)
            lines.append(
                f"| {batch} | {'unpruned' if ratio == UNPRUNED else f'{ratio:g}'} | {prompt.keep_counts[-1]} "
                f"| {size / 2**20:.1f} | {size / base_bytes:.2f} | {1e3 * seconds / args.steps:.1f} "
                f"| {batch * args.steps / seconds:.0f} | {base_seconds / seconds:.2f} | {ideal:.2f} |"
            )
    return lines


def format_section(args: argparse.Namespace, command: str, config: transformers.LlamaConfig, dims: DecoderDims,
                   prompts: Dict[float, PrefilledPrompt], caches: Dict[Tuple[int, float], PrunedKVCache],
                   timings: Timings, threads: int) -> str:
    """The Markdown section: setup, machine, the table and the cache lengths."""
    clock = "wall clock" if args.clock == "wall" else "process CPU time"
    lengths = [
        f"- {'unpruned' if ratio == UNPRUNED else f'{ratio:g}'}: {prompt.cache.layer_lengths()}"
        for ratio, prompt in prompts.items()
    ]
    return "\n".join([
        SECTION_HEADING,
        "",
        f"Greedy decode steps of a random LLaMA decoder: {config.num_hidden_layers} layers, hidden "
        f"{config.hidden_size}, FFN {config.intermediate_size}, {config.num_attention_heads} heads "
        f"({config.num_key_value_heads} KV), vocab {config.vocab_size}, fp32; our `LlamaForCausalLM` with the "
        f"`PrunedKVCache` of the prefill benchmark's prompt ({args.prefix_tokens} prefix + {args.visual_tokens} "
        f"visual + {args.text_tokens} text tokens as random embeddings), one new token per sample per step fed as "
        "an id, LM head on it alone (`num_logits_to_keep=1`). Each budget's prompt is prefilled once at batch 1 "
        f"(FitPrune policy, keep counts of the `{args.shape}` shape fitted by bisection to the budget); batch B "
        "decodes from that cache repeated B times (`PrunedKVCache.reorder`), the cache a prefill of the prompt "
        "repeated B times leaves.",
        "",
        f"- Machine: {cpu_model()}, {available_cores()} cores, {threads} torch threads; torch {torch.__version__}, "
        f"transformers {transformers.__version__}, Python {platform.python_version()}.",
        f"- Date: {datetime.date.today().isoformat()}. Command: `{command}`.",
        f"- Timing: {args.warmup} warm-up + {args.repeats} timed rounds of {args.steps} steps from the same cache, "
        f"each row once per round (alternating), {clock}; took {timings.wall:.0f} s; {contention_text(args, timings)}.",
        f"- tokens/s = batch × {args.steps} steps / the row's median time; speed-up = unpruned median / the row's, "
        "same batch; KV cache = bytes of every layer's keys, values and key mask right after the prefill; "
        f"ideal = unpruned / pruned full-convention FLOPs of the {args.steps} steps "
        "(`full_decode_step_flops`; per sample, so the same at every batch). Each step writes its keys and "
        "values into room past the cached tokens (`PrunedKVCache`); a timed run's first step copies each layer "
        "once (the prefill's tensors have no room, and the runs share the prefill's cache).",
        "",
        *format_table(args, dims, prompts, caches, timings),
        "",
        "Cache tokens per layer after the prefill:",
        "",
        *lengths,
        "",
    ])


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=12,
                        help="decode steps timed per row and round (12 keeps the default run near 3 minutes)")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=list(DEFAULT_BATCH_SIZES))
    for key, value in BENCHMARK_SIZES.items():
        parser.add_argument("--" + key.replace("_", "-"), type=int, default=value, dest=key)
    parser.add_argument("--reduction-ratio", dest="reduction_ratios", metavar="R",
                        type=parse_reduction_ratio, nargs="+", default=list(DEFAULT_RATIOS),
                        help="pruned budgets, percent (60) or fraction (0.6) of paper-convention FLOPs removed "
                             "(unpruned always runs)")
    parser.add_argument("--shape", choices=("geometric", "published"), default="published",
                        help="one-parameter keep-count shape fitted to each budget")
    add_timing_flags(parser, max_seconds=120.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=str(REPO_ROOT / "BENCHMARKS.md"),
                        help="Markdown file to write the section into ('-' only prints it)")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.repeats < 1 or args.warmup < 0:
        parser.error(f"--steps and --repeats must be >= 1 and --warmup >= 0, got {args.steps}, {args.repeats} "
                     f"and {args.warmup}")
    if min(args.batch_sizes) < 1:
        parser.error(f"--batch-sizes must be >= 1, got {args.batch_sizes}")
    if UNPRUNED in args.reduction_ratios:
        parser.error("--reduction-ratio: 0 is the unpruned row, which always runs; give pruned budgets only")
    args.threads_used = apply_timing_flags(parser, args)
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Prefills each budget, times the decode steps of every batch size, prints the section and
    writes it into `--output`.

    Returns:
        0, or 3 when most rounds were contended and nothing was written.
    """
    args = parse_args(argv)
    command = command_line(COMMAND, sys.argv[1:] if argv is None else argv)
    threads = args.threads_used
    torch.manual_seed(args.seed)

    config = build_config(args)
    dims = DecoderDims.from_config(config)
    model = LlamaForCausalLM(config).eval()
    embeds, layout = build_prompt(args.prefix_tokens, args.visual_tokens, args.text_tokens, args.hidden, args.seed)
    counts_by_ratio = {UNPRUNED: None, **{ratio: fit_keep_counts(dims, args.shape, ratio, args.visual_tokens)
                                  for ratio in args.reduction_ratios}}
    with torch.inference_mode():
        prompts = {ratio: prefill_prompt(model, embeds, layout, args.visual_tokens, counts)
                   for ratio, counts in counts_by_ratio.items()}
        caches = {(batch, ratio): repeat_cache(prompt.cache, batch)
                  for batch in args.batch_sizes for ratio, prompt in prompts.items()}
        runs = {run_name(batch, ratio): decode_run(model, cache, prompts[ratio].first_token.repeat(batch), args.steps)
                for (batch, ratio), cache in caches.items()}
        for ratio, prompt in prompts.items():
            print(f"{'unpruned' if ratio == UNPRUNED else f'ratio {ratio:g}'}: keep {prompt.keep_counts}, cache "
                  f"{prompt.cache.layer_lengths()} tokens per layer")
        timings = time_rounds(runs, args.warmup, args.repeats, args.quiet_cores, args.max_seconds, clock_of(args))
    for name, values in timings.seconds.items():
        print(f"{name:>16}: median {1e3 * statistics.median(values):8.1f} ms for {args.steps} steps "
              f"(min {1e3 * min(values):.1f}, max {1e3 * max(values):.1f})")

    section = format_section(args, command, config, dims, prompts, caches, timings, threads)
    print()
    print(section)
    if args.output == "-":
        return 0
    if too_contended(args, timings):
        return 3
    write_section(Path(args.output), SECTION_HEADING, section)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
