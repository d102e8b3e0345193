"""`python -m fitprune.calibrate`: fit FitPrune recipes for a LLaVA checkpoint and budgets.

    python -m fitprune.calibrate                       # bundled default model and data
    python -m fitprune.calibrate --model-path liuhaotian/llava-v1.5-7b \\
        --question-file llava_v1_5_mix665k.json --image-folder playground/data \\
        --reduction-ratio 30 50 60 70 --num-samples 256 --output recipes.json --plot recipes.png
    torchrun --nproc_per_node 2 -m fitprune.calibrate ...   # samples sharded over ranks

One statistics pass is shared by every budget; each budget then bisects alpha with walks
through the model's own decoder layers. The recipe file (JSON) holds every budget and records
its provenance (`PROVENANCE_IDENTITY`: model, calibration data, samples, seed, prompt, fit
rule). An existing file for the same model keeps its other budgets: new budgets are added to
it, with their own provenance when it differs (under ``provenance["added"]``), and a budget it
already holds is replaced only by a run of the same provenance; any other run stops before
loading the model unless ``--overwrite`` is given, which writes a new file with this run's
budgets only. The path written is printed; a file that already holds exactly the recipes a
run of its own provenance fits is left as it was (so rerunning the plain command does not
touch the tracked demo recipes).

A sample whose question text the tokenizer cannot encode (a lone surrogate such as "\\udc80",
which valid JSON can hold) is skipped before the samples are drawn and listed in the errors
file beside the recipe file (``<recipe stem>.errors.jsonl``, `llava.eval.driver.sample_errors`).

For LLaVA-NeXT (anyres) models, or whenever the calibration samples differ in visual token
count, the recipes are fractional: keep fractions of each sample's visual tokens per layer
(see `fitprune.recipe`), fitted and checked on the samples' own counts.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import torch
from tqdm import tqdm

from fitprune.defaults import (
    DEFAULT_CALIBRATION_FILE,
    DEFAULT_IMAGE_FOLDER,
    DEFAULT_MODEL_PATH,
    ensure_default_model,
)
from fitprune.fit import LayerWalk, fit_recipe
from llava.model.pruning.recipe_lookup import RECIPE_FILE_IN_CHECKPOINT
from llava.model.pruning.recipe import ModelSignature, RecipeError
from llava.model.pruning.recipe_lookup import RECIPES_DIR
from llava.model.pruning.from_config import DEFAULT_POLICY
from llava.model.pruning.policies import POLICIES, policy_named
from llava.model.pruning.ratio import parse_reduction_ratio
from fitprune.recipe_plot import plot_recipes
from fitprune.stats import collect_stats
from llava.eval.driver.file_lock import LOCK_SUFFIX, hold_lock_file
from llava.eval.driver.output_paths import check_output_file, writing_to
from llava.eval.driver.questions import QuestionFileError, load_questions
from llava.eval.records.sidecar_files import sidecar_path
from llava.cli_support import AUTO_DEVICE, add_image_processing_flag
from fitprune.calibration_set import (
    split_unencodable,
    log_failed_samples,
    draw_samples,
    prepare_batches,
    _distributed,
    _leave_distributed,
    _all_reduce_sum,
    gather_visual_counts,
    wants_fractions,
)
from fitprune.recipe_merge import calibration_provenance, existing_book, merge_recipes, written_summary

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
from fitprune.recipe_merge import FIT_CHOICES
from fitprune.calibration_set import PROG
from llava.utils import OneLineArgumentParser, usage_error


def positive_int(value: str) -> int:
    """An int of at least 1, for argparse ``type=``."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return number


def policy_refusal(name: str) -> str:
    """Why calibration does not run for the pruning method `name` (any but FitPrune's), in one line."""
    if hasattr(policy_named(name), "schedule_for_budget"):
        return f"{name} sets its own keep counts from the budget and reads no recipe; calibrate fits FitPrune's"
    return (f"calibrate fits FitPrune's recipes; {name} prunes with that book as is (calibrate with fitprune, "
            f"then pass --policy {name} to run_llava or a driver)")


def build_parser() -> argparse.ArgumentParser:
    """The calibration command line (LLaVA flag names; both ratio spellings)."""
    parser = OneLineArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--model-path", default=None, help=f"checkpoint (default: bundled {DEFAULT_MODEL_PATH})")
    parser.add_argument("--model-base", default=None)
    add_image_processing_flag(parser)
    parser.add_argument("--question-file", default=None,
                        help="question jsonl or LLaVA instruction data (default: bundled calibration set)")
    parser.add_argument("--image-folder", default=None)
    parser.add_argument("--conv-mode", default="vicuna_v1")
    parser.add_argument("--policy", choices=list(POLICIES), default=DEFAULT_POLICY, metavar="NAME",
                        help="only fitprune: calibration fits FitPrune's recipes (other methods are refused with "
                             "the reason)")
    parser.add_argument("--reduction-ratio", "--reduction_ratio", dest="reduction_ratios", nargs="+",
                        type=parse_reduction_ratio, default=[30.0, 50.0, 60.0, 70.0],
                        help="budgets in percent of paper-convention FLOPs (0.6 is read as 60)")
    parser.add_argument("--num-samples", type=positive_int, default=256,
                        help="samples drawn from the file (all if fewer)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fit", choices=sorted(FIT_CHOICES), default="intersection",
                        help="intersection: the paper's rule; product: rank by cross×self as inference does")
    parser.add_argument("--output", default=None, help="recipe JSON (default: where the eval scripts look)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing recipe file with this run's budgets only, whatever its provenance")
    parser.add_argument("--device", default=AUTO_DEVICE,
                        help="cuda, cuda:N, cpu, or auto (default): CUDA when it is available, else the CPU")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default=None,
                        help="default: float16 on GPU, float32 on CPU")
    parser.add_argument("--plot", default=None, help="PNG of keep counts per layer, one line per budget")
    return parser


