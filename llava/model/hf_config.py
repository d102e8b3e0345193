"""Hugging Face-layout LLaVA checkpoints (``llava-hf/*``): their config.json, tokenizer and image
processor, read into (and written from) this project's LLaVA config.

The ``llava-hf`` conversions (``llava-hf/llava-1.5-7b-hf``, ``llava-hf/llava-v1.6-vicuna-7b-hf``)
hold the same weights as the originals under other names (`llava.model.hf_weights`), a config with
the language model under ``text_config`` and the CLIP tower under ``vision_config``, a vocabulary of
the text tokens plus ``<image>`` (at ``image_token_index``), ``<pad>`` and padding rows, and a
tokenizer that knows ``<image>``. Loaded here, the model is our `LlavaLlamaForCausalLM` with the
original's vocabulary (the rows from ``image_token_index`` on are dropped: images are spliced at
`IMAGE_TOKEN_INDEX` placeholders, never embedded from a row) and the original's tokenizer settings,
so prompts, logits and answers are the originals'.

Images: by default LLaVA's own rule (`IMAGE_PROCESSING_LLAVA`): LLaVA-1.5 pads to a square before
the CLIP processor (``image_aspect_ratio: pad``), LLaVA-NeXT uses anyres. `IMAGE_PROCESSING_CHECKPOINT`
honours the checkpoint's processor instead: for LLaVA-1.5 a resize and centre crop without padding.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional

from transformers import CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlamaTokenizer

from llava.constants import IGNORE_INDEX
from llava.errors import CheckpointError
from llava.model.checkpoint_files import checkpoint_file, read_checkpoint_json, read_json_object
from llava.model.config_checks import check_language_fields
from llava.model.language_model.llava_llama import LlavaConfig
from llava.model.tokenizer_loading import load_llama_tokenizer

HF_ARCHITECTURES = {"llava": "LlavaForConditionalGeneration", "llava_next": "LlavaNextForConditionalGeneration"}
"""model_type -> architecture of the Hugging Face-layout LLaVA configs (1.5 and NeXT / 1.6)."""

SELECT_STRATEGIES = {"default": "patch", "full": "cls_patch"}
"""``vision_feature_select_strategy`` -> our ``mm_vision_select_feature``."""

PROJECTOR_TYPES = {"gelu": "mlp2x_gelu"}
"""``projector_hidden_act`` -> our ``mm_projector_type`` (linear_1, act, linear_2)."""

HF_DEFAULTS = {"projector_hidden_act": "gelu", "vision_feature_layer": -2, "vision_feature_select_strategy": "default"}
"""What transformers' LlavaConfig assumes for these fields when a config.json leaves them out."""

NEXT_MERGE_TYPE = "spatial_unpad"
"""How LLaVA-NeXT merges its tiles (with ``image_newline`` rows), in both layouts."""

HF_VOCAB_MULTIPLE = 64
"""The llava-hf conversions pad the vocabulary (text + <image> + <pad>) to a multiple of this."""

IMAGE_TOKEN = "<image>"
PAD_TOKEN = "<pad>"

IMAGE_PROCESSING_LLAVA = "llava"
IMAGE_PROCESSING_CHECKPOINT = "checkpoint"
IMAGE_PROCESSING_CHOICES = (IMAGE_PROCESSING_LLAVA, IMAGE_PROCESSING_CHECKPOINT)
"""How images of a Hugging Face-layout LLaVA-1.5 are prepared: LLaVA's pad-to-square (the default,
answers equal the originals') or the checkpoint's processor (resize and centre crop)."""

RESIZE_CROP_ASPECT_RATIO = "square"
"""The ``image_aspect_ratio`` (upstream training's name) under which `process_images` resizes and
centre-crops without padding."""

LLAMA_FIELDS = (
    "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
    "hidden_act", "max_position_embeddings", "rms_norm_eps", "initializer_range", "pretraining_tp",
    "rope_scaling", "bos_token_id", "eos_token_id",
)
"""The LLaMA fields carried between ``text_config`` and our config (``rope_theta`` too, when given)."""

