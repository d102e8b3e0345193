"""Scoring overhead of each pruning policy: its prefill time against random pruning at the same
keep counts (`python benchmarks/policy_overhead.py`).

On a demo model (`--model scenes|shapes`) and one test prompt repeated `--batch` times, each method
of `fitprune.lab.method_runs` prunes at the budget (`--reduction-ratio`, default 70); its visual
tokens entering and leaving each layer are read from the prefill's trace, and random ranking is
timed at exactly those counts (a random ranking acting before the layer for the methods that act
before a layer), so the difference is what choosing costs. The last column says whether the
method reads attention probabilities in the decoder, which fused attention does not give and so
costs an extra statistics pass at the layers that prune (from each policy's docstring). VisionZip
acts in the vision tower (one [CLS] row there) and is left out: its decoder runs no policy.
Timings are the best of `--repeats` prefills (least disturbed by other processes); on a shared CPU read them as rough.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence

import torch

from fitprune.lab.answers import encode_questions, load_answered_questions
from fitprune.lab.baselines import pruner_installed
from fitprune.lab.benchmarks_file import write_section
from fitprune.lab.compare_report import label
from fitprune.lab.demo_models import DEMO_MODELS
from fitprune.lab.method_runs import Budget, available_methods, pruning_for
from llava.model.language_model.layer_probe import LayerProbe
from llava.model.pruning.policies import RandomPolicy
from llava.model.pruning.recipe import RecipeBook

READS_ATTENTION = {"fitprune": True, "fastv": True, "pyramiddrop": True, "sparsevlm-drop": True,
                   "sparsevlm": True, "recipe+fastv": True, "fitprune-selfmean": True, "dart": False, "divprune": False,
                   "recipe+dart": False, "recipe+divprune": False, "uniform": True}
"""Whether a method's ranking reads attention probabilities (its policy docstring says so)."""
HEADING = "## Scoring overhead of each policy (python benchmarks/policy_overhead.py)"


class RandomBeforeLayer(RandomPolicy):
    """Random ranking of the rows entering a layer (the control for policies acting before a layer)."""

    acts_before_layer = True

    def rank(self, layer_idx: int, probe: LayerProbe, keep: torch.Tensor) -> torch.Tensor:
        """(B, T) the random policy's scores of the rows entering the layer."""
        return self.score(layer_idx, None, probe.layout)


def _prefill_ms(model, ids: torch.Tensor, images: torch.Tensor) -> float:
    """Wall time of one prefill forward, milliseconds."""
    start = time.perf_counter()
    with torch.inference_mode():
        model(input_ids=ids, images=images, use_cache=False)
    return (time.perf_counter() - start) * 1000


def _best_ms(model, ids: torch.Tensor, images: torch.Tensor, repeats: int) -> float:
    """Best of `repeats` prefills after one untimed warm-up, milliseconds."""
    _prefill_ms(model, ids, images)
    return min(_prefill_ms(model, ids, images) for _ in range(repeats))


def overhead_rows(model, book: RecipeBook, ids: torch.Tensor, images: torch.Tensor, ratio: float,
                  repeats: int) -> List[str]:
    """One Markdown row per method: its time, random's at its counts, the difference (ms, %)."""
    rows = []
    for method in available_methods(False):
        if method in ("random", "visionzip"):
            continue
        context, _, _ = pruning_for(model, method, Budget(ratio=ratio), book, 0)
        with context:
            timed = _best_ms(model, ids, images, repeats)
            trace = model.last_pruning_trace
            before = getattr(model.get_model().prefill_hook.policy, "acts_before_layer", False)
        counts = trace.counts()[:, 0].tolist()
        control = RandomBeforeLayer(0) if before else RandomPolicy(0)
        with pruner_installed(model, control, counts if not before else trace.entered()[:, 0].tolist()):
            random_ms = _best_ms(model, ids, images, repeats)
        rows.append(f"| {label(method)} | {timed:.1f} | {random_ms:.1f} | {timed - random_ms:+.1f} "
                    f"({100 * (timed - random_ms) / random_ms:+.0f}%) | {'yes' if READS_ATTENTION[method] else 'no'} |")
    return rows


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Times every policy at batch sizes 1 and 4; writes the BENCHMARKS.md section."""
    parser = argparse.ArgumentParser(prog="python benchmarks/policy_overhead.py", description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(DEMO_MODELS), default="scenes")
    parser.add_argument("--reduction-ratio", type=float, default=70.0)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--output", default="BENCHMARKS.md")
    args = parser.parse_args(argv)
    from llava.model.builder import load_pretrained_model

    demo = DEMO_MODELS[args.model]
    tokenizer, model, processor, _ = load_pretrained_model(demo.path, None, Path(demo.path).name, device="cpu")
    model.eval()
    book = RecipeBook.load(f"{demo.path}/fitprune_recipes.json")
    batch = encode_questions(load_answered_questions(demo.test_file, 1), tokenizer, processor, model.config,
                             demo.image_folder)[0]
    lines = [HEADING, "", f"`{demo.path}` at {args.reduction_ratio:g}% FLOPs removed, one test prompt repeated; "
             f"best of {args.repeats} prefills, ms, {torch.get_num_threads()} threads on a shared CPU (rough). "
             "Random runs at the keep counts each method's prefill recorded.", ""]
    for size in args.batch:
        ids, images = batch.input_ids[:1].repeat(size, 1), batch.images[:1].repeat(size, 1, 1, 1)
        lines += [f"Batch {size}:", "", "| method | its prefill ms | random at its counts ms | scoring overhead | "
                  "reads attention probabilities |", "|---|---|---|---|---|"]
        lines += overhead_rows(model, book, ids, images, args.reduction_ratio, args.repeats) + [""]
    section = "\n".join(lines).rstrip("\n") + "\n"
    write_section(Path(args.output), HEADING, section)
    print(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
