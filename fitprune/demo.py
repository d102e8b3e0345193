"""`python -m fitprune.demo`: the main job on the bundled default model and data.

Writes the bundled model if missing, calibrates recipes for it (`fitprune.calibrate`),
then answers the bundled questions unpruned and at each fitted budget, printing per
budget the answers, the visual tokens left after the last layer, the FLOPs removed
(paper and full convention) and the median prefill latency.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Optional, Sequence

import torch

from fitprune.calibrate import main as calibrate_main
from fitprune.defaults import DEFAULT_IMAGE_FOLDER, DEFAULT_QUESTION_FILE, ensure_default_model
from fitprune.pruning import load_recipe_book
from llava.eval.questions import build_question_prompt, load_questions

DEMO_RATIOS = ("30", "50", "60", "70")


def _prefill_ms(model, input_ids, pixels, repeats: int) -> float:
    """Median wall time of one prefill forward, in milliseconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        with torch.inference_mode():
            model(input_ids=input_ids, images=pixels, use_cache=False)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the demo; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m fitprune.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--reduction-ratio", "--reduction_ratio", dest="ratios", nargs="+", default=list(DEMO_RATIOS))
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    from PIL import Image

    from llava.mm_utils import process_images, tokenizer_image_token
    from llava.model.builder import load_pretrained_model

    model_path = ensure_default_model()
    code = calibrate_main(["--reduction-ratio", *args.ratios])
    if code:
        return code
    tokenizer, model, processor, _ = load_pretrained_model(model_path, None, "llava-v1.5-tiny", device="cpu")
    model.eval()
    book = load_recipe_book(model.config)
    questions = load_questions(DEFAULT_QUESTION_FILE)
    print(f"\nmodel {model_path} (random weights: answers are not meaningful); "
          f"{len(questions)} questions from {DEFAULT_QUESTION_FILE}")
    print("| ratio % | achieved % (paper) | achieved % (full) | visual tokens after last layer | "
          "median prefill ms | answer to question 0 |")
    print("|---|---|---|---|---|---|")
    for ratio in [0.0] + list(book.ratios()):
        model.config.reduction_ratio = ratio
        question = questions[0]
        prompt = build_question_prompt(question.text, "vicuna_v1")
        input_ids = tokenizer_image_token(prompt, tokenizer, return_tensors="pt")[None]
        image = Image.open(f"{DEFAULT_IMAGE_FOLDER}/{question.image}").convert("RGB")
        pixels = process_images([image], processor, model.config)
        with torch.inference_mode():
            output = model.generate(input_ids, images=pixels, do_sample=False,
                                    max_new_tokens=args.max_new_tokens, use_cache=True)
        answer = tokenizer.decode(output[0, input_ids.shape[1]:], skip_special_tokens=True).strip()
        trace = model.last_pruning_trace
        kept = int(trace.counts()[-1, 0]) if trace is not None else model.get_model().num_visual_tokens()
        recipe = book.get(ratio) if ratio else None
        paper = f"{recipe.achieved_paper:.2f}" if recipe else "0.00"
        full = f"{recipe.achieved_full:.2f}" if recipe else "0.00"
        latency = _prefill_ms(model, input_ids, pixels, args.repeats)
        print(f"| {ratio:g} | {paper} | {full} | {kept} | {latency:.1f} | {answer!r} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
