"""Which conversation template a checkpoint is prompted with, and why.

A checkpoint may record its template in config.json (field `CONV_MODE_FIELD`, a key of
`llava.conversation.conv_templates`; `python -m llava.model.convert` writes it). Without one,
the template is guessed from the model's name as upstream LLaVA does (`auto_conv_mode`).
"""
from __future__ import annotations

from typing import NamedTuple, Optional

from llava.conversation import conv_templates
from llava.errors import CheckpointError
from llava.model.checkpoint_files import checkpoint_file, read_checkpoint_json

CONV_MODE_FIELD = "conv_mode"
"""config.json field naming the checkpoint's conversation template (not in upstream configs, which
ignore it)."""


class TemplateChoice(NamedTuple):
    """A template (a key of `conv_templates`) and why it was chosen, for the user."""

    conv_mode: str
    reason: str


def auto_conv_mode(model_name: str) -> str:
    """The conversation template upstream picks from a model name.

    Args:
        model_name: e.g. ``llava-v1.5-7b``.

    Returns:
        ``vicuna_v1`` for LLaVA-HR (``llava-hr`` in the name: its eval scripts pass
        ``--conv-mode vicuna_v1``), else ``llava_llama_2`` if the name has ``llama-2``, else
        ``llava_v1`` if it has ``v1`` or
        is a Hugging Face conversion of LLaVA-1.5/1.6 (``llava-1.5-7b-hf``: no ``v1`` in the
        name, vicuna_v1 prompts), else ``mpt`` if it has ``mpt``, else ``llava_v0``
        (case-insensitive).
    """
    name = model_name.lower()
    if "llava-hr" in name:
        return "vicuna_v1"
    if "llama-2" in name:
        return "llava_llama_2"
    if "v1" in name or "llava-1.5" in name or "llava-1.6" in name:
        return "llava_v1"
    if "mpt" in name:
        return "mpt"
    return "llava_v0"


def recorded_conv_mode(model_path: str) -> Optional[str]:
    """The template the checkpoint at `model_path` records in config.json, or None when it records
    none or has no config.json.

    Raises:
        CheckpointError: config.json is not a JSON object, or the field is not the name of a template
            (names config.json and the field).
    """
    fields = read_checkpoint_json(model_path, "config.json")
    if fields is None:
        return None
    value = fields.get(CONV_MODE_FIELD)
    if value is None:
        return None
    if not isinstance(value, str) or value not in conv_templates:
        where = checkpoint_file(model_path, "config.json")
        raise CheckpointError(f"{where}: field {CONV_MODE_FIELD!r} is {value!r}; expected one of "
                              f"{sorted(conv_templates)}")
    return value


def choose_conv_mode(model_name: str, model_path: Optional[str], requested: Optional[str]) -> TemplateChoice:
    """The template to prompt with: `requested` (``--conv-mode``) if given, else the one the
    checkpoint records, else the guess from `model_name`.

    Args:
        model_name: the model's name (`llava.mm_utils.get_model_name_from_path`).
        model_path: the checkpoint (directory or hub name), or None to skip the recorded template.
        requested: the ``--conv-mode`` value, or None.

    Raises:
        CheckpointError: the recorded template is not a template's name (`recorded_conv_mode`).
    """
    recorded = recorded_conv_mode(model_path) if model_path else None
    if recorded is not None:
        default = TemplateChoice(recorded, f"recorded in the checkpoint's config.json field {CONV_MODE_FIELD!r}")
    else:
        default = TemplateChoice(auto_conv_mode(model_name), f"guessed from the model name {model_name!r}")
    if requested is None:
        return default
    if requested == default.conv_mode:
        return TemplateChoice(requested, f"--conv-mode, the same as {default.reason}")
    return TemplateChoice(requested, f"--conv-mode; [WARNING] it differs from {default.conv_mode}, {default.reason}")


def describe_choice(choice: TemplateChoice) -> str:
    """One line for stderr: ``conversation template: <name> (<why>)``."""
    return f"conversation template: {choice.conv_mode} ({choice.reason})"
