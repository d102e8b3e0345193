"""The calibration set: which samples are drawn, their prompt and image batches, and (under torchrun) how
the ranks share them and their visual-token counts."""
from __future__ import annotations

import hashlib
import os
import random
import sys
from pathlib import Path
from typing import List, Sequence, Tuple

import torch
from tqdm import tqdm

from llava.eval.driver.items import EvalItem
from llava.eval.driver.questions import (
    Question,
    QuestionFileError,
    UnencodableTextError,
    build_question_prompt,
    check_encodable,
)
from llava.eval.driver.sample_errors import FailedSample, SampleErrorLog


PROG = "python -m fitprune.calibrate"


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

    Images are read with `llava.image_loading.load_image` and go through `process_images` with
    the model's config (anyres views for LLaVA-NeXT, whose original sizes are passed as
    `image_sizes`).

    Raises:
        QuestionFileError: an image that cannot be used, naming the question file, line and field.
    """
    from llava.image_loading import ImageError, bound_image_geometry, load_image
    from llava.mm_utils import process_images, tokenizer_image_token

    batches = []
    use_start_end = model.config.mm_use_im_start_end
    device = model.get_model().embed_tokens.weight.device
    for question in tqdm(questions, desc="prepare", unit="sample", leave=False):
        prompt = build_question_prompt(question.text, conv_mode, use_im_start_end=use_start_end)
        input_ids = tokenizer_image_token(prompt, tokenizer, return_tensors="pt")[None].to(device)
        try:
            image = load_image(Path(image_folder) / question.image)
        except ImageError as err:
            raise QuestionFileError(f"{question_file}:{question.line}: field 'image': {err}") from None
        image = bound_image_geometry(image, image_processor, model.config.image_aspect_ratio)
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


def file_sha256(path: Path) -> str:
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
