"""Command line for recipe files: ``show`` one as a table (and draw it), ``import-published`` the
authors' recipes (`fitprune.published`).

    python -m fitprune.recipe show llava/model/pruning/recipes/llava-v1.5-7b.json --plot recipes.png

The recipe format itself (`Recipe`, `RecipeBook`) is `llava.model.pruning.recipe`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from fitprune.published import import_published
from fitprune.recipe_plot import plot_recipes
from llava.json_reading import loads_json
from llava.model.pruning.recipe import RecipeBook, RecipeError, format_ratio
from llava.model.pruning.recipe_fields import FULL_CONVENTION_OTHER_TOKENS
from llava.utils import usage_error


def format_table(book: RecipeBook, where: str) -> str:
    """A recipe book as the text table that ``show`` prints: the model, the provenance, and per
    budget the FLOPs removed (percent, both conventions), the final visual tokens and the keep counts."""
    m = book.model
    lines = [
        f"{where}: model '{m.name}': {m.num_layers} layers, hidden {m.hidden_size}, FFN {m.intermediate_size}, "
        f"{m.num_attention_heads} heads ({m.num_key_value_heads} key/value), vocab {m.vocab_size}, "
        f"{m.num_visual_tokens} visual tokens",
        "FLOPs removed: paper % = visual tokens only, 1 FLOP per multiply-add; full % = every token with "
        f"{FULL_CONVENTION_OTHER_TOKENS} prefix+text tokens, 2 FLOPs per multiply-add, LM head included",
    ]
    lines += [f"provenance {key}: {value}" for key, value in sorted(book.provenance.items())]
    header = f"{'ratio %':>8} {'paper %':>8} {'full %':>8} {'final':>6} {'alpha':>6}  {'fit':<22} keep counts"
    lines.append(header)
    for r in book.recipes:
        alpha = "-" if r.alpha is None else f"{r.alpha:.3f}"
        keep = " ".join(map(str, r.keep_counts))
        if r.is_fractional:
            keep = "fractions of each sample's visual tokens: " + " ".join(f"{f:g}" for f in r.keep_fractions)
        lines.append(
            f"{format_ratio(r.reduction_ratio):>8} {r.achieved_paper:>8.2f} {r.achieved_full:>8.2f} "
            f"{r.final_visual_tokens:>6} {alpha:>6}  {r.fit:<22} {keep}"
        )
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command line: ``show`` a recipe book, or ``import-published`` the authors' recipes.

    Args:
        argv: arguments without the program name; defaults to ``sys.argv[1:]``.

    Returns:
        The exit status: 0 on success, 2 when a recipe or config file is invalid.
    """
    parser = argparse.ArgumentParser(prog="python -m fitprune.recipe", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    show = commands.add_parser("show", help="print a recipe book as a table")
    show.add_argument("recipe_file", metavar="RECIPE_FILE")
    show.add_argument("--plot", metavar="PNG", default=None, help="also draw the keep counts per layer")
    imp = commands.add_parser("import-published", help="build a recipe book from the authors' delete schedules")
    imp.add_argument("--reference", required=True, help="the authors' delete schedules (JSON, delete_per_layer)")
    imp.add_argument("--config", required=True, help="JSON of the model's LlamaConfig fields")
    imp.add_argument("--output", required=True, help="recipe book to write")
    imp.add_argument("--name", default=None, help="model name (default: last component of _name_or_path)")
    imp.add_argument("--key", default=None, help="the model's entry in a reference file that holds several")
    imp.add_argument("--resample", action="store_true",
                     help="fit the schedules to the config's layers and visual tokens (e.g. a tiny checkpoint)")
    args = parser.parse_args(argv)
    try:
        if args.command == "show":
            book = RecipeBook.load(args.recipe_file)
            print(format_table(book, args.recipe_file))
            if args.plot:
                plot_recipes(book, args.plot)
                print(f"wrote {args.plot}")
        else:
            config_path = Path(args.config)
            config = loads_json(config_path.read_text(encoding="utf-8"), config_path, RecipeError)
            try:
                book = import_published(args.reference, config, name=args.name, key=args.key, resample=args.resample)
            except RecipeError:
                raise
            except ValueError as err:  # a missing or invalid config field
                raise RecipeError(f"{config_path}: {err}") from None
            book.save(args.output)
            print(format_table(book, args.output))
    except (RecipeError, OSError) as err:
        return usage_error("python -m fitprune.recipe", err)
    return 0


if __name__ == "__main__":
    sys.exit(main())
