"""What the generation drivers share: flags, chunking, questions, model loading, the driver loop.

A driver (`model_vqa_loader`, `model_vqa`, `model_vqa_science`, `model_vqa_mmbench`)
describes itself with a `DriverSpec`, turns its question file into `EvalItem`s (reading
and checking the file before any model is loaded) and hands them to `run_driver`:

    SPEC = DriverSpec("model_vqa", default_conv_mode="llava_v1", max_new_tokens=1024,
                      image_loading=ImageLoading(source="file", pad=False))
    args = build_parser(SPEC, "Answers questions about images.").parse_args(argv)
    run_driver(SPEC, args, lambda args: chunk_items(read_question_jsonl(args.question_file), args))

`run_driver` resumes: answers already in ``--answers-file`` are skipped (see
`llava.eval.answers_file`; a second run on the same answers file while one is running is
refused, naming the other run's pid); the rest are answered in batches of ``--batch-size``
(`llava.eval.batch_generation`: left-padded, answers equal to batch size 1), each batch
appended, flushed and fsynced before the next starts, with its statistics appended to the
run-stats log. At the end the run record is rewritten (see `llava.eval.run_record`).

Bad input stops a driver with a one-line ``<driver>: error: ...`` and exit status 2: flag
values, the model path (checked first), the question file (checked whole before the model
loads: `llava.eval.questions`), the recipe. A question whose image or prompt cannot be used
(an unreadable image, text the tokenizer cannot encode, a prompt longer than the model's
context with its visual tokens) is found while the run goes: with ``--on-error skip``
(default) it is listed in ``<answers stem>.errors.jsonl`` and the run goes on, the skips
counted on the progress bar and in one line at the end; with ``--on-error fail`` it stops the
run (see `llava.eval.sample_errors`). A run that skips every question exits with status 2
and one line giving the first error. Images are read by `llava.eval.images` (checked, RGB,
bounded in size).
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import os
import platform
import re
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import shortuuid
import torch
from PIL import Image
from tqdm import tqdm

from llava.model.pruning.flops import DecoderDims
from llava.model.pruning.recipe import RecipeError
from llava.constants import IMAGE_TOKEN_INDEX
from llava.conversation import conv_templates
from llava.eval.answers_file import AnswersFile, AnswersFileError, answer_key, lock_answers_file
from llava.eval.batch_generation import (
    Batch,
    GenerationOutput,
    GenerationSettings,
    PreparedSample,
    answer_text,
    collate,
    generate_batch,
    uses_logits_processing,
)
from llava.eval.pruning_flags import add_pruning_args, apply_pruning_args
from llava.eval.images import ImageError, bound_image_geometry, decode_base64_image, load_image
from llava.eval.io_utils import InputError
from llava.eval.questions import UnencodableTextError, build_question_prompt, check_encodable, load_question_jsonl
from llava.eval.run_llava import UsageError, stop_string
from llava.eval.run_record import (
    RUN_RECORD_SUFFIX,
    RUN_STATS_SUFFIX,
    RunLog,
    RunRecordError,
    drop_partial_last_line,
    sidecar_path,
    write_run_record,
)
from llava.eval.sample_errors import ON_ERROR_CHOICES, FailedSample, SampleErrorLog
from llava.mm_utils import get_model_name_from_path, parse_grid_pinpoints, process_images, tokenizer_image_token
from llava.model.anyres import merge_image_features, merge_type_of, uses_anyres
from llava.model.builder import DeviceError, check_model_path, resolve_device
from llava.model.errors import CheckpointError, ContextLengthError, check_context_length

logger = logging.getLogger(__name__)

USAGE_ERROR = 2
"""Exit status for bad input (missing file, bad flag value, no recipe), as argparse uses."""

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}

NOT_ANSWER_SETTINGS = (
    "answers_file", "question_file", "image_folder", "batch_size", "device", "num_workers",
    "benchmark", "run_name", "overwrite", "on_error",
)
"""Flags that do not change the answers, so a resumed run may change them."""

# ----------------------------------------------------------------------------- flags


@dataclass(frozen=True)
class ImageLoading:
    """How a driver turns an item's image into pixels (the upstream per-module differences).

    Attributes:
        source: "file" (path under --image-folder) or "base64" (encoded in the question file).
        pad: `process_images` with the model config (pads to a square when the config's
            image_aspect_ratio is "pad"); otherwise `image_processor.preprocess` (resize
            and centre-crop).
    """

    source: str
    pad: bool


@dataclass(frozen=True)
class DriverSpec:
    """What distinguishes one generation driver.

    Attributes:
        name: module name, e.g. "model_vqa_loader".
        default_conv_mode: default of --conv-mode.
        max_new_tokens: default of --max-new-tokens (upstream's fixed value).
        image_loading: how images are read and preprocessed.
        sampling_flags: the driver has --top_p and --num_beams.
        mmtag_rule: append "_mmtag" to the conv mode for plain (pretrain-only) models.
        question_file_default: default of --question-file.
    """

    name: str
    default_conv_mode: str
    max_new_tokens: int
    image_loading: ImageLoading
    sampling_flags: bool = True
    mmtag_rule: bool = False
    question_file_default: str = "tables/question.jsonl"


def build_parser(spec: DriverSpec, description: str) -> argparse.ArgumentParser:
    """LLaVA's driver flags plus batching, device, dtype, resume and pruning flags.

    Args:
        spec: the driver.
        description: one line for --help.

    Returns:
        The parser; drivers add their own flags to it.
    """
    parser = argparse.ArgumentParser(prog=f"python -m llava.eval.{spec.name}", description=description)
    parser.add_argument("--model-path", type=str, default="facebook/opt-350m")
    parser.add_argument("--model-base", type=str, default=None)
    parser.add_argument("--image-folder", type=str, default="")
    parser.add_argument("--question-file", type=str, default=spec.question_file_default)
    parser.add_argument("--answers-file", type=str, default="answer.jsonl",
                        help="JSONL of answers; an existing file is resumed (see --overwrite)")
    parser.add_argument("--conv-mode", type=str, default=spec.default_conv_mode)
    parser.add_argument("--num-chunks", type=int, default=1)
    parser.add_argument("--chunk-idx", type=int, default=0)
    parser.add_argument("--temperature", type=float, default=0.2, help="0 decodes greedily")
    if spec.sampling_flags:
        parser.add_argument("--top_p", "--top-p", dest="top_p", type=float, default=None)
        parser.add_argument("--num_beams", "--num-beams", dest="num_beams", type=int, default=1)
    parser.add_argument("--max_new_tokens", "--max-new-tokens", dest="max_new_tokens", type=int,
                        default=spec.max_new_tokens)
    parser.add_argument("--batch-size", "--batch_size", dest="batch_size", type=int, default=1,
                        help="questions per generate call (left-padded; answers equal those of 1)")
    parser.add_argument("--device", type=str, default="auto",
                        help="cuda, cuda:N, cpu, or auto (CUDA when it is available, else the CPU)")
    parser.add_argument("--dtype", choices=["auto", *DTYPES], default="auto",
                        help="weights dtype; auto = float16 on GPU, float32 on CPU")
    parser.add_argument("--num-workers", type=int, default=None,
                        help="image loading processes (default 4 on GPU, 0 on CPU)")
    parser.add_argument("--benchmark", type=str, default=None,
                        help="benchmark name for the run record (default: the question file's folder)")
    parser.add_argument("--run-name", type=str, default=None,
                        help="run name (CKPT) for the run record (default: from the answers file)")
    parser.add_argument("--overwrite", action="store_true",
                        help="start afresh: delete the answers file, its run-stats log, run record and errors file")
    parser.add_argument("--on-error", choices=ON_ERROR_CHOICES, default="skip",
                        help="a question whose image or prompt cannot be used: skip it, listing it in "
                             "<answers stem>.errors.jsonl (default), or fail: stop with exit status 2")
    add_pruning_args(parser)
    return parser


def resolve_dtype(args: argparse.Namespace) -> torch.dtype:
    """The weights dtype of ``--dtype`` (auto: float16 on GPU, float32 on CPU)."""
    if args.dtype == "auto":
        return torch.float32 if str(args.device).startswith("cpu") else torch.float16
    return DTYPES[args.dtype]


def check_args(args: argparse.Namespace) -> None:
    """Rejects flag values the drivers cannot run with.

    ``--device auto`` is replaced by the device it resolves to.

    Raises:
        UsageError: (a ValueError) naming the flag: chunk index out of range, batch size or
            token limit below 1, negative temperature, top_p outside (0, 1], fewer than one
            beam, negative worker count, or a device that is not cpu / cuda / cuda:N or is
            CUDA without CUDA.
    """
    if args.num_chunks < 1 or not 0 <= args.chunk_idx < args.num_chunks:
        raise UsageError(f"--chunk-idx must be in [0, --num-chunks), got {args.chunk_idx} of {args.num_chunks}")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.max_new_tokens < 1:
        raise UsageError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    if not args.temperature >= 0:
        raise UsageError(f"--temperature must be >= 0, got {args.temperature}")
    top_p = getattr(args, "top_p", None)
    if top_p is not None and not 0 < top_p <= 1:
        raise UsageError(f"--top_p must be in (0, 1], got {top_p}")
    if getattr(args, "num_beams", 1) < 1:
        raise UsageError(f"--num_beams must be >= 1, got {args.num_beams}")
    if args.num_workers is not None and args.num_workers < 0:
        raise UsageError(f"--num-workers must be >= 0, got {args.num_workers}")
    try:
        args.device = resolve_device(args.device)
    except DeviceError as err:
        raise UsageError(f"--device: {err}") from None


def check_model_paths(args: argparse.Namespace) -> None:
    """Fails, naming the path, when ``--model-path`` or ``--model-base`` can be neither read locally
    nor fetched; checked before the question file, so a wrong path is not reported as bad data.

    Raises:
        FileNotFoundError: see `llava.model.builder.check_model_path`.
    """
    check_model_path(os.path.expanduser(args.model_path))
    if args.model_base:
        check_model_path(os.path.expanduser(args.model_base), "model base")


# ----------------------------------------------------------------------------- chunks and items


def split_list(items: Sequence, n: int) -> List[Sequence]:
    """Splits a sequence into contiguous chunks of ``ceil(len / n)`` items (upstream's rule).

    Args:
        items: a list, or anything with len() and slicing (a pandas DataFrame).
        n: number of chunks wanted.

    Returns:
        The chunks; fewer than n when the items run out (none for an empty sequence).
    """
    size = math.ceil(len(items) / n)
    if size == 0:
        return []
    return [items[i:i + size] for i in range(0, len(items), size)]


def get_chunk(items: Sequence, n: int, k: int) -> Sequence:
    """The k-th of n chunks of `split_list`; empty when the items run out before chunk k."""
    chunks = split_list(items, n)
    return chunks[k] if k < len(chunks) else items[0:0]


@dataclass(frozen=True)
class EvalItem:
    """One question to answer, before any image is loaded.

    Attributes:
        question_id: copied verbatim to the answer (int or str).
        prompt: the answer line's "prompt" field.
        question: the user turn after the image placeholder (answer-format suffix included).
        image: image path under --image-folder, base64 image, or None for text-only.
        line: line (or row) of the question file, for error messages.
        extra: further answer fields (mmbench: round_id, options, option_char).
    """

    question_id: Any
    prompt: str
    question: str
    image: Optional[str]
    line: int
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """The resume key: question id (type kept) and round id."""
        return answer_key(self.question_id, self.extra.get("round_id"))


def chunk_items(items: Sequence[EvalItem], args: argparse.Namespace) -> List[EvalItem]:
    """The items of chunk ``--chunk-idx`` of ``--num-chunks``."""
    return list(get_chunk(list(items), args.num_chunks, args.chunk_idx))


def read_question_jsonl(path: str) -> List[EvalItem]:
    """Items of a LLaVA question JSONL (question_id, image, text), text kept verbatim.

    Args:
        path: the question file.

    Returns:
        One item per question; ``prompt`` and ``question`` are the line's ``text``; a line
        without ``image`` is a text-only question.

    Raises:
        QuestionFileError: see `llava.eval.questions.load_question_jsonl` (file, line and field).
    """
    return [EvalItem(q.question_id, q.text, q.text, q.image, q.line) for q in load_question_jsonl(path)]


def resolve_conv_mode(conv_mode: str, model_name: str, mmtag_rule: bool) -> str:
    """The template to use; upstream's loader and mmbench append "_mmtag" for plain models.

    Raises:
        UsageError: the (resolved) conv mode is not a template.
    """
    if mmtag_rule and "plain" in model_name and "finetune" not in model_name.lower() and "mmtag" not in conv_mode:
        conv_mode = conv_mode + "_mmtag"
    if conv_mode not in conv_templates:
        raise UsageError(f"unknown conv mode {conv_mode!r}; choose one of {sorted(conv_templates)}")
    return conv_mode


# ----------------------------------------------------------------------------- model


@dataclass
class LoadedModel:
    """A loaded model with its tokenizer and image processor."""

    tokenizer: Any
    model: torch.nn.Module
    image_processor: Any
    model_name: str


def load_model(args: argparse.Namespace) -> LoadedModel:
    """Loads ``--model-path`` on ``--device`` in ``--dtype`` and applies the pruning flags.

    Raises:
        FileNotFoundError: a model path that does not exist (or, offline, is not cached).
        CheckpointError: a config without `mm_vision_tower`, or a vision tower that is not available.
        fitprune.recipe.RecipeError: pruning asked for but no recipe fits.
    """
    from llava.model.builder import load_pretrained_model
    from llava.utils import disable_torch_init

    disable_torch_init()
    model_path = os.path.expanduser(args.model_path)
    model_name = get_model_name_from_path(model_path)
    device_map = {"": args.device} if ":" in str(args.device) else "auto"
    tokenizer, model, image_processor, _ = load_pretrained_model(
        model_path, args.model_base, model_name, device_map=device_map, device=args.device,
        torch_dtype=resolve_dtype(args),
    )
    model.eval()
    apply_pruning_args(model, args)
    return LoadedModel(tokenizer, model, image_processor, model_name)


def pruning_info(model) -> dict:
    """The pruning in effect: ratio (percent), policy, recipe file and the recipe's keep counts and
    reductions (percent), read from the model's pruner (the recipe is not read again)."""
    pruner = model.get_model().resolve_prefill_hook()
    recipe = getattr(pruner, "recipe", None)
    info = {"reduction_ratio": float(getattr(model.config, "reduction_ratio", 0) or 0), "policy": None,
            "recipe_file": None, "keep_counts": None, "achieved_paper": None, "achieved_full": None}
    if recipe is None:
        return info
    info.update(policy=pruner.settings.policy, recipe_file=str(pruner.recipe_file),
                keep_counts=list(recipe.keep_counts), achieved_paper=recipe.achieved_paper,
                achieved_full=recipe.achieved_full)
    return info


# ----------------------------------------------------------------------------- samples


class SamplePreparer:
    """Builds the prompt and pixels of an item (picklable, for DataLoader workers)."""

    def __init__(self, loaded: LoadedModel, conv_mode: str, image_folder: str, image_loading: ImageLoading,
                 question_file: str):
        self.tokenizer = loaded.tokenizer
        self.image_processor = loaded.image_processor
        self.config = loaded.model.config
        self.conv_mode = conv_mode
        self.image_folder = image_folder
        self.image_loading = image_loading
        self.question_file = question_file
        self.num_visual_tokens = loaded.model.get_model().num_visual_tokens()
        self.tile_pixels = loaded.model.get_model().get_vision_tower().config.image_size

    def prompt(self, item: EvalItem) -> str:
        """The full conversation prompt of an item."""
        return build_question_prompt(item.question, self.conv_mode, with_image=item.image is not None,
                                     use_im_start_end=bool(getattr(self.config, "mm_use_im_start_end", False)))

    def load_image(self, item: EvalItem) -> Image.Image:
        """The item's image, RGB, bounded for its preprocessing path (`llava.eval.images`).

        Raises:
            ImageError: the image cannot be used (the message names the file or the base64 source).
        """
        if self.image_loading.source == "base64":
            image = decode_base64_image(item.image, name="base64 image")
        else:
            image = load_image(os.path.join(self.image_folder, item.image))
        return bound_image_geometry(image, self.image_processor, self.preprocessing_path())

    def preprocessing_path(self) -> Optional[str]:
        """The `image_aspect_ratio` that `pixels` preprocesses with: the config's for `process_images`,
        None for resize-and-crop."""
        if self.image_loading.pad or uses_anyres(self.config):
            return getattr(self.config, "image_aspect_ratio", None)
        return None

    def pixels(self, image: Image.Image) -> torch.Tensor:
        """(3, H, W) pixels of one image, padded or not as the driver does upstream;
        (views, 3, H, W) for LLaVA-NeXT's anyres images, whatever the driver."""
        if self.image_loading.pad or uses_anyres(self.config):
            return process_images([image], self.image_processor, self.config)[0]
        return self.image_processor.preprocess(image, return_tensors="pt")["pixel_values"][0]

    def visual_tokens(self, pixels: torch.Tensor, image_size: Tuple[int, int]) -> int:
        """The tokens one image's `pixels` splice into the prompt: the tower's count, or for
        LLaVA-NeXT's anyres views (views, 3, H, W) the length of their merged run (tiles,
        unpadding and newlines), computed on placeholder features of width 1."""
        if pixels.dim() == 3:
            return self.num_visual_tokens
        placeholder = torch.zeros(pixels.shape[0], self.num_visual_tokens, 1)
        pinpoints = getattr(self.config, "image_grid_pinpoints", None)
        run = merge_image_features(placeholder, merge_type_of(self.config), image_size=image_size,
                                   grid_pinpoints=parse_grid_pinpoints(pinpoints) if pinpoints else None,
                                   tile_pixels=self.tile_pixels, image_newline=torch.zeros(1))
        return run.shape[0]

    def __call__(self, item: EvalItem) -> Union[PreparedSample, FailedSample]:
        """The item's model inputs, or, when its prompt or image cannot be used, why not.

        A prompt is unusable when it holds a character the tokenizer cannot encode, image
        placeholders that do not match its images, or more text and visual tokens than the
        model's context (``max_position_embeddings``).
        """
        where = f"{self.question_file}:{item.line}"
        try:
            check_encodable(item.question)
        except UnencodableTextError as err:
            return FailedSample(item, "text", f"{where}: field 'text': {err}")
        input_ids = tokenizer_image_token(self.prompt(item), self.tokenizer, IMAGE_TOKEN_INDEX, return_tensors="pt")
        placeholders, images = int((input_ids == IMAGE_TOKEN_INDEX).sum()), int(item.image is not None)
        if placeholders != images:
            return FailedSample(item, "text", f"{where}: field 'text': the prompt holds {placeholders} image "
                                              f"placeholders for {images} image(s)")
        sample = PreparedSample(item, input_ids, None)
        if item.image is not None:
            try:
                image = self.load_image(item)
            except ImageError as err:
                return FailedSample(item, "image", f"{where}: field 'image': {err}")
            sample = PreparedSample(item, input_ids, self.pixels(image), image.size)
        visual = self.visual_tokens(sample.image, sample.image_size) if sample.image is not None else 0
        try:
            check_context_length(len(input_ids) - placeholders, visual, self.config.max_position_embeddings)
        except ContextLengthError as err:
            return FailedSample(item, "text", f"{where}: field 'text': {err}")
        return sample


class _PreparedItems(torch.utils.data.Dataset):
    def __init__(self, items: Sequence[EvalItem], prepare: SamplePreparer):
        self.items = items
        self.prepare = prepare

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Union[PreparedSample, FailedSample]:
        return self.prepare(self.items[index])


def _as_list(samples: List[Union[PreparedSample, FailedSample]]) -> List[Union[PreparedSample, FailedSample]]:
    return samples


def answer_row(item: EvalItem, text: str, model_name: str) -> dict:
    """One answer line: question_id, prompt, text, the item's extra fields, answer_id, model_id, metadata."""
    return {"question_id": item.question_id, "prompt": item.prompt, "text": text, **item.extra,
            "answer_id": shortuuid.uuid(), "model_id": model_name, "metadata": {}}


def remove_run_files(answers_file: str) -> None:
    """Deletes an answers file, its run-stats log, run record and errors file (``--overwrite``)."""
    for path in (Path(answers_file), sidecar_path(answers_file, RUN_STATS_SUFFIX),
                 sidecar_path(answers_file, RUN_RECORD_SUFFIX), SampleErrorLog(answers_file).path):
        path.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- run bookkeeping


def answer_settings(args: argparse.Namespace, conv_mode: str) -> dict:
    """The flags that change answers, compared when a run is resumed."""
    settings = {k: v for k, v in sorted(vars(args).items()) if k not in NOT_ANSWER_SETTINGS}
    settings.update(conv_mode=conv_mode, dtype=str(resolve_dtype(args)).replace("torch.", ""),
                    model_path=os.path.normpath(os.path.expanduser(args.model_path)))
    return settings


def check_resume_settings(answers_file: str, log: RunLog, settings: dict) -> None:
    """Refuses to resume answers written with other answer-changing flags.

    Args:
        answers_file: the answers file being resumed (named in the error).
        log: its run-stats log (no header: nothing to compare).
        settings: this run's `answer_settings`.

    Raises:
        UsageError: naming each differing flag with both values.
    """
    if log.header is None:
        return
    previous = log.header.get("settings", {})
    differing = sorted(k for k in set(previous) | set(settings) if previous.get(k) != settings.get(k))
    if differing:
        changes = "; ".join(f"{k}: {previous.get(k)!r} then, {settings.get(k)!r} now" for k in differing)
        raise UsageError(
            f"{answers_file}: the answers were written with other settings ({changes}); "
            "pass another --answers-file, or --overwrite to start afresh"
        )


def default_run_name(answers_file: str) -> str:
    """The answers file's stem, or its folder's name for chunk (``N_I``) and ``merge`` files."""
    path = Path(answers_file)
    stem = path.name[: -len(".jsonl")] if path.name.endswith(".jsonl") else path.stem
    if stem == "merge" or re.fullmatch(r"\d+_\d+", stem):
        return path.parent.name
    return stem


def log_header(spec: DriverSpec, args: argparse.Namespace, loaded: LoadedModel, settings: dict,
               greedy_loop: bool) -> dict:
    """The run-stats log header: names, answer settings, model, pruning, generation, chunk."""
    model = loaded.model
    return {
        "benchmark": args.benchmark or Path(args.question_file).parent.name,
        "run_name": args.run_name or default_run_name(args.answers_file),
        "driver": spec.name,
        "question_file": args.question_file,
        "settings": settings,
        "model": {
            "path": args.model_path,
            "name": loaded.model_name,
            "base": args.model_base,
            "dtype": settings["dtype"],
            "num_visual_tokens": model.get_model().num_visual_tokens(),
            "decoder_dims": dataclasses.asdict(DecoderDims.from_config(model.config)),
        },
        "pruning": pruning_info(model),
        "generation": {
            "conv_mode": settings["conv_mode"],
            "temperature": args.temperature,
            "top_p": getattr(args, "top_p", None),
            "num_beams": getattr(args, "num_beams", 1),
            "max_new_tokens": args.max_new_tokens,
            "decoding": "greedy loop (llava.eval.batch_generation)" if greedy_loop else "model.generate",
        },
        "chunk": {"index": args.chunk_idx, "count": args.num_chunks},
    }


def batch_stats(batch: Batch, output: GenerationOutput, num_visual_tokens: int, num_layers: int) -> dict:
    """One run-stats log entry for an answered batch.

    A sample's visual tokens are those the prefill spliced in when the output has them,
    else its image placeholders times `num_visual_tokens`.
    """
    keep_counts, num_visual, num_other = [], [], []
    for b, sample in enumerate(batch.samples):
        placeholders = int((sample.input_ids == IMAGE_TOKEN_INDEX).sum())
        if output.initial_visual is not None:
            visual = int(output.initial_visual[b])
        else:
            visual = placeholders * num_visual_tokens
        num_visual.append(visual)
        num_other.append(len(sample.input_ids) - placeholders)
        if output.keep_counts is not None:
            keep_counts.append(output.keep_counts[:, b].tolist())
        else:
            keep_counts.append([visual] * num_layers)
    return {
        "keys": [s.item.key for s in batch.samples],
        "num_visual": num_visual,
        "num_other_tokens": num_other,
        "keep_counts": keep_counts,
        "new_tokens": [len(tokens) for tokens in output.new_tokens],
        "prefill_s": output.prefill_s,
        "decode_s": output.decode_s,
        "decode_tokens": output.decode_tokens,
    }


def software_versions() -> dict:
    """Versions of Python, torch, transformers, CUDA and this package."""
    from importlib import metadata

    import transformers

    try:
        package = metadata.version("llava-fitprune")
    except metadata.PackageNotFoundError:
        package = None
    return {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "cuda": torch.version.cuda, "llava_fitprune": package}


def device_info(device: torch.device) -> dict:
    """The device's type and name."""
    if device.type == "cuda":
        return {"type": "cuda", "name": torch.cuda.get_device_name(device)}
    return {"type": device.type, "name": platform.processor() or platform.machine()}


def peak_memory(device: torch.device) -> Dict[str, Any]:
    """Peak memory of this process: allocated GPU memory on CUDA, else the maximum RSS."""
    if device.type == "cuda":
        return {"peak_memory_bytes": int(torch.cuda.max_memory_allocated(device)),
                "peak_memory_measure": "torch.cuda.max_memory_allocated"}
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {"peak_memory_bytes": int(rss_kib) * 1024, "peak_memory_measure": "ru_maxrss"}


# ----------------------------------------------------------------------------- the driver loop


def _answer_pending(spec: DriverSpec, args: argparse.Namespace, pending: List[EvalItem], total: int,
                    answers: AnswersFile, log: RunLog, settings: dict, started: float,
                    errors: SampleErrorLog) -> None:
    """Loads the model and answers `pending`, batch by batch, logging each batch and the run.

    `started` is the run's start, in seconds since the epoch. Questions whose image or prompt
    cannot be used go to `errors` (``--on-error skip``; counted on the progress bar, each
    message logged at debug level only) or stop the run (``fail``).

    Raises:
        InputError: with ``--on-error fail``, the first question that cannot be used.
    """
    if str(args.device).startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    loaded = load_model(args)
    model = loaded.model
    gen = GenerationSettings(args.temperature, getattr(args, "top_p", None), getattr(args, "num_beams", 1),
                             args.max_new_tokens)
    greedy_loop = gen.greedy and not uses_logits_processing(model.generation_config)
    if log.header is None:
        log.write_header(log_header(spec, args, loaded, settings, greedy_loop))
    stop_str = stop_string(conv_templates[settings["conv_mode"]])
    num_visual_tokens = model.get_model().num_visual_tokens()
    num_layers = model.config.num_hidden_layers
    pad_id = loaded.tokenizer.pad_token_id if loaded.tokenizer.pad_token_id is not None else 0
    workers = args.num_workers if args.num_workers is not None else (4 if str(args.device).startswith("cuda") else 0)
    preparer = SamplePreparer(loaded, settings["conv_mode"], args.image_folder, spec.image_loading,
                              args.question_file)
    loader = torch.utils.data.DataLoader(_PreparedItems(pending, preparer), batch_size=args.batch_size,
                                         shuffle=False, num_workers=workers, collate_fn=_as_list)
    generation_start = time.perf_counter()
    with tqdm(total=total, initial=total - len(pending), desc=spec.name, unit="q") as progress:
        for prepared in loader:
            samples = [s for s in prepared if isinstance(s, PreparedSample)]
            for failed in (s for s in prepared if isinstance(s, FailedSample)):
                if args.on_error == "fail":
                    raise InputError(failed.message)
                logger.debug("skipped: %s", failed.message)
                errors.record(failed)
                progress.set_postfix(skipped=errors.count, refresh=False)
                progress.update(1)
            if not samples:
                continue
            batch = collate(samples, pad_id)
            output = generate_batch(model, batch, gen)
            rows = [answer_row(s.item, answer_text(loaded.tokenizer, tokens, stop_str), loaded.model_name)
                    for s, tokens in zip(batch.samples, output.new_tokens)]
            answers.append(rows)
            log.append_batch(batch_stats(batch, output, num_visual_tokens, num_layers))
            progress.update(len(rows))
    log.append_run({
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "samples": len(pending),
        "failed_samples": errors.count,
        "errors_file": str(errors.path) if errors.count else None,
        "batch_size": args.batch_size,
        "wall_time_s": time.time() - started,
        "generation_time_s": time.perf_counter() - generation_start,
        "device": device_info(model.device),
        "software": software_versions(),
        **peak_memory(model.device),
    })


class AllSkippedError(InputError):
    """Every question of a run was skipped: the data (usually ``--image-folder``) is wrong."""


def check_something_answered(items: Sequence[EvalItem], errors: SampleErrorLog) -> None:
    """Raises `AllSkippedError` when this run skipped every one of the chunk's questions.

    Raises:
        AllSkippedError: ``all N samples were skipped (first error: ...); see <errors file>``.
    """
    if items and errors.count == len(items):
        raise AllSkippedError(f"all {len(items)} samples were skipped (first error: {errors.first.message}); "
                              f"see {errors.path}")


def _answer_locked(spec: DriverSpec, args: argparse.Namespace, items: List[EvalItem], settings: dict,
                   started: float, errors: SampleErrorLog) -> Optional[Path]:
    """What `run_driver` does while it holds the answers file's lock: resume, answer, record.

    Returns:
        The run record's path, or None when the answers file has no run-stats log.
    """
    if args.overwrite:
        remove_run_files(args.answers_file)
    answers = AnswersFile(args.answers_file)
    log_path = sidecar_path(args.answers_file, RUN_STATS_SUFFIX)
    drop_partial_last_line(log_path)
    log = RunLog.read(log_path)
    check_resume_settings(args.answers_file, log, settings)
    pending = answers.pending(items)
    if pending:
        errors.start_run()
        _answer_pending(spec, args, pending, len(items), answers, log, settings, started, errors)
        check_something_answered(items, errors)
    else:
        print(f"{spec.name}: all {len(items)} questions of {args.answers_file} are answered", file=sys.stderr)
    return write_run_record(args.answers_file)


def run_driver(spec: DriverSpec, args: argparse.Namespace,
               read_items: Callable[[argparse.Namespace], List[EvalItem]]) -> int:
    """Answers the chunk's questions not yet in the answers file, then rewrites the run record.

    Flags and the model path are checked first, then the question file is read (and
    checked) before the model is loaded; the model is not loaded at all when every question
    is already answered. The answers file is locked while the run writes it
    (`llava.eval.answers_file.lock_answers_file`).

    Args:
        spec: the driver.
        args: parsed `build_parser` flags plus the driver's own.
        read_items: the driver's reader: the chunk's items from ``args``.

    Returns:
        0 on success (questions skipped under ``--on-error skip`` included, with a line on
        stderr naming the errors file), 2 (after a one-line message on stderr) on bad input,
        including another run writing the same answers file and a run that skipped every question.
    """
    started = time.time()
    errors = SampleErrorLog(args.answers_file)
    try:
        check_args(args)
        check_model_paths(args)
        items = read_items(args)
        conv_mode = resolve_conv_mode(args.conv_mode, get_model_name_from_path(os.path.expanduser(args.model_path)),
                                      spec.mmtag_rule)
        settings = answer_settings(args, conv_mode)
        with lock_answers_file(args.answers_file):
            record = _answer_locked(spec, args, items, settings, started, errors)
    except (InputError, AnswersFileError, CheckpointError, FileNotFoundError, RecipeError, RunRecordError,
            UsageError) as err:
        print(f"{spec.name}: error: {err}", file=sys.stderr)
        return USAGE_ERROR
    if errors.count:
        print(f"{spec.name}: {errors.count} of {len(items)} questions skipped (image or prompt unusable; first: "
              f"{errors.first.message}); listed in {errors.path}", file=sys.stderr)
    if record is not None:
        print(f"{spec.name}: {len(items) - errors.count} answers in {args.answers_file}; run record {record} "
              f"({time.time() - started:.1f} s)", file=sys.stderr)
    return 0
