"""The bundled default model and data, used when a command is given no model.

Paths are relative to the working directory, as LLaVA's scripts assume the repository
root. The default model is a tiny random LLaVA-1.5-layout checkpoint written on first use
(`llava.testing.tiny_checkpoint`); its answers are meaningless, but every code path of
calibration, pruning and evaluation runs on it.
"""
from __future__ import annotations

import logging
from pathlib import Path

DEFAULT_MODEL_PATH = "checkpoints/llava-v1.5-tiny"
DEMO_DIR = "playground/demo"
DEFAULT_CALIBRATION_FILE = f"{DEMO_DIR}/calibration.jsonl"
DEFAULT_QUESTION_FILE = f"{DEMO_DIR}/questions.jsonl"
DEFAULT_IMAGE_FOLDER = DEMO_DIR

logger = logging.getLogger(__name__)


def ensure_default_model(path: str = DEFAULT_MODEL_PATH) -> str:
    """Returns the default model's directory, writing the tiny checkpoint there if missing."""
    if not (Path(path) / "config.json").is_file():
        from llava.testing.tiny_checkpoint import write_tiny_llava

        logger.info("writing the bundled tiny model to %s", path)
        write_tiny_llava(path, relative_tower=True)
    return path
