"""The lab: the demo, the quality benchmark, the synthetic tasks and the tiny models they and
the tests run on.

It depends on `llava` (inference, pruning) and on `fitprune` (calibration); nothing imports
it but the command-line entry points the README documents (`fitprune/demo.py`,
`fitprune/bench.py`, `fitprune/train_demo.py`, `fitprune/synthetic.py`), the speed benchmarks
in `benchmarks/` and the tests.

Tasks, one folder each:

- `shapes`: the shapes task (the demo model's): scenes, questions, data files.
- `scenes`: the relational scenes task (the scenes model's): scenes, questions, data files.

Shared pieces:

- `answers`: first-token answer accuracy of a model on a question file with one-word answers.
- `baselines`: FastV's and uniform keep counts matched to a FLOPs budget; a pruner installed on given counts.
- `bench`: `python -m fitprune.bench`, pruning quality on the demo model, FitPrune against the baselines.
- `bench_timing`: timing on a shared CPU for the speed benchmarks: machine, contended rounds set aside, their flags.
- `benchmarks_file`: replaces one section of BENCHMARKS.md, keeping the others.
- `demo`: `python -m fitprune.demo`, the main job: calibrate the demo model, accuracy pruned and unpruned.
- `lr_schedule`: the warm-up and cosine learning-rate schedule of the lab's training.
- `oracle`: accuracy when the pruner keeps the patches a question refers to (scenes task).
- `painting`: shapes painted on a canvas, anti-aliased (both tasks draw with it).
- `patch_pretraining`: pretrains the scenes model's vision tower on patch labels.
- `prefill_setup`: the speed benchmarks' random LLaVA-shaped decoder, prompt and per-budget keep counts.
- `score_profile`: FitPrune's cross and self scores at one layer, averaged over samples, by image position.
- `synthetic`: `python -m fitprune.synthetic --task shapes|scenes`, a task's data files.
- `tiny_checkpoint`: writes a tiny random LLaVA-1.5 / LLaVA-NeXT checkpoint in the real layout.
- `tokenizer`: a tiny LLaMA-style SentencePiece tokenizer trained locally, for offline models.
- `train_demo`: `python -m fitprune.train_demo`, trains the demo model (shapes) or the scenes model.
"""
