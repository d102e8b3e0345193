"""Issue 12's eval-driver faults on the tiny checkpoint: two runs on one answers file (3), text the
tokenizer cannot encode (4), prompts longer than the context (6), bad flag values (9), and failed
starts: a wrong image folder, a missing model, no empty answers file left behind (13)."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from llava.eval import model_vqa_loader
from llava.eval.driver import loop as driver_loop
from llava.eval.driver.answers_file import LOCK_SUFFIX
from llava.eval.driver.items import EvalItem
from llava.eval.driver.flags import ImageLoading
from llava.eval.driver.model_loading import LoadedModel
from llava.eval.driver.samples import SamplePreparer
from llava.eval.records.sidecar_files import RUN_RECORD_SUFFIX, RUN_STATS_SUFFIX, sidecar_path
from llava.eval.driver.sample_errors import ERRORS_SUFFIX
from tests.driver_runs import driver_argv, read_rows
from tests.helpers import picture

REPO = Path(__file__).resolve().parents[1]
HOLD_LOCK = ("import sys; from llava.eval.driver.answers_file import lock_answers_file; "
             "lock = lock_answers_file(sys.argv[1]); lock.__enter__(); print('locked', flush=True); sys.stdin.read()")


def _run(argv):
    """The driver's exit status, argparse's included."""
    try:
        return model_vqa_loader.main(argv)
    except SystemExit as exit_info:
        return exit_info.code


def _error_lines(err: str):
    """The ``error:`` lines on stderr; none may come with a traceback."""
    assert "Traceback" not in err, err
    return [line for line in err.splitlines() if "error: " in line]


def _with_questions(tmp_path, question_file, *extra_lines):
    """The first two questions of `question_file`, then `extra_lines` (dicts), as a new question file."""
    lines = question_file.read_text().splitlines()[:2] + [json.dumps(line) for line in extra_lines]
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


# ----------------------------------------------------------------------------- 3: one run per answers file


def test_a_second_run_is_refused_and_a_killed_runs_lock_is_taken_over(tiny_checkpoint, vqa_data, preloaded,
                                                                      tmp_path, capsys):
    question_file, folder = vqa_data
    answers = tmp_path / "out" / "run.jsonl"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(answers)], cwd=REPO, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline() == b"locked\n"
        assert _run(driver_argv(tiny_checkpoint, question_file, folder, answers)) == 2
        (line,) = _error_lines(capsys.readouterr().err)
        assert line.startswith(f"model_vqa_loader: error: {answers}: another run is writing this answers file "
                               f"(pid {holder.pid}, lock file {sidecar_path(answers, LOCK_SUFFIX)})")
        assert preloaded == [] and not answers.exists(), "refused at start: nothing loaded, nothing written"
    finally:
        holder.kill()
        holder.wait()
    lock = sidecar_path(answers, LOCK_SUFFIX)
    assert lock.read_text() == f"{holder.pid}\n", "the killed run's lock file is left, stale"

    assert _run(driver_argv(tiny_checkpoint, question_file, folder, answers, "--batch-size", "2")) == 0
    assert len(read_rows(answers)) == 5
    assert not lock.exists(), "the lock is removed when the run ends"


def test_a_crash_in_the_run_record_is_resumed(tiny_checkpoint, vqa_data, preloaded, tmp_path, monkeypatch):
    question_file, folder = vqa_data
    answers = tmp_path / "run.jsonl"
    real_write = driver_loop.write_run_record

    def crash(path):
        raise RuntimeError("disk full")

    monkeypatch.setattr(driver_loop, "write_run_record", crash)
    with pytest.raises(RuntimeError):
        model_vqa_loader.main(driver_argv(tiny_checkpoint, question_file, folder, answers))
    assert not sidecar_path(answers, LOCK_SUFFIX).exists(), "a crashed run releases its lock"
    monkeypatch.setattr(driver_loop, "write_run_record", real_write)

    assert _run(driver_argv(tiny_checkpoint, question_file, folder, answers)) == 0
    assert len(read_rows(answers)) == 5, "each question answered once"
    assert json.loads(sidecar_path(answers, RUN_RECORD_SUFFIX).read_text())["samples"]["answered"] == 5


def test_a_run_stats_log_with_two_headers_is_one_line(tiny_checkpoint, vqa_data, preloaded, tmp_path, capsys):
    """What two unlocked runs used to leave behind."""
    question_file, folder = vqa_data
    answers = tmp_path / "run.jsonl"
    log = sidecar_path(answers, RUN_STATS_SUFFIX)
    log.write_text('{"header": {}}\n{"header": {}}\n')
    assert _run(driver_argv(tiny_checkpoint, question_file, folder, answers)) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert line == f"model_vqa_loader: error: {log}:2: a second header"


# ----------------------------------------------------------------------------- 4 and 6: bad samples


def test_text_the_tokenizer_cannot_encode_is_a_bad_sample(tiny_checkpoint, vqa_data, preloaded, tmp_path, capsys):
    question_file, folder = vqa_data
    questions = _with_questions(tmp_path, question_file,
                                {"question_id": "lone", "image": "2.png", "text": "What is \udc80 this?"})
    assert "\\udc80" in questions.read_text(), "valid JSON, ASCII-escaped"
    answers = tmp_path / "run.jsonl"
    assert _run(driver_argv(tiny_checkpoint, questions, folder, answers, "--batch-size", "3")) == 0
    assert [row["question_id"] for row in read_rows(answers)] == ["img0", 10]
    (error,) = read_rows(sidecar_path(answers, ERRORS_SUFFIX))
    assert (error["question_id"], error["line"], error["field"]) == ("lone", 3, "text")
    assert error["message"] == (f"{questions}:3: field 'text': character 8 (U+DC80) cannot be encoded as UTF-8 "
                                "(surrogates not allowed); the tokenizer cannot read it")
    assert "1 of 3 questions skipped" in capsys.readouterr().err


def test_a_prompt_longer_than_the_context_is_a_bad_sample(tiny_checkpoint, vqa_data, preloaded, tmp_path):
    question_file, folder = vqa_data
    questions = _with_questions(tmp_path, question_file,
                                {"question_id": "long", "image": "2.png", "text": "word " * 4000})
    answers = tmp_path / "run.jsonl"
    assert _run(driver_argv(tiny_checkpoint, questions, folder, answers, "--batch-size", "3")) == 0
    assert [row["question_id"] for row in read_rows(answers)] == ["img0", 10], "the long sample did not sink its batch"
    (error,) = read_rows(sidecar_path(answers, ERRORS_SUFFIX))
    assert (error["question_id"], error["field"]) == ("long", "text")
    found = re.fullmatch(rf"{re.escape(str(questions))}:3: field 'text': prompt is (\d+) tokens \((\d+) text \+ 144 "
                         r"visual\), longer than the model's context of 4096 tokens \(max_position_embeddings\)",
                         error["message"])
    assert found, error["message"]
    total, text = int(found[1]), int(found[2])
    assert total == text + 144 and 4000 < text < 4100


def test_anyres_visual_tokens_are_counted_as_the_model_splices_them(next_model, tmp_path):
    """LLaVA-NeXT: an image's run depends on its aspect ratio (tiles, unpadding, newlines)."""
    tokenizer, model, processor = next_model
    preparer = SamplePreparer(LoadedModel(tokenizer, model, processor, "llava-v1.6-tiny"), "vicuna_v1",
                              str(tmp_path), ImageLoading(source="file", pad=True), "q.jsonl")
    counts, spliced = [], []
    for i, size in enumerate([(40, 20), (20, 60), (50, 50), (60, 20)]):
        picture(size, seed=i).save(tmp_path / f"{i}.png")
        sample = preparer(EvalItem(i, "q", "What?", f"{i}.png", i + 1))
        counts.append(preparer.visual_tokens(sample.image, sample.image_size))
        spliced.append(model.encode_anyres_images([sample.image], [sample.image_size])[0].shape[0])
    assert counts == spliced
    assert len(set(counts)) == 4, "four aspect ratios, four run lengths: the check is not vacuous"


