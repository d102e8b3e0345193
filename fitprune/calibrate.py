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
file beside the recipe file (``<recipe stem>.errors.jsonl``, `llava.eval.sample_errors`).

For LLaVA-NeXT (anyres) models, or whenever the calibration samples differ in visual token
count, the recipes are fractional: keep fractions of each sample's visual tokens per layer
(see `fitprune.recipe`), fitted and checked on the samples' own counts.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import platform
import random
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import torch
from tqdm import tqdm

from fitprune.defaults import (
    DEFAULT_CALIBRATION_FILE,
    DEFAULT_IMAGE_FOLDER,
    DEFAULT_MODEL_PATH,
    ensure_default_model,
)
from fitprune.fit import FIT_PRODUCT, LayerWalk, fit_recipe
from llava.model.pruning.recipe_lookup import RECIPE_FILE_IN_CHECKPOINT
from llava.model.pruning.recipe import (
    FIT_INTERSECTION,
    RATIO_TOLERANCE,
    ModelSignature,
    RecipeBook,
    RecipeError,
)
from llava.model.pruning.recipe_lookup import RECIPES_DIR
from llava.model.pruning.ratio import parse_reduction_ratio
from fitprune.recipe_plot import plot_recipes
from fitprune.stats import collect_stats
from llava.eval.eval_items import EvalItem
from llava.eval.questions import (
    Question,
    QuestionFileError,
    UnencodableTextError,
    build_question_prompt,
    check_encodable,
    load_questions,
)
from llava.eval.sample_errors import FailedSample, SampleErrorLog

PROG = "python -m fitprune.calibrate"
FIT_CHOICES = {"intersection": FIT_INTERSECTION, "product": FIT_PRODUCT}
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
PROVENANCE_IDENTITY = ("source", "model_path", "model_base", "calibration_sha256", "num_samples", "seed",
                       "conv_mode", "fit")
"""Provenance fields that make two calibrations the same; the others (versions, wall time,
processes, file name, skip counts) describe a run, not its recipes."""
ADDED = "added"
"""Provenance key of the budgets added by calibrations of other provenance: a list of their
provenance, each with the ``reduction_ratios`` it fitted; the book's own provenance covers the rest."""


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line, ``<prog>: error: <message>``, exit 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def positive_int(value: str) -> int:
    """An int of at least 1, for argparse ``type=``."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return number


def build_parser() -> argparse.ArgumentParser:
    """The calibration command line (LLaVA flag names; both ratio spellings)."""
    parser = OneLineParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--model-path", default=None, help=f"checkpoint (default: bundled {DEFAULT_MODEL_PATH})")
    parser.add_argument("--model-base", default=None)
    parser.add_argument("--question-file", default=None,
                        help="question jsonl or LLaVA instruction data (default: bundled calibration set)")
    parser.add_argument("--image-folder", default=None)
    parser.add_argument("--conv-mode", default="vicuna_v1")
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
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
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


def split_unencodable(questions: Sequence[Question], question_file) -> Tuple[List[Question], List[FailedSample]]:
    """The samples whose question text the tokenizer can encode (`check_encodable`), in file
    order, and the others as failed samples (field "text") naming the file and line."""
    usable, failed = [], []
    for question in questions:
        try:
            check_encodable(question.text)
        except UnencodableTextError as err:
            item = EvalItem(question.question_id, question.text, question.text, question.image, question.line)
            failed.append(FailedSample(item, "text", f"{question_file}:{question.line}: field 'text': {err}"))
        else:
            usable.append(question)
    return usable, failed


def errors_file_for(output: Path) -> SampleErrorLog:
    """The errors file of a recipe file: ``<recipe stem>.errors.jsonl`` beside it."""
    return SampleErrorLog(str(output.with_suffix(".jsonl")))  # the log names it after an answers file


def log_failed_samples(output: Path, failed: Sequence[FailedSample]) -> None:
    """Starts the recipe file's errors file afresh, lists `failed` in it (none: no file) and says so on stderr."""
    log = errors_file_for(output)
    log.start_run()
    for sample in failed:
        log.record(sample)
    if failed:
        print(f"{PROG}: skipped {len(failed)} sample(s) whose text cannot be encoded, listed in {log.path} "
              f"(first: {failed[0].message})", file=sys.stderr)


