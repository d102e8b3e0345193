"""A tiny LLaMA-style SentencePiece tokenizer, trained locally for offline tests.

The real LLaVA-1.5 tokenizer is LLaMA's 32000-piece SentencePiece BPE model. Tests
need something that behaves the same way (BPE with byte fallback, ``<unk>``/``<s>``/
``</s>`` at ids 0/1/2, a dummy-prefix space, ``\\n`` as the byte piece ``<0x0A>``) but
is small and needs no download. :func:`train_tiny_tokenizer` trains one on an
English corpus generated here, deterministically, and saves it in the layout
``LlamaTokenizer.from_pretrained(path)`` (the project's one tokenizer class) expects.
"""

import io
import itertools
import logging
from pathlib import Path
from typing import Iterator, List, Sequence, Union

import sentencepiece as spm
from transformers import LlamaTokenizer

logger = logging.getLogger(__name__)

# Bytes reserved by byte fallback plus the three special pieces.
_NUM_BYTE_PIECES = 256
_NUM_SPECIAL_PIECES = 3
MODEL_MAX_LENGTH = 2048

_SYSTEM_PROMPTS = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions.",
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions.",
)
_ROLES = ("USER", "ASSISTANT")
_SUFFIXES = (
    "Answer the question using a single word or phrase.",
    "Answer with the option's letter from the given choices directly.",
    "When the provided information is insufficient, respond with 'Unanswerable'.",
    "Please answer yes or no.",
)
_COLOURS = ("red", "green", "blue", "yellow", "black", "white", "orange", "purple", "brown", "gray", "pink")
_SHAPES = ("circle", "square", "triangle", "rectangle", "star", "cube", "sphere", "cylinder")
_OBJECTS = ("dog", "cat", "man", "woman", "car", "bus", "train", "bird", "horse", "table", "chair", "sign")
_PLACES = ("left", "right", "top", "bottom", "middle")
_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
_QUESTION_TEMPLATES = (
    "Is there a {colour} {shape} in the image?",
    "What color is the {shape} next to the {object}?",
    "How many {shape}s are there?",
    "What shape is the {colour} object?",
    "Is the {object} on the {place} side of the image?",
    "What is the {object} doing?",
    "Where is the {colour} {object}?",
    "Which object is {colour}?",
)
_DESCRIPTIONS = (
    "Describe the image in detail.",
    "What is written on the sign?",
    "What is the main object in the picture?",
    "Reference OCR token: STOP, EXIT, OPEN, 24, 7",
    "The image shows a {colour} {object} standing near a {shape}.",
    "There are {number} {shape}s and {digit} {object}s in this photo.",
)


def _answers(index: int) -> List[str]:
    """Return a few deterministic answers that vary with ``index``."""
    colour = _COLOURS[index % len(_COLOURS)]
    shape = _SHAPES[index % len(_SHAPES)]
    number = _NUMBER_WORDS[index % len(_NUMBER_WORDS)]
    return ["Yes", "No", "yes", "no", colour, shape, number, str(index % 10), f"A {colour} {shape}."]


def tiny_corpus() -> Iterator[str]:
    """Yield the training sentences, always in the same order.

    Yields:
        Single-line English sentences: both LLaVA system prompts,
        role names, VQA-style questions about colours, shapes, objects and numbers,
        the benchmark answer-format instructions, and yes/no answers.
    """
    yield from _SYSTEM_PROMPTS
    yield " ".join(_ROLES)
    yield from _SUFFIXES
    index = 0
    for template in _QUESTION_TEMPLATES:
        for colour in _COLOURS:
            for shape in _SHAPES:
                obj = _OBJECTS[index % len(_OBJECTS)]
                place = _PLACES[index % len(_PLACES)]
                question = template.format(colour=colour, shape=shape, object=obj, place=place)
                system = _SYSTEM_PROMPTS[index % len(_SYSTEM_PROMPTS)]
                suffix = _SUFFIXES[index % len(_SUFFIXES)]
                answers = _answers(index)
                answer = answers[index % len(answers)]
                yield question
                yield f"{system} {_ROLES[0]}: {question} {suffix} {_ROLES[1]}: {answer}"
                index += 1
    for number, word in enumerate(_NUMBER_WORDS):
        for template in _DESCRIPTIONS:
            yield template.format(
                colour=_COLOURS[number % len(_COLOURS)],
                object=_OBJECTS[number % len(_OBJECTS)],
                shape=_SHAPES[number % len(_SHAPES)],
                number=word,
                digit=number,
            )


def train_tiny_tokenizer(
    out_dir: Union[str, Path], vocab_size: int = 512, extra_sentences: Sequence[str] = ()
) -> LlamaTokenizer:
    """Train a tiny LLaMA-style tokenizer and save it to ``out_dir``.

    Training is single-threaded and reads the in-memory :func:`tiny_corpus` followed by
    ``extra_sentences``, so the same arguments always give a byte-identical
    ``tokenizer.model``.

    Args:
        out_dir: Directory to write ``tokenizer.model``, ``tokenizer_config.json``
            and ``special_tokens_map.json`` to; created if missing.
        vocab_size: Total number of pieces, including the 3 special pieces and the
            256 byte-fallback pieces.
        extra_sentences: More single-line sentences to train on, after the built-in
            corpus (e.g. a task's questions and answers, so its words become pieces).

    Returns:
        The tokenizer, configured like LLaVA-1.5's: ``add_bos_token=True``,
        ``add_eos_token=False``, ``pad_token='<unk>'``, ``padding_side='right'``,
        ``model_max_length=2048``, ``clean_up_tokenization_spaces=False``.

    Raises:
        ValueError: If ``vocab_size`` cannot hold the special pieces, the byte pieces and
            every character of the corpus.
        RuntimeError: From SentencePiece, if ``vocab_size`` is more than the corpus
            can fill (about 1200).
    """
    extra_sentences = list(extra_sentences)
    num_chars = len(set("".join(itertools.chain(tiny_corpus(), extra_sentences))))
    minimum = _NUM_SPECIAL_PIECES + _NUM_BYTE_PIECES + num_chars
    if vocab_size < minimum:
        raise ValueError(
            f"vocab_size must be at least {minimum} (special + byte pieces + {num_chars} corpus characters), "
            f"got {vocab_size}"
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    model_bytes = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=itertools.chain(tiny_corpus(), extra_sentences),
        model_writer=model_bytes,
        model_type="bpe",
        vocab_size=vocab_size,
        character_coverage=1.0,
        byte_fallback=True,
        split_digits=True,
        add_dummy_prefix=True,
        remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True,
        normalization_rule_name="identity",
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        unk_piece="<unk>",
        bos_piece="<s>",
        eos_piece="</s>",
        num_threads=1,
        minloglevel=2,
    )
    vocab_file = out_dir / "tokenizer.model"
    vocab_file.write_bytes(model_bytes.getvalue())
    logger.info("Trained a %d-piece tokenizer into %s", vocab_size, vocab_file)

    LlamaTokenizer(
        vocab_file=str(vocab_file),
        pad_token="<unk>",
        add_bos_token=True,
        add_eos_token=False,
        clean_up_tokenization_spaces=False,
        legacy=False,
        padding_side="right",
        model_max_length=MODEL_MAX_LENGTH,
    ).save_pretrained(str(out_dir))
    # Reload so the returned object matches what later loads see (special tokens
    # such as "</s>" are only split out of text after from_pretrained).
    return LlamaTokenizer.from_pretrained(str(out_dir))
