"""Chat about one image in the terminal: ``python -m llava.serve.cli``.

    python -m llava.serve.cli --model-path liuhaotian/llava-v1.5-7b --image-file view.jpg

Each line typed is a user turn; replies stream as they are generated. An empty line or
end of input (Ctrl-D) ends the chat. The first line on stderr names the device (``--device
auto``, the default, is CUDA when it is available and the CPU otherwise); a bad flag, image or
model path is one ``cli: error:`` line, exit status 2.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

import torch
from transformers import TextStreamer

from llava.constants import IMAGE_TOKEN_INDEX
from llava.conversation import Conversation, conv_templates
from llava.image_loading import bound_image_geometry
from llava.cli_support import add_model_args, image_prompt, run_command, select_conv_mode, start_run, stop_string
from llava.mm_utils import KeywordsStoppingCriteria, image_model_inputs, move_images, tokenizer_image_token
from llava.model.anyres import uses_anyres
from llava.pruning_flags import add_pruning_args, pruning_summary
from llava.utils import OneLineArgumentParser

DEFAULT_MAX_NEW_TOKENS = 512


def chat(args: argparse.Namespace) -> Conversation:
    """Loads the model and runs the chat loop until an empty line or end of input.

    Args:
        args: the flags of `build_parser`.

    Returns:
        The conversation, one (user, assistant) pair per answered turn.

    Raises:
        The bad-input errors of `llava.cli_support.start_run`.
    """
    run = start_run(args, DEFAULT_MAX_NEW_TOKENS)
    tokenizer, model = run.tokenizer, run.model
    conv = conv_templates[select_conv_mode(run.model_name, args.conv_mode, args.model_path)].copy()
    roles = ("user", "assistant") if "mpt" in run.model_name.lower() else conv.roles

    # the CLI's --image-aspect-ratio, not the config's (anyres models always use their own)
    aspect = "anyres" if uses_anyres(model.config) else args.image_aspect_ratio
    image = bound_image_geometry(run.image, run.image_processor, aspect)
    image_inputs = image_model_inputs(image, run.image_processor, model.config, aspect_config=args)
    image_inputs["images"] = move_images(image_inputs["images"], model.device, model.dtype)

    first_turn = True
    while True:
        try:
            user_text = input(f"{roles[0]}: ")
        except EOFError:
            user_text = ""
        if not user_text:
            print("exit...")
            break
        print(f"{roles[1]}: ", end="", flush=True)
        conv.append_message(conv.roles[0], image_prompt(user_text, model.config) if first_turn else user_text)
        first_turn = False
        conv.append_message(conv.roles[1], None)
        prompt = conv.get_prompt()

        input_ids = tokenizer_image_token(prompt, tokenizer, IMAGE_TOKEN_INDEX, return_tensors="pt")
        input_ids = input_ids.unsqueeze(0).to(model.device)  # (1, L)
        stopping = KeywordsStoppingCriteria([stop_string(conv)], tokenizer, input_ids)
        streamer = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
        with torch.inference_mode():
            output_ids = model.generate(
                input_ids, streamer=streamer, stopping_criteria=[stopping], **image_inputs, **run.generation
            )
        # as upstream: decoded with special tokens, so "</s>" stays in the stored reply
        reply = tokenizer.decode(output_ids[0, input_ids.shape[1]:]).strip()
        conv.messages[-1][-1] = reply
        summary = pruning_summary(model)
        if summary:
            print(summary, file=sys.stderr)
        if args.debug:
            print("\n", {"prompt": prompt, "outputs": reply}, "\n")
    return conv


def build_parser() -> OneLineArgumentParser:
    """The command line of `main`."""
    parser = OneLineArgumentParser(prog="python -m llava.serve.cli", description=__doc__.splitlines()[0],
                                   error_name="cli")
    add_model_args(parser, DEFAULT_MAX_NEW_TOKENS)
    parser.add_argument("--load-8bit", action="store_true")
    parser.add_argument("--load-4bit", action="store_true")
    parser.add_argument("--debug", action="store_true", help="print each prompt and raw reply")
    parser.add_argument("--image-aspect-ratio", type=str, default="pad", help="'pad' pads to a square first")
    add_pruning_args(parser)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> Conversation:
    """Runs `chat` on the command line's flags (`llava.cli_support.run_command`); returns the
    finished conversation."""
    return run_command(build_parser(), chat, argv)


if __name__ == "__main__":
    main()
