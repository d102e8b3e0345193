"""The BENCHMARKS.md section of `python benchmarks/long_prompt_memory.py`: what one reduction
ratio measured (the driver's run record and the prefill probes) and the table of every ratio
against the unpruned run, with the peak-memory requirement's check."""
from __future__ import annotations

import argparse
import datetime
from dataclasses import dataclass
from typing import Dict, List

SECTION_HEADING = "## Long-prompt memory (benchmarks/long_prompt_memory.py)"
DRIVER = "llava.eval.model_vqa_loader"
FILLER_SENTENCE = "The red square is to the left of the blue circle. "
PEAK_LIMIT = 1.2  # the target: peak memory of a pruned run at most 1.2x the unpruned one


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
        f"- Target: driver peak at most {PEAK_LIMIT}x the unpruned run's: " + "; ".join(checks) + ".",
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
