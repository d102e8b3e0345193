"""The grown scenes test split: `fitprune.lab.scenes.grown_test` regenerates the shipped extra
questions and images exactly (a prefix of the seeded test stream), and ids stay unique."""
import json
from pathlib import Path

import pytest

from fitprune.lab.scenes.grown_test import TEST_IMAGES, main, write_extra

SCENES = Path("playground/scenes")


def _lines(path):
    return path.read_text().splitlines()


def test_a_smaller_growth_is_a_prefix_of_the_shipped_extra_split(tmp_path):
    written = write_extra(tmp_path, TEST_IMAGES + 2)
    shipped = _lines(SCENES / "test_extra.jsonl")
    assert written == len(_lines(tmp_path / "test_extra.jsonl")) > 0
    assert _lines(tmp_path / "test_extra.jsonl") == shipped[:written]
    assert _lines(tmp_path / "test_extra_scenes.jsonl") == _lines(SCENES / "test_extra_scenes.jsonl")[:2]
    for line in _lines(tmp_path / "test_extra_scenes.jsonl"):
        image = json.loads(line)["image"]
        assert (tmp_path / image).read_bytes() == (SCENES / image).read_bytes()


def test_question_ids_and_images_of_the_grown_split_are_unique():
    test = [json.loads(line) for line in _lines(SCENES / "test.jsonl")]
    extra = [json.loads(line) for line in _lines(SCENES / "test_extra.jsonl")]
    ids = [q["question_id"] for q in test + extra]
    assert len(set(ids)) == len(ids)
    assert not {q["image"] for q in test} & {q["image"] for q in extra}
    assert all((SCENES / q["image"]).is_file() for q in extra)


def test_a_total_not_above_the_test_split_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--output", str(tmp_path), "--total-images", str(TEST_IMAGES)])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith(
        f"error: --total-images must exceed the test split's {TEST_IMAGES} images, got {TEST_IMAGES}")
