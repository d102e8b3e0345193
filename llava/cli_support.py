"""What every command line shares: model flags, device choice, decoding arguments, the
conversation template, loading a model and an image for one question, and one-line errors.

    parser = OneLineArgumentParser(prog="python -m llava.eval.run_llava", error_name="run_llava")
    add_model_args(parser, max_new_tokens=1024)     # --model-path, --image-file, --device, ...
    add_pruning_args(parser)                        # --reduction-ratio, --recipe, --policy
    run = start_run(parser.parse_args(), 1024)      # model, image and generate kwargs, pruning set up

Library code for `llava.eval.run_llava`, `llava.serve.cli`, the web demo, the eval drivers and
fitprune's commands; it defines no command of its own.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, TypeVar

import torch
from PIL import Image

from llava.constants import DEFAULT_IM_END_TOKEN, DEFAULT_IM_START_TOKEN, DEFAULT_IMAGE_TOKEN
from llava.conversation import Conversation, SeparatorStyle, conv_templates
from llava.errors import CheckpointError, ContextLengthError, InputError, MissingDependencyError
from llava.image_loading import ImageError, decode_image, load_image as read_image_file
from llava.mm_utils import get_model_name_from_path
from llava.model.builder import (
    AUTO_DEVICE,
    DeviceError,
    check_model_path,
    describe_device,
    load_pretrained_model,
    resolve_device,
)
from llava.model.hf_config import IMAGE_PROCESSING_CHOICES, IMAGE_PROCESSING_LLAVA
from llava.model.pruning.recipe import RecipeError
from llava.model.template_choice import choose_conv_mode, describe_choice
from llava.pruning_flags import apply_pruning_args
from llava.utils import OneLineArgumentParser, disable_torch_init

URL_TIMEOUT_S = 30

ResultT = TypeVar("ResultT")


class UsageError(ValueError):
    """A flag value the driver cannot run with (device, temperature, top_p, token limit); the
    message starts with the flag."""


BAD_INPUT_ERRORS = (InputError, CheckpointError, ContextLengthError, FileNotFoundError, MissingDependencyError,
                    RecipeError, UsageError)
"""What the command lines report in one line with exit status 2: an unusable image or data
file, a model path or checkpoint that cannot be loaded, a prompt longer than the model's
context, an optional package a flag needs, no fitting recipe, a bad flag value."""


def select_conv_mode(model_name: str, requested: Optional[str], model_path: Optional[str] = None) -> str:
    """The template to use (`llava.model.template_choice.choose_conv_mode`): `requested` if given, else
    the one the checkpoint at `model_path` records, else the guess from `model_name`.

    Prints one line on stderr naming the template and why it was chosen, with a warning when
    `requested` differs from the recorded or guessed one.

    Args:
        model_name: the model's name.
        requested: the ``--conv-mode`` value, or None.
        model_path: the checkpoint directory or hub name, or None.

    Returns:
        A key of `conv_templates`.

    Raises:
        CheckpointError: the checkpoint records a template that does not exist.
    """
    choice = choose_conv_mode(model_name, model_path, requested)
    print(describe_choice(choice), file=sys.stderr, flush=True)
    return choice.conv_mode


def stop_string(conv: Conversation) -> str:
    """The separator that ends an assistant turn in `conv`'s template."""
    return conv.sep2 if conv.sep_style == SeparatorStyle.TWO else conv.sep


def load_image(image_file: str) -> Image.Image:
    """Reads an image from a local path or an http(s) URL, checked, as RGB (`llava.image_loading`).

    Args:
        image_file: path or URL.

    Returns:
        The RGB image.

    Raises:
        ImageError: the file or the download cannot be used (missing file: also a
            FileNotFoundError); the message starts with the path or URL.
    """
    if image_file.startswith(("http://", "https://")):
        import requests

        try:
            response = requests.get(image_file, timeout=URL_TIMEOUT_S)
            response.raise_for_status()
        except requests.RequestException as err:
            raise ImageError(f"{image_file}: cannot download the image ({err})") from None
        return decode_image(response.content, name=image_file)
    return read_image_file(image_file)


def select_device(requested: Optional[str]) -> str:
    """The device to run on: `requested` (cpu, cuda, cuda:N), or for ``auto`` / None CUDA when
    it is available, else the CPU (`llava.model.builder.resolve_device`).

    Raises:
        UsageError: (a ValueError) naming ``--device``: an unknown device, or CUDA without CUDA.
    """
    try:
        return resolve_device(requested)
    except DeviceError as err:
        raise UsageError(f"--device: {err}") from None


def generation_kwargs(temperature: float, max_new_tokens: int, top_p: Optional[float] = None) -> dict:
    """`generate` arguments: sampling at `temperature` (with nucleus `top_p` when given) when it
    is above 0, greedy at 0.

    Raises:
        UsageError: (a ValueError) naming the flag: a temperature below 0 (or NaN), a
            `max_new_tokens` below 1, or a `top_p` outside (0, 1].
    """
    if not temperature >= 0:
        raise UsageError(f"--temperature must be >= 0, got {temperature}")
    if max_new_tokens < 1:
        raise UsageError(f"--max-new-tokens must be >= 1, got {max_new_tokens}")
    if top_p is not None and not 0 < top_p <= 1:
        raise UsageError(f"--top_p must be in (0, 1], got {top_p}")
    if temperature > 0:
        sampling = {"do_sample": True, "temperature": temperature, "max_new_tokens": max_new_tokens, "use_cache": True}
        return sampling if top_p is None else {**sampling, "top_p": top_p}
    return {"do_sample": False, "num_beams": 1, "max_new_tokens": max_new_tokens, "use_cache": True}


