"""Chat about one image in the terminal: ``python -m llava.serve.cli``.

    python -m llava.serve.cli --model-path liuhaotian/llava-v1.5-7b --image-file view.jpg

Each line typed is a user turn; replies stream as they are generated. An empty line or
end of input (Ctrl-D) ends the chat.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

import torch
from transformers import TextStreamer

from llava.constants import IMAGE_TOKEN_INDEX
from llava.conversation import Conversation, conv_templates
from llava.eval.images import bound_image_geometry
from llava.eval.pruning_args import add_pruning_args, apply_pruning_args, pruning_summary
from llava.eval.run_llava import (
    BAD_INPUT_ERRORS,
    USAGE_ERROR,
    check_device,
    generation_kwargs,
    image_prompt,
    load_image,
    select_conv_mode,
    stop_string,
)
from llava.mm_utils import (
    KeywordsStoppingCriteria,
    get_model_name_from_path,
    image_model_inputs,
    move_images,
    tokenizer_image_token,
)
from llava.model.anyres import uses_anyres
from llava.model.builder import load_pretrained_model
from llava.utils import disable_torch_init


def chat(args: argparse.Namespace) -> Conversation:
    """Loads the model and runs the chat loop until an empty line or end of input.

    Args:
        args: the flags of `build_parser`.

    Returns:
        The conversation, one (user, assistant) pair per answered turn.

    Raises:
        FileNotFoundError: the image file or the model path does not exist.
        fitprune.recipe.RecipeError: pruning was asked for but no recipe fits.
        UsageError: a bad device, temperature or token limit.
    """
    gen_kwargs = generation_kwargs(args.temperature, args.max_new_tokens)
    check_device(args.device)
    image = load_image(args.image_file)

    disable_torch_init()
    model_name = get_model_name_from_path(args.model_path)
    tokenizer, model, image_processor, _ = load_pretrained_model(
        args.model_path, args.model_base, model_name, args.load_8bit, args.load_4bit, device=args.device
    )
    apply_pruning_args(model, args)
    conv = conv_templates[select_conv_mode(model_name, args.conv_mode)].copy()
    roles = ("user", "assistant") if "mpt" in model_name.lower() else conv.roles

    # the CLI's --image-aspect-ratio, not the config's (anyres models always use their own)
    aspect = "anyres" if uses_anyres(model.config) else args.image_aspect_ratio
    image = bound_image_geometry(image, image_processor, aspect)
    image_inputs = image_model_inputs(image, image_processor, model.config, aspect_config=args)
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
                input_ids, streamer=streamer, stopping_criteria=[stopping], **image_inputs, **gen_kwargs
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


def build_parser() -> argparse.ArgumentParser:
    """The command line of `main`."""
    parser = argparse.ArgumentParser(prog="python -m llava.serve.cli", description=__doc__.splitlines()[0])
    parser.add_argument("--model-path", type=str, required=True, help="checkpoint directory or hub name")
    parser.add_argument("--model-base", type=str, default=None)
    parser.add_argument("--image-file", type=str, required=True, help="image path or http(s) URL")
    parser.add_argument("--device", type=str, default="cuda", help="cuda, cuda:N or cpu")
    parser.add_argument("--conv-mode", type=str, default=None, choices=sorted(conv_templates))
    parser.add_argument("--temperature", type=float, default=0.2, help="0 decodes greedily")
    parser.add_argument("--max-new-tokens", type=int, default=512)
    parser.add_argument("--load-8bit", action="store_true")
    parser.add_argument("--load-4bit", action="store_true")
    parser.add_argument("--debug", action="store_true", help="print each prompt and raw reply")
    parser.add_argument("--image-aspect-ratio", type=str, default="pad", help="'pad' pads to a square first")
    add_pruning_args(parser)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> Conversation:
    """Runs `chat` on the command line's flags.

    Args:
        argv: arguments without the program name; defaults to ``sys.argv[1:]``.

    Returns:
        The finished conversation.

    Raises:
        SystemExit: status 2, after a one-line message on stderr, on bad input (see `chat`).
    """
    args = build_parser().parse_args(argv)
    try:
        return chat(args)
    except BAD_INPUT_ERRORS as err:
        print(f"cli: error: {err}", file=sys.stderr)
        raise SystemExit(USAGE_ERROR) from None


if __name__ == "__main__":
    main()
