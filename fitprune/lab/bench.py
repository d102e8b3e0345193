"""`python -m fitprune.bench`: pruning quality on the bundled demo model, FitPrune against
FastV, random and a uniform per-layer baseline at matched FLOPs.

    python -m fitprune.bench --all-methods [--model shapes]   # every method, paired statistics
    python -m fitprune.bench --model-path playground/models/llava-v1.5-shapes \
        --question-file playground/shapes/test.jsonl --image-folder playground/shapes \
        --calibration-file playground/shapes/calibration.jsonl
    python -m fitprune.bench --recipe playground/models/llava-v1.5-shapes/fitprune_recipes.json

For each budget (percent of paper-convention FLOPs removed) FitPrune's recipe is fitted on
the calibration split (timed), then every method answers the test split:

- FitPrune: the recipe's keep counts, tokens ranked by cross × self attention;
- random: the same keep counts, tokens drawn at random (`RandomPolicy`);
- FastV: all tokens through layer K−1, then the share R with most attention from the last
  prompt token, R chosen so FastV removes at least the FLOPs FitPrune's recipe removes
  (K = 2 as in its paper; K = 1 where K = 2 cannot reach the budget; "—" where no K can,
  since layer 0 always runs on every token);
- uniform: the same share of tokens removed at every layer, matched the same way, ranked
  by FitPrune's score;
- oracle (question files whose lines name the referred `cells`, as the relational scenes'):
  FitPrune's keep counts, the referred objects' patches kept first, the rest in random's
  order (`fitprune.lab.oracle`): the yardstick of what choosing tokens can gain.

Accuracy is first-token exact match on one-token answers (`fitprune.lab.answers`), with a
95% Wilson interval, overall and per question kind; latency is the median wall time of a
one-sample prefill. The accuracies are also written as JSON (`--json`, default
`benchmarks/pruning_quality.json`): policy -> budget -> accuracy, with the unpruned accuracy
and the accuracy with no visual token after layer 0. A depth probe follows: every visual token
through layer d−1, then only k of them (ranked by each policy) for the rest, which tells
whether the model still reads the image after its first layers and whether it matters
which tokens it reads. Last, the score profile: FitPrune's cross and self scores at layer 0
by image row (`fitprune.lab.score_profile`). Writes a section of BENCHMARKS.md and a plot of
accuracy against FLOPs removed.
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

import torch

from fitprune.calibrate import main as calibrate_main
from fitprune.defaults import (
    DEFAULT_CALIBRATION_FILE,
    DEFAULT_IMAGE_FOLDER,
    DEFAULT_TEST_FILE,
    ensure_default_model,
)
from fitprune.lab.answers import answer_accuracy, encode_questions, load_answered_questions
from fitprune.lab.bench_methods import PROBE_DEPTHS, PROBE_KEEPS, depth_probe, run_methods
from fitprune.lab.bench_report import format_section, plot_results, quality_json, section_heading
from fitprune.lab.benchmarks_file import write_section
from fitprune.lab.oracle import no_visual_after_layer_0
from fitprune.lab.score_profile import score_profile
from llava.model.pruning.ratio import parse_reduction_ratio
from llava.model.pruning.recipe import RecipeBook

BENCH_RATIOS = (0.0, 30.0, 50.0, 60.0, 70.0, 80.0, 90.0)


def calibrate(model_path: str, calibration_file: str, image_folder: str, ratios: Sequence[float], output: Path,
              num_samples: int) -> float:
    """Fits FitPrune recipes for `ratios` into `output`; returns the wall time in seconds.

    Raises:
        RuntimeError: if calibration fails.
    """
    started = time.time()
    code = calibrate_main(["--model-path", model_path, "--question-file", calibration_file,
                           "--image-folder", image_folder, "--num-samples", str(num_samples),
                           "--device", "cpu", "--output", str(output), "--reduction-ratio",
                           *[f"{r:g}" for r in ratios]])
    if code:
        raise RuntimeError(f"calibration failed with exit code {code}")
    return time.time() - started


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the benchmark (with ``--all-methods`` first: `fitprune.lab.compare`); returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--all-methods"]:
        from fitprune.lab.compare import main as compare_main

        return compare_main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m fitprune.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--model-path", default=None, help="checkpoint (default: the bundled demo model)")
    parser.add_argument("--question-file", default=DEFAULT_TEST_FILE, help="question jsonl with answers")
    parser.add_argument("--calibration-file", default=DEFAULT_CALIBRATION_FILE)
    parser.add_argument("--image-folder", default=DEFAULT_IMAGE_FOLDER)
    parser.add_argument("--reduction-ratio", dest="reduction_ratios", metavar="R",
                        type=parse_reduction_ratio, nargs="+", default=list(BENCH_RATIOS),
                        help="budgets, percent (60) or fraction (0.6) of FLOPs removed; 0 is the unpruned row")
    parser.add_argument("--recipe", default=None, help="use this recipe file instead of calibrating")
    parser.add_argument("--num-samples", type=int, default=256, help="calibration samples")
    parser.add_argument("--limit", type=int, default=None, help="first N test questions only")
    parser.add_argument("--repeats", type=int, default=20, help="timed prefills per method and budget")
    parser.add_argument("--seed", type=int, default=0, help="random policy seed")
    parser.add_argument("--probe-depths", type=int, nargs="*", default=list(PROBE_DEPTHS),
                        help="depth probe: layers that see every visual token (none: no probe)")
    parser.add_argument("--probe-keeps", type=int, nargs="+", default=list(PROBE_KEEPS),
                        help="depth probe: visual tokens kept after them")
    parser.add_argument("--output", default="BENCHMARKS.md", help="Markdown file to write the section into")
    parser.add_argument("--plot", default="benchmarks/pruning_quality.png")
    parser.add_argument("--json", default="",
                        help="where to write the accuracies as JSON, schema 1 (default: not written; "
                             "benchmarks/pruning_quality.json is --all-methods', schema 2)")
    args = parser.parse_args(argv)

    from llava.mm_utils import get_model_name_from_path
    from llava.model.builder import load_pretrained_model

    torch.manual_seed(args.seed)
    model_path = args.model_path or ensure_default_model()
    pruned_ratios = [r for r in args.reduction_ratios if r > 0]
    with tempfile.TemporaryDirectory() as scratch:
        if args.recipe:
            recipe_file, calibration = Path(args.recipe), f"recipes from {args.recipe}"
        else:
            recipe_file = Path(scratch) / "recipes.json"
            seconds = calibrate(model_path, args.calibration_file, args.image_folder, pruned_ratios, recipe_file,
                                args.num_samples)
            calibration = f"calibration of {len(pruned_ratios)} budgets took {seconds:.0f} s"
        book = RecipeBook.load(recipe_file)
    model_name = get_model_name_from_path(model_path)
    tokenizer, model, processor, _ = load_pretrained_model(model_path, None, model_name, device="cpu")
    model.eval()
    questions = load_answered_questions(args.question_file, args.limit)
    batches = encode_questions(questions, tokenizer, processor, model.config, args.image_folder)
    results = run_methods(model, book, args.reduction_ratios, batches, args.repeats, args.seed)
    unpruned = results[0.0][0].report if 0.0 in results else answer_accuracy(model, batches)
    reference = {"unpruned": unpruned, "no_visual_after_layer_0": no_visual_after_layer_0(model, batches, args.seed)}
    probe = depth_probe(model, batches, args.probe_depths, args.probe_keeps, args.seed) if args.probe_depths else None
    profile = score_profile(model, batches, layer=0)
    context = {
        "model": model_path,
        "model_name": model_name,
        "questions": len(questions),
        "question_file": args.question_file,
        "calibration_file": args.calibration_file,
        "calibration": calibration,
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
                   f"torch {torch.__version__}",
        "date": datetime.date.today().isoformat(),
        "command": "python -m fitprune.bench " + shlex.join(argv),
        "plot": args.plot,
    }
    if args.plot:
        plot_results(results, Path(args.plot), f"{model_name}: accuracy vs FLOPs removed")
    section = format_section(results, context, reference, probe, profile)
    write_section(Path(args.output), section_heading(model_name), section)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(quality_json(results, reference, context), indent=1) + "\n")
    print(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
