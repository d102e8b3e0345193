"""The generation drivers' command line: `DriverSpec`, `build_parser`, flag checks, dtype."""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

import torch

from llava.cli_support import UsageError, add_image_processing_flag
from llava.eval.driver.sample_errors import ON_ERROR_CHOICES
from llava.model.builder import DeviceError, check_model_path, resolve_device
from llava.pruning_flags import add_pruning_args
from llava.utils import OneLineArgumentParser


DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}

NOT_ANSWER_SETTINGS = (
    "answers_file", "question_file", "image_folder", "batch_size", "device", "num_workers",
    "benchmark", "run_name", "overwrite", "on_error",
)
"""Flags that do not change the answers, so a resumed run may change them."""


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
    parser = OneLineArgumentParser(prog=f"python -m llava.eval.{spec.name}", description=description,
                                   error_name=spec.name)
    parser.add_argument("--model-path", type=str, default="facebook/opt-350m")
    parser.add_argument("--model-base", type=str, default=None)
    add_image_processing_flag(parser)
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
