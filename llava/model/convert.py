"""Converts a LLaVA checkpoint between the original layout (liuhaotian/*) and the Hugging Face one (llava-hf/*).

    python -m llava.model.convert --to hf SRC DST
    python -m llava.model.convert --to original SRC DST

``--to hf`` writes safetensors shards with ``model.safetensors.index.json``, a config.json with
``text_config`` and ``vision_config``, the vision tower's weights inside the checkpoint, the
vocabulary padded with ``<image>`` and ``<pad>`` rows (the tokenizer gets both tokens) and the
tower's image processor. ``--to original`` writes ``pytorch_model*.bin`` with the original names and
vocabulary, the tower (config, weights, processor) in ``clip-vision-tower/`` named by a relative
``mm_vision_tower`` (LLaVA-NeXT also keeps the tower's weights in the checkpoint, as released), and
the original tokenizer. A recipe file (``fitprune_recipes.json``) is copied along. Weights keep
the source's dtype (config.json ``torch_dtype``). config.json records the conversation template
(``conv_mode``: ``--conv-mode``, else the source's recorded one, else the guess from the source's
name, `llava.model.template_choice`); one stderr line says which and why.

The checkpoint is written into a hidden sibling folder of DST and renamed to DST at the end, so
DST appears only complete; a killed run leaves the hidden folder, which the next run removes.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Optional, Sequence

import torch
from transformers import GenerationConfig
from transformers.utils.hub import convert_file_size_to_int

from llava.conversation import conv_templates
from llava.errors import CheckpointError
from llava.mm_utils import get_model_name_from_path
from llava.model.builder import check_model_path, load_pretrained_model
from llava.model.checkpoint_files import checkpoint_file
from llava.model.hf_config import (
    IMAGE_TOKEN,
    PAD_TOKEN,
    dtype_name,
    hf_config_from_llava,
    read_hf_checkpoint,
)
from llava.model.hf_weights import KEY_STYLES, hf_tensors, write_shards
from llava.model.language_model.llava_llama import LlavaConfig
from llava.model.pruning.recipe_lookup import RECIPE_FILE_IN_CHECKPOINT
from llava.model.staged_folder import staged_folder
from llava.model.template_choice import CONV_MODE_FIELD, choose_conv_mode, describe_choice
from llava.model.tokenizer_loading import load_llama_tokenizer
from llava.utils import OneLineArgumentParser
from llava.json_reading import read_json_file

PROG = "python -m llava.model.convert"
DEFAULT_MAX_SHARD_SIZE = "5GB"
TOWER_DIR = "clip-vision-tower"
"""Where ``--to original`` puts the vision tower, named relative to the checkpoint."""

HF_ONLY_FIELDS = ("mm_vision_tower_config", "hf_checkpoint", "_name_or_path", "transformers_version")
"""Fields of a config loaded from the Hugging Face layout that the original layout does not have."""

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def source_dtype(src: str) -> torch.dtype:
    """The dtype the source checkpoint's weights are stored in (config.json ``torch_dtype``; float32 if unset)."""
    name = read_json_file(checkpoint_file(src, "config.json"), CheckpointError).get("torch_dtype") or "float32"
    if name not in DTYPES:
        raise CheckpointError(f"{src}: config.json field 'torch_dtype' is {name!r}; expected one of {sorted(DTYPES)}")
    return DTYPES[name]


def _load(src: str):
    """(tokenizer, model, image processor) of a checkpoint of either layout, on the CPU in its own dtype."""
    tokenizer, model, processor, _ = load_pretrained_model(src, None, "llava", device="cpu",
                                                           torch_dtype=source_dtype(src))
    return tokenizer, model, processor


def _copy_recipes(src: str, dst: Path) -> None:
    """Copies the source checkpoint's recipe file, when it has one (recipes are fit for the model, not its layout)."""
    recipes = Path(src) / RECIPE_FILE_IN_CHECKPOINT
    if recipes.is_file():
        shutil.copy(recipes, dst / RECIPE_FILE_IN_CHECKPOINT)


