"""Logging setup, start-up speed-ups, one-line command-line errors, safe reading of weights
files and user-facing messages of the serving code."""

import argparse
import logging
import logging.handlers
import os
import pickle
import re
import sys
from contextlib import contextmanager
from typing import Dict, Iterator, Optional

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file as load_safetensors

from llava.constants import LOGDIR
from llava.errors import CheckpointError

server_error_msg = "**NETWORK ERROR DUE TO HIGH TRAFFIC. PLEASE REGENERATE OR REFRESH THIS PAGE.**"
moderation_msg = "YOUR INPUT VIOLATES OUR CONTENT MODERATION GUIDELINES. PLEASE TRY AGAIN."

_LOG_FORMAT = "%(asctime)s | %(levelname)s | %(name)s | %(message)s"
_LOG_DATE_FORMAT = "%Y-%m-%d %H:%M:%S"


def build_logger(logger_name: str, logger_filename: str) -> logging.Logger:
    """Return a logger that writes INFO and above to stderr and to a daily-rotated file.

    Calling it again with the same arguments does not add duplicate handlers.

    Args:
        logger_name: Name passed to :func:`logging.getLogger`.
        logger_filename: File name of the log, created inside ``LOGDIR``.

    Returns:
        The configured logger.
    """
    logger = logging.getLogger(logger_name)
    logger.setLevel(logging.INFO)
    formatter = logging.Formatter(fmt=_LOG_FORMAT, datefmt=_LOG_DATE_FORMAT)

    os.makedirs(LOGDIR, exist_ok=True)
    log_path = os.path.abspath(os.path.join(LOGDIR, logger_filename))
    has_file = any(
        isinstance(h, logging.FileHandler) and h.baseFilename == log_path for h in logger.handlers
    )
    if not has_file:
        file_handler = logging.handlers.TimedRotatingFileHandler(log_path, when="D", utc=True, encoding="utf-8")
        file_handler.setFormatter(formatter)
        logger.addHandler(file_handler)

    has_stderr = any(
        type(h) is logging.StreamHandler and h.stream is sys.stderr for h in logger.handlers
    )
    if not has_stderr:
        stream_handler = logging.StreamHandler(sys.stderr)
        stream_handler.setFormatter(formatter)
        logger.addHandler(stream_handler)
    return logger


def _skip_reset_parameters(module: torch.nn.Module) -> None:
    """Stand-in for ``reset_parameters`` that leaves the weights uninitialised."""


def disable_torch_init() -> None:
    """Skip the default weight initialisation of ``nn.Linear`` and ``nn.LayerNorm``.

    Building a large model is much faster when its weights are about to be overwritten
    by a checkpoint anyway. This patches the classes for the rest of the process.
    """
    torch.nn.Linear.reset_parameters = _skip_reset_parameters
    torch.nn.LayerNorm.reset_parameters = _skip_reset_parameters


class OneLineArgumentParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line, ``<error_name>: error: <message>``,
    exit 2 (``error_name`` defaults to ``prog``); a command calls its `error` for bad input
    found after parsing too, so every bad-input message has the same form."""

    def __init__(self, *args, error_name: Optional[str] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.error_name = error_name or self.prog

    def error(self, message: str):
        self.exit(USAGE_ERROR_STATUS, error_line(self.error_name, message) + "\n")


USAGE_ERROR_STATUS = 2
"""The exit status of every command for bad input, as argparse gives for a bad flag."""


def error_line(name: str, message: object) -> str:
    """``<name>: error: <message>`` with the message's lines joined by spaces: one line."""
    return f"{name}: error: {' '.join(str(message).splitlines())}"


def usage_error(name: str, message: object) -> int:
    """Prints `error_line` on stderr and returns `USAGE_ERROR_STATUS`, for a command's ``main``
    to return on bad input found after parsing (the parser's `error` exits instead)."""
    print(error_line(name, message), file=sys.stderr)
    return USAGE_ERROR_STATUS


UNREADABLE_WEIGHTS_ERRORS = (RuntimeError, EOFError, OSError, ValueError, SafetensorError)
"""What reading a truncated or corrupt weights file raises (torch's zip reader, an empty
pickle, safetensors' header check)."""


def _first_sentence(err: Exception) -> str:
    """The first sentence of an error's message (torch's ones go on for a paragraph), or its type."""
    text = " ".join(str(err).split())
    return re.split(r"(?<=[a-z])\. ", text, maxsplit=1)[0].rstrip(".") or type(err).__name__


def read_weights_file(path) -> Dict[str, torch.Tensor]:
    """The tensors a weights file holds, on the CPU, read without running code from the file.

    A ``.safetensors`` file is read with safetensors; any other file (``.bin``) with
    ``torch.load(weights_only=True)`` whatever torch's default, so a pickle that would call a
    function (write a file, start a process) is refused instead of run.

    Args:
        path: the file.

    Returns:
        Name to tensor.

    Raises:
        FileNotFoundError: there is no such file.
        CheckpointError: one line starting with the file's path: it holds more than tensors
            (names the global it would call), or it is truncated or corrupt.
    """
    path = str(path)
    try:
        if path.endswith(".safetensors"):
            return load_safetensors(path, device="cpu")
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except pickle.UnpicklingError as err:
        called = re.search(r"GLOBAL (\S+)", str(err))
        what = f"would call {called.group(1)}" if called else "holds objects other than tensors"
        raise CheckpointError(f"{path}: not loaded: a weights file holds only tensors, but this pickle {what} when "
                              "unpickled; use a checkpoint from a source you trust (safetensors if it has them)") from None
    except UNREADABLE_WEIGHTS_ERRORS as err:
        raise CheckpointError(f"{path}: cannot read the weights, the file is truncated or corrupt "
                              f"({_first_sentence(err)}); download or copy it again") from None


@contextmanager
def safe_weights_loading() -> Iterator[None]:
    """Within it, transformers' ``from_pretrained`` reads every weights file (each shard too)
    with `read_weights_file` instead of its own ``torch.load``: pickles load with
    ``weights_only=True`` on any torch, and a truncated or corrupt file is one
    `CheckpointError` line naming it (transformers 4.31 itself suggests ``from_tf=True``)."""
    from transformers import modeling_utils

    original = modeling_utils.load_state_dict
    modeling_utils.load_state_dict = read_weights_file
    try:
        yield
    finally:
        modeling_utils.load_state_dict = original
