"""`python -m fitprune.bench --all-methods`: every pruning method on a demo model, at matched FLOPs and at the
literature's 192 / 128 / 64-token rows, with paired statistics against FitPrune.

    python -m fitprune.bench --all-methods                  # the scenes model, grown test split
    python -m fitprune.bench --all-methods --model shapes

Runs `fitprune.lab.method_runs.run_all`, then writes the model's entry of
`benchmarks/pruning_quality.json` (schema 2), its BENCHMARKS.md section and a plot. Recipe
methods read the model's recipe file (`--recipe` for another); a token row whose FLOPs-equivalent
ratio has no recipe takes the nearest one, and its FLOPs say so.
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence

import torch

from fitprune.lab.answers import encode_questions, load_answered_questions
from fitprune.lab.benchmarks_file import write_section
from fitprune.lab.compare_report import format_section, plot_comparison, quality_json, write_quality_json
from fitprune.lab.demo_models import DEMO_MODELS
from fitprune.lab.method_runs import (
    LITERATURE_TOKENS,
    LITERATURE_VISUAL,
    Budget,
    available_methods,
    blind_run,
    run_all,
    run_method,
)
from fitprune.lab.oracle import has_cells
from llava.model.pruning.ratio import parse_reduction_ratio
from llava.model.pruning.recipe import RecipeBook

COMPARE_RATIOS = (50.0, 70.0, 90.0)


def section_heading(model_name: str) -> str:
    """The BENCHMARKS.md heading of one model's comparison."""
    return f"## Which method: every policy on {model_name} (python -m fitprune.bench --all-methods)"


def render(entry: dict, model_name: str, plot: str, output: Path) -> str:
    """Draws `plot` (unless empty) and writes the model's section into `output` from its JSON entry; returns it."""
    if plot:
        plot_comparison(entry, Path(plot), f"{model_name}: every method at matched FLOPs")
    section = format_section(section_heading(model_name), entry, plot)
    write_section(output, section_heading(model_name), section)
    return section


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the comparison; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m fitprune.bench --all-methods", description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(DEMO_MODELS), default="scenes", help="which demo model")
    parser.add_argument("--question-file", nargs="+", default=None,
                        help="question files with answers (default: the model's test split, grown for scenes)")
    parser.add_argument("--reduction-ratio", dest="ratios", metavar="R", type=parse_reduction_ratio, nargs="*",
                        default=list(COMPARE_RATIOS), help="matched FLOPs budgets, percent or fraction")
    parser.add_argument("--tokens", type=int, nargs="*", default=list(LITERATURE_TOKENS),
                        help=f"the literature's token rows (of {LITERATURE_VISUAL}, scaled to the model)")
    parser.add_argument("--methods", nargs="+", default=None, help="subset of methods (default: all)")
    parser.add_argument("--limit", type=int, default=None, help="first N questions of each file only")
    parser.add_argument("--recipe", default=None, help="recipe file (default: the model's fitprune_recipes.json)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="BENCHMARKS.md")
    parser.add_argument("--plot", default=None, help="default benchmarks/compare_<model>.png; empty: no plot")
    parser.add_argument("--json", default="benchmarks/pruning_quality.json", help="empty: not written")
    parser.add_argument("--render-only", action="store_true",
                        help="redraw the plot and section from the model's entry in --json, running nothing")
    args = parser.parse_args(argv)
    demo = DEMO_MODELS[args.model]
    model_name = Path(demo.path).name
    plot = f"benchmarks/compare_{args.model}.png" if args.plot is None else args.plot
    if args.render_only:
        entry = json.loads(Path(args.json).read_text())["models"][model_name]
        print(render(entry, model_name, plot, Path(args.output)))
        return 0

    from llava.model.builder import load_pretrained_model

    started = time.time()
    torch.manual_seed(args.seed)
    files = args.question_file or list(demo.bench_files)
    tokenizer, model, processor, _ = load_pretrained_model(demo.path, None, model_name, device="cpu")
    model.eval()
    questions = [q for f in files for q in load_answered_questions(f, args.limit)]
    batches = encode_questions(questions, tokenizer, processor, model.config, demo.image_folder)
    num_visual = model.get_model().num_visual_tokens()
    budgets: List[Budget] = [Budget(ratio=r) for r in args.ratios] + [Budget(tokens=t) for t in args.tokens]
    book = RecipeBook.load(args.recipe or Path(demo.path) / "fitprune_recipes.json")
    methods = [m for m in available_methods(has_cells(batches)) if args.methods is None or m in args.methods]
    unpruned, blind = run_method(model, batches, None, None, None), blind_run(model, batches)
    results, skipped = run_all(model, batches, budgets, methods, book, args.seed,
                               lambda b, m: print(f"{b.label} {m} done at {time.time() - started:.0f} s", flush=True))
    context = {"model": demo.path, "question_files": files, "num_visual": num_visual,
               "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
                          f"torch {torch.__version__}",
               "date": datetime.date.today().isoformat(),
               "wall": f"{(time.time() - started) / 60:.0f} min wall on a shared machine",
               "command": "python -m fitprune.bench --all-methods " + shlex.join(argv if argv is not None else sys.argv[1:])}
    entry = quality_json(results, unpruned, blind, context, skipped)
    if args.json:
        write_quality_json(Path(args.json), model_name, entry)
    section = render(entry, model_name, plot, Path(args.output))
    print(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
