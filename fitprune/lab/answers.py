"""Answer accuracy of a LLaVA model on a question file with one-word reference answers.

The model answers each question with a single prefill (greedy first token): a batch of
prompts goes through the model once, with whatever pruning the model is configured for,
and the answer is the argmax of the last row's logits. The reference answers of the
synthetic shapes task are one token each, so this is exact match of greedy decoding's
first token, at the cost of one forward per batch.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch

from llava.eval.io_utils import JsonlError, numbered_records
from llava.eval.driver.questions import QuestionFileError, build_question_prompt


@dataclass(frozen=True)
class AnsweredQuestion:
    """A question with its reference answer.

    Attributes:
        question_id: as in the file.
        image: image path relative to the image folder.
        text: the question (with its answer-format suffix).
        answer: the reference answer.
        kind: the question kind (e.g. "colour"), "" when the file has none.
        cells: grid indices of the objects the question refers to (the relational scenes'
            `cells`, what an oracle keeps), None when the file has none.
    """

    question_id: Union[int, str]
    image: str
    text: str
    answer: str
    kind: str = ""
    cells: Optional[Tuple[int, ...]] = None


def load_answered_questions(path: Union[str, Path], limit: Optional[int] = None) -> List[AnsweredQuestion]:
    """The questions of a question jsonl whose lines also hold `answer` (and maybe `kind`).

    Args:
        path: the question file.
        limit: keep the first `limit` questions (all when None).

    Raises:
        QuestionFileError: a missing file, invalid JSON or a missing field, with file and line
            (``file:line: field 'answer' is missing``).
    """
    path = Path(path)
    if not path.is_file():
        raise QuestionFileError(f"{path}: question file does not exist")
    try:
        records = list(numbered_records(path))
    except JsonlError as err:
        raise QuestionFileError(str(err)) from None
    questions = []
    for number, record in records:
        for name in ("question_id", "image", "text", "answer"):
            if name not in record:
                raise QuestionFileError(f"{path}:{number}: field '{name}' is missing")
        questions.append(AnsweredQuestion(record["question_id"], record["image"], record["text"], record["answer"],
                                          record.get("kind", ""),
                                          tuple(record["cells"]) if "cells" in record else None))
    if not questions:
        raise QuestionFileError(f"{path}: no questions in the file")
    return questions[:limit] if limit is not None else questions


@dataclass
class PromptBatch:
    """Encoded prompts of a batch of questions.

    Attributes:
        input_ids: (B, L) right-padded with 0, IMAGE_TOKEN_INDEX where the image goes.
        attention_mask: (B, L) 1 on real tokens.
        images: (B, 3, H, W) processed pixels.
        answer_ids: (B,) first token of each reference answer.
        kinds: question kind per sample.
        cells: referred grid cells per sample (`AnsweredQuestion.cells`).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    images: torch.Tensor
    answer_ids: torch.Tensor
    kinds: List[str]
    cells: List[Optional[Tuple[int, ...]]] = field(default_factory=list)


def answer_token(tokenizer, answer: str) -> int:
    """The id of the first piece of `answer` as the model would generate it.

    Raises:
        ValueError: if the answer is not exactly one piece (first-token accuracy would
            then not be exact match).
    """
    ids = tokenizer(answer, add_special_tokens=False).input_ids
    if len(ids) != 1:
        raise ValueError(f"answer {answer!r} is {len(ids)} tokens ({tokenizer.convert_ids_to_tokens(ids)}); "
                         "first-token accuracy needs one-token answers")
    return ids[0]


def pad_right(rows: Sequence[Sequence[int]], pad: int = 0) -> torch.Tensor:
    """(B, max length) long tensor of `rows`, right-padded with `pad`."""
    length = max(len(r) for r in rows)
    out = torch.full((len(rows), length), pad, dtype=torch.long)
    for b, row in enumerate(rows):
        out[b, :len(row)] = torch.as_tensor(row, dtype=torch.long)
    return out