def default_output(model_path: str, model_name: str) -> Path:
    """Where the pruner finds a recipe without --recipe: inside a local checkpoint, else
    the shipped recipes folder."""
    if os.path.isdir(model_path):
        return Path(model_path) / RECIPE_FILE_IN_CHECKPOINT
    return Path(RECIPES_DIR) / f"{model_name}.json"


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs calibration; returns the exit code.

    Bad input (a flag value, a question file, an image, a model path, a recipe file, a recipe
    file of other provenance without --overwrite, a budget that cannot be reached) gives a
    one-line ``python -m fitprune.calibrate: error: ...`` on stderr and 2. The first unreadable
    image stops the run (before the statistics pass): calibration draws its samples, so a bad
    one is fixed or removed from the file rather than skipped; a question text the tokenizer
    cannot encode is skipped and listed (see the module notes). The recipe file is written
    once, at the end, through a temporary file (`RecipeBook.save`): a run killed before then
    leaves any previous file as it was.

    The output paths (--output, --plot) are checked before the model loads (not a directory,
    not an input file, a writable folder); a filesystem fault while writing (a full disk, a
    read-only folder) is one line naming the file. A run holds ``<recipe file>.lock`` from
    before it reads the recipe file until it has written it: a second run on the same file
    while the first is alive is refused with one line naming the first run's pid, and the lock
    of a killed run is taken over.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.policy != DEFAULT_POLICY:
        parser.error(f"argument --policy: {policy_refusal(args.policy)}")
    repeated = [r for i, r in enumerate(args.reduction_ratios) if r in args.reduction_ratios[:i]]
    if repeated:
        parser.error(f"argument --reduction-ratio/--reduction_ratio: budget {repeated[0]:g} is given twice")
    started = time.time()
    rank, world = _distributed()
    all_reduce = _all_reduce_sum if world > 1 else (lambda t: t)
    try:
        return _calibrate(args, rank, world, all_reduce, started)
    except (QuestionFileError, RecipeError, FileNotFoundError, ValueError) as err:
        return usage_error(PROG, err)
    finally:
        _leave_distributed(world)


class RecipeFileLockedError(ValueError):
    """Another live calibration writes the recipe file; the message names it and that run's pid."""


def _calibrate(args, rank, world, all_reduce, started) -> int:
    """Checks the output paths, locks the recipe file, and calibrates; returns the exit code.

    Raises:
        OutputPathError: an output path that cannot be written (checked before the model loads),
            or a filesystem fault (a full disk, a read-only folder) while writing it.
        RecipeFileLockedError: another live run writes the same recipe file.
    """
    from llava.mm_utils import get_model_name_from_path

    if args.model_path is None:
        args.model_path = ensure_default_model()
        args.question_file = args.question_file or DEFAULT_CALIBRATION_FILE
        args.image_folder = args.image_folder or DEFAULT_IMAGE_FOLDER
    if args.question_file is None:
        raise ValueError("--question-file is required with --model-path")
    model_name = get_model_name_from_path(args.model_path)
    output = Path(args.output) if args.output else default_output(args.model_path, model_name)
    inputs = {"--question-file": args.question_file}
    check_output_file(output, "--output", inputs)
    if args.plot:
        check_output_file(args.plot, "--plot", {**inputs, "--output": output})
    with contextlib.ExitStack() as lock:
        if not _lock_recipe_file(output, rank, world, all_reduce, lock):
            return 2
        with writing_to(output, "any previous recipe file is left as it was; rerun once it can be written"):
            return _calibrate_locked(args, rank, world, all_reduce, started, model_name, output)


def _lock_recipe_file(output: Path, rank: int, world: int, all_reduce, stack: contextlib.ExitStack) -> bool:
    """Rank 0 holds the recipe file's lock (`llava.eval.driver.file_lock`) on `stack`; every rank learns
    whether it did.

    Returns:
        False on the other ranks when rank 0 was refused (they stop with status 2, rank 0 says why).

    Raises:
        RecipeFileLockedError: on rank 0, another live run writes `output` (the message names its pid).
    """
    refusal = None
    if rank == 0:
        try:
            stack.enter_context(hold_lock_file(sidecar_path(output, LOCK_SUFFIX), output,
                                               "calibration is writing this recipe file", "--output",
                                               RecipeFileLockedError))
        except RecipeFileLockedError as err:
            refusal = err
    refused = refusal is not None
    if world > 1:
        refused = bool(all_reduce(torch.tensor([float(refused)], dtype=torch.float64)).item())
    if refusal is not None:
        raise refusal
    return not refused


