"""`load_pretrained_model`: LLaVA checkpoints (full, projector-only with a base, LoRA) in the
original layout or the Hugging Face one (``llava-hf/*``, found from config.json), and plain
language models, on GPU or CPU, with the upstream v1.1.3 signature."""
from __future__ import annotations

import logging
import os
from typing import Dict, Optional, Tuple

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from llava.constants import DEFAULT_IM_END_TOKEN, DEFAULT_IM_START_TOKEN, DEFAULT_IMAGE_PATCH_TOKEN
from llava.errors import CheckpointError, MissingDependencyError
from llava.model.checkpoint_files import check_no_remote_code, checkpoint_file, read_checkpoint_json
from llava.model.config_checks import check_language_fields, check_llava_fields, check_memory
from llava.model.hf_config import (
    IMAGE_PROCESSING_CHOICES,
    IMAGE_PROCESSING_LLAVA,
    HfCheckpoint,
    llava_config_from_hf,
    load_hf_image_processor,
    load_hf_tokenizer,
    read_hf_checkpoint,
)
from llava.model.hf_weights import load_hf_weights
from llava.model.language_model.llava_llama import LlavaLlamaForCausalLM
from llava.model.multimodal_encoder.builder import check_vision_tower
from llava.model.multimodal_encoder.multipath_encoder import is_multipath
from llava.model.multimodal_encoder.clip_encoder import hub_file_is_cached, hub_unavailable_reason, tower_config_location
from llava.model.tokenizer_loading import load_llama_tokenizer
from llava.utils import read_weights_file, safe_weights_loading

logger = logging.getLogger(__name__)

DEFAULT_CONTEXT_LEN = 2048
AUTO_DEVICE = "auto"
SUPPORTED_DEVICE_TYPES = ("cuda", "cpu")


class DeviceError(ValueError):
    """A device this project cannot run on here: not cpu / cuda / cuda:N, or CUDA without CUDA."""


def resolve_device(device: Optional[str] = None) -> str:
    """The device to load and run on.

    Args:
        device: "cpu", "cuda", "cuda:N", or None / "auto" for CUDA when it is available, else CPU.

    Returns:
        `device` itself when it is given and usable, else "cuda" or "cpu".

    Raises:
        DeviceError: (a ValueError) an unknown device type (e.g. "tpu"), a malformed device
            string, CUDA asked for on a machine without CUDA, or a CUDA index past the last GPU.
    """
    if device is None or device == AUTO_DEVICE:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        parsed = None
    if parsed is None or parsed.type not in SUPPORTED_DEVICE_TYPES:
        raise DeviceError(f"device {device!r} is not supported: use cpu, cuda or cuda:N (or auto)")
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"device {device!r} was asked for but CUDA is not available: use cpu (or auto)")
    if parsed.type == "cuda" and parsed.index is not None and parsed.index >= torch.cuda.device_count():
        raise DeviceError(f"device {device!r} was asked for but this machine has {torch.cuda.device_count()} GPU(s)")
    return device


def describe_device(requested: Optional[str], resolved: str) -> str:
    """The line a command prints first: which device it runs on and why, e.g.
    ``device: cpu (no CUDA available)``."""
    if requested is None or requested == AUTO_DEVICE:
        why = "CUDA available" if str(resolved).startswith("cuda") else "no CUDA available"
    else:
        why = "as asked"
    return f"device: {resolved} ({why})"


def _prepare_vision_tower(config, model_path: str) -> None:
    """Checks that a LLaVA config names a vision tower that can be loaded, and points a relative
    `mm_vision_tower` that exists inside the checkpoint at that directory.

    Raises:
        CheckpointError: the config has neither `mm_vision_tower` nor `vision_tower`, or the
            tower is missing or not available offline (`check_vision_tower`).
    """
    where = tower_config_location(config)
    # read before the model is built: `config` may be a plain LlamaConfig of an older checkpoint, and
    # `vision_tower` is upstream's fallback name, not a LlavaConfig field
    tower = getattr(config, "mm_vision_tower", None) or getattr(config, "vision_tower", None)
    if not tower:
        raise CheckpointError(
            f"{where}: field 'mm_vision_tower' is missing; a LLaVA checkpoint (its name contains 'llava') names its "
            "vision tower there: add it, or load a plain language model under a name without 'llava'"
        )
    if not os.path.isabs(tower) and os.path.isdir(model_path):
        local = os.path.join(model_path, tower)
        if os.path.isdir(local) and not os.path.isdir(tower):
            config.mm_vision_tower = tower = local
    if not is_multipath(config):  # LLaVA-HR's tower is built from the config (its fields checked there)
        check_vision_tower(tower, where)


