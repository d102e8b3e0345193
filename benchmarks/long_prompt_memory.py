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
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script from any directory
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks.long_prompt_memory_report import (  # noqa: E402
    DRIVER, FILLER_SENTENCE, SECTION_HEADING, RatioResult, format_section,
)
from benchmarks.memory_probe import BenchmarkError, probe_main, resident_bytes  # noqa: E402
from fitprune.defaults import DEMO_MODEL_PATH, SHAPES_DIR  # noqa: E402
from fitprune.lab.benchmarks_file import command_line, write_section  # noqa: E402

COMMAND = "python benchmarks/long_prompt_memory.py"
PROBE_FLAG = "--probe-prefill"
RUN_RECORD_SUFFIX = ".run.json"  # llava.eval.records.sidecar_files.RUN_RECORD_SUFFIX (importing llava loads torch)
QUESTION = "What color is the triangle?\nAnswer the question using a single word or phrase."
UNMAPPED_MALLOC = {"MALLOC_MMAP_THRESHOLD_": "65536"}


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