def _write_json(path: Path, fields: dict) -> None:
    path.write_text(json.dumps(fields, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _hf_tokenizer(src: str, vocab_size: int):
    """The source's tokenizer with ``<image>`` (id `vocab_size`) and ``<pad>`` (next id) added, as
    the llava-hf tokenizers have them."""
    tokenizer = load_llama_tokenizer(src)
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
    ids = tokenizer.convert_tokens_to_ids([IMAGE_TOKEN, PAD_TOKEN])
    if ids != [vocab_size, vocab_size + 1]:
        raise CheckpointError(f"{src}: the tokenizer has {vocab_size} rows' worth of tokens expected, but <image> and "
                              f"<pad> got ids {ids}")
    return tokenizer


def to_hf(src: str, dst: Path, max_shard_bytes: int, key_style: str = "classic",
          conv_mode: Optional[str] = None) -> None:
    """Writes the original-layout checkpoint `src` in the Hugging Face layout into `dst` (with
    `conv_mode`, when given, recorded in config.json).

    Raises:
        CheckpointError: `src` is already in that layout, or holds what the layout cannot express.
    """
    if read_hf_checkpoint(src) is not None:
        raise CheckpointError(f"{src} is already in the Hugging Face layout")
    _, model, processor = _load(src)
    dst.mkdir(parents=True, exist_ok=True)
    config = model.config
    fields = hf_config_from_llava(config, model.get_vision_tower().config, f"{src}/config.json")
    if conv_mode is not None:
        fields[CONV_MODE_FIELD] = conv_mode
    write_shards(hf_tensors(model, KEY_STYLES[key_style]), str(dst), safetensors=True, max_shard_bytes=max_shard_bytes)
    _write_json(dst / "config.json", fields)
    _hf_tokenizer(src, config.vocab_size).save_pretrained(str(dst))
    preprocessor = processor.to_dict()
    if "image_grid_pinpoints" in fields:
        preprocessor.update(image_processor_type="LlavaNextImageProcessor",
                            image_grid_pinpoints=fields["image_grid_pinpoints"])
    _write_json(dst / "preprocessor_config.json", preprocessor)
    GenerationConfig(bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id,
                     pad_token_id=fields["pad_token_id"]).save_pretrained(str(dst))
    _copy_recipes(src, dst)


def to_original(src: str, dst: Path, max_shard_bytes: int, conv_mode: Optional[str] = None) -> None:
    """Writes the Hugging Face-layout checkpoint `src` in the original layout into `dst` (with
    `conv_mode`, when given, recorded in config.json).

    Raises:
        CheckpointError: `src` is not in the Hugging Face layout.
    """
    if read_hf_checkpoint(src) is None:
        raise CheckpointError(f"{src} is not in the Hugging Face layout (its config.json has no text_config/"
                              "vision_config)")
    tokenizer, model, processor = _load(src)
    dst.mkdir(parents=True, exist_ok=True)
    tower = model.get_vision_tower()
    tower.vision_tower.save_pretrained(str(dst / TOWER_DIR), safe_serialization=True)
    processor.save_pretrained(str(dst / TOWER_DIR))
    anyres = model.config.image_aspect_ratio == "anyres"
    fields = {k: v for k, v in model.config.to_dict().items() if k not in HF_ONLY_FIELDS}
    fields.update(mm_vision_tower=TOWER_DIR, unfreeze_mm_vision_tower=anyres,
                  torch_dtype=dtype_name(model.config.torch_dtype))
    if conv_mode is not None:
        fields[CONV_MODE_FIELD] = conv_mode
    LlavaConfig(**fields).save_pretrained(str(dst))
    tower_prefix = "model.vision_tower."
    state = {k: v.contiguous() for k, v in model.state_dict().items() if anyres or not k.startswith(tower_prefix)}
    write_shards(state, str(dst), safetensors=False, max_shard_bytes=max_shard_bytes)
    tokenizer.save_pretrained(str(dst))
    model.generation_config.save_pretrained(str(dst))
    _copy_recipes(src, dst)


def build_parser() -> OneLineArgumentParser:
    """The command line of `main`."""
    parser = OneLineArgumentParser(prog=PROG, description=__doc__.splitlines()[0], error_name="convert")
    parser.add_argument("--to", required=True, choices=("hf", "original"), help="the layout to write")
    parser.add_argument("src", help="checkpoint to convert (directory or hub name)")
    parser.add_argument("dst", help="directory to write (must not exist, or be empty)")
    parser.add_argument("--max-shard-size", "--max_shard_size", dest="max_shard_size", default=DEFAULT_MAX_SHARD_SIZE,
                        help="largest weights file, e.g. 5GB or 200MB (default %(default)s)")
    parser.add_argument("--key-style", choices=sorted(KEY_STYLES), default="classic",
                        help="--to hf: the llava-hf names (classic) or newer transformers' re-saved ones (nested)")
    parser.add_argument("--conv-mode", choices=sorted(conv_templates), default=None,
                        help="conversation template to record in config.json (default: the source's recorded one, "
                             "else the guess from the source's name)")
    return parser


def _checked_destination(parser: OneLineArgumentParser, dst: str) -> Path:
    """`dst` as a Path (created by the conversion once the source is loaded); a file, or a non-empty
    directory, is a usage error."""
    path = Path(dst)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        parser.error(f"destination {dst} exists and is not an empty directory")
    return path


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the conversion the flags ask for; bad input is one line on stderr and exit status 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        max_shard_bytes = convert_file_size_to_int(args.max_shard_size)
    except ValueError:
        parser.error(f"argument --max-shard-size: {args.max_shard_size!r} is not a size such as 5GB or 200MB")
    if max_shard_bytes <= 0:
        parser.error(f"argument --max-shard-size: {args.max_shard_size!r} must be positive")
    dst = _checked_destination(parser, args.dst)
    try:
        check_model_path(args.src, "source")
        template = choose_conv_mode(get_model_name_from_path(args.src), args.src, args.conv_mode)
        with staged_folder(dst) as staging:
            if args.to == "hf":
                to_hf(args.src, staging, max_shard_bytes, args.key_style, template.conv_mode)
            else:
                to_original(args.src, staging, max_shard_bytes, template.conv_mode)
        print(f"{describe_choice(template)}: recorded in {dst / 'config.json'} field {CONV_MODE_FIELD!r}",
              file=sys.stderr)
    except (CheckpointError, OSError, ValueError) as err:
        parser.error(" ".join(str(err).splitlines()))
    print(dst)
    return 0


if __name__ == "__main__":
    sys.exit(main())