def _config_names_llava(model_path: str) -> bool:
    """Whether the checkpoint's config.json says it is a LLaVA (``model_type`` "llava"), whatever
    its folder is named (upstream goes by the name alone)."""
    fields = read_checkpoint_json(model_path, "config.json")
    return fields is not None and fields.get("model_type") == "llava"


def check_model_path(model_path: str, flag: str = "model path") -> None:
    """Fails early, naming the path, when a checkpoint can be neither read locally nor fetched.

    A path that looks local (starts with ".", "/" or "~", or has two or more "/") must exist;
    a hub name must be in the Hugging Face cache unless the hub can be reached (downloads on,
    ``HF_HUB_OFFLINE`` unset, and the hub answering within seconds: `hub_unavailable_reason`).

    Args:
        model_path: local directory or hub name.
        flag: what the path is, for the message ("model path", "model base").

    Raises:
        FileNotFoundError: naming the path and why it cannot be loaded.
    """
    if os.path.exists(model_path):
        return
    looks_local = model_path.startswith((".", "/", "~")) or model_path.count("/") > 1
    if looks_local:
        raise FileNotFoundError(f"{flag} {model_path} does not exist")
    if hub_file_is_cached(model_path, "config.json"):
        return
    unavailable = hub_unavailable_reason()
    if unavailable:
        raise FileNotFoundError(
            f"{flag} {model_path} is not a local directory and not in the Hugging Face cache; {unavailable}: pass a "
            "local checkpoint directory, or fetch it once with downloads on"
        )


def _quantization_kwargs(load_8bit: bool, load_4bit: bool) -> dict:
    if not (load_8bit or load_4bit):
        return {}
    try:
        from transformers import BitsAndBytesConfig
        import bitsandbytes  # noqa: F401
    except ImportError as err:
        raise MissingDependencyError(
            "load_8bit/load_4bit need the bitsandbytes package: pip install bitsandbytes"
        ) from err
    if load_8bit:
        return {"load_in_8bit": True}
    return {
        "load_in_4bit": True,
        "quantization_config": BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_compute_dtype=torch.float16,
            bnb_4bit_use_double_quant=True,
            bnb_4bit_quant_type="nf4",
        ),
    }


