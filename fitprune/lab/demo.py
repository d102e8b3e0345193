"""`python -m fitprune.demo`: the main job, on the bundled demo model and data.

Calibrates FitPrune recipes for the demo model (`playground/models/llava-v1.5-shapes`, a
small LLaVA-1.5 trained here on the synthetic shapes task) on the calibration split, then
answers the test split unpruned and at each fitted budget, printing per budget the test
accuracy (and, for contrast, that of random pruning with the same keep counts), the FLOPs
removed (paper and full convention), the visual tokens left after the last layer, the
median one-sample prefill latency and the model's generated answer to the first question.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import torch

from fitprune.lab.answers import answer_accuracy, encode_questions, load_answered_questions
from fitprune.calibrate import main as calibrate_main
from fitprune.defaults import (
    DEFAULT_CALIBRATION_FILE,
    DEFAULT_IMAGE_FOLDER,
    DEFAULT_TEST_FILE,
    ensure_default_model,
)
from llava.model.pruning.policies import RandomPolicy
from llava.model.pruning.recipe import RecipeBook, RecipeError
from llava.model.pruning.ratio import parse_reduction_ratio
from fitprune.lab.baselines import pruner_installed

DEMO_RATIOS = (30.0, 50.0, 60.0, 70.0, 80.0, 90.0)
DEMO_RECIPE_DIR = "checkpoints/demo-recipes"


def _prefill_ms(model, input_ids, pixels, repeats: int) -> float:
    """Median wall time of one prefill forward, in milliseconds."""
    times = []
    with torch.inference_mode():
        for _ in range(repeats):
            start = time.perf_counter()
            model(input_ids=input_ids, images=pixels, use_cache=False)
            times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def _first_answer(model, tokenizer, batch, max_new_tokens: int) -> str:
    """The model's generated answer to the first question of `batch` (greedy)."""
    ids = batch.input_ids[:1, :int(batch.attention_mask[0].sum())]
    with torch.inference_mode():
        output = model.generate(ids, images=batch.images[:1], do_sample=False, max_new_tokens=max_new_tokens,
                                use_cache=True)
    return tokenizer.decode(output[0, ids.shape[1]:], skip_special_tokens=True).strip()


def check_demo_files(recipes: Optional[str]) -> str:
    """The demo model's path, after checking that the model, the data and `recipes` are there.

    Raises:
        FileNotFoundError: the first one missing, named (the default paths are relative to
            the repository root).
    """
    model_path = ensure_default_model()
    needed = [DEFAULT_TEST_FILE, DEFAULT_IMAGE_FOLDER, recipes or DEFAULT_CALIBRATION_FILE]
    for path in needed:
        if not Path(path).exists():
            raise FileNotFoundError(f"{path} does not exist; run python -m fitprune.demo from the repository root")
    return model_path


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the demo; returns the exit code (2 after one line on stderr for a missing file or
    an unusable recipe file)."""
    parser = argparse.ArgumentParser(prog="python -m fitprune.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--reduction-ratio", dest="reduction_ratios", metavar="R",
                        type=parse_reduction_ratio, nargs="+", default=list(DEMO_RATIOS),
                        help="budgets to calibrate, percent (60) or fraction (0.6) of FLOPs removed")
    parser.add_argument("--recipe", default=None,
                        help="use this recipe file instead of calibrating (e.g. the checkpoint's fitprune_recipes.json)")
    parser.add_argument("--num-samples", type=int, default=128, help="calibration samples")
    parser.add_argument("--limit", type=int, default=None, help="first N test questions only")
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    try:
        return run_demo(args)
    except (FileNotFoundError, RecipeError) as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 2


def run_demo(args: argparse.Namespace) -> int:
    """Calibrates (unless ``--recipe``) and prints the table; returns the exit code.

    Raises:
        FileNotFoundError: the demo model or data is missing.
        RecipeError: an unusable ``--recipe`` file.
    """
    from llava.mm_utils import get_model_name_from_path
    from llava.model.builder import load_pretrained_model

    model_path = check_demo_files(args.recipe)
    model_name = get_model_name_from_path(model_path)
    recipes = args.recipe
    if recipes is None:
        recipes = str(Path(DEMO_RECIPE_DIR) / f"{model_name}.json")
        code = calibrate_main(["--model-path", model_path, "--question-file", DEFAULT_CALIBRATION_FILE,
                               "--image-folder", DEFAULT_IMAGE_FOLDER, "--num-samples", str(args.num_samples),
                               "--device", "cpu", "--output", recipes, "--overwrite",  # its own scratch file
                               "--reduction-ratio", *(f"{r:g}" for r in args.reduction_ratios)])
        if code:
            return code
    tokenizer, model, processor, _ = load_pretrained_model(model_path, None, model_name, device="cpu")
    model.eval()
    book = RecipeBook.load(recipes)
    questions = load_answered_questions(DEFAULT_TEST_FILE, args.limit)
    batches = encode_questions(questions, tokenizer, processor, model.config, DEFAULT_IMAGE_FOLDER)
    first = batches[0]
    first_ids = first.input_ids[:1, :int(first.attention_mask[0].sum())]
    print(f"\nmodel {model_path}; {len(questions)} test questions from {DEFAULT_TEST_FILE} "
          f"(first-token exact match); recipes {recipes}")
    print(f"question 0: {questions[0].text.splitlines()[0]!r} (reference answer {questions[0].answer!r})")
    print("| ratio % | FitPrune acc % | random acc % (same counts) | achieved % (paper) | achieved % (full) | "
          "visual tokens after last layer | median prefill ms | answer to question 0 |")
    print("|---|---|---|---|---|---|---|---|")
    for ratio in [0.0] + list(book.ratios()):
        model.set_pruning(ratio, recipe=recipes)
        accuracy = answer_accuracy(model, batches).accuracy
        recipe = book.get(ratio) if ratio else None
        if recipe is not None:
            with pruner_installed(model, RandomPolicy(0), recipe.keep_counts):
                random_accuracy = f"{answer_accuracy(model, batches).accuracy:.1f}"
        else:
            random_accuracy = f"{accuracy:.1f}"
        answer = _first_answer(model, tokenizer, first, args.max_new_tokens)
        kept = recipe.final_visual_tokens if recipe else model.get_model().num_visual_tokens()
        paper = f"{recipe.achieved_paper:.2f}" if recipe else "0.00"
        full = f"{recipe.achieved_full:.2f}" if recipe else "0.00"
        latency = _prefill_ms(model, first_ids, first.images[:1], args.repeats)
        print(f"| {ratio:g} | {accuracy:.1f} | {random_accuracy} | {paper} | {full} | {kept} | {latency:.1f} | "
              f"{answer!r} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
