"""The generation drivers' loop, over what they share: flags (`flags`), question items and chunks
(`items`, read by `questions`), the model (`model_loading`), samples (`samples`) and run bookkeeping
(`bookkeeping`).

A driver (`model_vqa_loader`, `model_vqa`, `model_vqa_science`, `model_vqa_mmbench`)
describes itself with a `DriverSpec`, turns its question file into `EvalItem`s (reading
and checking the file before any model is loaded) and hands them to `run_driver`:

    SPEC = DriverSpec("model_vqa", default_conv_mode="llava_v1", max_new_tokens=1024,
                      image_loading=ImageLoading(source="file", pad=False))
    args = build_parser(SPEC, "Answers questions about images.").parse_args(argv)
    run_driver(SPEC, args, lambda args: chunk_items(read_question_jsonl(args.question_file), args))

`run_driver` resumes: answers already in ``--answers-file`` are skipped (see
`llava.eval.driver.answers_file`; a second run on the same answers file while one is running is
refused, naming the other run's pid); the rest are answered in batches of ``--batch-size``
(`llava.eval.driver.batch_generation`: left-padded, answers equal to batch size 1), each batch
appended, flushed and fsynced before the next starts, with its statistics appended to the
run-stats log. At the end the run record is rewritten (see `llava.eval.records.run_record`).

Bad input stops a driver with a one-line ``<driver>: error: ...`` and exit status 2: flag
values, the model path (checked first), the answers file's path (a directory, an input file, a
folder that cannot be written: `llava.eval.driver.output_paths`), the question file (checked whole
before the model loads: `llava.eval.driver.questions`), the recipe; a filesystem fault while writing
(a full disk, a read-only folder) is one line too, and a rerun resumes. A question whose image or prompt cannot be used
(an unreadable image, text the tokenizer cannot encode, a prompt longer than the model's
context with its visual tokens) is found while the run goes: with ``--on-error skip``
(default) it is listed in ``<answers stem>.errors.jsonl`` and the run goes on, the skips
counted on the progress bar and in one line at the end; with ``--on-error fail`` it stops the
run (see `llava.eval.driver.sample_errors`). A run that skips every question exits with status 2
and one line giving the first error. Images are read by `llava.image_loading` (checked, RGB,
bounded in size).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import Callable, List, Optional, Sequence

import torch
from tqdm import tqdm

from llava.model.pruning.recipe import RecipeError
from llava.conversation import conv_templates
from llava.eval.driver.answers_file import AnswersFile, AnswersFileError, lock_answers_file
from llava.eval.driver.batch_generation import (
    GenerationSettings,
    PreparedSample,
    answer_text,
    collate,
    generate_batch,
    uses_logits_processing,
)
from llava.errors import CheckpointError
from llava.eval.io_utils import InputError
from llava.eval.driver.output_paths import check_output_file, writing_to
from llava.cli_support import UsageError, stop_string
from llava.eval.records.sidecar_files import RUN_STATS_SUFFIX, drop_partial_last_line, sidecar_path
from llava.eval.records.run_record import RunLog, write_run_record
from llava.eval.records.run_summary import RunRecordError
from llava.eval.driver.sample_errors import FailedSample, SampleErrorLog
from llava.mm_utils import get_model_name_from_path
from llava.eval.driver.flags import DriverSpec, check_args, check_model_paths
from llava.eval.driver.items import EvalItem, resolve_conv_mode
from llava.eval.driver.model_loading import load_model
from llava.eval.driver.samples import SamplePreparer, PreparedItems, as_sample_list, answer_row, remove_run_files
from llava.eval.driver.bookkeeping import (
    answer_settings,
    check_resume_settings,
    log_header,
    batch_stats,
    software_versions,
    device_info,
    peak_memory,
)
from llava.utils import usage_error

logger = logging.getLogger(__name__)

RESUME_HINT = "the answers so far are kept: rerun the same command to resume once the file can be written"


def _answer_pending(spec: DriverSpec, args: argparse.Namespace, pending: List[EvalItem], total: int,
                    answers: AnswersFile, log: RunLog, settings: dict, started: float,
                    errors: SampleErrorLog) -> None:
    """Loads the model and answers `pending`, batch by batch, logging each batch and the run.

    `started` is the run's start, in seconds since the epoch. Questions whose image or prompt
    cannot be used go to `errors` (``--on-error skip``; counted on the progress bar, each
    message logged at debug level only) or stop the run (``fail``).

    Raises:
        InputError: with ``--on-error fail``, the first question that cannot be used.
    """
    if str(args.device).startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    loaded = load_model(args)
    model = loaded.model
    gen = GenerationSettings(args.temperature, getattr(args, "top_p", None), getattr(args, "num_beams", 1),
                             args.max_new_tokens)
    greedy_loop = gen.greedy and not uses_logits_processing(model.generation_config)
    if log.header is None:
        log.write_header(log_header(spec, args, loaded, settings, greedy_loop))
    stop_str = stop_string(conv_templates[settings["conv_mode"]])
    num_visual_tokens = model.get_model().num_visual_tokens()
    num_layers = model.config.num_hidden_layers
    pad_id = loaded.tokenizer.pad_token_id if loaded.tokenizer.pad_token_id is not None else 0
    workers = args.num_workers if args.num_workers is not None else (4 if str(args.device).startswith("cuda") else 0)
    preparer = SamplePreparer(loaded, settings["conv_mode"], args.image_folder, spec.image_loading,
                              args.question_file)
    loader = torch.utils.data.DataLoader(PreparedItems(pending, preparer), batch_size=args.batch_size,
                                         shuffle=False, num_workers=workers, collate_fn=as_sample_list)
    generation_start = time.perf_counter()
    with tqdm(total=total, initial=total - len(pending), desc=spec.name, unit="q") as progress:
        for prepared in loader:
            samples = [s for s in prepared if isinstance(s, PreparedSample)]
            for failed in (s for s in prepared if isinstance(s, FailedSample)):
                if args.on_error == "fail":
                    raise InputError(failed.message)
                logger.debug("skipped: %s", failed.message)
                errors.record(failed)
                progress.set_postfix(skipped=errors.count, refresh=False)
                progress.update(1)
            if not samples:
                continue
            batch = collate(samples, pad_id)
            output = generate_batch(model, batch, gen)
            rows = [answer_row(s.item, answer_text(loaded.tokenizer, tokens, stop_str), loaded.model_name)
                    for s, tokens in zip(batch.samples, output.new_tokens)]
            answers.append(rows)
            log.append_batch(batch_stats(batch, output, num_visual_tokens, num_layers))
            progress.update(len(rows))
    log.append_run({
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "samples": len(pending),
        "failed_samples": errors.count,
        "errors_file": str(errors.path) if errors.count else None,
        "batch_size": args.batch_size,
        "wall_time_s": time.time() - started,
        "generation_time_s": time.perf_counter() - generation_start,
        "device": device_info(model.device),
        "software": software_versions(),
        **peak_memory(model.device),
    })


class AllSkippedError(InputError):
    """Every question of a run was skipped: the data (usually ``--image-folder``) is wrong."""


def check_something_answered(items: Sequence[EvalItem], errors: SampleErrorLog) -> None:
    """Raises `AllSkippedError` when this run skipped every one of the chunk's questions.

    Raises:
        AllSkippedError: ``all N samples were skipped (first error: ...); see <errors file>``.
    """
    if items and errors.count == len(items):
        raise AllSkippedError(f"all {len(items)} samples were skipped (first error: {errors.first.message}); "
                              f"see {errors.path}")


def _answer_locked(spec: DriverSpec, args: argparse.Namespace, items: List[EvalItem], settings: dict,
                   started: float, errors: SampleErrorLog) -> Optional[Path]:
    """What `run_driver` does while it holds the answers file's lock: resume, answer, record.

    Returns:
        The run record's path, or None when the answers file has no run-stats log.
    """
    if args.overwrite:
        remove_run_files(args.answers_file)
    answers = AnswersFile(args.answers_file)
    log_path = sidecar_path(args.answers_file, RUN_STATS_SUFFIX)
    drop_partial_last_line(log_path)
    log = RunLog.read(log_path)
    check_resume_settings(args.answers_file, log, settings)
    pending = answers.pending(items)
    if pending:
        errors.start_run()
        _answer_pending(spec, args, pending, len(items), answers, log, settings, started, errors)
        check_something_answered(items, errors)
    else:
        print(f"{spec.name}: all {len(items)} questions of {args.answers_file} are answered", file=sys.stderr)
    return write_run_record(args.answers_file)


def run_driver(spec: DriverSpec, args: argparse.Namespace,
               read_items: Callable[[argparse.Namespace], List[EvalItem]]) -> int:
    """Answers the chunk's questions not yet in the answers file, then rewrites the run record.

    Flags and the model path are checked first, then the answers file's path
    (`llava.eval.driver.output_paths.check_output_file`: not a directory, not an input, a writable
    folder), then the question file is read (and checked) before the model is loaded; the model is not loaded at all when every question
    is already answered. The answers file is locked while the run writes it
    (`llava.eval.driver.answers_file.lock_answers_file`).

    Args:
        spec: the driver.
        args: parsed `build_parser` flags plus the driver's own.
        read_items: the driver's reader: the chunk's items from ``args``.

    Returns:
        0 on success (questions skipped under ``--on-error skip`` included, with a line on
        stderr naming the errors file), 2 (after a one-line message on stderr) on bad input,
        including another run writing the same answers file, a run that skipped every question, and
        a filesystem fault while writing (a full disk, a read-only folder: ``writing_to``).
    """
    started = time.time()
    errors = SampleErrorLog(args.answers_file)
    try:
        check_args(args)
        check_model_paths(args)
        check_output_file(args.answers_file, "--answers-file",
                          inputs={"--question-file": args.question_file, "--recipe": getattr(args, "recipe", None)})
        items = read_items(args)
        conv_mode = resolve_conv_mode(args.conv_mode, get_model_name_from_path(os.path.expanduser(args.model_path)),
                                      spec.mmtag_rule)
        settings = answer_settings(args, conv_mode)
        with writing_to(args.answers_file, RESUME_HINT), lock_answers_file(args.answers_file):
            record = _answer_locked(spec, args, items, settings, started, errors)
    except (InputError, AnswersFileError, CheckpointError, FileNotFoundError, RecipeError, RunRecordError,
            UsageError) as err:
        return usage_error(spec.name, err)
    if errors.count:
        print(f"{spec.name}: {errors.count} of {len(items)} questions skipped (image or prompt unusable; first: "
              f"{errors.first.message}); listed in {errors.path}", file=sys.stderr)
    if record is not None:
        print(f"{spec.name}: {len(items) - errors.count} answers in {args.answers_file}; run record {record} "
              f"({time.time() - started:.1f} s)", file=sys.stderr)
    return 0
