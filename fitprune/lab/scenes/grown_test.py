"""`python -m fitprune.lab.scenes.grown_test`: more test questions of the relational scenes, for a
bench that must detect smaller differences, without touching the test split.

The test split's stream (`questions.sample_split`, seed 0) drawn for more images starts with
exactly the shipped `test.jsonl` (its first 128 images); the images after those are written as
`test_extra.jsonl` (question ids and image names continue the test split's) with their PNGs and
scene metadata (`test_extra_scenes.jsonl`). `test.jsonl` plus `test_extra.jsonl` is the grown test
split.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Optional, Sequence

from fitprune.lab.scenes.questions import question_record, sample_split
from fitprune.lab.scenes.scenes import RelationalTask, render_scene

TEST_IMAGES = 128
"""Images of the shipped test split (5 questions each)."""


def write_extra(output: Path, total_images: int, seed: int = 0, test_images: int = TEST_IMAGES) -> int:
    """Writes the questions of images `test_images`..`total_images − 1` of the test stream under
    `output`; returns the number of questions written.

    Raises:
        ValueError: `total_images` not above `test_images`.
    """
    if total_images <= test_images:
        raise ValueError(f"--total-images must exceed the test split's {test_images} images, got {total_images}")
    task = RelationalTask()
    items = sample_split(task, "test", total_images, seed)
    extra = items[test_images * len(task.kinds):]
    firsts = extra[::len(task.kinds)]
    for item in firsts:
        (output / item.image).parent.mkdir(parents=True, exist_ok=True)
        render_scene(task, item.scene).save(output / item.image)
    (output / "test_extra.jsonl").write_text("".join(json.dumps(question_record(task, i)) + "\n" for i in extra))
    (output / "test_extra_scenes.jsonl").write_text(
        "".join(json.dumps({"image": i.image, "objects": i.scene.metadata(task)}) + "\n" for i in firsts))
    return len(extra)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Writes the extra test questions; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m fitprune.lab.scenes.grown_test", description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="playground/scenes")
    parser.add_argument("--total-images", type=int, default=512, help="test images in all, shipped ones included")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        count = write_extra(Path(args.output), args.total_images, args.seed)
    except ValueError as err:
        parser.error(str(err))
    print(f"{count} questions written to {Path(args.output) / 'test_extra.jsonl'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
