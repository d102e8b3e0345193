"""Answer one question about one image: ``python -m llava.eval.run_llava``.

    python -m llava.eval.run_llava --model-path liuhaotian/llava-v1.5-7b \\
        --image-file view.jpg --query "What is in the picture?" [--reduction-ratio 60] [--policy fastv]

The answer goes to stdout. On stderr: first the device it runs on (``--device auto``, the
default, is CUDA when it is available and the CPU otherwise), then, with pruning on, one line
on the visual tokens kept. A bad flag, image or model path is one ``run_llava: error:`` line,
exit status 2. `eval_model(args)` does the same from Python and returns the answer. The flags
and loading shared with the other commands are `llava.cli_support`'s.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

import torch

from llava.cli_support import add_model_args, image_prompt, run_command, select_conv_mode, start_run, stop_string
from llava.constants import IMAGE_TOKEN_INDEX
from llava.conversation import conv_templates
from llava.image_loading import bound_image_geometry
from llava.mm_utils import KeywordsStoppingCriteria, image_model_inputs, move_images, tokenizer_image_token
from llava.model.anyres import uses_anyres
from llava.pruning_flags import add_pruning_args, pruning_summary
from llava.utils import OneLineArgumentParser

DEFAULT_MAX_NEW_TOKENS = 1024


def eval_model(args: argparse.Namespace) -> str:
    """Loads the model, answers ``args.query`` about ``args.image_file`` and prints the answer.

    Args:
        args: the flags of `build_parser` (``model_path``, ``image_file`` and ``query``
            are needed; the others default as on the command line).

    Returns:
        The answer, stripped, without a trailing stop string.

    Raises:
        The bad-input errors of `start_run` (all in `BAD_INPUT_ERRORS`).
    """
    run = start_run(args, DEFAULT_MAX_NEW_TOKENS)
    tokenizer, model, image_processor, image = run.tokenizer, run.model, run.image_processor, run.image
    conv = conv_templates[select_conv_mode(run.model_name, getattr(args, "conv_mode", None), args.model_path)].copy()
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
        output_ids = model.generate(input_ids, stopping_criteria=[stopping], **image_inputs, **run.generation)

    answer = tokenizer.batch_decode(output_ids[:, input_ids.shape[1]:], skip_special_tokens=True)[0].strip()
    if answer.endswith(stop_str):
        answer = answer[: -len(stop_str)].strip()
    print(answer)
    summary = pruning_summary(model)
    if summary:
        print(summary, file=sys.stderr)
    return answer


def build_parser() -> OneLineArgumentParser:
    """The command line of `main`."""
    parser = OneLineArgumentParser(prog="python -m llava.eval.run_llava", description=__doc__.splitlines()[0],
                                   error_name="run_llava")
    add_model_args(parser, DEFAULT_MAX_NEW_TOKENS)
    parser.add_argument("--query", type=str, required=True)
    add_pruning_args(parser)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> str:
    """Runs `eval_model` on the command line's flags (`run_command`); returns the answer."""
    return run_command(build_parser(), eval_model, argv)


if __name__ == "__main__":
    main()
