"""The child process of `python benchmarks/long_prompt_memory.py --probe-prefill`: loads the
model as `llava.eval.model_vqa_loader` would and measures the resident set's rise over two
prefills of the long prompt; and the resident-set readings it takes (`/proc/self/status`,
`/proc/self/clear_refs`), which `benchmarks/upload_memory.py` takes too."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Dict, Sequence


class BenchmarkError(Exception):
    """A child process failed or the setup cannot run; the message is one line for stderr."""


def resident_bytes() -> Dict[str, int]:
    """This process's resident set now (VmRSS) and its high-water mark (VmHWM), in bytes, from
    /proc/self/status.

    Raises:
        BenchmarkError: no /proc/self/status (not Linux).
    """
    try:
        lines = Path("/proc/self/status").read_text().splitlines()
    except OSError as err:
        raise BenchmarkError(f"cannot read /proc/self/status ({err}); the memory probe needs Linux") from None
    fields = dict(line.split(":", 1) for line in lines if ":" in line)
    return {key: int(fields[key].split()[0]) * 1024 for key in ("VmRSS", "VmHWM")}  # the values are in kB


def reset_peak_resident() -> None:
    """Returns freed heap memory to the system (glibc's malloc_trim, where there is one) and
    resets the resident-set high-water mark to the current resident set."""
    import ctypes

    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    if trim is not None:
        trim(0)
    Path("/proc/self/clear_refs").write_text("5")


def probe_prefill(driver_flags: Sequence[str]) -> dict:
    """Loads the model as the driver would with `driver_flags` and measures two prefills of the
    question file's first question.

    Args:
        driver_flags: `llava.eval.model_vqa_loader` flags.

    Returns:
        prompt_tokens (conv template + question, ids), visual_tokens, visual_left (after the
        last layer), cache_tokens (per layer), increments (bytes: the resident set's rise over
        the first and the second prefill), prefill_s (their wall times), context, and the
        machine and versions.

    Raises:
        BenchmarkError: a flag, the model or the question cannot be used (one line).
    """
    import platform

    import torch
    import transformers

    from fitprune.lab.bench_timing import available_cores, cpu_model
    from llava.eval.driver.batch_generation import PreparedSample, collate
    from llava.eval.driver.flags import build_parser, check_args
    from llava.eval.driver.items import resolve_conv_mode
    from llava.eval.driver.questions import read_question_jsonl
    from llava.eval.driver.model_loading import load_model
    from llava.eval.driver.samples import SamplePreparer
    from llava.eval.model_vqa_loader import SPEC

    args = build_parser(SPEC, "prefill probe").parse_args(list(driver_flags))
    check_args(args)
    loaded = load_model(args)
    item = read_question_jsonl(args.question_file)[0]
    conv_mode = resolve_conv_mode(args.conv_mode, loaded.model_name, SPEC.mmtag_rule)
    preparer = SamplePreparer(loaded, conv_mode, args.image_folder, SPEC.image_loading, args.question_file)
    sample = preparer(item)
    if not isinstance(sample, PreparedSample):
        raise BenchmarkError(sample.message)
    model = loaded.model

    def prefill(prepared: PreparedSample):
        batch = collate([prepared], pad_token_id=0)
        images = batch.images.to(device=model.device, dtype=model.dtype)
        return model(input_ids=batch.input_ids.to(model.device), attention_mask=batch.attention_mask.to(model.device),
                     images=images, image_sizes=batch.image_sizes, use_cache=True, num_logits_to_keep=1)

    increments, seconds = [], []
    with torch.inference_mode():
        for _ in range(2):
            reset_peak_resident()
            before = resident_bytes()["VmRSS"]
            start = time.perf_counter()
            out = prefill(sample)
            seconds.append(time.perf_counter() - start)
            increments.append(resident_bytes()["VmHWM"] - before)
    trace = model.last_pruning_trace
    visual = int(out.sequence_layout.initial_visual[0])
    return {
        "prompt_tokens": int(len(sample.input_ids)) - 1,  # less the image placeholder
        "visual_tokens": visual,
        "visual_left": int(trace.counts()[-1, 0]) if trace is not None and trace.live_counts else visual,
        "cache_tokens": out.past_key_values.layer_lengths(),
        "increments": increments,
        "prefill_s": seconds,
        "context": int(model.config.max_position_embeddings),
        "machine": f"{cpu_model()}, {available_cores()} cores, {torch.get_num_threads()} torch threads",
        "versions": f"torch {torch.__version__}, transformers {transformers.__version__}, "
                    f"Python {platform.python_version()}",
    }


def probe_main(driver_flags: Sequence[str]) -> int:
    """The probe process: prints `probe_prefill`'s report as one JSON line; 2 on bad input."""
    try:
        report = probe_prefill(driver_flags)
    except BenchmarkError as err:
        print(f"long_prompt_memory probe: error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(report))
    return 0
