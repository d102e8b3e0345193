"""Checks of a checkpoint's config.json before a model is built from it: each size a positive int,
each name one this project knows, the fields LLaVA needs present, and the model's weights (estimated
from the config) small enough for the memory this machine has. A bad value is a one-line
`CheckpointError` naming the config file and the field, never a traceback from deep in the model or
an allocation of hundreds of gigabytes."""
from __future__ import annotations

import math
import os
from types import SimpleNamespace
from typing import Any, Dict, Mapping, Optional

import torch

from llava.errors import CheckpointError
from llava.model.multimodal_encoder.clip_encoder import SELECT_FEATURES
from llava.model.multimodal_projector.builder import build_vision_projector

LANGUAGE_SIZE_FIELDS = (
    "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
    "vocab_size", "max_position_embeddings",
)
"""LLaMA sizes: positive ints where the config gives them (transformers' LlamaConfig defaults otherwise)."""

LLAMA_DEFAULTS = {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,  # ok: LlamaConfig defaults
                  "num_attention_heads": 32, "vocab_size": 32000}
"""What transformers 4.31's LlamaConfig assumes for a size the config leaves out."""

DEFAULT_PROJECTOR_TYPE = "linear"
"""The projector a LLaVA config without ``mm_projector_type`` gets (upstream's default)."""

GIB = 1024 ** 3


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _bad(where: str, name: str, value: Any, expected: str) -> CheckpointError:
    return CheckpointError(f"{where}: field '{name}' must be {expected}, got {type(value).__name__} {value!r}")


def _positive_int(fields: Mapping[str, Any], name: str, where: str, prefix: str, required: bool = False) -> None:
    if name not in fields or fields[name] is None:
        if required:
            raise CheckpointError(f"{where}: field '{prefix}{name}' is missing")
        return
    value = fields[name]
    if not _is_int(value) or value <= 0:
        raise _bad(where, prefix + name, value, "a positive int")


def check_language_fields(fields: Mapping[str, Any], where: str, prefix: str = "") -> None:
    """Checks a LLaMA config's sizes: `LANGUAGE_SIZE_FIELDS` positive ints, ``rms_norm_eps`` a positive
    number, the heads dividing the width and the key-value heads dividing the heads.

    Args:
        fields: the parsed config (or its ``text_config``).
        where: the config file, for messages.
        prefix: put before field names in messages (``"text_config."``).

    Raises:
        CheckpointError: naming `where` and the field.
    """
    for name in LANGUAGE_SIZE_FIELDS:
        _positive_int(fields, name, where, prefix)
    eps = fields.get("rms_norm_eps")
    if eps is not None and (isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < math.inf):
        raise _bad(where, prefix + "rms_norm_eps", eps, "a positive number")
    width = fields.get("hidden_size", LLAMA_DEFAULTS["hidden_size"])
    heads = fields.get("num_attention_heads", LLAMA_DEFAULTS["num_attention_heads"])
    kv_heads = fields.get("num_key_value_heads") or heads
    if width % heads:
        raise CheckpointError(f"{where}: field '{prefix}num_attention_heads' ({heads}) does not divide "
                              f"hidden_size ({width})")
    if heads % kv_heads:
        raise CheckpointError(f"{where}: field '{prefix}num_key_value_heads' ({kv_heads}) does not divide "
                              f"num_attention_heads ({heads})")


def check_llava_fields(fields: Mapping[str, Any], where: str) -> None:
    """Checks an original-layout LLaVA config.json: the LLaMA sizes (`check_language_fields`), then
    ``mm_hidden_size`` (a positive int) and ``mm_vision_select_layer`` (an int) present,
    ``mm_projector_type`` one the projector builder makes, ``mm_vision_select_feature`` known.

    Raises:
        CheckpointError: naming `where` and the field.
    """
    check_language_fields(fields, where)
    _positive_int(fields, "mm_hidden_size", where, "", required=True)
    if fields.get("mm_vision_select_layer") is None:
        raise CheckpointError(f"{where}: field 'mm_vision_select_layer' is missing (the vision layer whose "
                              "features LLaVA takes, -2 for LLaVA-1.5)")
    if not _is_int(fields["mm_vision_select_layer"]):
        raise _bad(where, "mm_vision_select_layer", fields["mm_vision_select_layer"], "an int")
    projector = fields.get("mm_projector_type", DEFAULT_PROJECTOR_TYPE)
    try:
        build_vision_projector(SimpleNamespace(mm_projector_type=projector, mm_hidden_size=1, hidden_size=1))
    except (ValueError, TypeError):
        raise CheckpointError(f"{where}: field 'mm_projector_type' is {projector!r}; known: 'linear', "
                              "'mlp<N>x_gelu' (e.g. mlp2x_gelu), 'identity'") from None
    feature = fields.get("mm_vision_select_feature", SELECT_FEATURES[0])
    if feature not in SELECT_FEATURES:
        raise CheckpointError(f"{where}: field 'mm_vision_select_feature' is {feature!r}; known: "
                              f"{', '.join(SELECT_FEATURES)}")


