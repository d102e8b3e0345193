"""Answer one question about one image: ``python -m llava.eval.run_llava``.

    python -m llava.eval.run_llava --model-path liuhaotian/llava-v1.5-7b \\
        --image-file view.jpg --query "What is in the picture?" [--reduction-ratio 60]

The answer goes to stdout; with pruning on, one line on the visual tokens kept goes to
stderr. `eval_model(args)` does the same from Python and returns the answer.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

import torch
from PIL import Image

from fitprune.recipe import RecipeError
from llava.constants import DEFAULT_IM_END_TOKEN, DEFAULT_IM_START_TOKEN, DEFAULT_IMAGE_TOKEN, IMAGE_TOKEN_INDEX
from llava.conversation import Conversation, SeparatorStyle, conv_templates
from llava.eval.images import ImageError, bound_image_geometry, decode_image, load_image as read_image_file
from llava.eval.io_utils import InputError
from llava.eval.pruning_args import add_pruning_args, apply_pruning_args, pruning_summary
from llava.mm_utils import (
    KeywordsStoppingCriteria,
    get_model_name_from_path,
    image_model_inputs,
    move_images,
    tokenizer_image_token,
)
from llava.model.anyres import uses_anyres
from llava.model.builder import load_pretrained_model
from llava.model.errors import CheckpointError
from llava.utils import disable_torch_init

URL_TIMEOUT_S = 30
USAGE_ERROR = 2
"""Exit status for bad input (missing image or model, no recipe), as argparse uses."""


class UsageError(ValueError):
    """A flag value the driver cannot run with (device, temperature, token limit)."""


BAD_INPUT_ERRORS = (InputError, CheckpointError, FileNotFoundError, RecipeError, UsageError)
"""What the command lines report in one line with exit status 2: an unusable image or data
file, a model path or checkpoint that cannot be loaded, no fitting recipe, a bad flag value."""


def auto_conv_mode(model_name: str) -> str:
    """The conversation template upstream picks from a model name.

    Args:
        model_name: e.g. ``llava-v1.5-7b``.

    Returns:
        ``llava_llama_2`` if the name has ``llama-2``, else ``llava_v1`` if it has ``v1``,
        else ``mpt`` if it has ``mpt``, else ``llava_v0`` (case-insensitive).
    """
    name = model_name.lower()
    if "llama-2" in name:
        return "llava_llama_2"
    if "v1" in name:
        return "llava_v1"
    if "mpt" in name:
        return "mpt"
    return "llava_v0"


def select_conv_mode(model_name: str, requested: Optional[str]) -> str:
    """The template to use: `requested` if given, else the automatic choice.

    Prints a warning to stderr when `requested` differs from the automatic choice.

    Args:
        model_name: the model's name.
        requested: the ``--conv-mode`` value, or None.

    Returns:
        A key of `conv_templates`.
    """
    auto = auto_conv_mode(model_name)
    if requested is None:
        return auto
    if requested != auto:
        print(
            f"[WARNING] the auto inferred conversation mode is {auto}, while `--conv-mode` is {requested}, "
            f"using {requested}",
            file=sys.stderr,
        )
    return requested


def stop_string(conv: Conversation) -> str:
    """The separator that ends an assistant turn in `conv`'s template."""
    return conv.sep2 if conv.sep_style == SeparatorStyle.TWO else conv.sep


def load_image(image_file: str) -> Image.Image:
    """Reads an image from a local path or an http(s) URL, checked, as RGB (`llava.eval.images`).

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


def check_device(device: str) -> None:
    """Raises `UsageError` (a ValueError) for a CUDA device on a machine without CUDA."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {device} was asked for but CUDA is not available; pass --device cpu")


def generation_kwargs(temperature: float, max_new_tokens: int) -> dict:
    """`generate` arguments: sampling at `temperature` when it is above 0, greedy at 0.

    Raises:
        UsageError: (a ValueError) a negative temperature or a `max_new_tokens` below 1.
    """
    if temperature < 0:
        raise UsageError(f"temperature must be >= 0, got {temperature}")
    if max_new_tokens < 1:
        raise UsageError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if temperature > 0:
        return {"do_sample": True, "temperature": temperature, "max_new_tokens": max_new_tokens, "use_cache": True}
    return {"do_sample": False, "num_beams": 1, "max_new_tokens": max_new_tokens, "use_cache": True}


