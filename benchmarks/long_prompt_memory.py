"""Peak memory of a long prompt through `llava.eval.model_vqa_loader` on the demo model, unpruned and pruned.

The benchmark lives in `fitprune.lab.long_prompt_memory` (question file, driver runs, prefill
probes, table); this launcher keeps the command
``python benchmarks/long_prompt_memory.py [--text-tokens 3500] [--ratios 60] [--output BENCHMARKS.md]``.
"""
import sys

from fitprune.lab.long_prompt_memory import main

if __name__ == "__main__":
    sys.exit(main())
