"""The bundled default model and data, used when a command is given no model.

Paths are relative to the working directory, as LLaVA's scripts assume the repository
root. The default model is the relational scenes model shipped in the repository
(`playground/models/llava-v1.5-scenes`, data in `playground/scenes/`): a small LLaVA-1.5 trained
here on questions about objects and their relations, the model on which the choice of pruning
method matters (an oracle that keeps the referred objects beats random by a wide margin at 90%; BENCHMARKS.md).
The shapes model (`DEMO_MODEL_PATH`, data in `playground/shapes/`) is the smaller, faster one.
"""
from __future__ import annotations

from pathlib import Path

DEMO_MODEL_PATH = "playground/models/llava-v1.5-shapes"
SHAPES_DIR = "playground/shapes"
SHAPES_CALIBRATION_FILE = f"{SHAPES_DIR}/calibration.jsonl"
SHAPES_TEST_FILE = f"{SHAPES_DIR}/test.jsonl"
SCENES_MODEL_PATH = "playground/models/llava-v1.5-scenes"
SCENES_DIR = "playground/scenes"

DEFAULT_MODEL_PATH = SCENES_MODEL_PATH
DEFAULT_IMAGE_FOLDER = SCENES_DIR
DEFAULT_CALIBRATION_FILE = f"{SCENES_DIR}/calibration.jsonl"
DEFAULT_TEST_FILE = f"{SCENES_DIR}/test.jsonl"
TRAIN_COMMANDS = {
    SCENES_MODEL_PATH: f"python -m fitprune.train_demo --task scenes --output {SCENES_MODEL_PATH}",
    DEMO_MODEL_PATH: f"python -m fitprune.train_demo --output {DEMO_MODEL_PATH}",
}


def ensure_default_model(path: str = DEFAULT_MODEL_PATH) -> str:
    """Returns the bundled model's directory after checking it is there.

    Raises:
        FileNotFoundError: if `path` holds no config.json, naming the command that
            trains that demo model.
    """
    if not (Path(path) / "config.json").is_file():
        command = TRAIN_COMMANDS.get(path, f"python -m fitprune.train_demo --output {path}")
        raise FileNotFoundError(
            f"{path}/config.json: the demo model is missing; run from the repository root, or retrain it with `{command}`"
        )
    return path
