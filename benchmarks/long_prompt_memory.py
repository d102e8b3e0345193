"""Peak memory of a long prompt through `llava.eval.model_vqa_loader` on the demo model, unpruned
and pruned (`python benchmarks/long_prompt_memory.py`).

A question file of ``--questions`` questions, each about ``--text-tokens`` text tokens (a
sentence repeated, then a question about the image) with one image of the shapes task, is
answered by ``python -m llava.eval.model_vqa_loader`` at reduction ratio 0 and at each of
``--reduction-ratio``, one driver process per ratio; its run record (``<answers>.run.json``) gives the
process's peak resident set (``memory.peak_bytes``, ru_maxrss). That peak is mostly Python,
torch and the model, so the prefill's own share is measured too: a fresh process per ratio
(this module with ``--probe-prefill`` and the driver's flags) loads the model as the driver
does and prefills the long prompt twice, each time after resetting the kernel's resident-set
high-water mark (``/proc/self/clear_refs``); a prefill's peak increment is the high-water mark
after it minus the resident set before. The probe runs twice per ratio, with
glibc's default malloc and with ``MALLOC_MMAP_THRESHOLD_=65536`` (every block of 64 KiB or
more returned to the system when freed, so the resident set follows the live tensors).

This process imports neither torch nor llava: on Linux a child's ru_maxrss starts at its
parent's peak resident set, so a heavy parent would inflate the drivers' records.

Run: ``python benchmarks/long_prompt_memory.py [--text-tokens 3500] [--reduction-ratio 60] [--output BENCHMARKS.md]``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from fitprune.defaults import DEMO_MODEL_PATH, SHAPES_DIR
from fitprune.lab.benchmarks_file import command_line, write_section

REPO_ROOT = Path(__file__).resolve().parents[2]
COMMAND = "python benchmarks/long_prompt_memory.py"
SECTION_HEADING = "## Long-prompt memory (benchmarks/long_prompt_memory.py)"
PROBE_FLAG = "--probe-prefill"
DRIVER = "llava.eval.model_vqa_loader"
RUN_RECORD_SUFFIX = ".run.json"  # llava.eval.records.sidecar_files.RUN_RECORD_SUFFIX (importing llava loads torch)
FILLER_SENTENCE = "The red square is to the left of the blue circle. "
QUESTION = "What color is the triangle?\nAnswer the question using a single word or phrase."
UNMAPPED_MALLOC = {"MALLOC_MMAP_THRESHOLD_": "65536"}
PEAK_LIMIT = 1.2  # issue 15: peak memory of a pruned run at most 1.2x the unpruned one


class BenchmarkError(Exception):
    """A child process failed or the setup cannot run; the message is one line for stderr."""


@dataclass
class RatioResult:
    """What one reduction ratio measured.

    Attributes:
        ratio: the reduction ratio, percent (0: unpruned).
        record: the driver's run record.
        probe: the prefill probe's report with the default malloc (see `probe_prefill`).
        probe_unmapped: the same with large blocks unmapped when freed.
    """

    ratio: float
    record: dict
    probe: dict
    probe_unmapped: dict

    @property
    def driver_peak(self) -> int:
        """Peak resident bytes of the driver process, from its run record."""
        return int(self.record["memory"]["peak_bytes"])

    def measures(self) -> Dict[str, int]:
        """Each memory figure of the table, in bytes, by column name."""
        return {
            "driver peak MiB": self.driver_peak,
            "1st prefill +MiB": self.probe["increments"][0],
            "2nd prefill +MiB": self.probe["increments"][1],
            "1st prefill +MiB, large blocks unmapped": self.probe_unmapped["increments"][0],
        }


# ----------------------------------------------------------------------------- the probe (a child process)


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


# ----------------------------------------------------------------------------- the benchmark (this process)


def filler_text(tokenizer_model: Path, text_tokens: int) -> str:
    """`FILLER_SENTENCE` repeated the fewest times whose SentencePiece encoding has at least
    `text_tokens` tokens, then `QUESTION`.

    Raises:
        BenchmarkError: the model has no ``tokenizer.model``.
    """
    import sentencepiece

    if not tokenizer_model.is_file():
        raise BenchmarkError(f"{tokenizer_model}: no SentencePiece model, needed to size the prompt")
    processor = sentencepiece.SentencePieceProcessor(model_file=str(tokenizer_model))
    low, high = 1, max(1, text_tokens)  # one sentence is at least one token
    while low < high:
        middle = (low + high) // 2
        if len(processor.encode(FILLER_SENTENCE * middle)) >= text_tokens:
            high = middle
        else:
            low = middle + 1
    return (FILLER_SENTENCE * low).rstrip() + "\n" + QUESTION


def write_questions(path: Path, text: str, image: str, count: int) -> None:
    """A LLaVA question JSONL: `count` questions with the same text and image."""
    path.write_text("".join(json.dumps({"question_id": i, "image": image, "text": text}) + "\n" for i in range(count)))


def child_env(args: argparse.Namespace, extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """The environment of a child: ours, the repository on PYTHONPATH, --threads, `extra`."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    if args.threads is not None:
        env["OMP_NUM_THREADS"] = str(args.threads)
    env.update(extra or {})
    return env


