"""The bundled default model and data, used when a command is given no model.

Paths are relative to the working directory, as LLaVA's scripts assume the repository
root. The default model is the demo model shipped in the repository: a small LLaVA-1.5
trained here on the synthetic shapes task (`fitprune.train_demo`, data from
`fitprune.synthetic` in `playground/shapes/`), so that pruning quality is measured on a
model whose attention means something.
"""
from __future__ import annotations

from pathlib import Path

DEMO_MODEL_PATH = "playground/models/llava-v1.5-shapes"
SHAPES_DIR = "playground/shapes"

DEFAULT_MODEL_PATH = DEMO_MODEL_PATH
DEFAULT_IMAGE_FOLDER = SHAPES_DIR
DEFAULT_CALIBRATION_FILE = f"{SHAPES_DIR}/calibration.jsonl"
DEFAULT_TEST_FILE = f"{SHAPES_DIR}/test.jsonl"
TRAIN_COMMAND = f"python -m fitprune.train_demo --output {DEMO_MODEL_PATH}"


def ensure_default_model(path: str = DEFAULT_MODEL_PATH) -> str:
    """Returns the bundled model's directory after checking it is there.

    Raises:
        FileNotFoundError: if `path` holds no config.json, naming the command that
            trains the demo model.
    """
    if not (Path(path) / "config.json").is_file():
        raise FileNotFoundError(
            f"{path}/config.json: the demo model is missing; run from the repository root, or retrain it with "
            f"`{TRAIN_COMMAND}`"
        )
    return path
