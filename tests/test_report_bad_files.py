"""Issue 27 fault 6: the report and record_metric check the files they read field by field.

A bad run record or metrics file leaves its run out of the report with one warning line naming
the file and the field (and a footnote in results.md); record_metric refuses non-finite values
at the flag and out-of-range scores with exit 2; a score older than its answers file is
marked stale."""
import csv
import io
import json
import os
import subprocess
import sys

import pytest

from fitprune import report
from llava.eval.records import record_metric
from llava.eval.records.metrics_files import metrics_path
from llava.eval.records import run_record
from llava.eval.records.sidecar_files import RUN_RECORD_SUFFIX, sidecar_path
from tests.records import PRUNED_KEEP, VISUAL, write_run

DEEP = "[" * 100_000 + "]" * 100_000
"""JSON nested 100,000 levels: past Python's recursion limit."""
NOT_UTF8 = b"\x89PNG\r\n\x1a\n\x00\xff"


def _runs(tmp_path):
    """textvqa unpruned (58.2) and at ratio 50 (55.3), both scored; returns (runs dir, the r50 answers)."""
    runs = tmp_path / "eval"
    base = runs / "textvqa" / "answers" / "llava-v1.5-7b-r0.jsonl"
    pruned = runs / "textvqa" / "answers" / "llava-v1.5-7b-r50.jsonl"
    write_run(base, "textvqa", 0, [VISUAL] * 32)
    write_run(pruned, "textvqa", 50, PRUNED_KEEP)
    for answers, value in ((base, "58.2"), (pruned, "55.3")):
        assert record_metric.main(["--answers-file", str(answers), "--metric", "accuracy",
                            "--value", value]) == 0
    return runs, pruned


def _edit(path, change):
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