def _calibrate_locked(args, rank, world, all_reduce, started, model_name: str, output: Path) -> int:
    """Calibration once the recipe file's lock is held: samples, statistics, fits, the file written."""
    from llava.model.builder import load_pretrained_model

    usable, unencodable = split_unencodable(load_questions(args.question_file), args.question_file)
    questions, skipped = draw_samples(usable, args.num_samples, args.seed)
    if not questions:
        raise ValueError(f"{args.question_file}: no usable sample ({skipped} without an image, "
                         f"{len(unencodable)} whose text cannot be encoded)")
    provenance = calibration_provenance(args, questions, skipped, len(unencodable), world)
    existing = None if args.overwrite else existing_book(output, args.reduction_ratios, provenance)
    if rank == 0:
        log_failed_samples(output, unencodable)
    local = questions[rank::world]
    dtype = DTYPES[args.dtype] if args.dtype else None
    tokenizer, model, image_processor, _ = load_pretrained_model(
        args.model_path, args.model_base, model_name, device=args.device, torch_dtype=dtype,
        image_processing=args.image_processing,
    )
    model.eval()
    batches = prepare_batches(model, tokenizer, image_processor, local, args.image_folder or "", args.conv_mode,
                              args.question_file)
    decoder = model.get_model()
    signature = ModelSignature.from_config(model.config, decoder.num_visual_tokens(), name=model_name)
    if existing is not None:
        try:
            existing.check_model(signature)
        except RecipeError as err:
            raise RecipeError(f"{output}: {err} (pass --overwrite to replace the file, or --output for another)") \
                from None
    stats = collect_stats(decoder, tqdm(batches, desc="statistics", unit="sample", disable=rank != 0))
    walk = LayerWalk(decoder, batches, stats, all_reduce)
    mode = FIT_CHOICES[args.fit]
    visual_counts = gather_visual_counts(batches, rank, world, len(questions), all_reduce)
    fractional = wants_fractions(model, visual_counts)
    fitted, timings, failed = [], [], []
    for ratio in args.reduction_ratios:
        ratio_started = time.time()
        bar = tqdm(desc=f"fit {ratio:g}%", unit="trial", disable=rank != 0)

        def trial(alpha, ratio=ratio, bar=bar):
            result = walk.run(alpha, ratio, mode)
            bar.update(1)
            bar.set_postfix(alpha=f"{alpha:.3f}", met=result.met)
            return result

        try:
            recipe, _ = fit_recipe(trial, signature, ratio, mode, visual_counts=visual_counts if fractional else None)
        except ValueError as err:
            failed.append(ratio)
            if rank == 0:
                usage_error(PROG, f"budget {ratio:g}%: {err}")
            continue
        finally:
            bar.close()
        fitted.append(recipe)
        timings.append(time.time() - ratio_started)
    if rank != 0 or not fitted:
        return 2 if failed else 0
    provenance.update(keep="fractions" if fractional else "counts",
                      visual_tokens_per_sample={"min": min(visual_counts), "max": max(visual_counts),
                                                "mean": round(sum(visual_counts) / len(visual_counts), 2)},
                      wall_time_s=round(time.time() - started, 2))
    book = merge_recipes(existing, signature, fitted, provenance)
    unchanged = existing is not None and book.recipes == existing.recipes
    if not unchanged:
        output.parent.mkdir(parents=True, exist_ok=True)
        book.save(output)
    if args.plot:
        with writing_to(args.plot):
            plot_recipes(book, args.plot)
    _print_table(fitted, timings, time.time() - started)
    if unchanged:
        print(f"recipes in {output} left as they were: this calibration gave the recipes the file holds "
              f"for {', '.join(f'{r.reduction_ratio:g}' for r in fitted)}")
    else:
        print(f"recipes written to {output}: {written_summary(existing, fitted, book)}")
    return 2 if failed else 0


def _print_table(fitted, timings, total: float) -> None:
    print()
    print("| budget % | alpha | achieved % (paper) | achieved % (full) | visual tokens after last layer | fit time s |")
    print("|---|---|---|---|---|---|")
    for recipe, seconds in zip(fitted, timings):
        final = f"{recipe.final_visual_tokens}"
        if recipe.is_fractional:
            final = f"{100 * recipe.keep_fractions[-1]:.2f}% of each sample's"
        print(f"| {recipe.reduction_ratio:g} | {recipe.alpha:.3f} | {recipe.achieved_paper:.2f} | "
              f"{recipe.achieved_full:.2f} | {final} | {seconds:.1f} |")
    print(f"total time {total:.1f} s")


def exit_process(code: int) -> None:
    """Ends the process with `code`. A torchrun rank (WORLD_SIZE > 1) leaves with `os._exit`
    after flushing its output, its recipe already written and its process group destroyed:
    gloo's threads, torn down at interpreter exit, now and then abort the rank (SIGABRT,
    "terminate called without an active exception") after a successful run."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    exit_process(main())
