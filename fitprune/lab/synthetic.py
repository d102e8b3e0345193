"""`python -m fitprune.synthetic`: writes a synthetic task's data, the shapes task
(`fitprune.lab.shapes.data`) or the relational scenes (`fitprune.lab.scenes.questions`)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Sequence

from fitprune.lab.scenes import questions as scene_questions
from fitprune.lab.scenes.scenes import RelationalTask
from fitprune.lab.shapes.scenes import ShapesTask
from fitprune.lab.shapes.data import write_dataset


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Writes the dataset; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m fitprune.synthetic", description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=("shapes", "scenes"), default="shapes",
                        help="shapes: the shapes task (fitprune.lab.shapes); "
                             "scenes: the relational scenes (fitprune.lab.scenes)")
    parser.add_argument("--output", default=None,
                        help="directory to write (default: playground/shapes, or playground/scenes for --task scenes)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--calibration-images", type=int, default=None,
                        help="one question of each kind per image (default: 128, or 64 for --task scenes)")
    parser.add_argument("--test-images", type=int, default=None,
                        help="one question of each kind per image (default: 200, or 128 for --task scenes)")
    parser.add_argument("--train-images", type=int, default=32,
                        help="sample of the in-memory train stream (shapes only)")
    args = parser.parse_args(argv)
    if args.task == "scenes":
        written = scene_questions.write_dataset(
            Path(args.output or "playground/scenes"), RelationalTask(), args.seed,
            64 if args.calibration_images is None else args.calibration_images,
            128 if args.test_images is None else args.test_images)
    else:
        written = write_dataset(Path(args.output or "playground/shapes"), ShapesTask(), args.seed,
                                128 if args.calibration_images is None else args.calibration_images,
                                200 if args.test_images is None else args.test_images, args.train_images)
    for name, path in written.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