def load_pretrained_model(
    model_path: str,
    model_base: Optional[str],
    model_name: str,
    load_8bit: bool = False,
    load_4bit: bool = False,
    device_map="auto",
    device: Optional[str] = AUTO_DEVICE,
    torch_dtype: Optional[torch.dtype] = None,
    image_processing: str = IMAGE_PROCESSING_LLAVA,
) -> Tuple[object, torch.nn.Module, Optional[object], int]:
    """Loads a LLaVA (or plain causal LM) checkpoint as upstream v1.1.3 does.

    A checkpoint whose config.json is in the Hugging Face layout (``llava-hf/llava-1.5-7b-hf``,
    ``llava-hf/llava-v1.6-vicuna-7b-hf``: `llava.model.hf_config.is_hf_layout`) is loaded into the
    same model, whatever its name: the original's vocabulary, tokenizer settings and image rule,
    so prompts, logits and answers are the original checkpoint's (`llava.model.hf_config`).

    Args:
        model_path: local directory or hub name of the checkpoint.
        model_base: base LLM for projector-only or LoRA checkpoints, else None.
        model_name: name used for dispatch (must contain "llava" for the LLaVA path;
            "lora" selects the LoRA path when `model_base` is given).
        load_8bit, load_4bit: quantise with bitsandbytes (GPU only).
        device_map: passed to `from_pretrained` (ignored on CPU, where everything stays
            on the CPU).
        device: where the vision tower goes ("cuda", "cuda:1", "cpu"); by default ("auto" or
            None) CUDA when it is available, else the CPU (`resolve_device`).
        torch_dtype: weights dtype; float16 on GPU and float32 on CPU by default.
        image_processing: for Hugging Face-layout LLaVA-1.5 checkpoints, "llava" (default: pad to a
            square, as the original's ``image_aspect_ratio: pad``) or "checkpoint" (the checkpoint's
            processor: resize and centre crop); LLaVA-NeXT uses anyres either way.

    Returns:
        (tokenizer, model, image_processor or None, context_len).

    Raises:
        DeviceError: (a ValueError) `device` is unsupported, or CUDA without CUDA (`resolve_device`).
        FileNotFoundError: `model_path` or `model_base` is a local-looking path that does not
            exist, or a hub name that is not cached while downloads are off.
        CheckpointError: config.json or tokenizer_config.json with ``auto_map`` (code of the
            checkpoint), a tokenizer class that is not LLaMA's (`load_llama_tokenizer`), a config
            field of the wrong type, size or name or weights larger than the free memory
            (`llava.model.config_checks`); a LLaVA config without `mm_vision_tower`, or whose
            vision tower is missing or not available offline (names the config file and the field); a Hugging
            Face-layout checkpoint with an unsupported field, an unknown or missing weight, a
            model base, or 8/4-bit loading.
        ValueError: an unknown `image_processing`.
    """
    if image_processing not in IMAGE_PROCESSING_CHOICES:
        raise ValueError(f"image_processing {image_processing!r} is not one of {IMAGE_PROCESSING_CHOICES}")
    device = resolve_device(device)
    on_cpu = str(device).startswith("cpu")
    if torch_dtype is None:
        torch_dtype = torch.float32 if on_cpu else torch.float16
    check_model_path(model_path)
    if model_base is not None:
        check_model_path(model_base, "model base")
    for source in (model_path, model_base):
        if source is not None:
            check_no_remote_code(source)
    kwargs = {"device_map": {"": "cpu"} if on_cpu else device_map, "trust_remote_code": False}
    kwargs.update(_quantization_kwargs(load_8bit, load_4bit))
    if not (load_8bit or load_4bit):
        kwargs["torch_dtype"] = torch_dtype
    bytes_per_parameter = 1 if load_8bit else 0.5 if load_4bit else torch_dtype.itemsize

    hf_checkpoint = read_hf_checkpoint(model_path)
    _refuse_hf_combinations(hf_checkpoint, model_base, load_8bit or load_4bit)
    is_llava = hf_checkpoint is not None or "llava" in model_name.lower() or _config_names_llava(model_path)
    if hf_checkpoint is None:
        _check_config(model_path if is_llava else model_base or model_path, is_llava, bytes_per_parameter, device)
    if hf_checkpoint is not None:
        model, tokenizer = _load_hf(hf_checkpoint, kwargs["device_map"], torch_dtype, image_processing, device)
    elif is_llava and model_base is not None and "lora" in model_name.lower():
        model, tokenizer = _load_lora(model_path, model_base, kwargs)
    elif is_llava and model_base is not None:
        model, tokenizer = _load_llava(model_path, model_base, kwargs)
        projector = _checkpoint_weights(model_path, "mm_projector")
        model.load_state_dict({k: v.to(torch_dtype) for k, v in projector.items()}, strict=False)
    elif is_llava:
        model, tokenizer = _load_llava(model_path, model_path, kwargs)
    else:
        source = model_base or model_path
        tokenizer = load_llama_tokenizer(source)
        with safe_weights_loading():
            model = AutoModelForCausalLM.from_pretrained(source, low_cpu_mem_usage=True, trust_remote_code=False,
                                                         **kwargs)
        if model_base is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, model_path).merge_and_unload()

    image_processor = None
    if is_llava:
        if model.config.mm_use_im_patch_token:
            tokenizer.add_tokens([DEFAULT_IMAGE_PATCH_TOKEN], special_tokens=True)
        if model.config.mm_use_im_start_end:
            tokenizer.add_tokens([DEFAULT_IM_START_TOKEN, DEFAULT_IM_END_TOKEN], special_tokens=True)
        if len(tokenizer) != model.get_input_embeddings().weight.shape[0]:
            model.resize_token_embeddings(len(tokenizer))
        vision_tower = model.get_vision_tower()
        if not vision_tower.is_loaded:
            vision_tower.load_model()
        vision_tower.to(device=device, dtype=torch_dtype)
        if on_cpu:
            model.to(device)
        image_processor = vision_tower.image_processor
        model.apply_config_pruning()  # the config's pruning fields, read once (a no-op after from_pretrained's)
    context_len = getattr(model.config, "max_sequence_length", DEFAULT_CONTEXT_LEN)
    return tokenizer, model, image_processor, context_len


def _check_config(model_path: str, llava: bool, bytes_per_parameter: float, device: str) -> None:
    """Checks a checkpoint's config.json before anything is built from it: its fields
    (`check_llava_fields` for LLaVA, else `check_language_fields`) and the memory its weights need on
    `device` at `bytes_per_parameter` (`check_memory`; for a plain language model only when it has
    LLaMA sizes).

    Raises:
        CheckpointError: config.json is missing, not a JSON object, or has a bad field (names the file and
            the field).
    """
    where = checkpoint_file(model_path, "config.json")
    fields = read_checkpoint_json(model_path, "config.json", required=True)
    (check_llava_fields if llava else check_language_fields)(fields, where)
    if llava or "hidden_size" in fields:  # a language model of another layout has no LLaMA sizes to estimate from
        check_memory(fields, where, bytes_per_parameter, device)


