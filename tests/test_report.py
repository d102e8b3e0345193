"""Run records, metrics files and the paper-style report (no model needed)."""
import csv
import io
import json

import pytest

from fitprune import report
from llava.eval.records.metrics_files import metrics_path
from llava.model.pruning.flops import full_prefill_flops, paper_prefill_flops, paper_reduction
from llava.eval.records.sidecar_files import RUN_RECORD_SUFFIX
from llava.eval.records.run_record import merge_run_records
from tests.records import DIMS, OTHER_TOKENS, PRUNED_KEEP, VISUAL, record_value, write_run

def test_metrics_files_hold_the_parsed_scores(runs_dir):
    pope = json.loads((runs_dir / "pope" / "answers" / "llava-v1.5-7b-r0.metrics.json").read_text())
    assert pope["value"] == pytest.approx(85.0)
    assert pope["benchmark"] == "pope", "taken from the run record"
    assert pope["source"]["matches"] == [0.8, 0.9, 0.85]
    manual = json.loads((runs_dir / "textvqa" / "answers" / "llava-v1.5-7b-r50.metrics.json").read_text())
    assert (manual["value"], manual["metric"], manual["source"]) == (55.29, "accuracy", {"manual": True})


def test_record_metric_without_a_match_fails_naming_the_pattern(tmp_path, capsys):
    answers = tmp_path / "a.jsonl"
    assert record_value(answers, "nothing here\n", "--benchmark", "textvqa", "--pattern", "Accuracy: ([0-9.]+)") == 2
    assert "'Accuracy: ([0-9.]+)' matches nothing" in capsys.readouterr().err
    assert not metrics_path(str(answers)).exists()


def test_markdown_and_csv_cells(runs_dir, tmp_path):
    table, written = report.build_report(runs_dir, tmp_path / "reports")
    assert [p.name for p in written] == ["results.md", "results.csv", "score_vs_flops.png"]
    assert written[2].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    paper_full = paper_prefill_flops(DIMS, [VISUAL] * 32, VISUAL) / 1e12
    paper_pruned = paper_prefill_flops(DIMS, PRUNED_KEEP, VISUAL) / 1e12
    full_pruned = full_prefill_flops(DIMS, PRUNED_KEEP, VISUAL, OTHER_TOKENS) / 1e12
    reduction = paper_reduction(DIMS, PRUNED_KEEP, VISUAL)

    rows = list(csv.reader(io.StringIO(written[1].read_text())))
    header = rows[0]
    assert header == ["Model", "Policy", "Recipe", "Ratio (%)", "FLOPs reduction, paper (%)", "TFLOPs (paper)",
                      "TFLOPs (full prefill)", "Visual tokens after last layer", "GQA", "TextVQA", "POPE",
                      "Skipped samples", "Stale scores", "Rel. (%)"]
    cells = [dict(zip(header, row)) for row in rows[1:]]
    assert [(c["Model"], c["Ratio (%)"], c["Policy"], c["Recipe"]) for c in cells] == [
        ("llava-v1.5-7b", "0.0", "none", "-"), ("llava-v1.5-7b", "50.0", "fitprune", "llava-v1.5-7b.json")]
    unpruned, pruned = cells
    assert float(unpruned["TFLOPs (paper)"]) == pytest.approx(paper_full)
    assert float(pruned["TFLOPs (paper)"]) == pytest.approx(paper_pruned)
    assert float(pruned["TFLOPs (full prefill)"]) == pytest.approx(full_pruned)
    assert float(pruned["FLOPs reduction, paper (%)"]) == pytest.approx(reduction)
    assert float(pruned["Visual tokens after last layer"]) == 100
    assert (unpruned["TextVQA"], unpruned["POPE"], unpruned["GQA"]) == ("58.2", "85.0", "")
    assert (pruned["TextVQA"], pruned["POPE"], pruned["GQA"]) == ("55.29", "", "")
    assert float(unpruned["Rel. (%)"]) == pytest.approx(100.0)
    assert float(pruned["Rel. (%)"]) == pytest.approx(100 * 55.29 / 58.2), "only benchmarks scored in both rows"

    markdown = written[0].read_text().splitlines()
    assert markdown[0].startswith("| Model | Policy | Recipe | Ratio (%) |")
    pruned_line = markdown[3].split(" | ")
    assert pruned_line[3] == "50"
    assert pruned_line[5] == f"{paper_pruned:.3f}"
    assert pruned_line[header.index("TextVQA")] == "55.3"
    assert pruned_line[header.index("POPE")] == "–"
    assert markdown[3].endswith(f"| {100 * 55.29 / 58.2:.1f} |")


@pytest.mark.parametrize("chunks", [1, 2])
def test_chunk_records_are_replaced_by_their_merged_record(tmp_path, chunks):
    folder = tmp_path / "eval" / "gqa" / "answers" / "split" / "llava-v1.5-7b-r0"
    parts = [folder / f"{chunks}_{index}.jsonl" for index in range(chunks)]
    for index, part in enumerate(parts):
        write_run(part, "gqa", 0, [VISUAL] * 32, samples=3 - index, chunk=(index, chunks))
    merged = folder / "merge.jsonl"
    merged.write_text("".join(part.read_text() for part in parts))

    record = json.loads(merge_run_records(merged, parts).read_text())
    answered = sum(3 - index for index in range(chunks))
    assert record["samples"] == {"answered": answered, "measured": answered, "with_image": answered}
    assert record["chunk"]["merged_from"] == [str(p) for p in parts]
    assert record["timing"]["wall_time_s"] == 5.0 * chunks
    runs = report.collect_runs(tmp_path / "eval").runs
    assert [r.record_path.name for r in runs] == ["merge" + RUN_RECORD_SUFFIX]


def test_merging_chunks_run_with_other_settings_is_refused(tmp_path):
    parts = [tmp_path / "2_0.jsonl", tmp_path / "2_1.jsonl"]
    write_run(parts[0], "gqa", 0, [VISUAL] * 32, chunk=(0, 2))
    write_run(parts[1], "gqa", 50, PRUNED_KEEP, chunk=(1, 2))
    with pytest.raises(ValueError, match="reduction_ratio: 50.0 vs 0.0"):
        merge_run_records(tmp_path / "merge.jsonl", parts)


def test_no_records_is_an_error(tmp_path, capsys):
    assert report.main(["--runs-dir", str(tmp_path), "--output-dir", str(tmp_path / "out")]) == 2
    assert f"no run records (*.run.json) under {tmp_path}" in capsys.readouterr().err
