"""Batched generation for the eval drivers: left-padded batches, a timed greedy loop, `generate`.

    batch = collate(prepared_samples, pad_token_id=0)        # (B, L) left-padded ids + stacked images
    output = generate_batch(model, batch, GenerationSettings(0.0, None, 1, 128))
    texts = [answer_text(tokenizer, ids, "</s>") for ids in output.new_tokens]

Greedy decoding (temperature 0, one beam) runs our own loop over the model's forward: a
timed prefill (vision encoder + decoder, up to the first token), then one timed cached
step per token. It gives `generate`'s tokens for generation configs without logits
processing (LLaVA's), and each answer equals the one generated alone. Sampling and beam
search go through `model.generate` (no phase timings).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, List, Optional, Sequence, Tuple, Union

import torch
from transformers import GenerationConfig

from llava.model.pruning.traced_flops import unpruned_visual_counts

LOGITS_PROCESSING_FIELDS = (
    "repetition_penalty", "encoder_repetition_penalty", "no_repeat_ngram_size",
    "encoder_no_repeat_ngram_size", "bad_words_ids", "min_length", "min_new_tokens",
    "forced_bos_token_id", "forced_eos_token_id", "remove_invalid_values",
    "exponential_decay_length_penalty", "suppress_tokens", "begin_suppress_tokens",
    "forced_decoder_ids", "sequence_bias", "renormalize_logits",
)
"""GenerationConfig fields that make `generate` alter greedy logits; with any set, the
drivers use `generate` instead of their own greedy loop."""


@dataclass
class PreparedSample:
    """An item with its prompt tokenized and its image preprocessed.

    Attributes:
        item: the question it answers (an `llava.eval.driver.loop.EvalItem`).
        input_ids: (L,) prompt ids with IMAGE_TOKEN_INDEX placeholders.
        image: (3, H, W) pixels, or (views, 3, H, W) for LLaVA-NeXT's anyres images, or
            None for a text-only question.
        image_size: (width, height) of the original image in pixels, or None.
    """

    item: Any
    input_ids: torch.Tensor
    image: Optional[torch.Tensor]
    image_size: Optional[Tuple[int, int]] = None


@dataclass
class Batch:
    """Prepared samples as model inputs.

    Attributes:
        samples: the samples, in order.
        input_ids: (B, L) left-padded with the pad id.
        attention_mask: (B, L) long, 1 on real tokens.
        images: pixels of the N samples that have an image, in order: stacked (N, ...) when
            their shapes agree, else a list (anyres images with different view counts); None
            when no sample has an image.
        image_sizes: (width, height) of those N images, in order.
    """

    samples: List[PreparedSample]
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    images: Optional[Union[torch.Tensor, List[torch.Tensor]]]
    image_sizes: List[Tuple[int, int]] = field(default_factory=list)


def collate(samples: Sequence[PreparedSample], pad_token_id: int) -> Batch:
    """Left-pads the prompts of `samples` into one batch and gathers their images."""
    length = max(len(s.input_ids) for s in samples)
    input_ids = torch.full((len(samples), length), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros(len(samples), length, dtype=torch.long)
    for b, sample in enumerate(samples):
        input_ids[b, length - len(sample.input_ids):] = sample.input_ids
        attention_mask[b, length - len(sample.input_ids):] = 1
    with_image = [s for s in samples if s.image is not None]
    images = [s.image for s in with_image]
    gathered = None
    if images:
        same_shape = len({tuple(img.shape) for img in images}) == 1
        gathered = torch.stack(images) if same_shape else images
    return Batch(list(samples), input_ids, attention_mask, gathered, [s.image_size for s in with_image])


@dataclass(frozen=True)
class GenerationSettings:
    """Decoding flags of a driver run.

    Attributes:
        temperature: 0 decodes greedily; above 0 samples.
        top_p: nucleus sampling threshold, or None.
        num_beams: beams (1 = no beam search).
        max_new_tokens: new tokens per answer at most.
    """

    temperature: float
    top_p: Optional[float]
    num_beams: int
    max_new_tokens: int

    @property
    def greedy(self) -> bool:
        """True for temperature 0 with one beam."""
        return self.temperature == 0 and self.num_beams == 1


@dataclass
class GenerationOutput:
    """New tokens of a batch and what producing them took.

    Attributes:
        new_tokens: per sample, the generated ids up to and including the first stop.
        keep_counts: (L, B) visual tokens left after each layer in the prefill, or None
            when nothing was pruned.
        initial_visual: per sample, visual tokens before any pruning (the tower's, also under a
            policy acting in the tower), or None when the prefill's layout was not seen (`generate`).
        prefill_s: wall time of the prefill forward (first token included), or None.
        decode_s: wall time of the decode steps, or None.
        decode_tokens: tokens the decode steps added to unfinished answers.
        entered_counts: (L, B) visual tokens entering each layer in the prefill, or None when
            nothing was pruned.
    """

    new_tokens: List[List[int]]
    keep_counts: Optional[torch.Tensor]
    initial_visual: Optional[List[int]] = None
    prefill_s: Optional[float] = None
    decode_s: Optional[float] = None
    decode_tokens: int = 0
    entered_counts: Optional[torch.Tensor] = None


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _trace_counts(model) -> Optional[torch.Tensor]:
    trace = getattr(model, "last_pruning_trace", None)
    return trace.counts() if trace is not None and trace.live_counts else None


def _trace_entered(model) -> Optional[torch.Tensor]:
    trace = getattr(model, "last_pruning_trace", None)
    return trace.entered() if trace is not None and trace.entering_counts else None


def eos_token_ids(model) -> List[int]:
    """The ids that end an answer, from the model's generation config."""
    eos = model.generation_config.eos_token_id
    if eos is None:
        return []
    return list(eos) if isinstance(eos, (list, tuple)) else [int(eos)]