def draw_samples(questions: Sequence[Question], num_samples: int, seed: int) -> Tuple[List[Question], int]:
    """Samples with an image, `num_samples` of them drawn with `seed` (file order kept),
    and how many were skipped for having no image."""
    with_image = [q for q in questions if q.image]
    skipped = len(questions) - len(with_image)
    if num_samples < len(with_image):
        chosen = sorted(random.Random(seed).sample(range(len(with_image)), num_samples))
        with_image = [with_image[i] for i in chosen]
    return with_image, skipped


def prepare_batches(model, tokenizer, image_processor, questions, image_folder, conv_mode, question_file=""):
    """Spliced prefill inputs, one sample per batch: (inputs_embeds (1, T, D), layout).

    Images are read with `llava.eval.images.load_image` and go through `process_images` with
    the model's config (anyres views for LLaVA-NeXT, whose original sizes are passed as
    `image_sizes`).

    Raises:
        QuestionFileError: an image that cannot be used, naming the question file, line and field.
    """
    from llava.eval.images import ImageError, bound_image_geometry, load_image
    from llava.mm_utils import process_images, tokenizer_image_token

    batches = []
    use_start_end = getattr(model.config, "mm_use_im_start_end", False)
    device = model.get_model().embed_tokens.weight.device
    for question in tqdm(questions, desc="prepare", unit="sample", leave=False):
        prompt = build_question_prompt(question.text, conv_mode, use_im_start_end=use_start_end)
        input_ids = tokenizer_image_token(prompt, tokenizer, return_tensors="pt")[None].to(device)
        try:
            image = load_image(Path(image_folder) / question.image)
        except ImageError as err:
            raise QuestionFileError(f"{question_file}:{question.line}: field 'image': {err}") from None
        image = bound_image_geometry(image, image_processor, getattr(model.config, "image_aspect_ratio", None))
        pixels = process_images([image], image_processor, model.config).to(device, dtype=model.dtype)
        with torch.no_grad():
            spliced = model.splice_images(input_ids, None, pixels, image_sizes=[image.size])
        batches.append((spliced.inputs_embeds, spliced.layout))
    return batches