CLIP_PROCESSOR_FIELDS = (
    "do_resize", "size", "resample", "do_center_crop", "crop_size", "do_rescale", "rescale_factor",
    "do_normalize", "image_mean", "image_std", "do_convert_rgb",
)
"""preprocessor_config.json fields of a CLIP image processor (LLaVA-NeXT's processor has these too)."""


def is_hf_layout(fields: Mapping[str, Any]) -> bool:
    """Whether a parsed config.json is a Hugging Face-layout LLaVA config: model_type ``llava`` or
    ``llava_next`` with a ``text_config`` or ``vision_config``, or a Llava(Next)ForConditionalGeneration
    architecture. (The original layout also says ``"model_type": "llava"``, with flat LLaMA fields.)"""
    nested = "text_config" in fields or "vision_config" in fields
    architectures = fields.get("architectures") or []
    return (fields.get("model_type") in HF_ARCHITECTURES and nested) or any(
        arch in HF_ARCHITECTURES.values() for arch in architectures
    )


@dataclass(frozen=True)
class HfCheckpoint:
    """A Hugging Face-layout LLaVA checkpoint, by its location and parsed config.json.

    Attributes:
        location: directory or hub name.
        fields: config.json as parsed.
    """

    location: str
    fields: Mapping[str, Any]

    @property
    def config_file(self) -> str:
        """Where config.json is, for messages."""
        if os.path.isdir(self.location):
            return os.path.join(self.location, "config.json")
        return f"{self.location} config.json"

    @property
    def is_next(self) -> bool:
        """LLaVA-NeXT (v1.6, anyres) rather than LLaVA-1.5."""
        architectures = self.fields.get("architectures") or []
        return self.fields.get("model_type") == "llava_next" or HF_ARCHITECTURES["llava_next"] in architectures

    def field(self, name: str) -> Any:
        """A required top-level field.

        Raises:
            CheckpointError: naming config.json and the field.
        """
        if name not in self.fields or self.fields[name] is None:
            raise CheckpointError(f"{self.config_file}: field '{name}' is missing")
        return self.fields[name]

    def sub_config(self, name: str) -> dict:
        """``text_config`` or ``vision_config`` as a dict.

        Raises:
            CheckpointError: missing, or not an object.
        """
        value = self.field(name)
        if not isinstance(value, dict):
            raise CheckpointError(f"{self.config_file}: field '{name}' must be an object, got {value!r}")
        return dict(value)

    @property
    def text_vocab_size(self) -> int:
        """The original model's vocabulary: the rows before ``image_token_index`` (32000 for LLaVA;
        configs re-saved by newer transformers may call it ``image_token_id``).

        Raises:
            CheckpointError: neither field, or not a positive int.
        """
        name = "image_token_id" if "image_token_index" not in self.fields and "image_token_id" in self.fields \
            else "image_token_index"
        index = self.field(name)
        if isinstance(index, bool) or not isinstance(index, int) or index <= 0:
            raise CheckpointError(f"{self.config_file}: field '{name}' must be a positive int, got {index!r}")
        return index


def read_hf_checkpoint(model_path: str) -> Optional[HfCheckpoint]:
    """The checkpoint at `model_path` when its config.json is in the Hugging Face layout, else None
    (original-layout LLaVA, plain language models, or no readable config.json: the original
    loading path reports those)."""
    fields = read_checkpoint_json(model_path, "config.json")
    if fields is None:
        return None
    return HfCheckpoint(model_path, fields) if is_hf_layout(fields) else None