def run_child(command: List[str], env: Dict[str, str], what: str) -> str:
    """Runs a child process; returns its stdout.

    Raises:
        BenchmarkError: it failed; the message gives its last stderr line.
    """
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines() or ["(no output)"]
        raise BenchmarkError(f"{what} exited with status {result.returncode}: {lines[-1]}")
    return result.stdout


def measure_ratio(args: argparse.Namespace, question_file: Path, work: Path, ratio: float) -> RatioResult:
    """The two prefill probes and the driver run of one reduction ratio."""
    answers = work / f"{Path(args.model_path).name}-r{ratio:g}.jsonl"
    flags = [
        "--model-path", args.model_path, "--question-file", str(question_file), "--image-folder", args.image_folder,
        "--answers-file", str(answers), "--conv-mode", args.conv_mode, "--temperature", "0",
        "--max-new-tokens", str(args.max_new_tokens), "--device", args.device, "--reduction-ratio", f"{ratio:g}",
        "--overwrite", "--on-error", "fail",
    ]
    probe_command = [sys.executable, str(Path(__file__).resolve()), PROBE_FLAG, *flags]
    probes = [json.loads(run_child(probe_command, child_env(args, extra), f"prefill probe at ratio {ratio:g}")
                         .splitlines()[-1])
              for extra in (None, UNMAPPED_MALLOC)]
    run_child([sys.executable, "-m", DRIVER, *flags], child_env(args), f"{DRIVER} at ratio {ratio:g}")
    record = json.loads(answers.with_name(answers.stem + RUN_RECORD_SUFFIX).read_text())
    return RatioResult(ratio, record, *probes)


def own_peak_resident() -> int:
    """This process's peak resident set, in bytes (a child's ru_maxrss starts at it)."""
    return resident_bytes()["VmHWM"]


def format_section(args: argparse.Namespace, command: str, results: List[RatioResult], parent_peak: int,
                   wall: float) -> str:
    """The Markdown section: setup, machine, the table and the requirement's check."""
    base, probe = results[0], results[0].probe
    sequence = probe["prompt_tokens"] + probe["visual_tokens"]
    columns = list(base.measures())
    header = "| ratio | visual left | " + " | ".join(f"{name} | vs unpruned" for name in columns) + " | prefill s |"
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for result in results:
        cells = [f"{value / 2**20:.0f} | {value / base.measures()[name]:.2f}"
                 for name, value in result.measures().items()]
        lines.append(f"| {ratio_label(result.ratio)} | {result.probe['visual_left']} | " + " | ".join(cells)
                     + f" | {result.probe['prefill_s'][1]:.2f} |")
    checks = [
        f"ratio {r.ratio:g}: {r.driver_peak / base.driver_peak:.2f}x "
        f"({'met' if r.driver_peak <= PEAK_LIMIT * base.driver_peak else 'NOT met'})"
        for r in results[1:]
    ]
    inherited = max(r.driver_peak for r in results) <= parent_peak
    return "\n".join([
        SECTION_HEADING,
        "",
        f"{args.questions} question(s) of {probe['prompt_tokens']} prompt tokens (conversation template + "
        f"`{FILLER_SENTENCE.strip()}` repeated to {args.text_tokens} tokens or more + a question) with the image "
        f"`{args.image}`, i.e. {sequence} tokens with its {probe['visual_tokens']} visual tokens of the model's "
        f"{probe['context']}-token context, answered by `python -m {DRIVER}` on `{args.model_path}` ({args.device}, "
        f"fp32, greedy, at most {args.max_new_tokens} new tokens), one process per ratio.",
        "",
        f"- Machine: {probe['machine']}; {probe['versions']}.",
        f"- Date: {datetime.date.today().isoformat()}. Command: `{command}`; took {wall:.0f} s.",
        "- driver peak: the run record's `memory.peak_bytes` (ru_maxrss of the whole driver process: Python, torch, "
        "the model, the run). 1st / 2nd prefill +MiB: the rise of the resident set over the first and the second "
        "prefill of the same prompt (vision tower, decoder and pruning up to the first token's logits) in a fresh "
        "process per ratio that loads the model as the driver does: the high-water mark after the prefill (reset "
        "just before it, `/proc/self/clear_refs`, after `malloc_trim`) minus the resident set before it. Large "
        "blocks unmapped: the first prefill with `MALLOC_MMAP_THRESHOLD_=65536`, so that glibc returns every block "
        "of 64 KiB or more to the system when it is freed and the resident set follows the live tensors. "
        "prefill s: the second prefill's wall time.",
        f"- Requirement (issue 15), driver peak at most {PEAK_LIMIT}x the unpruned run's: " + "; ".join(checks) + ".",
        f"- This process's peak resident set when it started the children: {parent_peak / 2**20:.0f} MiB"
        + (" — at least the drivers' peaks, so their ru_maxrss may be this process's (on Linux a child's starts at "
           "its parent's); run the benchmark on its own." if inherited else
           " (below the drivers' peaks, which are therefore their own)."),
        "",
        *lines,
        "",
        "Cache tokens per layer after the prefill:",
        "",
        *[f"- {ratio_label(r.ratio)}: {r.probe['cache_tokens']}" for r in results],
        "",
    ])


