"""The lab: the demo, the benchmarks and the tiny models they and the tests run on.

It depends on `llava` (inference, pruning) and on `fitprune` (calibration); nothing imports
it but the command-line launchers kept at the README's names (`fitprune/demo.py`,
`fitprune/bench.py`, `fitprune/train_demo.py`, `fitprune/synthetic.py`,
`benchmarks/prefill_speed.py`) and the tests.

- `answers`: first-token answer accuracy of a model on a question file with one-word answers.
- `baselines`: FastV's and uniform keep counts matched to a FLOPs budget; a pruner installed on given counts.
- `bench`: `python -m fitprune.bench`, pruning quality on the demo model, FitPrune against the baselines.
- `benchmarks_file`: replaces one section of BENCHMARKS.md, keeping the others.
- `decode_speed`: `python benchmarks/decode_speed.py`, decode tokens/s and KV-cache bytes by batch size and budget.
- `demo`: `python -m fitprune.demo`, the main job: calibrate the demo model, accuracy pruned and unpruned.
- `long_prompt_memory`: `python benchmarks/long_prompt_memory.py`, a long prompt's peak memory, pruned and not.
- `bench_timing`: timing on a shared CPU for the speed benchmarks: machine, contended rounds set aside, their flags.
- `prefill_setup`: the prefill benchmark's random LLaVA-shaped decoder, prompt and per-budget keep counts.
- `prefill_speed`: `python benchmarks/prefill_speed.py`, timing those prefills and writing their table.
- `scenes`: the shapes task's settings, its scenes (objects on a grid) and their rendering.
- `scene_questions`: questions about a scene with their one-word answers, and each split's stream.
- `score_profile`: FitPrune's cross and self scores at one layer, averaged over samples, by image position.
- `synthetic_cli`: `python -m fitprune.synthetic --task shapes|scenes`.
- `synthetic`: `python -m fitprune.synthetic`, the shapes task's data files (question jsonl, images, eval tree).
- `tiny_checkpoint`: writes a tiny random LLaVA-1.5 / LLaVA-NeXT checkpoint in the real layout.
- `tokenizer`: a tiny LLaMA-style SentencePiece tokenizer trained locally, for offline models.
- `train_demo`: `python -m fitprune.train_demo`, trains the bundled demo model on the shapes task.
"""