def _text_config(checkpoint: HfCheckpoint) -> LlamaConfig:
    """``text_config`` with LlamaConfig's defaults filled in (the published configs omit them).

    Raises:
        CheckpointError: a size that is not a positive int (`check_language_fields`), a language model
            that is not a LLaMA, or a vocabulary that cannot hold the image token.
    """
    fields = checkpoint.sub_config("text_config")
    check_language_fields(fields, checkpoint.config_file, prefix="text_config.")
    model_type = fields.get("model_type", "llama")
    if model_type != "llama":
        raise CheckpointError(
            f"{checkpoint.config_file}: field 'text_config.model_type' is {model_type!r}; only LLaMA language models "
            "are supported"
        )
    text = LlamaConfig(**fields)
    rows, vocab = text.vocab_size, checkpoint.text_vocab_size
    if rows <= vocab:
        raise CheckpointError(
            f"{checkpoint.config_file}: field 'text_config.vocab_size' is {rows} but image_token_index is {vocab}: the "
            "image token must come after the text vocabulary"
        )
    return text


def _vision_fields(checkpoint: HfCheckpoint) -> dict:
    """Our vision-tower fields: the CLIP config (`CLIPVisionConfig` defaults filled in), the layer
    and the features taken, and the projector.

    Raises:
        CheckpointError: an unsupported projector activation, feature layer or select strategy.
    """
    vision = CLIPVisionConfig(**checkpoint.sub_config("vision_config"))
    where = checkpoint.config_file
    act = checkpoint.fields.get("projector_hidden_act", HF_DEFAULTS["projector_hidden_act"])
    if act not in PROJECTOR_TYPES:
        raise CheckpointError(f"{where}: field 'projector_hidden_act' is {act!r}; supported: {sorted(PROJECTOR_TYPES)}")
    layer = checkpoint.fields.get("vision_feature_layer", HF_DEFAULTS["vision_feature_layer"])
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise CheckpointError(f"{where}: field 'vision_feature_layer' must be one int, got {layer!r}")
    strategy = checkpoint.fields.get("vision_feature_select_strategy", HF_DEFAULTS["vision_feature_select_strategy"])
    if strategy not in SELECT_STRATEGIES:
        raise CheckpointError(
            f"{where}: field 'vision_feature_select_strategy' is {strategy!r}; supported: {sorted(SELECT_STRATEGIES)}"
        )
    return {
        "mm_hidden_size": vision.hidden_size,
        "mm_projector_type": PROJECTOR_TYPES[act],
        "mm_vision_tower": checkpoint.location,
        "mm_vision_tower_config": vision.to_dict(),
        "mm_vision_select_layer": layer,
        "mm_vision_select_feature": SELECT_STRATEGIES[strategy],
        "mm_use_im_start_end": False,
        "mm_use_im_patch_token": False,
    }


def _image_fields(checkpoint: HfCheckpoint, image_processing: str) -> dict:
    """``image_aspect_ratio`` (and LLaVA-NeXT's grid and merge) for `image_processing`.

    Raises:
        CheckpointError: LLaVA-NeXT without grid pinpoints or without the image_newline parameter.
        ValueError: an unknown `image_processing`.
    """
    if image_processing not in IMAGE_PROCESSING_CHOICES:
        raise ValueError(f"image_processing {image_processing!r} is not one of {IMAGE_PROCESSING_CHOICES}")
    if not checkpoint.is_next:
        pad = image_processing == IMAGE_PROCESSING_LLAVA
        return {"image_aspect_ratio": "pad" if pad else RESIZE_CROP_ASPECT_RATIO}
    if not checkpoint.fields.get("use_image_newline_parameter", True):
        raise CheckpointError(f"{checkpoint.config_file}: field 'use_image_newline_parameter' false is not supported")
    return {
        "image_aspect_ratio": "anyres",
        "image_grid_pinpoints": checkpoint.field("image_grid_pinpoints"),
        "mm_patch_merge_type": NEXT_MERGE_TYPE,
    }