@dataclass
class LoadedRun:
    """What `start_run` gives a command: its model, its image and its decoding arguments."""

    model_name: str
    tokenizer: object
    model: torch.nn.Module
    image_processor: object
    image: Image.Image
    generation: dict
    """`generate` keyword arguments (`generation_kwargs`)."""


def start_run(args: argparse.Namespace, default_max_new_tokens: int) -> LoadedRun:
    """Checks a command's flags, image and model path, prints the device line on stderr
    (`describe_device`), loads the model and configures its pruning.

    Missing attributes of `args` default as on the command line (device ``auto``, temperature
    0.2, no ``top_p``, `default_max_new_tokens`, no model base, no quantisation).

    Raises:
        UsageError: a bad device, temperature, top_p or token limit (nothing else is read).
        ImageError: the image cannot be used.
        FileNotFoundError: the model path (or base) does not exist, or is a hub name that is
            not cached and cannot be downloaded now.
        CheckpointError: the checkpoint cannot be loaded (no usable vision tower; a truncated,
            corrupt or unsafe weights file).
        fitprune.recipe.RecipeError: pruning was asked for but no recipe fits.
    """
    generation = generation_kwargs(getattr(args, "temperature", 0.2),
                                   getattr(args, "max_new_tokens", default_max_new_tokens), getattr(args, "top_p", None))
    requested = getattr(args, "device", AUTO_DEVICE)
    device = select_device(requested)
    image = load_image(args.image_file)
    model_base = getattr(args, "model_base", None)
    check_model_path(args.model_path)
    if model_base is not None:
        check_model_path(model_base, "model base")
    print(describe_device(requested, device), file=sys.stderr, flush=True)

    disable_torch_init()
    model_name = get_model_name_from_path(args.model_path)
    tokenizer, model, image_processor, _ = load_pretrained_model(
        args.model_path, model_base, model_name, getattr(args, "load_8bit", False), getattr(args, "load_4bit", False),
        device=device, image_processing=getattr(args, "image_processing", IMAGE_PROCESSING_LLAVA),
    )
    apply_pruning_args(model, args)
    return LoadedRun(model_name, tokenizer, model, image_processor, image, generation)


def image_prompt(query: str, config) -> str:
    """`query` with the image placeholder (and start/end tokens if the model uses them) in front."""
    if config.mm_use_im_start_end:
        return f"{DEFAULT_IM_START_TOKEN}{DEFAULT_IMAGE_TOKEN}{DEFAULT_IM_END_TOKEN}\n{query}"
    return f"{DEFAULT_IMAGE_TOKEN}\n{query}"


def add_image_processing_flag(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Adds ``--image-processing {llava,checkpoint}``: how a Hugging Face-layout checkpoint's images
    are prepared (default llava: LLaVA's own rule, pad to square for 1.5, anyres for NeXT, so
    answers equal the original checkpoint's; checkpoint: its processor's resize and centre crop).
    Original-layout checkpoints always follow LLaVA's rule."""
    parser.add_argument("--image-processing", choices=IMAGE_PROCESSING_CHOICES, default=IMAGE_PROCESSING_LLAVA,
                        help="Hugging Face-layout checkpoints: llava (default) pads to square as LLaVA's evaluation "
                             "does; checkpoint uses the checkpoint's processor (resize, centre crop)")
    return parser


def add_model_args(parser: argparse.ArgumentParser, max_new_tokens: int) -> argparse.ArgumentParser:
    """Adds the flags `start_run` reads: model, image, device, conversation and decoding."""
    parser.add_argument("--model-path", type=str, required=True, help="checkpoint directory or hub name")
    parser.add_argument("--model-base", type=str, default=None)
    add_image_processing_flag(parser)
    parser.add_argument("--image-file", type=str, required=True, help="image path or http(s) URL")
    parser.add_argument("--device", type=str, default=AUTO_DEVICE,
                        help="cuda, cuda:N, cpu, or auto (default): CUDA when it is available, else the CPU")
    parser.add_argument("--conv-mode", type=str, default=None, choices=sorted(conv_templates))
    parser.add_argument("--temperature", type=float, default=0.2, help="0 decodes greedily")
    parser.add_argument("--top_p", "--top-p", dest="top_p", type=float, default=None,
                        help="nucleus sampling threshold in (0, 1] (with a temperature above 0)")
    parser.add_argument("--max-new-tokens", "--max_new_tokens", dest="max_new_tokens", type=int,
                        default=max_new_tokens)
    return parser


def run_command(parser: OneLineArgumentParser, command: Callable[[argparse.Namespace], ResultT],
                argv: Optional[Sequence[str]]) -> ResultT:
    """Parses `argv` (default ``sys.argv[1:]``) and returns ``command(args)``.

    Raises:
        SystemExit: status 2 after one ``<command>: error: <message>`` line on stderr, for a
            flag argparse refuses or any of `BAD_INPUT_ERRORS`.
    """
    args = parser.parse_args(argv)
    try:
        return command(args)
    except BAD_INPUT_ERRORS as err:
        parser.error(" ".join(str(err).splitlines()))
