"""The two bundled demo models and their data, by the short name the lab's commands take
(`--model scenes` / `--model shapes`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

from fitprune.defaults import (
    DEMO_MODEL_PATH,
    SCENES_DIR,
    SCENES_MODEL_PATH,
    SHAPES_CALIBRATION_FILE,
    SHAPES_DIR,
    SHAPES_TEST_FILE,
)


@dataclass(frozen=True)
class DemoModel:
    """A bundled model with its data.

    Attributes:
        path: the checkpoint directory.
        image_folder: where its questions' images are.
        calibration_file: the calibration split.
        test_file: the test split.
        bench_files: the question files the comparison bench answers (the grown test split for scenes).
    """

    path: str
    image_folder: str
    calibration_file: str
    test_file: str
    bench_files: Tuple[str, ...]


DEMO_MODELS = {
    "scenes": DemoModel(SCENES_MODEL_PATH, SCENES_DIR, f"{SCENES_DIR}/calibration.jsonl", f"{SCENES_DIR}/test.jsonl",
                        (f"{SCENES_DIR}/test.jsonl", f"{SCENES_DIR}/test_extra.jsonl")),
    "shapes": DemoModel(DEMO_MODEL_PATH, SHAPES_DIR, SHAPES_CALIBRATION_FILE, SHAPES_TEST_FILE, (SHAPES_TEST_FILE,)),
}
"""Short name -> demo model; "scenes" is the default everywhere."""
