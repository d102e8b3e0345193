"""The shapes task: two coloured shapes on a grid, each question answered by one image patch
(the bundled demo model's task; `fitprune.lab.shapes.data` describes it whole).

- `scenes`: the task's settings (`ShapesTask`), its scenes and their rendering.
- `questions`: questions about a scene with their one-word answers, and each split's stream.
- `data`: the task's data files (question jsonl, images, LLaVA's eval tree), written by
  ``python -m fitprune.synthetic --task shapes``.
"""
