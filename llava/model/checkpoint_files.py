"""The JSON files of a checkpoint (config.json, tokenizer_config.json, ...), found in its folder or the
Hugging Face cache and read as data: a file that is not a JSON object, or that asks for the checkpoint's
own Python code to be run (``auto_map``), is a one-line `CheckpointError` naming the file and field."""
from __future__ import annotations

import os
from typing import Any, Dict, Optional

from llava.errors import CheckpointError
from llava.json_reading import read_json_file

REMOTE_CODE_FIELD = "auto_map"
"""The field with which a config or tokenizer config names Python files of the checkpoint for
transformers to import (run) in place of its own classes."""

CODE_CHECKED_FILES = ("config.json", "tokenizer_config.json")
"""The checkpoint files transformers reads `REMOTE_CODE_FIELD` from."""


def _first_line(err: BaseException) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def checkpoint_file(model_path: str, filename: str, required: bool = True) -> Optional[str]:
    """The local path of one file of a checkpoint (a directory, or a hub name: cached or fetched).

    Args:
        model_path: checkpoint directory or hub name.
        filename: e.g. ``config.json``.
        required: raise when the file is missing (else return None).

    Returns:
        The file's path, or None when it is missing and not required.

    Raises:
        CheckpointError: a required file is missing or cannot be fetched (one line naming it).
    """
    if os.path.isdir(model_path):
        path = os.path.join(model_path, filename)
        if os.path.isfile(path):
            return path
        if required:
            raise CheckpointError(f"{path} is missing")
        return None
    from transformers.utils.hub import cached_file

    try:
        path = cached_file(model_path, filename, _raise_exceptions_for_missing_entries=False,
                           _raise_exceptions_for_connection_errors=False)
    except (OSError, ValueError) as err:
        if not required:
            return None
        raise CheckpointError(f"{model_path} {filename} cannot be fetched ({_first_line(err)})") from None
    if path is None and required:
        raise CheckpointError(f"{model_path} {filename} is missing (not in the checkpoint, or not cached offline)")
    return path


def read_json_object(path: str) -> Dict[str, Any]:
    """A JSON object from a file.

    Raises:
        CheckpointError: the file cannot be read, is not UTF-8, is not JSON (or is nested too deeply
            to parse), or is not an object; one line naming it.
    """
    try:
        data = read_json_file(path, CheckpointError)
    except OSError as err:
        raise CheckpointError(f"{path}: cannot be read ({err.strerror or err})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def refuse_remote_code(fields: Dict[str, Any], path: str) -> None:
    """Raises `CheckpointError` when a parsed config names Python code of the checkpoint to run.

    Args:
        fields: the parsed config.json or tokenizer_config.json.
        path: where it was read, for the message.
    """
    if REMOTE_CODE_FIELD in fields:
        raise CheckpointError(
            f"{path}: field '{REMOTE_CODE_FIELD}' names Python code in the checkpoint to run; this project runs no "
            "code from a checkpoint: remove the field (LLaVA checkpoints do not need it)"
        )


def read_checkpoint_json(model_path: str, filename: str, required: bool = False) -> Optional[Dict[str, Any]]:
    """One JSON file of a checkpoint, parsed and checked to name no code of the checkpoint
    (`refuse_remote_code`) when it is one of `CODE_CHECKED_FILES`.

    Args:
        model_path: checkpoint directory or hub name.
        filename: e.g. ``tokenizer_config.json``.
        required: raise when the file is missing (else return None).

    Returns:
        The parsed object, or None for a missing file that is not required.

    Raises:
        CheckpointError: see `checkpoint_file`, `read_json_object` and `refuse_remote_code`.
    """
    path = checkpoint_file(model_path, filename, required)
    if path is None:
        return None
    fields = read_json_object(path)
    if filename in CODE_CHECKED_FILES:
        refuse_remote_code(fields, path)
    return fields


def check_no_remote_code(model_path: str) -> None:
    """Raises `CheckpointError` when the checkpoint's config.json or tokenizer_config.json names
    Python code to run (``auto_map``), or is not a JSON object; missing files pass."""
    for filename in CODE_CHECKED_FILES:
        read_checkpoint_json(model_path, filename)
