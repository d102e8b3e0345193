"""What a driver run records: its answer settings (checked on resume), run-log header and per-batch
statistics, software, device and memory."""
from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import re
import resource
from pathlib import Path
from typing import Any, Dict

import torch

from llava.model.pruning.flops import DecoderDims
from llava.constants import IMAGE_TOKEN_INDEX
from llava.eval.driver.batch_generation import Batch, GenerationOutput
from llava.cli_support import UsageError
from llava.eval.records.run_record import RunLog
from llava.eval.driver.flags import NOT_ANSWER_SETTINGS, DriverSpec, resolve_dtype
from llava.eval.driver.model_loading import LoadedModel, pruning_info

def answer_settings(args: argparse.Namespace, conv_mode: str) -> dict:
    """The flags that change answers, compared when a run is resumed."""
    settings = {k: v for k, v in sorted(vars(args).items()) if k not in NOT_ANSWER_SETTINGS}
    settings.update(conv_mode=conv_mode, dtype=str(resolve_dtype(args)).replace("torch.", ""),
                    model_path=os.path.normpath(os.path.expanduser(args.model_path)))
    return settings


def check_resume_settings(answers_file: str, log: RunLog, settings: dict) -> None:
    """Refuses to resume answers written with other answer-changing flags.

    Args:
        answers_file: the answers file being resumed (named in the error).
        log: its run-stats log (no header: nothing to compare).
        settings: this run's `answer_settings`.

    Raises:
        UsageError: naming each differing flag with both values.
    """
    if log.header is None:
        return
    previous = log.header.get("settings", {})
    differing = sorted(k for k in set(previous) | set(settings) if previous.get(k) != settings.get(k))
    if differing:
        changes = "; ".join(f"{k}: {previous.get(k)!r} then, {settings.get(k)!r} now" for k in differing)
        raise UsageError(
            f"{answers_file}: the answers were written with other settings ({changes}); "
            "pass another --answers-file, or --overwrite to start afresh"
        )


def default_run_name(answers_file: str) -> str:
    """The answers file's stem, or its folder's name for chunk (``N_I``) and ``merge`` files."""
    path = Path(answers_file)
    stem = path.name[: -len(".jsonl")] if path.name.endswith(".jsonl") else path.stem
    if stem == "merge" or re.fullmatch(r"\d+_\d+", stem):
        return path.parent.name
    return stem


def log_header(spec: DriverSpec, args: argparse.Namespace, loaded: LoadedModel, settings: dict,
               greedy_loop: bool) -> dict:
    """The run-stats log header: names, answer settings, model, pruning, generation, chunk."""
    model = loaded.model
    return {
        "benchmark": args.benchmark or Path(args.question_file).parent.name,
        "run_name": args.run_name or default_run_name(args.answers_file),
        "driver": spec.name,
        "question_file": args.question_file,
        "settings": settings,
        "model": {
            "path": args.model_path,
            "name": loaded.model_name,
            "base": args.model_base,
            "dtype": settings["dtype"],
            "num_visual_tokens": model.get_model().num_visual_tokens(),
            "decoder_dims": dataclasses.asdict(DecoderDims.from_config(model.config)),
        },
        "pruning": pruning_info(model),
        "generation": {
            "conv_mode": settings["conv_mode"],
            "temperature": args.temperature,
            "top_p": getattr(args, "top_p", None),
            "num_beams": getattr(args, "num_beams", 1),
            "max_new_tokens": args.max_new_tokens,
            "decoding": "greedy loop (llava.eval.driver.batch_generation)" if greedy_loop else "model.generate",
        },
        "chunk": {"index": args.chunk_idx, "count": args.num_chunks},
    }


def batch_stats(batch: Batch, output: GenerationOutput, num_visual_tokens: int, num_layers: int) -> dict:
    """One run-stats log entry for an answered batch.

    A sample's visual tokens are those before any pruning when the output has them, else its
    image placeholders times `num_visual_tokens`; the tokens entering each layer are the trace's
    (else layer 0 entered by all of them, layer l by what left layer l-1).
    """
    keep_counts, num_visual, num_other, entered = [], [], [], []
    for b, sample in enumerate(batch.samples):
        placeholders = int((sample.input_ids == IMAGE_TOKEN_INDEX).sum())
        if output.initial_visual is not None:
            visual = int(output.initial_visual[b])
        else:
            visual = placeholders * num_visual_tokens
        num_visual.append(visual)
        num_other.append(len(sample.input_ids) - placeholders)
        if output.keep_counts is not None:
            keep_counts.append(output.keep_counts[:, b].tolist())
        else:
            keep_counts.append([visual] * num_layers)
        if output.entered_counts is not None:
            entered.append(output.entered_counts[:, b].tolist())
        else:
            entered.append([visual] + keep_counts[-1][:-1])
    return {
        "keys": [s.item.key for s in batch.samples],
        "num_visual": num_visual,
        "num_other_tokens": num_other,
        "keep_counts": keep_counts,
        "entered_counts": entered,
        "new_tokens": [len(tokens) for tokens in output.new_tokens],
        "prefill_s": output.prefill_s,
        "decode_s": output.decode_s,
        "decode_tokens": output.decode_tokens,
    }


def software_versions() -> dict:
    """Versions of Python, torch, transformers, CUDA and this package."""
    from importlib import metadata

    import transformers

    try:
        package = metadata.version("llava-fitprune")
    except metadata.PackageNotFoundError:
        package = None
    return {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "cuda": torch.version.cuda, "llava_fitprune": package}


def device_info(device: torch.device) -> dict:
    """The device's type and name."""
    if device.type == "cuda":
        return {"type": "cuda", "name": torch.cuda.get_device_name(device)}
    return {"type": device.type, "name": platform.processor() or platform.machine()}


def peak_memory(device: torch.device) -> Dict[str, Any]:
    """Peak memory of this process: allocated GPU memory on CUDA, else the maximum RSS."""
    if device.type == "cuda":
        return {"peak_memory_bytes": int(torch.cuda.max_memory_allocated(device)),
                "peak_memory_measure": "torch.cuda.max_memory_allocated"}
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {"peak_memory_bytes": int(rss_kib) * 1024, "peak_memory_measure": "ru_maxrss"}