def ratio_label(ratio: float) -> str:
    """A ratio as the table shows it: "unpruned" for 0, else the percent."""
    return "unpruned" if ratio == 0 else f"{ratio:g}"


PARSE_RATIOS = """import json, sys
from llava.model.pruning.ratio import parse_reduction_ratio
print(json.dumps([parse_reduction_ratio(value) for value in sys.argv[1:]]))
"""


def parse_ratios_in_child(values: Sequence[str]) -> List[float]:
    """The budgets as percents, parsed by `llava.model.pruning.ratio.parse_reduction_ratio` in a
    child process, since this one keeps torch and llava out (see the module docstring).

    Raises:
        BenchmarkError: a value the parser refuses; the message is the parser's.
    """
    result = subprocess.run([sys.executable, "-c", PARSE_RATIOS, *values], capture_output=True, text=True)
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines() or ["(no output)"]
        raise BenchmarkError(lines[-1].split(": ", 1)[-1])
    return json.loads(result.stdout.splitlines()[-1])


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-path", default=DEMO_MODEL_PATH)
    parser.add_argument("--image-folder", default=SHAPES_DIR)
    parser.add_argument("--image", default="images/test_0000.png", help="the questions' image, under --image-folder")
    parser.add_argument("--conv-mode", default="vicuna_v1")
    parser.add_argument("--text-tokens", type=int, default=3500, help="tokens of each question's text, at least")
    parser.add_argument("--questions", type=int, default=1, help="questions in the file (all the same)")
    parser.add_argument("--reduction-ratio", dest="reduction_ratios", metavar="R", nargs="+",
                        default=["60"],
                        help="pruned budgets, percent (60) or fraction (0.6), compared with the unpruned run")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of the children (default: theirs)")
    parser.add_argument("--work-dir", default=None,
                        help="folder for the question file, answers and run records (default: a temporary one)")
    parser.add_argument("--output", default=str(REPO_ROOT / "BENCHMARKS.md"),
                        help="Markdown file to write the section into ('-' only prints it)")
    args = parser.parse_args(argv)
    for flag, value in (("--text-tokens", args.text_tokens), ("--questions", args.questions),
                        ("--max-new-tokens", args.max_new_tokens), ("--threads", args.threads or 1)):
        if value < 1:
            parser.error(f"{flag} must be >= 1, got {value}")
    try:
        args.reduction_ratios = parse_ratios_in_child(args.reduction_ratios)
    except BenchmarkError as err:
        parser.error(f"--reduction-ratio: {err}")
    if 0 in args.reduction_ratios:
        parser.error("--reduction-ratio: 0 is the unpruned run, which always runs; give pruned ratios only")
    if not (Path(args.image_folder) / args.image).is_file():
        parser.error(f"--image: {Path(args.image_folder) / args.image} is not a file")
    if not (Path(args.model_path) / "config.json").is_file():
        parser.error(f"--model-path: {args.model_path}/config.json is not a file")
    return args


def run_benchmark(args: argparse.Namespace, work: Path) -> List[RatioResult]:
    """Writes the question file into `work` and measures the unpruned run, then each ratio."""
    question_file = work / "long_prompt.jsonl"
    write_questions(question_file, filler_text(Path(args.model_path) / "tokenizer.model", args.text_tokens),
                    args.image, args.questions)
    results = []
    for ratio in (0.0, *args.reduction_ratios):
        results.append(measure_ratio(args, question_file, work, ratio))
        print(f"ratio {ratio:g}: " + ", ".join(f"{name} {value / 2**20:.0f}"
                                             for name, value in results[-1].measures().items()), file=sys.stderr)
    return results


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the probes and the drivers, prints the section and writes it into `--output`; with
    ``--probe-prefill`` first, is the probe process instead (see `probe_main`).

    Returns:
        0, or 2 after a one-line message when a child failed or a flag is wrong.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == [PROBE_FLAG]:
        return probe_main(argv[1:])
    args = parse_args(argv)
    command = command_line(COMMAND, argv)
    start = time.perf_counter()
    try:
        if args.work_dir is None:
            with tempfile.TemporaryDirectory(prefix="long_prompt_memory-") as work:
                results = run_benchmark(args, Path(work))
        else:
            Path(args.work_dir).mkdir(parents=True, exist_ok=True)
            results = run_benchmark(args, Path(args.work_dir))
    except BenchmarkError as err:
        print(f"long_prompt_memory: error: {err}", file=sys.stderr)
        return 2
    section = format_section(args, command, results, own_peak_resident(), time.perf_counter() - start)
    print(section)
    if args.output != "-":
        write_section(Path(args.output), SECTION_HEADING, section)
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
