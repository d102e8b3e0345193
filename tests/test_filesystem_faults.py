"""Issue 27, faults 3 and 4: two calibrations on one recipe file, and filesystem faults (a full disk,
a read-only folder, no permission, an output that is a directory or an input) as one line, exit 2."""
import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fitprune import calibrate, report, visualize
from llava.eval import model_vqa_loader
from llava.eval.driver import answers_file, loop as driver_loop
from llava.eval.driver.file_lock import LOCK_SUFFIX
from llava.eval.driver.output_paths import OutputPathError, check_output_file, check_output_folder, writing_to
from llava.eval.records.sidecar_files import sidecar_path
from llava.model.pruning.recipe import RecipeBook
from llava.model.pruning.recipe_lookup import RECIPE_FILE_IN_CHECKPOINT
from tests.driver_runs import driver_argv, ids_and_texts, read_rows

REPO = Path(__file__).resolve().parents[1]
DEMO = Path(__file__).parent / "data"
HOLD_RECIPE_LOCK = (
    "import sys; from pathlib import Path; from fitprune.calibrate import RecipeFileLockedError; "
    "from llava.eval.driver.file_lock import hold_lock_file; "
    "lock = hold_lock_file(Path(sys.argv[1]), sys.argv[2], 'x', '--output', RecipeFileLockedError); "
    "lock.__enter__(); print('locked', flush=True); sys.stdin.read()"
)
ROOT = os.geteuid() == 0


def _exit_code(main, argv):
    """A command's exit status, argparse's included."""
    try:
        return main(argv)
    except SystemExit as exit_info:
        return exit_info.code