def parameter_counts(fields: Mapping[str, Any]) -> Dict[str, int]:
    """The language model's (and projector's) parameters by the field that scales them, estimated from
    a checked config: ``vocab_size`` for the embedding and output rows, ``num_hidden_layers`` for the
    decoder layers (attention, MLP, norms) and the projector. The vision tower is not counted (its own
    config; 0.3 billion parameters for CLIP ViT-L)."""
    width = fields.get("hidden_size", LLAMA_DEFAULTS["hidden_size"])
    heads = fields.get("num_attention_heads", LLAMA_DEFAULTS["num_attention_heads"])
    kv_width = (fields.get("num_key_value_heads") or heads) * (width // heads)
    inner = fields.get("intermediate_size", LLAMA_DEFAULTS["intermediate_size"])
    rows = fields.get("vocab_size", LLAMA_DEFAULTS["vocab_size"])
    layers = fields.get("num_hidden_layers", LLAMA_DEFAULTS["num_hidden_layers"])
    tied = bool(fields.get("tie_word_embeddings", False))
    layer = 2 * width * width + 2 * width * kv_width + 3 * width * inner + 2 * width
    projector = (fields.get("mm_hidden_size") or 0) * width + width * width
    return {"vocab_size": rows * width * (1 if tied else 2), "num_hidden_layers": layers * layer + width + projector}


def _cgroup_free_bytes() -> Optional[int]:
    """Memory left under this process's cgroup (v2) limit, or None where there is no limit."""
    try:
        with open("/sys/fs/cgroup/memory.max", encoding="ascii") as handle:
            limit = handle.read().strip()
        with open("/sys/fs/cgroup/memory.current", encoding="ascii") as handle:
            used = int(handle.read().strip())
    except (OSError, ValueError):
        return None
    return None if limit == "max" else max(int(limit) - used, 0)


def available_ram_bytes() -> Optional[int]:
    """Memory the machine can give a new allocation now, in bytes: ``MemAvailable`` of /proc/meminfo
    (else free pages by `os.sysconf`), capped by a cgroup limit; None where neither can be read."""
    available = None
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        available = None
    if available is None:
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, AttributeError):
            return None
    limit = _cgroup_free_bytes()
    return available if limit is None else min(available, limit)


def available_memory_bytes(device: str) -> Optional[int]:
    """Bytes the weights may take on `device`: the free RAM on the CPU; on CUDA the free memory of
    every GPU plus the free RAM (a device map can offload layers to the CPU). None when unknown."""
    ram = available_ram_bytes()
    if not str(device).startswith("cuda") or not torch.cuda.is_available():
        return ram
    gpus = sum(torch.cuda.mem_get_info(index)[0] for index in range(torch.cuda.device_count()))
    return gpus + (ram or 0)


def check_memory(fields: Mapping[str, Any], where: str, bytes_per_parameter: float, device: str,
                 prefix: str = "") -> None:
    """Refuses a config whose weights cannot fit the memory available for `device`.

    Args:
        fields: the config, checked (`check_language_fields`); LLaMA's defaults fill missing sizes.
        where: the config file, for messages.
        bytes_per_parameter: 4 for float32, 2 for float16/bfloat16, 1 or 0.5 quantised.
        device: where the model goes (``cpu``, ``cuda``, ``cuda:N``).
        prefix: put before field names in messages (``"text_config."``).

    Raises:
        CheckpointError: naming `where`, the field that contributes most (``vocab_size`` or
            ``num_hidden_layers``), the estimate and what is available, in GiB.
    """
    available = available_memory_bytes(device)
    if available is None:
        return
    counts = parameter_counts(fields)
    needed = sum(counts.values()) * bytes_per_parameter
    if needed <= available:
        return
    field = max(counts, key=counts.get)
    raise CheckpointError(
        f"{where}: field '{prefix}{field}' is {fields.get(field, LLAMA_DEFAULTS[field])}: the model's weights would take "
        f"about {needed / GIB:,.1f} GiB ({sum(counts.values()) / 1e9:,.2f} billion parameters at "
        f"{bytes_per_parameter:g} bytes), more than the {available / GIB:,.1f} GiB available on {device}"
    )
