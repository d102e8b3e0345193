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
`fitprune.lab.prefill_setup`'s; the section is written by `benchmarks.prefill_speed_report`.

Run: ``python benchmarks/prefill_speed.py [--repeats 7] [--batch 1] [--logits last] [--output BENCHMARKS.md]``.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch
import transformers

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script from any directory
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks.prefill_speed_report import (  # noqa: E402
    LOGITS_TEXT,
    format_section,
    logit_rows_of,
    section_heading,
)
from fitprune.lab.bench_timing import (  # noqa: E402
    add_timing_flags,
    apply_timing_flags,
    clock_of,
    time_rounds,
    too_contended,
)
from fitprune.lab.benchmarks_file import command_line, write_section  # noqa: E402
from fitprune.lab.prefill_setup import BENCHMARK_SIZES, build_config, build_prompt, fit_keep_counts  # noqa: E402
from fitprune.lab.timed_hook import TimedHook, wait_for  # noqa: E402
from llava.model.language_model.modeling_llama import LlamaForCausalLM  # noqa: E402
from llava.model.pruning.flops import DecoderDims, full_reduction, paper_reduction  # noqa: E402
from llava.model.pruning.policies import FitPrunePolicy, RandomPolicy  # noqa: E402
from llava.model.pruning.pruner import TokenPruner  # noqa: E402
from llava.model.pruning.ratio import parse_reduction_ratio  # noqa: E402
from llava.model.pruning.schedules import RecipeSchedule  # noqa: E402

COMMAND = "python benchmarks/prefill_speed.py"
DEFAULT_RATIOS = (0.0, 30.0, 60.0, 90.0)
ANYRES_VISUAL_TOKENS = 2880  # ok: benchmark preset, LLaVA-NeXT at its largest grid (5 views of 576)
ANYRES_RATIOS = (60.0, 90.0)


DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

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
        wait_for(device)
        return out

    def reference_prefill() -> None:
        """transformers' decoder, its LM head on the rows ours computes logits for."""
        hidden = reference.model(inputs_embeds=embeds, use_cache=False).last_hidden_state
        reference.lm_head(hidden[:, -logits_to_keep:] if logits_to_keep else hidden)
        wait_for(device)

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
            wait_for(device)

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
