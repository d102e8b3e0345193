"""The web demo: ``python -m llava.serve.gradio_web_server``.

    pip install -e '.[serve]'
    python -m llava.serve.gradio_web_server            # the bundled demo model, http://127.0.0.1:7860
    python -m llava.serve.gradio_web_server --model-path liuhaotian/llava-v1.5-7b --host 0.0.0.0

One model is loaded in this process (no controller or model workers). The page answers one
question at several reduction ratios side by side, with the patches each kept, the visual
tokens kept after each layer, the FLOPs removed and the speed (`llava.serve.web_layout`,
requests in `llava.serve.demo_requests`). Requests are served one at a time through gradio's
queue. The first line on stderr names the device; a bad flag or model path is one
``gradio_web_server: error:`` line, exit status 2.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from llava.eval.driver.questions import QuestionFileError, load_question_jsonl
from llava.cli_support import BAD_INPUT_ERRORS, UsageError, select_conv_mode, select_device
from llava.mm_utils import get_model_name_from_path
from llava.model.builder import AUTO_DEVICE, check_model_path, describe_device, load_pretrained_model
from llava.utils import OneLineArgumentParser, disable_torch_init
from llava.model.pruning.from_config import DEFAULT_POLICY
from llava.model.pruning.policies import POLICIES

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MODEL_PATH = REPO_ROOT / "playground" / "models" / "llava-v1.5-scenes"
"""The bundled demo model, found from this file so the server starts from any directory."""
EXAMPLES_FILE = REPO_ROOT / "playground" / "shapes" / "test.jsonl"
"""Bundled example questions (the shapes task's test split); their images lie beside it."""
EXAMPLE_COUNT = 4
DEFAULT_PORT = 7860
MAX_FILE_SIZE = "20mb"
"""Largest upload the server accepts (gradio refuses bigger files with its own message)."""


def bundled_examples(path: Path = EXAMPLES_FILE, count: int = EXAMPLE_COUNT) -> List[Tuple[str, str]]:
    """(image path, question) pairs from the first `count` distinct images of a question file,
    or none when the file is missing or unreadable."""
    try:
        questions = load_question_jsonl(path)
    except (QuestionFileError, OSError):
        return []
    examples, seen = [], set()
    for question in questions:
        if question.image and question.image not in seen and (path.parent / question.image).is_file():
            seen.add(question.image)
            examples.append((str(path.parent / question.image), question.text))
        if len(examples) == count:
            break
    return examples


def build_parser() -> OneLineArgumentParser:
    """The command line of `main` (upstream's flag names where they apply)."""
    parser = OneLineArgumentParser(prog="python -m llava.serve.gradio_web_server", description=__doc__.splitlines()[0],
                                   error_name="gradio_web_server")
    parser.add_argument("--model-path", default=None, help=f"checkpoint directory or hub name (default: the "
                                                            f"bundled {DEFAULT_MODEL_PATH.relative_to(REPO_ROOT)})")
    parser.add_argument("--model-base", default=None)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--share", action="store_true", help="also make a public gradio.live link (off by default)")
    parser.add_argument("--device", default=AUTO_DEVICE,
                        help="cuda, cuda:N, cpu, or auto (default): CUDA when it is available, else the CPU")
    parser.add_argument("--load-8bit", action="store_true", help="8-bit weights (bitsandbytes, CUDA only)")
    parser.add_argument("--load-4bit", action="store_true", help="4-bit weights (bitsandbytes, CUDA only)")
    parser.add_argument("--conv-mode", default=None, help="template selected at first (default: from the model name)")
    parser.add_argument("--recipe", default=None, metavar="PATH",
                        help="recipe book JSON (default: fitprune_recipes.json in the checkpoint, then the shipped ones)")
    parser.add_argument("--max-new-tokens", type=int, default=128, help="answer length limit selected at first")
    parser.add_argument("--policy", choices=list(POLICIES), default=DEFAULT_POLICY, metavar="NAME",
                        help=f"pruning method selected at first, one of {', '.join(POLICIES)} (default fitprune)")
    return parser


def load_demo(args: argparse.Namespace):
    """Checks the flags, prints the device line on stderr and loads the model.

    Returns:
        A `llava.serve.demo_requests.DemoModel`.

    Raises:
        The bad-input errors of `llava.cli_support.BAD_INPUT_ERRORS`: a bad device, model path
        or recipe path, quantisation without CUDA or without bitsandbytes.
    """
    from llava.serve.demo_requests import DemoModel

    device = select_device(args.device)
    quantised = "--load-8bit" if args.load_8bit else "--load-4bit" if args.load_4bit else None
    if args.load_8bit and args.load_4bit:
        raise UsageError("--load-8bit and --load-4bit: pick one")
    if quantised and not device.startswith("cuda"):
        raise UsageError(f"{quantised}: quantised weights need CUDA (bitsandbytes); on the CPU the model runs in float32")
    model_path = args.model_path or str(DEFAULT_MODEL_PATH)
    check_model_path(model_path)
    if args.model_base is not None:
        check_model_path(args.model_base, "model base")
    if args.recipe is not None and not Path(args.recipe).is_file():
        raise FileNotFoundError(f"--recipe: {args.recipe} does not exist")
    print(describe_device(args.device, device), file=sys.stderr, flush=True)
    disable_torch_init()
    model_name = get_model_name_from_path(model_path)
    try:
        tokenizer, model, processor, _ = load_pretrained_model(model_path, args.model_base, model_name,
                                                               args.load_8bit, args.load_4bit, device=device)
    except ImportError as err:
        if quantised is None:
            raise
        raise UsageError(f"{quantised}: {err}") from None
    model.eval()
    return DemoModel(tokenizer, model, processor, model_name, recipe_file=args.recipe)


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Loads the model and serves the page until interrupted."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.conv_mode is not None:
        from llava.conversation import conv_templates

        if args.conv_mode not in conv_templates:
            parser.error(f"--conv-mode: unknown template {args.conv_mode!r}; choose one of {sorted(conv_templates)}")
    if args.max_new_tokens < 1:
        parser.error(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        from llava.serve.web_layout import PageDefaults, build_page
    except ImportError as err:
        parser.error(f"the web demo needs gradio ({err}); install it with: pip install -e '.[serve]'")
    try:
        demo = load_demo(args)
        conv_mode = select_conv_mode(demo.model_name, args.conv_mode, demo.model.config.name_or_path)
    except BAD_INPUT_ERRORS as err:
        parser.error(" ".join(str(err).splitlines()))
    ratios = demo.recipe_ratios()
    defaults = PageDefaults(
        conv_mode=conv_mode,
        ratios=(0.0,) + ratios[len(ratios) // 2:][:1],
        max_new_tokens=args.max_new_tokens,
        examples=bundled_examples(),
        policy=args.policy,
    )
    page = build_page(demo, defaults)
    page.queue(default_concurrency_limit=1, max_size=64)
    try:
        page.launch(server_name=args.host, server_port=args.port, share=args.share, show_error=True,
                    max_file_size=MAX_FILE_SIZE, allowed_paths=[str(EXAMPLES_FILE.parent)])
    except OSError as err:
        parser.error(f"--port {args.port}: cannot serve on {args.host}:{args.port} ({err})")


if __name__ == "__main__":
    main()