def uses_logits_processing(generation_config) -> bool:
    """True if the generation config makes `generate` alter greedy logits (penalties, forced ids, ...)."""
    neutral = GenerationConfig()
    return any(getattr(generation_config, name, None) != getattr(neutral, name, None)
               for name in LOGITS_PROCESSING_FIELDS)


def greedy_generate(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    images: Optional[torch.Tensor],
    max_new_tokens: int,
    image_sizes: Optional[List[Tuple[int, int]]] = None,
) -> GenerationOutput:
    """Greedy decoding with a timed prefill and timed cached decode steps.

    Gives the tokens of ``model.generate(do_sample=False, num_beams=1)`` when the generation
    config applies no logits processing (see `uses_logits_processing`): argmax of the last
    row's logits, an answer ends at an EOS id, finished rows are fed the pad id, and
    decoding stops when every row is finished or at `max_new_tokens`.

    Args:
        model: a `LlavaLlamaForCausalLM`.
        input_ids: (B, L) prompt ids, padded.
        attention_mask: (B, L), 1 on real tokens.
        images: pixels for the prompts' placeholders, or None.
        max_new_tokens: new tokens per answer at most.
        image_sizes: (width, height) per image, for LLaVA-NeXT's anyres images.

    Returns:
        The new tokens per sample, the prefill's visual tokens before and after each layer,
        and the two phases' wall times.
    """
    device = input_ids.device
    eos = set(eos_token_ids(model))
    pad = model.generation_config.pad_token_id
    pad = pad if pad is not None else (min(eos) if eos else 0)
    batch = input_ids.shape[0]
    generated: List[List[int]] = [[] for _ in range(batch)]
    finished = [False] * batch
    decode_tokens = 0
    with torch.inference_mode():
        _synchronize(device)
        start = time.perf_counter()
        out = model(input_ids=input_ids, attention_mask=attention_mask, images=images, image_sizes=image_sizes,
                    use_cache=True, num_logits_to_keep=1)
        next_tokens = out.logits[:, -1].argmax(dim=-1)  # (B,): rows are left-padded, the last is the prompt's end
        _synchronize(device)
        prefill_s = time.perf_counter() - start
        keep_counts = _trace_counts(model)
        layout = out.sequence_layout
        initial_visual = unpruned_visual_counts(model, layout.initial_visual.tolist() if layout is not None else None)
        entered_counts = _trace_entered(model)
        cache = out.past_key_values
        for step in range(max_new_tokens):
            tokens = next_tokens.tolist()
            for b in range(batch):
                if finished[b]:
                    continue
                generated[b].append(tokens[b])
                if step > 0:
                    decode_tokens += 1
                if tokens[b] in eos:
                    finished[b] = True
            if all(finished) or step == max_new_tokens - 1:
                break
            feed = torch.tensor([pad if done else t for done, t in zip(finished, tokens)], device=device)
            out = model(input_ids=feed[:, None], past_key_values=cache, use_cache=True, num_logits_to_keep=1)
            cache = out.past_key_values
            next_tokens = out.logits[:, -1].argmax(dim=-1)
        _synchronize(device)
        decode_s = time.perf_counter() - start - prefill_s
    return GenerationOutput(generated, keep_counts, initial_visual, prefill_s, decode_s, decode_tokens,
                            entered_counts)


