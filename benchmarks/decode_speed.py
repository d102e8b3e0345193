"""Decode speed and KV-cache size of FitPrune pruning on a LLaVA-shaped random decoder, on CPU.

The benchmark lives in `fitprune.lab.decode_speed` (timing and table; model, prompt and keep
counts from `fitprune.lab.prefill_setup`); this launcher keeps the command
``python benchmarks/decode_speed.py [--steps 12] [--repeats 3] [--output BENCHMARKS.md]``.
"""
import sys

from fitprune.lab.decode_speed import main

if __name__ == "__main__":
    sys.exit(main())