BAD_FILES = {
    # case: (file of the r50 run, how it is damaged, the message after "<file>: ")
    "binary metrics": ("metrics", NOT_UTF8, "not a JSON file (byte 0 is not UTF-8 text)"),
    "string value": ("metrics", lambda m: m.update(value="high"),
                     "field 'value' must be a finite number in [0, 100], got \"high\""),
    "string sample count": ("metrics", lambda m: m["samples"].update(skipped="1"),
                            "field 'samples.skipped' must be a non-negative integer, got \"1\""),
    "value -1e308": ("metrics", lambda m: m.update(value=-1e308),
                     "field 'value' must be a finite number in [0, 100], got -1e+308"),
    "deep metrics": ("metrics", DEEP.encode(), "JSON nested too deeply to read"),
    "ratio 'sixty'": ("record", lambda r: r["pruning"].update(reduction_ratio="sixty"),
                      "field 'pruning.reduction_ratio' must be a finite number in [0, 100) or null, got \"sixty\""),
    "ratio 100": ("record", lambda r: r["pruning"].update(reduction_ratio=100),
                  "field 'pruning.reduction_ratio' must be a finite number in [0, 100) or null, got 100"),
    "NaN FLOPs": ("record", lambda r: r["flops"].update(paper_prefill=float("nan")),
                  "field 'flops.paper_prefill' must be a finite number >= 0 or null, got NaN"),
    "binary record": ("record", NOT_UTF8, "not a JSON file (byte 0 is not UTF-8 text)"),
    "deep record": ("record", DEEP.encode(), "JSON nested too deeply to read"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_a_bad_file_leaves_its_run_out_with_one_line_naming_file_and_field(tmp_path, caplog, capsys, case):
    runs, pruned = _runs(tmp_path)
    which, damage, message = BAD_FILES[case]
    path = metrics_path(str(pruned)) if which == "metrics" else sidecar_path(pruned, RUN_RECORD_SUFFIX)
    if isinstance(damage, bytes):
        path.write_bytes(damage)
    else:
        _edit(path, damage)
    capsys.readouterr()

    assert report.main(["--runs-dir", str(runs), "--output-dir", str(tmp_path / "out")]) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and warnings[0].startswith(f"left out of the report: {path}: {message}")
    assert "\n" not in warnings[0]
    markdown = (tmp_path / "out" / "results.md").read_text().splitlines()
    assert markdown[-1] == warnings[0].replace("left out of the report: ", "Left out: ")
    rows = list(csv.DictReader(io.StringIO((tmp_path / "out" / "results.csv").read_text())))
    assert [(r["Ratio (%)"], r["TextVQA"]) for r in rows] == [("0.0", "58.2")], "the good run stays"


def test_bad_file_warning_is_one_stderr_line_from_the_command(tmp_path):
    runs, pruned = _runs(tmp_path)
    _edit(sidecar_path(pruned, RUN_RECORD_SUFFIX), lambda r: r["pruning"].update(reduction_ratio="sixty"))
    result = subprocess.run([sys.executable, "-m", "fitprune.report", "--runs-dir", str(runs), "--output-dir",
                             str(tmp_path / "out")], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0
    assert result.stderr == (f"left out of the report: {sidecar_path(pruned, RUN_RECORD_SUFFIX)}: field "
                             "'pruning.reduction_ratio' must be a finite number in [0, 100) or null, got \"sixty\"\n")


def test_report_with_no_usable_run_exits_2(tmp_path, capsys):
    runs = tmp_path / "eval"
    answers = runs / "a.jsonl"
    write_run(answers, "textvqa", 0, [VISUAL] * 32)
    sidecar_path(answers, RUN_RECORD_SUFFIX).write_bytes(NOT_UTF8)
    assert report.main(["--runs-dir", str(runs), "--output-dir", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == (f"report: error: none of the 1 run records under {runs} is usable "
                                       "(see the warnings above)\n")


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e400"])
def test_record_metric_refuses_a_non_finite_value_at_the_flag(tmp_path, capsys, value):
    answers = tmp_path / "a.jsonl"
    with pytest.raises(SystemExit) as exit_:
        record_metric.main(["--answers-file", str(answers), "--benchmark", "textvqa", f"--value={value}"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == (f"record_metric: error: argument --value: must be a finite number, "
                                       f"got '{value}'\n")
    assert not metrics_path(str(answers)).exists()


@pytest.mark.parametrize("args, message", [
    (["--metric", "accuracy", "--value", "150"], "accuracy 150 of textvqa must be a finite number in [0, 100]"),
    (["--metric", "perception", "--value", "2001"], "perception 2001 of textvqa must be a finite number in [0, 2000]"),
    (["--value=-1e308"], "score -1e+308 of textvqa must be a finite number in [0, 100]"),
])
def test_record_metric_refuses_a_score_out_of_its_range(tmp_path, capsys, args, message):
    answers = tmp_path / "a.jsonl"
    assert record_metric.main(["--answers-file", str(answers), "--benchmark", "textvqa", *args]) == 2
    assert capsys.readouterr().err == f"record_metric: error: {message}\n"
    assert not metrics_path(str(answers)).exists()


def test_record_metric_reads_a_checked_benchmark_from_the_run_record(tmp_path, capsys):
    answers = tmp_path / "a.jsonl"
    record = write_run(answers, "mme", 0, [VISUAL] * 32)
    assert record_metric.main(["--answers-file", str(answers), "--value", "1500"]) == 0, "MME: [0, 2800]"
    for content, message in ((NOT_UTF8, "not a JSON file (byte 0 is not UTF-8 text)"),
                             (DEEP.encode(), "JSON nested too deeply to read"),
                             (json.dumps({"benchmark": 5}).encode(), "field 'benchmark' must be a string, got 5")):
        record.write_bytes(content)
        capsys.readouterr()
        assert record_metric.main(["--answers-file", str(answers), "--value", "1"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"record_metric: error: {record}: {message}") and err.count("\n") == 1


def test_a_score_older_than_its_answers_is_marked_stale(tmp_path):
    runs, pruned = _runs(tmp_path)
    metrics = metrics_path(str(pruned))
    answered_at = pruned.stat().st_mtime
    os.utime(metrics, (answered_at - 60, answered_at - 60))  # answers extended a minute after scoring
    table, written = report.build_report(runs, tmp_path / "out")

    rows = list(csv.DictReader(io.StringIO(written[1].read_text())))
    assert [(r["Ratio (%)"], r["TextVQA"], r["Stale scores"]) for r in rows] == [
        ("0.0", "58.2", ""), ("50.0", "55.3", "TextVQA")]
    markdown = written[0].read_text().splitlines()
    header = markdown[0].split(" | ")
    assert markdown[2].split(" | ")[header.index("TextVQA")] == "58.2"
    assert markdown[3].split(" | ")[header.index("TextVQA")] == "55.3 †"
    assert markdown[-1] == f"† {metrics}: recorded before its answers file last changed; rerun the metric step"

    answered_ns = pruned.stat().st_mtime_ns
    os.utime(metrics, ns=(answered_ns, answered_ns))  # same time: scored after the last answer
    assert report.build_report(runs, tmp_path / "out")[0].stale == []


def test_merge_of_a_binary_chunk_log_is_one_line(tmp_path, capsys):
    chunk = tmp_path / "2_0.jsonl"
    write_run(chunk, "gqa", 0, [VISUAL] * 32, chunk=(0, 2))
    log = sidecar_path(chunk, ".run-stats.ndjson")
    log.write_bytes(NOT_UTF8 + b"\n")
    assert run_record.main(["merge", "--answers-file", str(tmp_path / "merge.jsonl"), str(chunk)]) == 2
    assert capsys.readouterr().err == f"run_record: error: {log}: not a run-stats log (byte 0 is not UTF-8 text)\n"