def _on_model_device(model, batch: Batch) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """The batch's ids, mask and images on the model's device (images in its dtype)."""
    device = model.device
    images = batch.images
    if isinstance(images, torch.Tensor):
        images = images.to(device=device, dtype=model.dtype)
    elif images is not None:
        images = [img.to(device=device, dtype=model.dtype) for img in images]
    return batch.input_ids.to(device), batch.attention_mask.to(device), images


def _until_eos(row: List[int], eos: set) -> List[int]:
    for position, token in enumerate(row):
        if token in eos:
            return row[: position + 1]
    return row


def hf_generate(model, batch: Batch, settings: GenerationSettings) -> GenerationOutput:
    """Sampling or beam search through ``model.generate`` (no phase timings).

    Args:
        model: a `LlavaLlamaForCausalLM`.
        batch: the inputs.
        settings: the decoding flags.

    Returns:
        The new tokens per sample (cut after the first EOS) and the prefill's keep counts.
    """
    kwargs = {"do_sample": settings.temperature > 0, "num_beams": settings.num_beams,
              "max_new_tokens": settings.max_new_tokens, "use_cache": True}
    if settings.temperature > 0:
        kwargs.update(temperature=settings.temperature, top_p=settings.top_p)
    input_ids, attention_mask, images = _on_model_device(model, batch)
    with torch.inference_mode():
        output = model.generate(input_ids, attention_mask=attention_mask, images=images,
                                image_sizes=batch.image_sizes or None, **kwargs)
    eos = set(eos_token_ids(model))
    rows = output[:, batch.input_ids.shape[1]:].tolist()
    return GenerationOutput([_until_eos(row, eos) for row in rows], _trace_counts(model),
                            entered_counts=_trace_entered(model))


def generate_batch(model, batch: Batch, settings: GenerationSettings) -> GenerationOutput:
    """Answers one batch: our greedy loop when it matches `generate`, else `generate`.

    Args:
        model: a `LlavaLlamaForCausalLM`.
        batch: the inputs.
        settings: the decoding flags.

    Returns:
        The batch's generation output.
    """
    if not settings.greedy or uses_logits_processing(model.generation_config):
        return hf_generate(model, batch, settings)
    return greedy_generate(model, *_on_model_device(model, batch), settings.max_new_tokens,
                           image_sizes=batch.image_sizes or None)


def answer_text(tokenizer, new_tokens: Sequence[int], stop_str: str) -> str:
    """Upstream's answer post-processing: decode without special tokens, strip, drop a
    trailing stop string, strip again."""
    text = tokenizer.decode(list(new_tokens), skip_special_tokens=True).strip()
    if stop_str and text.endswith(stop_str):
        text = text[: -len(stop_str)]
    return text.strip()