def _refuse_hf_combinations(checkpoint: Optional[HfCheckpoint], model_base: Optional[str], quantized: bool) -> None:
    """Raises `CheckpointError` for what a Hugging Face-layout checkpoint cannot be loaded with: a model
    base (it is self-contained; a Hugging Face-layout base holds other names), or bitsandbytes."""
    if model_base is not None and read_hf_checkpoint(model_base) is not None:
        raise CheckpointError(f"model base {model_base} is in the Hugging Face layout; convert it with "
                              "`python -m llava.model.convert --to original` to use it as a base")
    if checkpoint is None:
        return
    if model_base is not None:
        raise CheckpointError(f"{checkpoint.config_file}: a Hugging Face-layout checkpoint holds every weight; "
                              "load it without a model base")
    if quantized:
        raise CheckpointError(f"{checkpoint.config_file}: 8-bit and 4-bit loading are not supported for the Hugging "
                              "Face layout; convert it with `python -m llava.model.convert --to original` first")


def _load_hf(checkpoint: HfCheckpoint, device_map, torch_dtype: torch.dtype, image_processing: str, device: str):
    """Our model and the original tokenizer for a Hugging Face-layout checkpoint: built empty from
    the config (`llava_config_from_hf`; the memory its weights need on `device` checked first:
    `check_memory`), then filled from the safetensors shards on `device_map` in `torch_dtype`
    (`load_hf_weights`), with the checkpoint's CLIP processor on the tower.

    Returns:
        (model, tokenizer), the model in eval mode.

    Raises:
        CheckpointError: an unsupported config field, weights larger than the memory available, or an
            unknown, missing or misshapen weight.
    """
    from accelerate import init_empty_weights

    tokenizer = load_hf_tokenizer(checkpoint)
    config = llava_config_from_hf(checkpoint, image_processing, pad_token_id=tokenizer.pad_token_id)
    check_memory(config.to_dict(), checkpoint.config_file, torch_dtype.itemsize, device, prefix="text_config.")
    with init_empty_weights():
        model = LlavaLlamaForCausalLM(config)
    load_hf_weights(model, checkpoint.location, torch_dtype, device_map)
    model.eval()
    model.get_vision_tower().image_processor = load_hf_image_processor(checkpoint)
    return model, tokenizer


def _load_llava(model_path: str, weights_source: str, kwargs: dict):
    """A LLaVA model configured by `model_path`'s config, with the tokenizer and language-model
    weights of `weights_source` (the checkpoint itself, or the base LLM of a projector-only
    or LoRA checkpoint), read safely (`llava.utils.safe_weights_loading`).

    Returns:
        (model, tokenizer).

    Raises:
        CheckpointError: the config names no usable vision tower, or a weights file is
            truncated, corrupt or holds more than tensors.
    """
    config = AutoConfig.from_pretrained(model_path, trust_remote_code=False)
    _prepare_vision_tower(config, model_path)
    tokenizer = load_llama_tokenizer(weights_source)
    with safe_weights_loading():
        model = LlavaLlamaForCausalLM.from_pretrained(weights_source, low_cpu_mem_usage=True, config=config, **kwargs)
    return model, tokenizer


def _checkpoint_weights(model_path: str, stem: str) -> Dict[str, torch.Tensor]:
    """The tensors of a checkpoint's own weights file `stem` (``mm_projector``,
    ``non_lora_trainables``): ``<stem>.safetensors`` where the checkpoint has it, else
    ``<stem>.bin``, from the checkpoint directory or else the hub, read by `read_weights_file`
    (a pickle with ``weights_only=True``).

    Raises:
        FileNotFoundError: a checkpoint directory with neither file, or a hub checkpoint whose
            file cannot be fetched.
        CheckpointError: the file is truncated, corrupt or holds more than tensors.
    """
    names = (f"{stem}.safetensors", f"{stem}.bin")
    if os.path.isdir(model_path):
        for name in names:
            if os.path.isfile(os.path.join(model_path, name)):
                return read_weights_file(os.path.join(model_path, name))
        raise FileNotFoundError(f"{model_path} holds neither {names[0]} nor {names[1]}")
    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import EntryNotFoundError

    try:
        return read_weights_file(hf_hub_download(model_path, names[0]))
    except EntryNotFoundError:
        return read_weights_file(hf_hub_download(model_path, names[1]))


def _load_lora(model_path: str, model_base: str, kwargs: dict):
    """LoRA checkpoint on a base LLM: non-LoRA trainables, then the merged adapter."""
    from peft import PeftModel

    model, tokenizer = _load_llava(model_path, model_base, kwargs)
    trainables = _checkpoint_weights(model_path, "non_lora_trainables")
    trainables = {k[len("base_model."):] if k.startswith("base_model.") else k: v for k, v in trainables.items()}
    trainables = {k[len("model."):] if k.startswith("model.model.") else k: v for k, v in trainables.items()}
    model.load_state_dict(trainables, strict=False)
    model = PeftModel.from_pretrained(model, model_path).merge_and_unload()
    return model, tokenizer
