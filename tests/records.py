"""Run records as the drivers write them (answers file, run-stats log, merged record) for a
llava-v1.5-7b-shaped model, for the report and metric tests; no model needed."""
import json

from llava.eval.records import record_metric
from llava.eval.records.run_record import RunLog, write_run_record
from llava.eval.records.sidecar_files import sidecar_path
from llava.model.pruning.flops import DecoderDims

DIMS = DecoderDims(num_layers=32, hidden_size=4096, intermediate_size=11008, num_attention_heads=32,
                   num_key_value_heads=32, vocab_size=32000)
VISUAL = 576
OTHER_TOKENS = 60
PRUNED_KEEP = [576] * 2 + [400] * 10 + [200] * 10 + [100] * 10


def write_run(answers, benchmark, ratio, keep_counts, samples=3, chunk=(0, 1)):
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


def record_value(answers, log_text, *args):
    """Exit code of `record_metric` reading `log_text` (written beside `answers`) with `args`."""
    log = answers.with_name("metric.log")
    log.write_text(log_text)
    return record_metric.main(["--answers-file", str(answers), "--from-log", str(log), *args])
