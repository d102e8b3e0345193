"""Questions as `EvalItem`s (read by `llava.eval.driver.questions`): chunking (`--num-chunks`/`--chunk-idx`),
conversation mode."""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field
from typing import Any, List, Mapping, Optional, Sequence


from llava.conversation import conv_templates
from llava.eval.driver.answers_file import answer_key
from llava.cli_support import UsageError


def split_list(items: Sequence, n: int) -> List[Sequence]:
    """Splits a sequence into contiguous chunks of ``ceil(len / n)`` items (upstream's rule).

    Args:
        items: a list, or anything with len() and slicing (a pandas DataFrame).
        n: number of chunks wanted.

    Returns:
        The chunks; fewer than n when the items run out (none for an empty sequence).
    """
    size = math.ceil(len(items) / n)
    if size == 0:
        return []
    return [items[i:i + size] for i in range(0, len(items), size)]


def get_chunk(items: Sequence, n: int, k: int) -> Sequence:
    """The k-th of n chunks of `split_list`; empty when the items run out before chunk k."""
    chunks = split_list(items, n)
    return chunks[k] if k < len(chunks) else items[0:0]


@dataclass(frozen=True)
class EvalItem:
    """One question to answer, before any image is loaded.

    Attributes:
        question_id: copied verbatim to the answer (int or str).
        prompt: the answer line's "prompt" field.
        question: the user turn after the image placeholder (answer-format suffix included).
        image: image path under --image-folder, base64 image, or None for text-only.
        line: line (or row) of the question file, for error messages.
        extra: further answer fields (mmbench: round_id, options, option_char).
    """

    question_id: Any
    prompt: str
    question: str
    image: Optional[str]
    line: int
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """The resume key: question id (type kept) and round id."""
        return answer_key(self.question_id, self.extra.get("round_id"))


def chunk_items(items: Sequence[EvalItem], args: argparse.Namespace) -> List[EvalItem]:
    """The items of chunk ``--chunk-idx`` of ``--num-chunks``."""
    return list(get_chunk(list(items), args.num_chunks, args.chunk_idx))


def resolve_conv_mode(conv_mode: str, model_name: str, mmtag_rule: bool) -> str:
    """The template to use; upstream's loader and mmbench append "_mmtag" for plain models.

    Raises:
        UsageError: the (resolved) conv mode is not a template.
    """
    if mmtag_rule and "plain" in model_name and "finetune" not in model_name.lower() and "mmtag" not in conv_mode:
        conv_mode = conv_mode + "_mmtag"
    if conv_mode not in conv_templates:
        raise UsageError(f"unknown conv mode {conv_mode!r}; choose one of {sorted(conv_templates)}")
    return conv_mode
