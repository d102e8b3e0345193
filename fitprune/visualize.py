"""`python -m fitprune.visualize`: which image patches a pruned prefill kept, layer by layer.

    python -m fitprune.visualize --image playground/shapes/images/test_0000.png \\
        --question "What color is the triangle?" --reduction-ratio 60 --out kept.png [--gif]

Draws the model's input image (as the vision tower saw it) once per chosen layer, with the
patches dropped up to that layer greyed out, and the recipe's keep-count curve; `--gif`
writes an animation over the layers instead. With no --model-path it uses the bundled
default model. The drawing of the kept patches is `llava.serve.kept_patches` (shared with the
web demo).
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional, Sequence

import numpy as np
import torch
from PIL import Image

from fitprune.defaults import ensure_default_model
from llava.cli_support import AUTO_DEVICE, UsageError, add_image_processing_flag, select_device
from llava.errors import CheckpointError
from llava.image_loading import ImageError, bound_image_geometry, load_image
from llava.model.pruning.recipe import RecipeError
from llava.eval.driver.questions import build_question_prompt
from llava.model.anyres import uses_anyres
from llava.eval.driver.output_paths import OutputPathError, check_output_file, writing_to
from llava.pruning_flags import add_pruning_args, apply_pruning_args
from llava.serve.kept_patches import kept_patch_masks, merged_patch_mask, shade_dropped, tower_view
from llava.utils import OneLineArgumentParser, usage_error

PROG = "python -m fitprune.visualize"

MAX_PANELS = 6


def choose_layers(counts: Sequence[int], num_visual: int, limit: int = MAX_PANELS) -> List[int]:
    """Up to `limit` layers to draw: the layers where tokens leave, evenly thinned, ending
    with the last of them."""
    previous = [num_visual] + list(counts[:-1])
    changes = [i for i, (p, c) in enumerate(zip(previous, counts)) if c < p]
    if len(changes) <= limit:
        return changes or [len(counts) - 1]
    picks = np.linspace(0, len(changes) - 1, limit).round().astype(int)
    return [changes[i] for i in sorted(set(picks.tolist()))]


def render_panels(view: np.ndarray, masks: np.ndarray, layers: List[int], counts: Sequence[int],
                  num_visual: int, title: str, path: str, merged: Optional[np.ndarray] = None) -> None:
    """One panel per chosen layer plus the keep-count curve, saved as PNG; patches in `merged`
    (VisionZip's, merged into contextual tokens) are drawn blue-tinted and counted apart."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(layers) + 1, figsize=(2.6 * (len(layers) + 1) + 1.2, 3.2))
    for ax, layer in zip(axes, layers):
        ax.imshow(shade_dropped(view, masks[layer], merged=merged))
        merges = f", {int(merged.sum())} merged" if merged is not None else ""
        ax.set_title(f"after layer {layer}\n{int(masks[layer].sum())}/{num_visual} kept{merges}", fontsize=9)
        ax.axis("off")
    curve = axes[-1]
    curve.plot(range(len(counts) + 1), [num_visual] + list(counts), marker=".")
    for layer in layers:
        curve.axvline(layer + 1, color="grey", alpha=0.3)
    curve.set_xlabel("after layer (0 = input)", fontsize=8)
    curve.set_ylabel("visual tokens kept", fontsize=8)
    curve.tick_params(labelsize=7)
    curve.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def render_gif(view: np.ndarray, masks: np.ndarray, path: str, scale: int = 2,
               merged: Optional[np.ndarray] = None) -> None:
    """An animation over all layers (one frame per layer, the input first; `merged` as in `render_panels`)."""
    size = (view.shape[1] * scale, view.shape[0] * scale)
    frames = [Image.fromarray(view).resize(size, Image.NEAREST)]
    frames += [Image.fromarray(shade_dropped(view, alive, merged=merged)).resize(size, Image.NEAREST)
               for alive in masks]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=400, loop=0)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs one pruned prefill and draws what it kept; returns the exit code (2, after a one-line
    message, for an unusable image, model or recipe, or an --out that cannot be written: checked
    before the model loads, and a filesystem fault while writing it)."""
    parser = OneLineArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--model-path", default=None)
    parser.add_argument("--model-base", default=None)
    add_image_processing_flag(parser)
    parser.add_argument("--image", required=True)
    parser.add_argument("--question", required=True)
    parser.add_argument("--conv-mode", default="vicuna_v1")
    parser.add_argument("--device", default=AUTO_DEVICE,
                        help="cuda, cuda:N, cpu, or auto (default): CUDA when it is available, else the CPU")
    parser.add_argument("--out", required=True, help="PNG (or GIF with --gif)")
    parser.add_argument("--gif", action="store_true")
    add_pruning_args(parser)
    args = parser.parse_args(argv)
    if not args.reduction_ratio:
        parser.error("--reduction-ratio must be above 0 to show pruning")
    try:
        args.device = select_device(args.device)
        check_output_file(args.out, "--out", {"--image": args.image})
        return _draw(args)
    except (ImageError, CheckpointError, FileNotFoundError, RecipeError, OutputPathError, UsageError) as err:
        return usage_error(PROG, err)


def _draw(args: argparse.Namespace) -> int:
    """Loads the image and the model, runs the pruned prefill and writes the picture; returns the exit code.

    Raises:
        ImageError: the image cannot be used (message prefixed with --image).
        CheckpointError, FileNotFoundError: the model cannot be loaded.
        RecipeError: no recipe fits.
        OutputPathError: --out cannot be written (a full disk, a read-only folder).
    """
    from llava.mm_utils import get_model_name_from_path, process_images, tokenizer_image_token
    from llava.model.builder import load_pretrained_model

    try:
        image = load_image(args.image)
    except ImageError as err:
        raise ImageError(f"--image: {err}") from None
    model_path = args.model_path or ensure_default_model()
    tokenizer, model, processor, _ = load_pretrained_model(
        model_path, args.model_base, get_model_name_from_path(model_path), device=args.device,
        image_processing=args.image_processing,
    )
    model.eval()
    if uses_anyres(model.config):
        return usage_error(PROG, "visualize draws LLaVA-1.5's square patch grid; anyres (LLaVA-NeXT) models are not "
                                 "supported")
    image = bound_image_geometry(image, processor, model.config.image_aspect_ratio)
    apply_pruning_args(model, args)
    prompt = build_question_prompt(args.question, args.conv_mode)
    input_ids = tokenizer_image_token(prompt, tokenizer, return_tensors="pt")[None].to(args.device)
    pixels = process_images([image], processor, model.config).to(args.device, dtype=model.dtype)
    with torch.inference_mode():
        model(input_ids=input_ids, images=pixels, use_cache=False)
    trace = model.last_pruning_trace
    num_visual = model.get_model().num_visual_tokens()
    kept = [trace.kept_indices(layer, 0) for layer in range(len(trace.live_counts))]
    masks = kept_patch_masks(kept, num_visual)
    selection = getattr(model, "last_tower_selection", None)
    merged = merged_patch_mask(selection.merged_into[0], num_visual) if selection is not None else None
    counts = trace.counts()[:, 0].tolist()
    view = tower_view(image, processor, model.config)
    title = f"{get_model_name_from_path(model_path)} at {model.config.reduction_ratio:g}%: {args.question}"
    with writing_to(args.out):
        if args.gif:
            render_gif(view, masks, args.out, merged=merged)
        else:
            render_panels(view, masks, choose_layers(counts, num_visual), counts, num_visual, title, args.out, merged)
    print(f"wrote {args.out}: {counts[-1]} of {num_visual} visual tokens kept after the last layer")
    return 0


if __name__ == "__main__":
    sys.exit(main())