def llava_config_from_hf(
    checkpoint: HfCheckpoint, image_processing: str = IMAGE_PROCESSING_LLAVA, pad_token_id: Optional[int] = None
) -> LlavaConfig:
    """Our `LlavaConfig` for a Hugging Face-layout checkpoint.

    LLaMA dimensions from ``text_config``, the CLIP tower from ``vision_config`` (built from it, its
    weights read from the checkpoint: ``mm_vision_tower_config``), ``vision_feature_layer``,
    ``vision_feature_select_strategy``, ``projector_hidden_act`` and, for LLaVA-NeXT,
    ``image_grid_pinpoints``. The vocabulary is the original's (``image_token_index`` rows).

    Args:
        checkpoint: the checkpoint.
        image_processing: `IMAGE_PROCESSING_LLAVA` (default) or `IMAGE_PROCESSING_CHECKPOINT`.
        pad_token_id: the tokenizer's pad id; by default text_config's when it is a text token.

    Returns:
        The config; ``hf_checkpoint`` records the source layout and the image processing.

    Raises:
        CheckpointError: a missing or unsupported field (names config.json and the field).
    """
    text = _text_config(checkpoint)
    vocab = checkpoint.text_vocab_size
    if pad_token_id is None and text.pad_token_id is not None and text.pad_token_id < vocab:
        pad_token_id = text.pad_token_id
    fields: Dict[str, Any] = {name: getattr(text, name) for name in LLAMA_FIELDS}
    if "rope_theta" in checkpoint.fields["text_config"]:
        fields["rope_theta"] = checkpoint.fields["text_config"]["rope_theta"]
    fields.update(
        architectures=["LlavaLlamaForCausalLM"],
        vocab_size=vocab,
        pad_token_id=pad_token_id,
        tie_word_embeddings=bool(checkpoint.fields.get("tie_word_embeddings", text.tie_word_embeddings)),
        torch_dtype=checkpoint.fields.get("torch_dtype", text.torch_dtype),
        hf_checkpoint={"model_type": "llava_next" if checkpoint.is_next else "llava",
                       "image_processing": image_processing},
        **_vision_fields(checkpoint),
        **_image_fields(checkpoint, image_processing),
    )
    return LlavaConfig(name_or_path=checkpoint.location, **fields)


def hf_vocab_rows(vocab_size: int) -> int:
    """Rows of a Hugging Face-layout vocabulary: the text tokens, <image>, <pad>, padded to
    `HF_VOCAB_MULTIPLE` (32000 -> 32064)."""
    return math.ceil((vocab_size + 2) / HF_VOCAB_MULTIPLE) * HF_VOCAB_MULTIPLE


def dtype_name(dtype: Any) -> Optional[str]:
    """A config's ``torch_dtype`` as config.json writes it ("float16"), whether it is held as a
    string or a torch dtype; None stays None."""
    if dtype is None or isinstance(dtype, str):
        return dtype
    return str(dtype).split(".")[-1]


def _check_convertible(config: LlavaConfig, where: str) -> None:
    """Raises `CheckpointError` for original-layout features the Hugging Face layout cannot express."""
    checks = [
        ("mm_projector_type", getattr(config, "mm_projector_type", None) in PROJECTOR_TYPES.values()),
        ("mm_vision_select_feature", getattr(config, "mm_vision_select_feature", "patch") in SELECT_STRATEGIES.values()),
        ("mm_use_im_start_end", not getattr(config, "mm_use_im_start_end", False)),
        ("mm_use_im_patch_token", not getattr(config, "mm_use_im_patch_token", False)),
    ]
    if getattr(config, "image_aspect_ratio", None) == "anyres":
        checks.append(("mm_patch_merge_type", getattr(config, "mm_patch_merge_type", None) == NEXT_MERGE_TYPE))
    for name, ok in checks:
        if not ok:
            raise CheckpointError(
                f"{where}: field '{name}' is {getattr(config, name, None)!r}, which the Hugging Face layout cannot hold"
            )


