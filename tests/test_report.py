"""Run records, metrics files and the paper-style report (no model needed)."""
import csv
import io
import json

import pytest

from fitprune import report
from llava.eval.records import record_metric
from llava.eval.records.metrics_files import metrics_path
from llava.model.pruning.flops import DecoderDims, full_prefill_flops, paper_prefill_flops, paper_reduction
from llava.eval.records.sidecar_files import RUN_RECORD_SUFFIX, sidecar_path
from llava.eval.records.run_record import RunLog, merge_run_records, write_run_record

DIMS = DecoderDims(num_layers=32, hidden_size=4096, intermediate_size=11008, num_attention_heads=32,
                   num_key_value_heads=32, vocab_size=32000)
VISUAL = 576
OTHER_TOKENS = 60
PRUNED_KEEP = [576] * 2 + [400] * 10 + [200] * 10 + [100] * 10


def _write_run(answers, benchmark, ratio, keep_counts, samples=3, chunk=(0, 1)):
    """An answers file with its run-stats log (as a driver writes it) and its run record."""
    answers.parent.mkdir(parents=True, exist_ok=True)
    answers.write_text("".join(json.dumps({"question_id": i, "text": "a"}) + "\n" for i in range(samples)))
    log = RunLog(sidecar_path(answers, ".run-stats.ndjson"))
    log.write_header({
        "benchmark": benchmark, "run_name": answers.stem, "driver": "model_vqa_loader", "question_file": "q.jsonl",
        "settings": {"reduction_ratio": float(ratio), "chunk_idx": chunk[0]},
        "model": {"path": "liuhaotian/llava-v1.5-7b", "name": "llava-v1.5-7b", "base": None, "dtype": "float16",
                  "num_visual_tokens": VISUAL, "decoder_dims": vars(DIMS).copy()},
        "pruning": {"reduction_ratio": float(ratio), "policy": "fitprune" if ratio else None,
                    "recipe_file": "/x/llava-v1.5-7b.json" if ratio else None},
        "generation": {"conv_mode": "vicuna_v1"},
        "chunk": {"index": chunk[0], "count": chunk[1]},
    })
    log.append_batch({"keys": [str(i) for i in range(samples)], "num_visual": [VISUAL] * samples,
                      "num_other_tokens": [OTHER_TOKENS] * samples, "keep_counts": [keep_counts] * samples,
                      "new_tokens": [2] * samples, "prefill_s": 0.1, "decode_s": 0.02, "decode_tokens": samples})
    log.append_run({"wall_time_s": 5.0, "generation_time_s": 4.0, "peak_memory_bytes": 1000,
                    "peak_memory_measure": "ru_maxrss", "device": {"type": "cpu"}, "software": {}})
    return write_run_record(answers)


def _record_value(answers, log_text, *args):
    log = answers.with_name("metric.log")
    log.write_text(log_text)
    return record_metric.main(["--answers-file", str(answers), "--from-log", str(log), *args])


@pytest.fixture()
def runs_dir(tmp_path):
    """textvqa at ratios 0 and 50 (both scored), pope at ratio 0 only (scored), gqa at 50 (unscored)."""
    runs = tmp_path / "eval"
    base = runs / "textvqa" / "answers" / "llava-v1.5-7b-r0.jsonl"
    pruned = runs / "textvqa" / "answers" / "llava-v1.5-7b-r50.jsonl"
    pope = runs / "pope" / "answers" / "llava-v1.5-7b-r0.jsonl"
    _write_run(base, "textvqa", 0, [VISUAL] * 32)
    _write_run(pruned, "textvqa", 50, PRUNED_KEEP)
    _write_run(pope, "pope", 0, [VISUAL] * 32)
    _write_run(runs / "gqa" / "answers" / "llava-v1.5-7b-r50.jsonl", "gqa", 50, PRUNED_KEEP)
    assert _record_value(base, "Samples: 3\nAccuracy: 58.20%\n", "--metric", "accuracy", "--pattern",
                         r"Accuracy: ([0-9.]+)%") == 0
    assert record_metric.main(["--answers-file", str(pruned), "--metric", "accuracy",
                        "--value", "55.29"]) == 0
    pope_log = "F1 score: 0.8\nF1 score: 0.9\nF1 score: 0.85\nMean F1 over 3 categories: 0.850\n"
    assert _record_value(pope, pope_log, "--pattern", r"F1 score: ([0-9.]+)", "--reduce", "mean",
                         "--scale", "100") == 0
    return runs


def test_metrics_files_hold_the_parsed_scores(runs_dir):
    pope = json.loads((runs_dir / "pope" / "answers" / "llava-v1.5-7b-r0.metrics.json").read_text())
    assert pope["value"] == pytest.approx(85.0)
    assert pope["benchmark"] == "pope", "taken from the run record"
    assert pope["source"]["matches"] == [0.8, 0.9, 0.85]
    manual = json.loads((runs_dir / "textvqa" / "answers" / "llava-v1.5-7b-r50.metrics.json").read_text())
    assert (manual["value"], manual["metric"], manual["source"]) == (55.29, "accuracy", {"manual": True})


def test_record_metric_without_a_match_fails_naming_the_pattern(tmp_path, capsys):
    answers = tmp_path / "a.jsonl"
    assert _record_value(answers, "nothing here\n", "--benchmark", "textvqa", "--pattern", "Accuracy: ([0-9.]+)") == 2
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
        _write_run(part, "gqa", 0, [VISUAL] * 32, samples=3 - index, chunk=(index, chunks))
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
    _write_run(parts[0], "gqa", 0, [VISUAL] * 32, chunk=(0, 2))
    _write_run(parts[1], "gqa", 50, PRUNED_KEEP, chunk=(1, 2))
    with pytest.raises(ValueError, match="reduction_ratio: 50.0 vs 0.0"):
        merge_run_records(tmp_path / "merge.jsonl", parts)


def test_no_records_is_an_error(tmp_path, capsys):
    assert report.main(["--runs-dir", str(tmp_path), "--output-dir", str(tmp_path / "out")]) == 2
    assert f"no run records (*.run.json) under {tmp_path}" in capsys.readouterr().err
