"""`python -m fitprune.demo`: the main job, on a bundled demo model and its data.

    python -m fitprune.demo                     # the relational scenes model (default)
    python -m fitprune.demo --model shapes      # the smaller shapes model

Answers a fixed subset of the test split (the first `--limit` questions, one of each kind per
image) unpruned and, at each budget (percent of paper-convention FLOPs removed), with FitPrune
(the model's recipe file, or recipes fitted now with `--calibrate`), random at FitPrune's keep
counts, every other method at the same budget (`fitprune.lab.method_runs`) and, where the
questions name their objects, the oracle. Prints per budget FitPrune, random, the best other
method on this run (named) with 95% Wilson intervals, its paired difference from FitPrune
(bootstrap over questions), the oracle, the FLOPs removed in both conventions and the model's
answer to the first question.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence

import torch

from fitprune.lab.answers import encode_questions, load_answered_questions, wilson_interval
from fitprune.lab.compare_report import label
from fitprune.lab.demo_models import DEMO_MODELS, DemoModel
from fitprune.lab.method_runs import Budget, MethodRun, available_methods, run_method
from fitprune.lab.oracle import has_cells
from fitprune.lab.paired import paired_bootstrap
from llava.model.pruning.ratio import parse_reduction_ratio
from llava.model.pruning.recipe import RecipeBook, RecipeError

DEMO_RATIOS = (50.0, 70.0, 90.0)
DEMO_QUESTIONS = 400
DEMO_RECIPE_DIR = "checkpoints/demo-recipes"
NOT_OTHERS = ("fitprune", "random", "oracle")


def check_demo_files(demo: DemoModel, recipes: Optional[str]) -> None:
    """Checks that the demo model, its data and `recipes` are there.

    Raises:
        FileNotFoundError: the first one missing, named (the default paths are relative to
            the repository root).
    """
    for path in [f"{demo.path}/config.json", demo.test_file, demo.image_folder, recipes or demo.calibration_file]:
        if not Path(path).exists():
            raise FileNotFoundError(f"{path} does not exist; run python -m fitprune.demo from the repository root")


def _first_answer(model, tokenizer, batch, max_new_tokens: int) -> str:
    """The model's generated answer to the first question of `batch` (greedy)."""
    ids = batch.input_ids[:1, :int(batch.attention_mask[0].sum())]
    with torch.inference_mode():
        output = model.generate(ids, images=batch.images[:1], do_sample=False, max_new_tokens=max_new_tokens,
                                use_cache=True)
    return tokenizer.decode(output[0, ids.shape[1]:], skip_special_tokens=True).strip()