def _one_error_line(err: str) -> str:
    """The single ``error:`` line on stderr, which must come without a traceback."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if "error: " in line]
    assert len(lines) == 1, err
    return lines[0]


def _fail_after(calls: int, code: int, write_partial=None):
    """A replacement writer that works `calls` times, then (after `write_partial(args)`) raises `code`."""
    seen = []

    def fail(real, *args, **kwargs):
        seen.append(args)
        if len(seen) <= calls:
            return real(*args, **kwargs)
        if write_partial:
            write_partial(*args)
        raise OSError(code, os.strerror(code))
    return fail


def _calibrate_argv(checkpoint, output, *extra):
    return ["--model-path", str(checkpoint), "--question-file", str(DEMO / "calibration.jsonl"),
            "--image-folder", str(DEMO), "--device", "cpu", "--output", str(output), "--num-samples", "3", *extra]


# ----------------------------------------------------------------------------- the checks themselves


def test_output_checks_name_the_path_and_the_reason(tmp_path):
    question = tmp_path / "q.jsonl"
    question.write_text("{}\n")
    link = tmp_path / "link.jsonl"
    link.symlink_to(question)
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OutputPathError, match=rf"^{tmp_path}: --answers-file is a directory; name a file in it$"):
        check_output_file(tmp_path, "--answers-file")
    with pytest.raises(OutputPathError, match=rf"^{link}: --answers-file is the same file as --question-file {question}"):
        check_output_file(link, "--answers-file", {"--question-file": question})
    with pytest.raises(OutputPathError, match=rf"^{blocker}/a/b\.jsonl: --out cannot be written: "
                                              rf"{blocker} is not a directory$"):
        check_output_file(blocker / "a" / "b.jsonl", "--out")
    with pytest.raises(OutputPathError, match=rf"^{blocker}: --output-dir cannot be written: {blocker} is not a directory$"):
        check_output_folder(blocker, "--output-dir")
    assert check_output_file(tmp_path / "new" / "deeper" / "a.jsonl", "--answers-file", {"--question-file": question,
                                                                                        "--recipe": None})


@pytest.mark.skipif(ROOT, reason="running as root: chmod 0o500 does not deny root, so there is no fault to see")
def test_a_folder_without_write_permission_is_refused(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o500)
    with pytest.raises(OutputPathError, match=rf"{folder} is not writable \(no permission to write there\)"):
        check_output_file(folder / "a.jsonl", "--answers-file")


def test_only_write_faults_about_the_output_become_one_line(tmp_path):
    out = tmp_path / "out" / "a.jsonl"
    with pytest.raises(OutputPathError, match=rf"^{out}: cannot write \(No space left on device, ENOSPC\); hint$"):
        with writing_to(out, "hint"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    beside = out.with_name("a.run-stats.ndjson")
    with pytest.raises(OutputPathError, match=rf"^{beside}: cannot write \(Read-only file system, EROFS\)$"):
        with writing_to(out):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(beside))
    with pytest.raises(PermissionError):  # an input elsewhere that cannot be read is not an output fault
        with writing_to(out):
            raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "model" / "weights.bin"))
    with pytest.raises(FileNotFoundError):
        with writing_to(out):
            raise FileNotFoundError(errno.ENOENT, "No such file", str(out))


# ----------------------------------------------------------------------------- eval drivers


def test_an_answers_file_that_is_a_directory_or_the_question_file_is_refused_before_loading(
        tiny_checkpoint, vqa_data, preloaded, tmp_path, capsys):
    question_file, folder = vqa_data
    before = question_file.read_bytes()
    link = tmp_path / "answers-link.jsonl"
    link.symlink_to(question_file)
    for answers, reason in ((folder, f"{folder}: --answers-file is a directory"),
                            (question_file, f"{question_file}: --answers-file is the same file as --question-file"),
                            (link, f"{link}: --answers-file is the same file as --question-file")):
        assert _exit_code(model_vqa_loader.main, driver_argv(tiny_checkpoint, question_file, folder, answers)) == 2
        assert _one_error_line(capsys.readouterr().err).startswith(f"model_vqa_loader: error: {reason}")
    assert preloaded == [], "refused before the model is loaded"
    assert question_file.read_bytes() == before
    assert not sidecar_path(question_file, LOCK_SUFFIX).exists()


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES])
def test_a_write_fault_mid_run_is_one_line_and_a_rerun_resumes(tiny_checkpoint, vqa_data, preloaded, tmp_path,
                                                               monkeypatch, capsys, code):
    question_file, folder = vqa_data
    reference = tmp_path / "reference.jsonl"
    argv = driver_argv(tiny_checkpoint, question_file, folder, reference, "--batch-size", "2")
    assert model_vqa_loader.main(argv) == 0
    answers = tmp_path / "out" / "run.jsonl"
    real = answers_file.append_lines_durably

    def partial(path, lines):  # the disk fills in the middle of the second batch's first line
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(lines[0][:7])
    fail = _fail_after(1, code, partial)
    monkeypatch.setattr(answers_file, "append_lines_durably", lambda *a: fail(real, *a))
    capsys.readouterr()
    assert _exit_code(model_vqa_loader.main,
                      driver_argv(tiny_checkpoint, question_file, folder, answers, "--batch-size", "2")) == 2
    line = _one_error_line(capsys.readouterr().err)
    name = errno.errorcode[code]
    assert line == (f"model_vqa_loader: error: {answers}: cannot write ({os.strerror(code)}, {name}); "
                    f"{driver_loop.RESUME_HINT}")
    assert len(answers.read_text().splitlines()) == 3, "two answers, then a cut-off line"

    monkeypatch.setattr(answers_file, "append_lines_durably", real)  # space freed
    assert model_vqa_loader.main(driver_argv(tiny_checkpoint, question_file, folder, answers, "--batch-size", "2")) == 0
    assert ids_and_texts(read_rows(answers)) == ids_and_texts(read_rows(reference))


# ----------------------------------------------------------------------------- calibration


def test_a_second_calibration_on_one_recipe_file_is_refused_and_a_killed_ones_lock_is_taken_over(
        tiny_checkpoint, tmp_path, capsys):
    output = tmp_path / "recipes.json"
    shutil.copy(tiny_checkpoint / RECIPE_FILE_IN_CHECKPOINT, output)
    before = output.read_bytes()
    lock = sidecar_path(output, LOCK_SUFFIX)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_RECIPE_LOCK, str(lock), str(output)], cwd=REPO,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline() == b"locked\n"
        assert calibrate.main(_calibrate_argv(tiny_checkpoint, output, "--reduction-ratio", "30")) == 2
        line = _one_error_line(capsys.readouterr().err)
        assert line == (f"python -m fitprune.calibrate: error: {output}: another calibration is writing this recipe "
                        f"file (pid {holder.pid}, lock file {lock}); wait for it to end, or pass another --output")
        assert output.read_bytes() == before, "the other run's recipe file is untouched"
    finally:
        holder.kill()
        holder.wait()
    assert lock.read_text() == f"{holder.pid}\n", "a killed run's lock file is left, stale"

    assert calibrate.main(_calibrate_argv(tiny_checkpoint, output, "--reduction-ratio", "30")) == 0
    assert RecipeBook.load(output).ratios() == (30.0, 50.0), "both runs' recipes are in the file"
    assert not lock.exists()


def test_two_calibrations_at_once_lose_no_recipe(tiny_checkpoint, tmp_path):
    output = tmp_path / "recipes.json"
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    runs = {ratio: subprocess.Popen([sys.executable, "-m", "fitprune.calibrate",
                                     *_calibrate_argv(tiny_checkpoint, output, "--reduction-ratio", ratio)],
                                    cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            for ratio in ("30", "50")}
    done = {ratio: (run.wait(timeout=300), run.stderr.read().decode()) for ratio, run in runs.items()}
    written = set()
    for ratio, (code, err) in done.items():
        if code == 0:
            written.add(float(ratio))
        else:  # started while the other ran: refused at once, naming it
            other = next(run.pid for r, run in runs.items() if r != ratio)
            assert (code, _one_error_line(err)) == (2, (
                f"python -m fitprune.calibrate: error: {output}: another calibration is writing this recipe file "
                f"(pid {other}, lock file {sidecar_path(output, LOCK_SUFFIX)}); wait for it to end, or pass "
                "another --output")), err
    assert written and set(RecipeBook.load(output).ratios()) == written, "every run that succeeded is in the file"


def test_calibration_refuses_unwritable_outputs_before_loading_and_maps_a_full_disk(tiny_checkpoint, tmp_path,
                                                                                    monkeypatch, capsys):
    loads = []
    monkeypatch.setattr("llava.model.builder.load_pretrained_model", lambda *a, **k: loads.append(a) or 1 / 0)
    questions = DEMO / "calibration.jsonl"
    for output, reason in ((tmp_path, f"{tmp_path}: --output is a directory"),
                           (questions, f"{questions}: --output is the same file as --question-file")):
        assert calibrate.main(_calibrate_argv(tiny_checkpoint, output)) == 2
        assert _one_error_line(capsys.readouterr().err).startswith(f"python -m fitprune.calibrate: error: {reason}")
    assert calibrate.main(_calibrate_argv(tiny_checkpoint, tmp_path / "r.json", "--plot", str(tmp_path))) == 2
    assert f"{tmp_path}: --plot is a directory" in _one_error_line(capsys.readouterr().err)
    assert loads == []
    monkeypatch.undo()

    output = tmp_path / "recipes.json"
    shutil.copy(tiny_checkpoint / RECIPE_FILE_IN_CHECKPOINT, output)
    before = output.read_bytes()
    monkeypatch.setattr(RecipeBook, "save", lambda self, path: _fail_after(0, errno.ENOSPC)(None))
    assert calibrate.main(_calibrate_argv(tiny_checkpoint, output, "--reduction-ratio", "30")) == 2
    assert _one_error_line(capsys.readouterr().err) == (
        f"python -m fitprune.calibrate: error: {output}: cannot write (No space left on device, ENOSPC); "
        "any previous recipe file is left as it was; rerun once it can be written")
    assert output.read_bytes() == before
    assert not sidecar_path(output, LOCK_SUFFIX).exists()


# ----------------------------------------------------------------------------- visualize and report


def test_visualize_refuses_a_directory_before_loading_and_maps_a_read_only_folder(tiny_checkpoint, tmp_path,
                                                                                  monkeypatch, capsys):
    from tests.helpers import TINY_RECIPE_RATIO

    image = tmp_path / "img.png"
    Image.fromarray(np.full((20, 30, 3), 90, dtype=np.uint8)).save(image)
    argv = ["--model-path", str(tiny_checkpoint), "--image", str(image), "--question", "What?",
            "--reduction-ratio", str(TINY_RECIPE_RATIO), "--out"]
    monkeypatch.setattr("llava.model.builder.load_pretrained_model", lambda *a, **k: 1 / 0)
    assert visualize.main(argv + [str(tmp_path)]) == 2
    assert _one_error_line(capsys.readouterr().err) == (
        f"python -m fitprune.visualize: error: {tmp_path}: --out is a directory; name a file in it")
    assert visualize.main(argv + [str(image)]) == 2
    assert f"{image}: --out is the same file as --image" in _one_error_line(capsys.readouterr().err)
    monkeypatch.undo()

    out = tmp_path / "kept.png"
    monkeypatch.setattr(visualize, "render_panels", lambda *a: _fail_after(0, errno.EROFS)(None))
    assert visualize.main(argv + [str(out)]) == 2
    assert _one_error_line(capsys.readouterr().err) == (
        f"python -m fitprune.visualize: error: {out}: cannot write (Read-only file system, EROFS)")


def test_report_refuses_a_file_as_output_folder_and_maps_a_full_disk(runs_dir, tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "reports"
    blocker.write_text("not a folder")
    assert report.main(["--runs-dir", str(runs_dir), "--output-dir", str(blocker)]) == 2
    assert _one_error_line(capsys.readouterr().err) == (
        f"report: error: {blocker}: --output-dir cannot be written: {blocker} is not a directory")

    out = tmp_path / "out"
    real = report.write_text_atomic
    fail = _fail_after(1, errno.ENOSPC)
    monkeypatch.setattr(report, "write_text_atomic", lambda *a: fail(real, *a))
    assert report.main(["--runs-dir", str(runs_dir), "--output-dir", str(out)]) == 2
    assert _one_error_line(capsys.readouterr().err) == (
        f"report: error: {out}: cannot write (No space left on device, ENOSPC)")