def _distributed() -> Tuple[int, int]:
    """(rank, world size); initialises torch.distributed under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), world


def _leave_distributed(world: int) -> None:
    """Waits for every rank, then tears the process group down, so no rank exits mid-teardown.

    Without the barrier, a rank that finishes first closes its gloo connections while rank 0
    still writes the recipe file, and the gloo destructor of the survivor may abort (SIGABRT).
    """
    if world == 1:
        return
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    import torch.distributed as dist

    summed = tensor.clone()
    dist.all_reduce(summed)
    return summed


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def gather_visual_counts(batches, rank: int, world: int, num_samples: int, all_reduce) -> List[int]:
    """Initial visual tokens of every calibration sample, in file order, across all ranks.

    Rank r holds samples r, r + world, ... (`questions[rank::world]`); each rank writes its
    counts at those positions of a zero vector and the vectors are summed.

    Args:
        batches: this rank's prepared batches, one sample each.
        rank, world: this process and the number of processes.
        num_samples: samples over all ranks.
        all_reduce: sums a float64 tensor over processes.

    Returns:
        One count per sample.
    """
    local = torch.cat([layout.visual_count() for _, layout in batches]).cpu().double()
    counts = torch.zeros(num_samples, dtype=torch.float64)
    counts[rank::world] = local
    return [int(c) for c in all_reduce(counts).round().tolist()]


def wants_fractions(model, visual_counts: Sequence[int]) -> bool:
    """Fractional recipes for anyres models and whenever samples differ in visual tokens."""
    from llava.model.anyres import uses_anyres

    return uses_anyres(model.config) or len(set(visual_counts)) > 1


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
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    repeated = [r for i, r in enumerate(args.reduction_ratios) if r in args.reduction_ratios[:i]]
    if repeated:
        parser.error(f"argument --reduction-ratio/--reduction_ratio: budget {repeated[0]:g} is given twice")
    started = time.time()
    rank, world = _distributed()
    all_reduce = _all_reduce_sum if world > 1 else (lambda t: t)
    try:
        return _calibrate(args, rank, world, all_reduce, started)
    except (QuestionFileError, RecipeError, FileNotFoundError, ValueError) as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    finally:
        _leave_distributed(world)


def _calibrate(args, rank, world, all_reduce, started) -> int:
    from llava.mm_utils import get_model_name_from_path
    from llava.model.builder import load_pretrained_model

    if args.model_path is None:
        args.model_path = ensure_default_model()
        args.question_file = args.question_file or DEFAULT_CALIBRATION_FILE
        args.image_folder = args.image_folder or DEFAULT_IMAGE_FOLDER
    if args.question_file is None:
        raise ValueError("--question-file is required with --model-path")
    model_name = get_model_name_from_path(args.model_path)
    output = Path(args.output) if args.output else default_output(args.model_path, model_name)
    usable, unencodable = split_unencodable(load_questions(args.question_file), args.question_file)
    questions, skipped = draw_samples(usable, args.num_samples, args.seed)
    if not questions:
        raise ValueError(f"{args.question_file}: no usable sample ({skipped} without an image, "
                         f"{len(unencodable)} whose text cannot be encoded)")
    provenance = _provenance(args, questions, skipped, len(unencodable), world)
    existing = None if args.overwrite else existing_book(output, args.reduction_ratios, provenance)
    if rank == 0:
        log_failed_samples(output, unencodable)
    local = questions[rank::world]
    dtype = DTYPES[args.dtype] if args.dtype else None
    tokenizer, model, image_processor, _ = load_pretrained_model(
        args.model_path, args.model_base, model_name, device=args.device, torch_dtype=dtype
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
                print(f"{PROG}: error: budget {ratio:g}%: {err}", file=sys.stderr)
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
        plot_recipes(book, args.plot)
    _print_table(fitted, timings, time.time() - started)
    if unchanged:
        print(f"recipes in {output} left as they were: this calibration gave the recipes the file holds "
              f"for {', '.join(f'{r.reduction_ratio:g}' for r in fitted)}")
    else:
        print(f"recipes written to {output}: {_written(existing, fitted, book)}")
    return 2 if failed else 0


def _provenance(args, questions, skipped, unencodable, world) -> dict:
    """What this run calibrates on and with (`PROVENANCE_IDENTITY` and facts of the run); the
    keep kind, visual token counts and wall time are added once the run is done."""
    import transformers

    return {
        "source": "python -m fitprune.calibrate",
        "model_path": args.model_path,
        "model_base": args.model_base,
        "calibration_file": str(args.question_file),
        "calibration_sha256": _sha256(Path(args.question_file)),
        "num_samples": len(questions),
        "skipped_without_image": skipped,
        "skipped_unencodable_text": unencodable,
        "seed": args.seed,
        "conv_mode": args.conv_mode,
        "fit": FIT_CHOICES[args.fit],
        "processes": world,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
    }


def _identity(provenance: dict) -> dict:
    """The `PROVENANCE_IDENTITY` fields of a provenance record, the model path normalised
    (``./m`` and ``m`` are the same)."""
    fields = {name: provenance.get(name) for name in PROVENANCE_IDENTITY}
    if isinstance(fields["model_path"], str):
        fields["model_path"] = os.path.normpath(fields["model_path"])
    return fields


def same_calibration(one: dict, other: dict) -> bool:
    """Whether two provenance records describe the same calibration (`PROVENANCE_IDENTITY`)."""
    return _identity(one) == _identity(other)


def _has_ratio(ratios, ratio: float) -> bool:
    return any(isinstance(r, (int, float)) and abs(r - ratio) < RATIO_TOLERANCE for r in ratios)


def _added_entries(provenance: dict) -> List[dict]:
    """The `ADDED` provenance entries of a book (entries that are not objects are ignored)."""
    entries = provenance.get(ADDED, [])
    return [dict(e) for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []


def recipe_provenance(book: RecipeBook, ratio: float) -> dict:
    """The provenance of a book's recipe: the `ADDED` entry that lists its ratio, else the book's own."""
    for entry in _added_entries(book.provenance):
        if isinstance(entry.get("reduction_ratios"), list) and _has_ratio(entry["reduction_ratios"], ratio):
            return entry
    return {key: value for key, value in book.provenance.items() if key != ADDED}


def existing_book(output: Path, ratios: Sequence[float], provenance: dict) -> Optional[RecipeBook]:
    """The recipe file this run merges into (None when there is none), checked to hold no budget
    of `ratios` from a calibration of other provenance.

    Raises:
        RecipeError: the file is invalid, or holds such a budget; the message names the file, the
            budgets, the first provenance field that differs (both values) and ``--overwrite``.
    """
    if not output.exists():
        return None
    book = RecipeBook.load(output)
    clashes = [r for r in ratios if _has_ratio(book.ratios(), r)
               and not same_calibration(recipe_provenance(book, r), provenance)]
    if not clashes:
        return book
    theirs, ours = _identity(recipe_provenance(book, clashes[0])), _identity(provenance)
    differs = next(name for name in PROVENANCE_IDENTITY if theirs[name] != ours[name])
    raise RecipeError(
        f"{output}: already holds recipe(s) for budget(s) {', '.join(f'{r:g}' for r in clashes)} from another "
        f"calibration ({differs} {theirs[differs]!r} there, {ours[differs]!r} now); pass --overwrite "
        "to replace the file, or --output for another file"
    )


def merge_provenance(existing: dict, new: dict, ratios: Sequence[float]) -> dict:
    """The provenance of a book after a run of provenance `new` fitted `ratios` into it: the
    book's own when the calibrations agree (`same_calibration`), else an `ADDED` entry; the
    ratios leave every other entry, and entries left without ratios are dropped."""
    added = []
    for entry in _added_entries(existing):
        kept = [r for r in entry.get("reduction_ratios", []) if not _has_ratio(ratios, r)]
        added.append({**entry, "reduction_ratios": kept})
    own = {key: value for key, value in existing.items() if key != ADDED}
    if same_calibration(own, new):
        own = dict(new)
    else:
        match = next((entry for entry in added if same_calibration(entry, new)), None)
        if match is None:
            added.append({**new, "reduction_ratios": []})
            match = added[-1]
        match.update(new, reduction_ratios=sorted(match["reduction_ratios"] + list(ratios)))
    added = [entry for entry in added if entry["reduction_ratios"]]
    return {**own, ADDED: added} if added else own


def merge_recipes(existing: Optional[RecipeBook], signature: ModelSignature, fitted, provenance: dict) -> RecipeBook:
    """The book to write: the fitted recipes, plus the existing book's other budgets with their provenance."""
    if existing is None:
        return RecipeBook(model=signature, recipes=tuple(fitted), provenance=provenance)
    book = RecipeBook(model=signature, recipes=existing.recipes,
                      provenance=merge_provenance(existing.provenance, provenance, [r.reduction_ratio for r in fitted]))
    for recipe in fitted:
        book = book.with_recipe(recipe)
    return book


def _written(existing: Optional[RecipeBook], fitted, book: RecipeBook) -> str:
    """What a run did to the recipe file, e.g. ``added 30, 50; replaced 60; kept 70``."""
    before = existing.ratios() if existing is not None else ()
    new = [recipe.reduction_ratio for recipe in fitted]
    parts = [("added", [r for r in new if not _has_ratio(before, r)]),
             ("replaced", [r for r in new if _has_ratio(before, r)]),
             ("kept", [r for r in book.ratios() if not _has_ratio(new, r)])]
    return "; ".join(f"{word} {', '.join(f'{r:g}' for r in ratios)}" for word, ratios in parts if ratios)


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


if __name__ == "__main__":
    sys.exit(main())
