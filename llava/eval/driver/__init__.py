"""The machinery behind the generation drivers (`llava.eval.model_vqa*`): flags, question files,
samples, batched generation, answers files that resume, output checks and run bookkeeping."""