def image_prompt(query: str, config) -> str:
    """`query` with the image placeholder (and start/end tokens if the model uses them) in front."""
    if getattr(config, "mm_use_im_start_end", False):
        return f"{DEFAULT_IM_START_TOKEN}{DEFAULT_IMAGE_TOKEN}{DEFAULT_IM_END_TOKEN}\n{query}"
    return f"{DEFAULT_IMAGE_TOKEN}\n{query}"


def eval_model(args: argparse.Namespace) -> str:
    """Loads the model, answers ``args.query`` about ``args.image_file`` and prints the answer.

    Args:
        args: the flags of `build_parser` (``model_path``, ``image_file`` and ``query``
            are needed; the others default as on the command line).

    Returns:
        The answer, stripped, without a trailing stop string.

    Raises:
        ImageError: the image cannot be used.
        FileNotFoundError: the model path does not exist.
        CheckpointError: the checkpoint's config names no usable vision tower.
        fitprune.recipe.RecipeError: pruning was asked for but no recipe fits.
        UsageError: a bad device, temperature or token limit.
    """
    device = getattr(args, "device", "cuda")
    temperature = getattr(args, "temperature", 0.2)
    gen_kwargs = generation_kwargs(temperature, getattr(args, "max_new_tokens", 1024))
    check_device(device)
    image = load_image(args.image_file)

    disable_torch_init()
    model_name = get_model_name_from_path(args.model_path)
    tokenizer, model, image_processor, _ = load_pretrained_model(
        args.model_path, getattr(args, "model_base", None), model_name, device=device
    )
    apply_pruning_args(model, args)

    conv = conv_templates[select_conv_mode(model_name, getattr(args, "conv_mode", None))].copy()
    conv.append_message(conv.roles[0], image_prompt(args.query, model.config))
    conv.append_message(conv.roles[1], None)
    prompt = conv.get_prompt()

    image = bound_image_geometry(image, image_processor, "anyres" if uses_anyres(model.config) else None)
    image_inputs = image_model_inputs(image, image_processor, model.config)
    image_inputs["images"] = move_images(image_inputs["images"], model.device, model.dtype)
    input_ids = tokenizer_image_token(prompt, tokenizer, IMAGE_TOKEN_INDEX, return_tensors="pt")
    input_ids = input_ids.unsqueeze(0).to(model.device)  # (1, L)
    stop_str = stop_string(conv)
    stopping = KeywordsStoppingCriteria([stop_str], tokenizer, input_ids)
    with torch.inference_mode():
        output_ids = model.generate(input_ids, stopping_criteria=[stopping], **image_inputs, **gen_kwargs)

    answer = tokenizer.batch_decode(output_ids[:, input_ids.shape[1]:], skip_special_tokens=True)[0].strip()
    if answer.endswith(stop_str):
        answer = answer[: -len(stop_str)].strip()
    print(answer)
    summary = pruning_summary(model)
    if summary:
        print(summary, file=sys.stderr)
    return answer


def build_parser() -> argparse.ArgumentParser:
    """The command line of `main`."""
    parser = argparse.ArgumentParser(prog="python -m llava.eval.run_llava", description=__doc__.splitlines()[0])
    parser.add_argument("--model-path", type=str, required=True, help="checkpoint directory or hub name")
    parser.add_argument("--model-base", type=str, default=None)
    parser.add_argument("--image-file", type=str, required=True, help="image path or http(s) URL")
    parser.add_argument("--query", type=str, required=True)
    parser.add_argument("--conv-mode", type=str, default=None, choices=sorted(conv_templates))
    parser.add_argument("--temperature", type=float, default=0.2, help="0 decodes greedily")
    parser.add_argument("--max-new-tokens", type=int, default=1024)
    parser.add_argument("--device", type=str, default="cuda", help="cuda, cuda:N or cpu")
    add_pruning_args(parser)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> str:
    """Runs `eval_model` on the command line's flags.

    Args:
        argv: arguments without the program name; defaults to ``sys.argv[1:]``.

    Returns:
        The answer.

    Raises:
        SystemExit: status 2, after a one-line message on stderr, on any of `BAD_INPUT_ERRORS`.
    """
    args = build_parser().parse_args(argv)
    try:
        return eval_model(args)
    except BAD_INPUT_ERRORS as err:
        print(f"run_llava: error: {err}", file=sys.stderr)
        raise SystemExit(USAGE_ERROR) from None


if __name__ == "__main__":
    main()
