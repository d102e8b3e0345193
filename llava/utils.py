"""Logging setup, start-up speed-ups and user-facing messages of the serving code."""

import logging
import logging.handlers
import os
import sys

import torch

from llava.constants import LOGDIR

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