def encode_questions(questions: Sequence[AnsweredQuestion], tokenizer, image_processor, config, image_folder: str,
                     conv_mode: str = "vicuna_v1", batch_size: int = 32) -> List[PromptBatch]:
    """Prompts and images of `questions`, in batches of `batch_size`, in file order.

    Raises:
        QuestionFileError: an image that cannot be read, naming it.
        ValueError: a reference answer of more than one token.
    """
    from PIL import Image

    from llava.mm_utils import process_images, tokenizer_image_token

    use_start_end = config.mm_use_im_start_end
    batches = []
    for start in range(0, len(questions), batch_size):
        chunk = questions[start:start + batch_size]
        rows, images = [], []
        for question in chunk:
            prompt = build_question_prompt(question.text, conv_mode, use_im_start_end=use_start_end)
            rows.append(tokenizer_image_token(prompt, tokenizer))
            path = Path(image_folder) / question.image
            try:
                images.append(Image.open(path).convert("RGB"))
            except OSError as err:
                raise QuestionFileError(f"question {question.question_id}: cannot read image {path}: {err}") from None
        input_ids = pad_right(rows)
        attention_mask = pad_right([[1] * len(r) for r in rows])
        batches.append(PromptBatch(
            input_ids=input_ids,
            attention_mask=attention_mask,
            images=process_images(images, image_processor, config),
            answer_ids=torch.tensor([answer_token(tokenizer, q.answer) for q in chunk]),
            kinds=[q.kind for q in chunk],
            cells=[q.cells for q in chunk],
        ))
    return batches


@torch.inference_mode()
def predict_first_tokens(model, batch: PromptBatch) -> torch.Tensor:
    """(B,) greedy first answer token of each prompt: argmax of the last row's logits
    (batches leave the decoder left-padded, so the last row is each prompt's last token)."""
    device = model.get_model().embed_tokens.weight.device
    out = model(input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device),
                images=batch.images.to(device, dtype=model.dtype), use_cache=False, num_logits_to_keep=1)
    return out.logits[:, -1].argmax(dim=-1).cpu()


@dataclass(frozen=True)
class AccuracyReport:
    """Correct answers overall and per question kind.

    Attributes:
        correct: number of correct answers.
        total: number of questions.
        per_kind: kind -> (correct, total).
    """

    correct: int
    total: int
    per_kind: Dict[str, tuple]

    @property
    def accuracy(self) -> float:
        """Share of correct answers, in percent."""
        return 100.0 * self.correct / self.total

    def kind_accuracy(self, kind: str) -> float:
        """Share of correct answers among questions of `kind`, in percent."""
        correct, total = self.per_kind[kind]
        return 100.0 * correct / total

    def interval(self, kind: Optional[str] = None) -> Tuple[float, float]:
        """95% confidence interval of the accuracy (overall, or of `kind`), in percent."""
        correct, total = (self.correct, self.total) if kind is None else self.per_kind[kind]
        return wilson_interval(correct, total)


WILSON_Z = 1.959964
"""Standard normal quantile of a two-sided 95% interval."""


def wilson_interval(correct: int, total: int, z: float = WILSON_Z) -> Tuple[float, float]:
    """Wilson score interval of a binomial proportion `correct / total`, in percent (stays
    inside [0, 100] and is not empty at 0% or 100%, unlike the normal approximation)."""
    if total <= 0:
        raise ValueError(f"wilson_interval: total must be positive, got {total}")
    share = correct / total
    denominator = 1 + z * z / total
    centre = (share + z * z / (2 * total)) / denominator
    half = z * math.sqrt(share * (1 - share) / total + z * z / (4 * total * total)) / denominator
    return 100.0 * max(0.0, centre - half), 100.0 * min(1.0, centre + half)


def answer_accuracy(model, batches: Sequence[PromptBatch],
                    after_batch: Optional[Callable[[PromptBatch], None]] = None) -> AccuracyReport:
    """First-token accuracy of `model` (as configured, pruned or not) on `batches`;
    `after_batch(batch)`, when given, runs after each batch's prefill (to read the model's
    `last_pruning_trace`, say)."""
    counts = defaultdict(lambda: [0, 0])
    for batch in batches:
        hits = predict_first_tokens(model, batch) == batch.answer_ids
        if after_batch is not None:
            after_batch(batch)
        for kind, hit in zip(batch.kinds, hits.tolist()):
            counts[kind][0] += int(hit)
            counts[kind][1] += 1
    correct = sum(c for c, _ in counts.values())
    total = sum(t for _, t in counts.values())
    return AccuracyReport(correct, total, {k: tuple(v) for k, v in sorted(counts.items())})
