"""Timing on a shared CPU for the lab's speed benchmarks: the machine, rounds of alternating
runs that set aside rounds other processes contended, and the flags and lines about them.

Used by `benchmarks/prefill_speed.py` and `benchmarks/decode_speed.py`.
"""
from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch

# ----------------------------------------------------------------------------- machine


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else from `platform`."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def busy_cpu_seconds() -> Optional[float]:
    """CPU seconds all processes have spent busy since boot (Linux /proc/stat), or None."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    ticks = [int(value) for value in fields]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """CPU seconds this process has used (user + system)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# ----------------------------------------------------------------------------- timing


@dataclass
class Timings:
    """Seconds per call of each run, one entry per round kept.

    Attributes:
        seconds: run name -> seconds in each kept round (same round order for every run).
        inner: run name -> what the run returned in each kept round (e.g. seconds spent in
            the pruner), for runs that return a number.
        contended_kept: kept rounds during which other processes used more than the quiet limit.
        contended_dropped: contended rounds set aside and re-run.
        others_cores: mean cores other processes kept busy over the kept rounds (None if unknown).
        wall: seconds the timing took, warm-up included.
    """

    seconds: Dict[str, List[float]]
    inner: Dict[str, List[float]]
    contended_kept: int
    contended_dropped: int
    others_cores: Optional[float]
    wall: float


def others_busy_cores(
    before: Tuple[Optional[float], float, float], after: Tuple[Optional[float], float, float]
) -> Optional[float]:
    """Cores that other processes kept busy between two (`busy_cpu_seconds`,
    `own_cpu_seconds`, wall time) readings, or None if /proc/stat is unreadable."""
    (busy0, own0, wall0), (busy1, own1, wall1) = before, after
    if busy0 is None or busy1 is None or wall1 <= wall0:
        return None
    return max(0.0, (busy1 - busy0) - (own1 - own0)) / (wall1 - wall0)


def time_rounds(
    runs: Dict[str, Callable[[], Optional[float]]],
    warmup: int,
    repeats: int,
    quiet_cores: float,
    max_seconds: float,
    clock: Callable[[], float] = time.perf_counter,
) -> Timings:
    """Times every run once per round, the runs alternating so slow drifts hit all alike;
    each round starts one run further along the list, so no run always follows the same one.

    Until `max_seconds` have passed, each round waits (in 1 s steps) for other processes
    to use at most `quiet_cores` cores, and a round during which they used more is set
    aside and repeated; after that, set-aside rounds make up the shortfall, least
    contended first.

    Args:
        runs: name -> a callable doing one full prefill; it may return a number measured
            inside the call, kept in `Timings.inner`.
        warmup: untimed rounds first.
        repeats: rounds to keep.
        quiet_cores: most cores other processes may use during a round that counts as quiet.
        max_seconds: how long to keep re-running contended rounds.
        clock: times each call (wall clock by default; `time.process_time` counts this
            process's CPU time).

    Returns:
        The kept rounds' times and how contended they were.
    """
    begin = time.perf_counter()
    for _ in range(warmup):
        for run in runs.values():
            run()
    quiet: List[Dict[str, Tuple[float, Optional[float]]]] = []
    quiet_others: List[Optional[float]] = []
    contended: List[Tuple[float, Dict[str, Tuple[float, Optional[float]]]]] = []
    names = list(runs)
    start_rounds = time.perf_counter()
    while len(quiet) < repeats and (
        time.perf_counter() - start_rounds < max_seconds or len(quiet) + len(contended) < repeats
    ):
        while time.perf_counter() - start_rounds < max_seconds:
            before = (busy_cpu_seconds(), own_cpu_seconds(), time.perf_counter())
            time.sleep(1.0)
            others = others_busy_cores(before, (busy_cpu_seconds(), own_cpu_seconds(), time.perf_counter()))
            if others is None or others <= quiet_cores:
                break
        busy0, own0, wall0 = busy_cpu_seconds(), own_cpu_seconds(), time.perf_counter()
        sample = {}
        shift = (len(quiet) + len(contended)) % len(names)
        for name in names[shift:] + names[:shift]:
            start = clock()
            inner = runs[name]()
            sample[name] = (clock() - start, inner)
        others = others_busy_cores((busy0, own0, wall0), (busy_cpu_seconds(), own_cpu_seconds(), time.perf_counter()))
        if others is None or others <= quiet_cores:
            quiet.append(sample)
            quiet_others.append(others)
        else:
            contended.append((others, sample))
    contended.sort(key=lambda item: item[0])
    filler = contended[: repeats - len(quiet)]
    kept = quiet + [sample for _, sample in filler]
    others_kept = quiet_others + [others for others, _ in filler]
    known = [others for others in others_kept if others is not None]
    return Timings(
        seconds={name: [sample[name][0] for sample in kept] for name in runs},
        inner={name: [sample[name][1] for sample in kept] for name in runs if kept and kept[0][name][1] is not None},
        contended_kept=len(filler),
        contended_dropped=len(contended) - len(filler),
        others_cores=statistics.fmean(known) if known and len(known) == len(others_kept) else None,
        wall=time.perf_counter() - begin,
    )


