"""Command lines for the generation drivers on the tiny checkpoint, and reading their answers files."""
import json

from llava.eval import model_vqa_loader
from tests.helpers import TINY_RECIPE_RATIO

MAX_NEW_TOKENS = "8"


def driver_argv(tiny_checkpoint, question_file, image_folder, answers, *extra):
    """A driver's arguments: greedy, vicuna_v1, on cpu, `MAX_NEW_TOKENS` new tokens, then `extra`."""
    return [
        "--model-path", str(tiny_checkpoint), "--question-file", str(question_file),
        "--image-folder", str(image_folder), "--answers-file", str(answers), "--temperature", "0",
        "--conv-mode", "vicuna_v1", "--device", "cpu", "--max-new-tokens", MAX_NEW_TOKENS, *extra,
    ]


def read_rows(path):
    """The JSON objects of a JSON-lines file, in order."""
    return [json.loads(line) for line in path.read_text().splitlines()]


def ids_and_texts(rows):
    """(question_id, text) of each answer row."""
    return [(row["question_id"], row["text"]) for row in rows]


def driver_record(checkpoint, tmp_path, *extra) -> dict:
    """model_vqa_loader's run record of one question on tests/data/shapes.png, pruned to the tiny
    recipe's ratio, with `extra` arguments."""
    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"question_id": 0, "image": "shapes.png", "text": "What is it?"}) + "\n")
    answers = tmp_path / "answers.jsonl"
    assert model_vqa_loader.main([
        "--model-path", str(checkpoint), "--question-file", str(questions), "--image-folder", "tests/data",
        "--answers-file", str(answers), "--device", "cpu", "--temperature", "0", "--max_new_tokens", "2",
        "--reduction-ratio", f"{TINY_RECIPE_RATIO:g}", *extra]) == 0
    return json.loads(answers.with_name("answers.run.json").read_text())