# ----------------------------------------------------------------------------- 9: flag values


@pytest.mark.parametrize("flag, value, message", [
    ("--num-workers", "-1", "--num-workers must be >= 0, got -1"),
    ("--top_p", "7", "--top_p must be in (0, 1], got 7.0"),
    ("--top_p", "0", "--top_p must be in (0, 1], got 0.0"),
    ("--temperature", "-0.5", "--temperature must be >= 0, got -0.5"),
    ("--device", "tpu", "--device: device 'tpu' is not supported: use cpu, cuda or cuda:N (or auto)"),
])
def test_a_bad_flag_value_is_one_line_naming_the_flag(tiny_checkpoint, vqa_data, preloaded, tmp_path, capsys,
                                                      flag, value, message):
    question_file, folder = vqa_data
    answers = tmp_path / "run.jsonl"
    argv = [*driver_argv(tiny_checkpoint, question_file, folder, answers), flag, value]
    assert _run(argv) == 2  # the last value wins
    assert _error_lines(capsys.readouterr().err) == [f"model_vqa_loader: error: {message}"]
    assert preloaded == [] and not answers.exists()


# ----------------------------------------------------------------------------- 13: failed starts


def test_a_wrong_image_folder_is_one_summary_line_and_a_failure(tiny_checkpoint, vqa_data, preloaded, tmp_path,
                                                                capsys):
    question_file, _ = vqa_data
    wrong = tmp_path / "no-such-folder"
    answers = tmp_path / "run.jsonl"
    errors_file = sidecar_path(answers, ERRORS_SUFFIX)
    assert _run(driver_argv(tiny_checkpoint, question_file, wrong, answers, "--batch-size", "2")) == 2
    err = capsys.readouterr().err
    (line,) = _error_lines(err)
    assert line == (f"model_vqa_loader: error: all 5 samples were skipped (first error: {question_file}:1: "
                    f"field 'image': {wrong / '0.png'}: image file does not exist); see {errors_file}")
    assert err.count("field 'image'") == 1, "skips are counted, not listed one by one"
    assert len(read_rows(errors_file)) == 5
    assert not answers.exists(), "no empty answers file"


def test_a_missing_model_path_is_reported_before_the_eval_data(tmp_path, capsys):
    model = tmp_path / "models" / "llava-v1.5-7b"
    answers = tmp_path / "run.jsonl"
    code = _run(["--model-path", str(model), "--question-file", str(tmp_path / "missing.jsonl"),
                 "--image-folder", str(tmp_path), "--answers-file", str(answers), "--device", "cpu"])
    assert code == 2
    assert _error_lines(capsys.readouterr().err) == [f"model_vqa_loader: error: model path {model} does not exist"]
    assert not answers.exists()


def test_a_failed_start_leaves_no_answers_file(tiny_checkpoint, vqa_data, preloaded, tmp_path, capsys):
    question_file, folder = vqa_data
    answers = tmp_path / "out" / "run.jsonl"
    assert _run(driver_argv(tiny_checkpoint, question_file, folder, answers, "--reduction-ratio", "30")) == 2
    assert "no recipe" in _error_lines(capsys.readouterr().err)[0].lower()
    assert sorted(p.name for p in answers.parent.iterdir()) == [], "no answers file, log or lock left behind"
