"""`load_llama_tokenizer`: the one way this project loads a checkpoint's tokenizer, of every layout
(original LLaVA, llava-hf, the base of a projector-only or LoRA checkpoint, a plain LLaMA).

The tokenizer is always transformers' slow SentencePiece `LlamaTokenizer` (upstream LLaVA loads with
``use_fast=False``), named explicitly: the class a checkpoint asks for in tokenizer_config.json is
checked, never looked up and built, so no other tokenizer class is constructed (``TransfoXLTokenizer``
would unpickle a ``vocab.pkl``: CVE-2023-7018), no vocabulary is unpickled (a SentencePiece model is
protobuf data), and no ``auto_map`` Python file of the checkpoint is imported."""
from __future__ import annotations

from typing import Any

from transformers import LlamaTokenizer

from llava.errors import CheckpointError
from llava.model.checkpoint_files import check_no_remote_code, checkpoint_file, read_checkpoint_json

LLAMA_TOKENIZER_CLASSES = ("LlamaTokenizer", "LlamaTokenizerFast")
"""The ``tokenizer_class`` values loaded (as the slow `LlamaTokenizer`); any other is refused."""

SENTENCEPIECE_FILE = "tokenizer.model"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"

TOKENIZER_TEXT_FIELDS = ("add_bos_token", "add_eos_token", "legacy", "clean_up_tokenization_spaces")
"""tokenizer_config.json fields that change the ids of a text; read from the checkpoint."""


def check_tokenizer_class(settings: dict, where: str) -> None:
    """Raises `CheckpointError` when a parsed tokenizer_config.json (read from `where`) names a
    ``tokenizer_class`` other than `LLAMA_TOKENIZER_CLASSES` (a missing field passes)."""
    name = settings.get("tokenizer_class")
    if name is not None and name not in LLAMA_TOKENIZER_CLASSES:
        raise CheckpointError(
            f"{where}: field 'tokenizer_class' is {name!r}; only the LLaMA SentencePiece tokenizer is loaded "
            f"({', '.join(LLAMA_TOKENIZER_CLASSES)}), never a pickled vocabulary"
        )


def load_llama_tokenizer(model_path: str, text_only: bool = False, **overrides: Any) -> LlamaTokenizer:
    """The slow `LlamaTokenizer` of a checkpoint, read as data only.

    Checks first, in this order: neither config.json nor tokenizer_config.json has ``auto_map``
    (`check_no_remote_code`), tokenizer_config.json's ``tokenizer_class`` is a LLaMA one, and
    ``tokenizer.model`` exists. Other files of the checkpoint (``vocab.pkl``, ``*.py``) are never read.

    Args:
        model_path: checkpoint directory or hub name.
        text_only: build the tokenizer from ``tokenizer.model`` and tokenizer_config.json's
            `TOKENIZER_TEXT_FIELDS` alone, without the checkpoint's added tokens (what the llava-hf
            layout needs: `llava.model.hf_config.load_hf_tokenizer`); else `LlamaTokenizer.from_pretrained`
            with everything the checkpoint saved (special tokens map, added tokens).
        **overrides: tokenizer settings that replace the checkpoint's (e.g. ``pad_token="<unk>"``).

    Returns:
        The tokenizer.

    Raises:
        CheckpointError: one line naming the file and field: ``auto_map`` in either file, a
            tokenizer class that is not LLaMA's, a config that is not a JSON object, or no
            ``tokenizer.model``.
    """
    check_no_remote_code(model_path)
    settings = read_checkpoint_json(model_path, TOKENIZER_CONFIG_FILE) or {}
    check_tokenizer_class(settings, checkpoint_file(model_path, TOKENIZER_CONFIG_FILE, required=False) or model_path)
    vocab_file = checkpoint_file(model_path, SENTENCEPIECE_FILE)
    if not text_only:
        return LlamaTokenizer.from_pretrained(model_path, **overrides)
    kwargs = {name: settings[name] for name in TOKENIZER_TEXT_FIELDS if name in settings}
    kwargs.update(overrides)
    tokenizer = LlamaTokenizer(vocab_file=vocab_file, **kwargs)
    tokenizer.sanitize_special_tokens()  # registers <s>, </s>, <unk> as unsplit, as from_pretrained does
    return tokenizer