# ----------------------------------------------------------------------------- flags and report lines


def add_timing_flags(parser: argparse.ArgumentParser, max_seconds: float) -> argparse.ArgumentParser:
    """Adds --threads, --clock, --quiet-cores, --max-seconds (default `max_seconds`) and --allow-contended."""
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all available cores)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall: time.perf_counter; cpu: this process's CPU time (with --threads 1, a "
                             "fallback for a machine whose cores other processes share)")
    parser.add_argument("--quiet-cores", type=float, default=None,
                        help="a round during which other processes used more cores than this is set aside and "
                             "re-run (default: the cores --threads leaves free, plus 0.25)")
    parser.add_argument("--max-seconds", type=float, default=max_seconds,
                        help="how long to wait for quiet rounds before keeping the least contended ones")
    parser.add_argument("--allow-contended", action="store_true",
                        help="write the section even when most kept rounds were contended")
    return parser


def apply_timing_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Checks --threads, fills in --quiet-cores, sets torch's threads; returns the thread count.

    Raises:
        SystemExit: status 2 (argparse's error) for --threads below 1.
    """
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    threads = args.threads or available_cores()
    if args.quiet_cores is None:
        args.quiet_cores = max(0, available_cores() - threads) + 0.25
    torch.set_num_threads(threads)
    return threads


def clock_of(args: argparse.Namespace) -> Callable[[], float]:
    """The clock --clock names: wall time or this process's CPU time, in seconds."""
    return time.perf_counter if args.clock == "wall" else time.process_time


def contention_text(args: argparse.Namespace, timings: "Timings") -> str:
    """How busy the other processes kept the cores over the kept rounds."""
    if timings.others_cores is None:
        return "the CPU use of other processes is unknown (no /proc/stat)"
    return (
        f"other processes kept {timings.others_cores:.2f} of the {available_cores()} cores busy on average over "
        f"the rounds kept ({timings.contended_kept} of {args.repeats} rounds contended, i.e. above "
        f"{args.quiet_cores:g} cores; {timings.contended_dropped} more contended rounds set aside)"
    )


def too_contended(args: argparse.Namespace, timings: "Timings") -> bool:
    """True (after a message on stderr naming the way out) when most kept rounds were contended and
    --allow-contended was not given: the section must not be written."""
    if 2 * timings.contended_kept <= args.repeats or args.allow_contended:
        return False
    print(f"NOT writing {args.output}: {timings.contended_kept} of {args.repeats} rounds ran while other processes "
          f"used more than {args.quiet_cores:g} cores; re-run on a quieter machine, with --threads 1 (cores left "
          "to the others), or pass --allow-contended", file=sys.stderr)
    return True
