"""The speed and memory benchmarks, each a script that writes its section of BENCHMARKS.md
(``python benchmarks/prefill_speed.py``, ``decode_speed.py``, ``long_prompt_memory.py``); their
shared pieces are lab modules (`fitprune.lab.prefill_setup`, `bench_timing`, `benchmarks_file`).
The quality benchmark on the demo model is ``python -m fitprune.bench``."""
