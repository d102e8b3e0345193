"""FitPrune's offline side: from attention statistics to recipe files for `llava.model.pruning`.

Modules:
    stats: per-layer attention statistics of a calibration set (cross and self scores).
    fit: the fit of per-layer keep counts to a FLOPs budget, as functions of the statistics.
    calibrate: ``python -m fitprune.calibrate``: runs stats and fit on a model and writes the recipe file.
    calibration_set: the calibration samples drawn, batched and shared between torchrun ranks.
    recipe_merge: a calibration's provenance and how its recipes join an existing recipe file.
    published: the FitPrune authors' published recipes converted into a recipe book.
    recipe: ``python -m fitprune.recipe``: show a recipe file, import the authors' recipes.
    recipe_plot: keep counts per layer drawn as a PNG.
    report: ``python -m fitprune.report``: paper-style tables from eval run records.
    run_collection: the eval runs under a runs folder (llava.eval.records), read into `Run`s for the report.
    visualize: ``python -m fitprune.visualize``: the kept patches drawn over an image.
    defaults: the bundled default model and data.
    demo, bench, train_demo, synthetic: the lab's commands under their usual names.
    lab: the demo model, its synthetic data and training, benchmarks (depends on llava and
        fitprune; nothing imports it).

Inference (the pruner, policies, recipe format, FLOPs) is `llava.model.pruning`, which never
imports this package.
"""
