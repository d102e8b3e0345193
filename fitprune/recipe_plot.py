"""Drawing recipe books: keep counts per layer, one line per budget (matplotlib)."""
from __future__ import annotations

from llava.model.pruning.recipe import RecipeBook


def plot_recipes(book: RecipeBook, path: str) -> None:
    """Keep counts per layer, one line per budget, saved as PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError as err:
        raise SystemExit(f"--plot needs matplotlib: pip install matplotlib ({err})") from None
    fig, ax = plt.subplots(figsize=(8.5, 4))
    colours = plt.cm.viridis([i / max(1, len(book.recipes) - 1) for i in range(len(book.recipes))])
    fractional = any(recipe.is_fractional for recipe in book.recipes)
    for recipe, colour in zip(book.recipes, colours):
        counts = [recipe.num_visual_tokens] + list(recipe.keep_counts)
        if fractional:
            counts = [100 * c / recipe.num_visual_tokens for c in counts]
        ax.plot(range(len(counts)), counts, marker=".", color=colour,
                label=f"{recipe.reduction_ratio:g}% (achieved {recipe.achieved_paper:.1f}%)")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("after layer (0 = input)")
    ax.set_ylabel("% of each sample's visual tokens kept" if fractional else "visual tokens kept")
    ax.set_title(f"FitPrune recipes: {book.model.name}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
