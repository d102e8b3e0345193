"""Prefill speed of FitPrune pruning on a LLaVA-shaped random decoder, on CPU.

The benchmark lives in `fitprune.lab.prefill_speed` (timing and table) and
`fitprune.lab.prefill_setup` (model, prompt, keep counts); this launcher keeps the command
``python benchmarks/prefill_speed.py [--repeats 7] [--output BENCHMARKS.md]``.
"""
import sys

from fitprune.lab.prefill_speed import main

if __name__ == "__main__":
    sys.exit(main())
