"""The relational scenes task: five to eight shapes in two sizes, colours and shapes repeated,
questions about attributes, relations, counts and presence (the scenes model's task).

- `scenes`: the task's settings (`RelationalTask`), its scenes and their rendering.
- `questions`: questions about a scene with the cells they refer to, each split's stream, and
  the data files written by ``python -m fitprune.synthetic --task scenes``.
- `eval_layout`: the test split as LLaVA's TextVQA / POPE eval tree (``playground/scenes/eval``).

It reuses the shapes task's shapes (`fitprune.lab.painting`), POPE negatives and eval-tree
writer (`fitprune.lab.shapes`).
"""