def _accuracy(run: MethodRun) -> str:
    low, high = wilson_interval(int(run.hits.sum()), run.hits.size)
    return f"{run.accuracy:.1f} [{low:.0f}, {high:.0f}]"


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the demo; returns the exit code (2 after one line on stderr for a missing file or
    an unusable recipe file)."""
    parser = argparse.ArgumentParser(prog="python -m fitprune.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(DEMO_MODELS), default="scenes",
                        help="scenes: the relational scenes model (default); shapes: the shapes model")
    parser.add_argument("--reduction-ratio", dest="reduction_ratios", metavar="R",
                        type=parse_reduction_ratio, nargs="+", default=list(DEMO_RATIOS),
                        help="budgets, percent (60) or fraction (0.6) of FLOPs removed")
    parser.add_argument("--recipe", default=None, help="recipe file (default: the model's fitprune_recipes.json)")
    parser.add_argument("--calibrate", action="store_true",
                        help=f"fit FitPrune's recipes now on the calibration split (into {DEMO_RECIPE_DIR}/)")
    parser.add_argument("--num-samples", type=int, default=128, help="calibration samples (with --calibrate)")
    parser.add_argument("--limit", type=int, default=DEMO_QUESTIONS, help="first N test questions (0: all)")
    parser.add_argument("--methods", nargs="+", default=None, help="other methods to try (default: all)")
    parser.add_argument("--max-new-tokens", type=int, default=8)
    args = parser.parse_args(argv)
    try:
        return run_demo(args)
    except (FileNotFoundError, RecipeError) as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 2


def _recipes(args: argparse.Namespace, demo: DemoModel) -> Optional[str]:
    """The recipe file to read, after fitting it when `--calibrate` asks (None: calibration failed)."""
    if not args.calibrate:
        return args.recipe or f"{demo.path}/fitprune_recipes.json"
    from fitprune.lab.bench import calibrate

    recipes = str(Path(DEMO_RECIPE_DIR) / f"{Path(demo.path).name}.json")
    Path(recipes).unlink(missing_ok=True)  # the demo's own scratch file
    try:
        calibrate(demo.path, demo.calibration_file, demo.image_folder, args.reduction_ratios, Path(recipes),
                  args.num_samples)
    except RuntimeError:
        return None
    return recipes


def run_demo(args: argparse.Namespace) -> int:
    """Prints the table; returns the exit code.

    Raises:
        FileNotFoundError: the demo model or data is missing.
        RecipeError: an unusable recipe file or a budget it has no recipe for.
    """
    from llava.model.builder import load_pretrained_model

    started = time.time()
    demo = DEMO_MODELS[args.model]
    check_demo_files(demo, args.recipe)
    recipes = _recipes(args, demo)
    if recipes is None:
        return 1
    book = RecipeBook.load(recipes)
    for ratio in args.reduction_ratios:
        book.get(ratio)
    tokenizer, model, processor, _ = load_pretrained_model(demo.path, None, Path(demo.path).name, device="cpu")
    model.eval()
    questions = load_answered_questions(demo.test_file, args.limit or None)
    batches = encode_questions(questions, tokenizer, processor, model.config, demo.image_folder)
    with_oracle = has_cells(batches)
    others = [m for m in available_methods(False) if m not in NOT_OTHERS and (args.methods is None or m in args.methods)]
    unpruned = run_method(model, batches, None, None, None)
    print(f"\nmodel {demo.path}; a fixed subset: the first {len(questions)} questions of {demo.test_file} "
          f"(first-token exact match; --limit 0 for all); recipes {recipes}")
    print(f"question 0: {questions[0].text.splitlines()[0]!r} (reference answer {questions[0].answer!r}); "
          f"unpruned accuracy {_accuracy(unpruned)}, answer {_first_answer(model, tokenizer, batches[0], args.max_new_tokens)!r}")
    print(f"accuracy % [95% Wilson]; best other = best of {len(others)} other methods on this run, with the "
          "paper-convention FLOPs it removed (at least the budget; a method with its own schedule may remove a little more); "
          "Δ its paired difference from FitPrune [bootstrap 95%]")
    header = ["ratio %", "FLOPs removed % (paper / full)", "FitPrune", "random (same counts)", "best other",
              "Δ best other − FitPrune"] + (["oracle (same counts)"] if with_oracle else []) + ["answer to question 0"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for ratio in args.reduction_ratios:
        budget = Budget(ratio=ratio)
        fitprune = run_method(model, batches, "fitprune", budget, book)
        random = run_method(model, batches, "random", budget, book)
        runs: List[MethodRun] = []
        for method in others:
            try:
                runs.append(run_method(model, batches, method, budget, book))
            except ValueError:
                continue  # a method that cannot reach the budget
        best = max(runs, key=lambda run: run.accuracy)
        paired = paired_bootstrap(best.hits, fitprune.hits)
        cells = [f"{ratio:g}", f"{fitprune.flops_paper:.1f} / {fitprune.flops_full:.1f}", _accuracy(fitprune),
                 _accuracy(random), f"{label(best.method)} {_accuracy(best)} · {best.flops_paper:.0f}% paper",
                 f"{paired.difference:+.1f} [{paired.low:+.1f}, {paired.high:+.1f}]"]
        if with_oracle:
            cells.append(_accuracy(run_method(model, batches, "oracle", budget, book)))
        model.set_pruning(ratio, recipe=recipes)
        cells.append(repr(_first_answer(model, tokenizer, batches[0], args.max_new_tokens)))
        model.set_pruning(0)
        print("| " + " | ".join(cells) + " |", flush=True)
    print(f"({time.time() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
