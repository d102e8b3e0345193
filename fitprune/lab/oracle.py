"""The oracle pruning policy of the relational scenes task, and the headroom measurement.

The oracle knows which grid cells hold the objects a question refers to (the `cells` of
each question line, `fitprune.lab.scenes.questions`) and ranks them first; the other
tokens follow in the random policy's order, so oracle and random differ only in keeping the
referred objects. At the same keep counts, the gap between the two is the headroom a
scoring policy has on the task: how much choosing the right tokens can matter.

    python -m fitprune.lab.oracle --model-path playground/models/llava-v1.5-scenes \\
        [--recipe recipes.json] --output headroom.json

measures on the test split: unpruned accuracy, accuracy with no visual token after layer 0
against chance (the best constant answer per kind and answer type), and, at each budget,
oracle, random, FitPrune and FastV rankings at the same keep counts (the FitPrune recipe's
when `--recipe` is given, else the uniform baseline's matched to the budget), per kind.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch

from fitprune.lab.answers import AccuracyReport, PromptBatch, answer_accuracy, encode_questions, load_answered_questions
from fitprune.lab.baselines import matched_uniform, pruner_installed
from fitprune.lab.scenes.scenes import RelationalTask
from llava.model.language_model.sequence_layout import SequenceLayout
from llava.model.pruning.flops import DecoderDims
from llava.model.pruning.policies import FastVPolicy, FitPrunePolicy, RandomPolicy, ReadsNoAttention
from llava.model.pruning.ratio import parse_reduction_ratio

BATCH_SIZE = 32
HEADROOM_RATIOS = (70.0, 90.0)


class OraclePolicy(ReadsNoAttention):
    """Ranks each sample's referred cells first, then the rest in `RandomPolicy`'s order.

    The cells are per sample: `set_cells` before each batch.
    """

    name = "oracle"

    def __init__(self, seed: int = 0):
        self.random = RandomPolicy(seed)
        self.cells: Optional[torch.Tensor] = None

    def set_cells(self, cells: Sequence[Sequence[int]]) -> None:
        """The grid indices to keep first, one sequence per sample of the next batch."""
        width = max([len(c) for c in cells] + [1])
        table = torch.full((len(cells), width), -2, dtype=torch.long)  # -2 matches no row (-1 is non-visual)
        for b, sample in enumerate(cells):
            table[b, :len(sample)] = torch.as_tensor(list(sample), dtype=torch.long)
        self.cells = table

    def score(self, layer_idx: int, attention_sums: Optional[torch.Tensor], layout: SequenceLayout) -> torch.Tensor:
        """(B, T) 1 + random score on the visual rows of referred cells, the random score elsewhere.

        Raises:
            ValueError: if no cells were set, or for another number of samples.
        """
        if self.cells is None or self.cells.shape[0] != layout.visual_index.shape[0]:
            have = None if self.cells is None else self.cells.shape[0]
            raise ValueError(f"OraclePolicy: cells set for {have} samples, the batch has "
                             f"{layout.visual_index.shape[0]}; call set_cells before each batch")
        wanted = self.cells.to(layout.visual_index.device)
        hits = (layout.visual_index[:, :, None] == wanted[:, None, :]).any(dim=-1)  # (B, T)
        return hits.float() + self.random.score(layer_idx, attention_sums, layout)


def merge_reports(reports: Sequence[AccuracyReport]) -> AccuracyReport:
    """One report of the questions of several."""
    counts = defaultdict(lambda: [0, 0])
    for report in reports:
        for kind, (correct, total) in report.per_kind.items():
            counts[kind][0] += correct
            counts[kind][1] += total
    return AccuracyReport(sum(r.correct for r in reports), sum(r.total for r in reports),
                          {k: tuple(v) for k, v in sorted(counts.items())})


def has_cells(batches: Sequence[PromptBatch]) -> bool:
    """Whether every question of `batches` knows its referred cells (the oracle can run)."""
    return all(len(b.cells) == len(b.kinds) and all(c is not None for c in b.cells) for b in batches)


class ReferredCellsKept:
    """Counts, over the prefills it is called after (`answer_accuracy`'s `after_batch`), how
    many of the questions' referred cells are still among the visual tokens after each layer."""

    def __init__(self, model):
        self.model = model
        self.kept = [0] * model.config.num_hidden_layers
        self.referred = 0

    def __call__(self, batch: PromptBatch) -> None:
        """Adds the latest prefill (of `batch`); an unpruned prefill keeps every cell."""
        trace = self.model.last_pruning_trace
        for sample, cells in enumerate(batch.cells):
            self.referred += len(cells)
            for layer in range(len(self.kept)):
                if trace is None:
                    self.kept[layer] += len(cells)
                else:
                    alive = trace.kept_indices(layer, sample)
                    self.kept[layer] += int(torch.isin(torch.as_tensor(cells, dtype=alive.dtype), alive).sum())

    def shares(self) -> List[float]:
        """Percent of the referred cells alive after each layer."""
        return [100.0 * k / max(1, self.referred) for k in self.kept]


def oracle_accuracy(model, batches: Sequence[PromptBatch], keep_counts: Sequence[int], seed: int = 0,
                    after_batch: Optional[Callable[[PromptBatch], None]] = None) -> AccuracyReport:
    """First-token accuracy with the oracle pruning to `keep_counts`, each batch's samples
    keeping their referred cells (`PromptBatch.cells`) first (`after_batch` as in
    `answer_accuracy`).

    Raises:
        ValueError: a batch whose questions carry no cells (the question file has no `cells`).
    """
    if not has_cells(batches):
        raise ValueError("the oracle needs each question's referred cells ('cells' in the question file)")
    policy = OraclePolicy(seed)
    reports = []
    with pruner_installed(model, policy, keep_counts):
        for batch in batches:
            policy.set_cells(batch.cells)
            reports.append(answer_accuracy(model, [batch], after_batch))
    return merge_reports(reports)


def policy_accuracy(model, batches: Sequence[PromptBatch], policy, keep_counts: Sequence[int]) -> AccuracyReport:
    """First-token accuracy with `policy` pruning to `keep_counts`."""
    with pruner_installed(model, policy, keep_counts):
        return answer_accuracy(model, batches)


def no_visual_after_layer_0(model, batches: Sequence[PromptBatch], seed: int = 0) -> AccuracyReport:
    """First-token accuracy with every visual token dropped after layer 0 (layer 0 sees them
    all): what the model reads of the image in its first layer alone."""
    return policy_accuracy(model, batches, RandomPolicy(seed), (0,) * model.config.num_hidden_layers)


def answer_type(record: dict, colours: Sequence[str], shapes: Sequence[str]) -> str:
    """What a question's answer is: colour, shape, yes/no or count (read off the answer)."""
    if record["answer"] in colours:
        return "colour"
    if record["answer"] in shapes:
        return "shape"
    return "yes/no" if record["answer"] in ("Yes", "No") else "count"


def chance_accuracy(records: Sequence[dict], colours: Sequence[str], shapes: Sequence[str]) -> Dict[str, float]:
    """Accuracy (percent) of the best constant answer per (kind, answer type), per kind and
    overall ("all"): what a model that reads the question but not the image can reach by priors."""
    groups = defaultdict(Counter)
    for record in records:
        groups[(record["kind"], answer_type(record, colours, shapes))][record["answer"]] += 1
    correct, total = Counter(), Counter()
    for (kind, _), answers in groups.items():
        correct[kind] += answers.most_common(1)[0][1]
        total[kind] += sum(answers.values())
    chance = {kind: 100.0 * correct[kind] / total[kind] for kind in sorted(total)}
    chance["all"] = 100.0 * sum(correct.values()) / sum(total.values())
    return chance


def _summary(report: AccuracyReport) -> dict:
    return {"all": round(report.accuracy, 1), **{k: round(report.kind_accuracy(k), 1) for k in report.per_kind}}


def measure(model, tokenizer, processor, question_file: Path, image_folder: str, ratios: Sequence[float],
            recipes: Optional[Path], seed: int) -> dict:
    """Every measurement of the module docstring, as a JSON-ready dict."""
    records = [json.loads(line) for line in question_file.read_text().splitlines() if line.strip()]
    questions = load_answered_questions(question_file)
    batches = encode_questions(questions, tokenizer, processor, model.config, image_folder, batch_size=BATCH_SIZE)
    dims = DecoderDims.from_config(model.config)
    num_visual = model.get_model().num_visual_tokens()
    task = RelationalTask()
    result = {
        "questions": len(questions),
        "unpruned": _summary(answer_accuracy(model, batches)),
        "no_visual_after_layer_0": _summary(no_visual_after_layer_0(model, batches, seed)),
        "chance": {k: round(v, 1) for k, v in chance_accuracy(records, list(task.colours), task.shapes).items()},
        "reduction_ratios": {},
    }
    book = None
    if recipes is not None:
        from llava.model.pruning.recipe import RecipeBook

        book = RecipeBook.load(recipes)
    for ratio in ratios:
        if book is not None:
            recipe = book.get(ratio)
            counts, removed, source = recipe.keep_counts, recipe.achieved_paper, "fitprune recipe"
        else:
            baseline = matched_uniform(dims, num_visual, ratio)
            counts, removed, source = baseline.keep_counts, baseline.paper_reduction, "uniform baseline"
        row = {"keep_counts": list(counts), "flops_removed_paper": round(removed, 1), "counts_from": source,
               "oracle": _summary(oracle_accuracy(model, batches, counts, seed))}
        for name, policy in (("random", RandomPolicy(seed)), ("fitprune", FitPrunePolicy()), ("fastv", FastVPolicy())):
            row[name] = _summary(policy_accuracy(model, batches, policy, counts))
        result["reduction_ratios"][f"{ratio:g}"] = row
    return result


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Measures and writes the headroom JSON; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m fitprune.lab.oracle", description=__doc__.splitlines()[0])
    parser.add_argument("--model-path", default="playground/models/llava-v1.5-scenes")
    parser.add_argument("--question-file", default="playground/scenes/test.jsonl",
                        help="question jsonl with answers and oracle cells")
    parser.add_argument("--image-folder", default="playground/scenes")
    parser.add_argument("--reduction-ratio", dest="reduction_ratios", metavar="R",
                        type=parse_reduction_ratio, nargs="*", default=list(HEADROOM_RATIOS),
                        help="budgets, percent (60) or fraction (0.6) of FLOPs removed")
    parser.add_argument("--recipe", default=None, help="FitPrune recipe file whose keep counts to use")
    parser.add_argument("--seed", type=int, default=0, help="random policy seed")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", default=None, help="JSON file to write (default: print only)")
    args = parser.parse_args(argv)
    for flag, path in (("--question-file", args.question_file), ("--model-path", args.model_path)):
        if not Path(path).exists():
            print(f"{parser.prog}: error: {flag}: {path} does not exist", file=sys.stderr)
            return 2
    from llava.mm_utils import get_model_name_from_path
    from llava.model.builder import load_pretrained_model

    torch.set_num_threads(args.threads)
    tokenizer, model, processor, _ = load_pretrained_model(args.model_path, None,
                                                           get_model_name_from_path(args.model_path), device="cpu")
    model.eval()
    result = measure(model, tokenizer, processor, Path(args.question_file), args.image_folder, args.reduction_ratios,
                     Path(args.recipe) if args.recipe else None, args.seed)
    result.update(model=args.model_path, question_file=args.question_file,
                  command="python -m fitprune.lab.oracle " + " ".join(argv if argv is not None else sys.argv[1:]))
    text = json.dumps(result, indent=1)
    if args.output:
        Path(args.output).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
