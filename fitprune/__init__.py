"""FitPrune: training-free visual-token pruning for LLaVA-style models.

Submodules:
    flops: pure FLOPs counting functions (paper and full conventions).
    recipe: pruning recipes (per-layer visual-token keep counts) saved as versioned JSON.
"""