def hf_config_from_llava(config: LlavaConfig, vision_config: CLIPVisionConfig, where: str) -> dict:
    """The Hugging Face-layout config.json for one of our models (the inverse of `llava_config_from_hf`).

    Args:
        config: the model's config (original layout).
        vision_config: its vision tower's CLIP config.
        where: the source checkpoint's config file, for messages.

    Returns:
        The config.json fields; ``text_config`` and ``vision_config`` hold only what differs from the
        defaults, as the published configs do.

    Raises:
        CheckpointError: a feature the layout cannot hold (projector, select feature, im tokens, merge).
    """
    _check_convertible(config, where)
    vocab = config.vocab_size
    next_layout = getattr(config, "image_aspect_ratio", None) == "anyres"
    model_type = "llava_next" if next_layout else "llava"
    text_fields = {name: getattr(config, name) for name in LLAMA_FIELDS}
    if hasattr(config, "rope_theta"):
        text_fields["rope_theta"] = config.rope_theta
    text = LlamaConfig(**text_fields, vocab_size=hf_vocab_rows(vocab), pad_token_id=config.pad_token_id,
                       tie_word_embeddings=config.tie_word_embeddings, torch_dtype=dtype_name(config.torch_dtype))
    strategy = {feature: name for name, feature in SELECT_STRATEGIES.items()}[
        getattr(config, "mm_vision_select_feature", "patch")]
    fields = {
        "architectures": [HF_ARCHITECTURES[model_type]],
        "model_type": model_type,
        "ignore_index": IGNORE_INDEX,
        "image_token_index": vocab,
        "pad_token_id": vocab + 1,
        "projector_hidden_act": {t: a for a, t in PROJECTOR_TYPES.items()}[config.mm_projector_type],
        "text_config": text.to_diff_dict(),
        "vision_config": vision_config.to_diff_dict(),
        "vision_feature_layer": config.mm_vision_select_layer,
        "vision_feature_select_strategy": strategy,
        "vocab_size": hf_vocab_rows(vocab),
        "tie_word_embeddings": config.tie_word_embeddings,
        "torch_dtype": dtype_name(config.torch_dtype),
    }
    if next_layout:
        fields["image_grid_pinpoints"] = config.image_grid_pinpoints
        fields["use_image_newline_parameter"] = True
    return fields


def load_hf_tokenizer(checkpoint: HfCheckpoint) -> LlamaTokenizer:
    """The original LLaVA tokenizer of a Hugging Face-layout checkpoint.

    It is the checkpoint's SentencePiece model with the checkpoint's text settings
    (`llava.model.tokenizer_loading.TOKENIZER_TEXT_FIELDS`), without the added ``<image>`` and ``<pad>`` tokens and with ``<unk>``
    as the pad token, as the original checkpoints have it: every text gets the original's ids,
    ``<image>`` is only ever a placeholder (`tokenizer_image_token` makes it `IMAGE_TOKEN_INDEX`),
    and no id reaches the dropped rows.

    Raises:
        CheckpointError: the tokenizer is refused (`llava.model.tokenizer_loading.load_llama_tokenizer`:
            ``auto_map``, a class that is not LLaMA's, no tokenizer.model), or its vocabulary is not the
            ``image_token_index`` text tokens.
    """
    tokenizer = load_llama_tokenizer(checkpoint.location, text_only=True, pad_token="<unk>")
    if len(tokenizer) != checkpoint.text_vocab_size:
        raise CheckpointError(
            f"{tokenizer.vocab_file}: {len(tokenizer)} tokens, but {checkpoint.config_file} says image_token_index is "
            f"{checkpoint.text_vocab_size} (the first row after the text vocabulary)"
        )
    return tokenizer


def load_hf_image_processor(checkpoint: HfCheckpoint) -> CLIPImageProcessor:
    """The CLIP image processor of preprocessor_config.json (LLaVA-NeXT's processor is read as the
    CLIP processor it extends: anyres itself is `llava.mm_utils.process_images`' job).

    Raises:
        CheckpointError: preprocessor_config.json is missing or not JSON.
    """
    fields = read_json_object(checkpoint_file(checkpoint.location, "preprocessor_config.json"))
    return CLIPImageProcessor(**{name: fields[name] for name in CLIP_PROCESSOR_FIELDS if name in fields})
