"""Weights of Hugging Face-layout LLaVA checkpoints: their names mapped onto ours, read from
(sharded) safetensors into our model, and written back out.

Two key styles exist; both map onto this project's names:

    classic (transformers 4.36 - 4.51)          nested (re-saved by newer transformers)      ours
    language_model.model.*                      model.language_model.*                       model.*
    language_model.lm_head.*                    lm_head.*                                    lm_head.*
    multi_modal_projector.linear_1.*            model.multi_modal_projector.linear_1.*       model.mm_projector.0.*
    multi_modal_projector.linear_2.*            model.multi_modal_projector.linear_2.*       model.mm_projector.2.*
    vision_tower.vision_model.*                 model.vision_tower.vision_model.*            model.vision_tower.vision_tower.vision_model.*
    image_newline (LLaVA-NeXT)                  model.image_newline                          model.image_newline

The embedding and LM-head rows from ``image_token_index`` on (<image>, <pad>, padding) are not
ours: they are dropped on reading and added back (as the mean row) on writing. Every parameter
of our model must come from the checkpoint: an unknown key, a missing one or a wrong shape is a
one-line `CheckpointError` naming it, never a random initialisation.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Dict, Iterable, List, Mapping, Optional, Tuple, Union

import torch

from llava.errors import CheckpointError
from llava.model.checkpoint_files import checkpoint_file, read_json_object
from llava.model.hf_config import hf_vocab_rows

SAFETENSORS_INDEX = "model.safetensors.index.json"
SAFETENSORS_SINGLE = "model.safetensors"
VOCAB_KEYS = ("model.embed_tokens.weight", "lm_head.weight")
"""Our tensors with one row per vocabulary token."""

DeviceMap = Union[str, Dict[str, Union[int, str, torch.device]]]


@dataclass(frozen=True)
class KeyStyle:
    """How one Hugging Face layout names our tensors.

    Attributes:
        name: "classic" or "nested".
        renames: (hf name, our name) pairs; a name ending in "." renames a prefix, any other one key.
    """

    name: str
    renames: Tuple[Tuple[str, str], ...]

    @staticmethod
    def _rename(key: str, pairs: Iterable[Tuple[str, str]]) -> Optional[str]:
        for source, target in sorted(pairs, key=lambda pair: -len(pair[0])):
            if source.endswith(".") and key.startswith(source):
                return target + key[len(source):]
            if key == source:
                return target
        return None

    def to_ours(self, key: str) -> Optional[str]:
        """Our name for a checkpoint key, or None for a key this layout does not have."""
        return self._rename(key, self.renames)

    def to_hf(self, key: str) -> Optional[str]:
        """The checkpoint key for one of our names, or None for a tensor the layout does not hold."""
        return self._rename(key, [(ours, hf) for hf, ours in self.renames])


_TOWER = "model.vision_tower.vision_tower.vision_model."
CLASSIC = KeyStyle("classic", (
    ("language_model.model.", "model."),
    ("language_model.lm_head.", "lm_head."),
    ("multi_modal_projector.linear_1.", "model.mm_projector.0."),
    ("multi_modal_projector.linear_2.", "model.mm_projector.2."),
    ("vision_tower.vision_model.", _TOWER),
    ("image_newline", "model.image_newline"),
))
NESTED = KeyStyle("nested", (
    ("model.language_model.", "model."),
    ("lm_head.", "lm_head."),
    ("model.multi_modal_projector.linear_1.", "model.mm_projector.0."),
    ("model.multi_modal_projector.linear_2.", "model.mm_projector.2."),
    ("model.vision_tower.vision_model.", _TOWER),
    ("model.image_newline", "model.image_newline"),
))
KEY_STYLES = {style.name: style for style in (CLASSIC, NESTED)}


def key_style_of(keys: Iterable[str]) -> KeyStyle:
    """The style of a checkpoint's keys: nested when its language model is under ``model.language_model.``."""
    return NESTED if any(key.startswith("model.language_model.") for key in keys) else CLASSIC


@dataclass(frozen=True)
class HfWeightFiles:
    """Where each tensor of a safetensors checkpoint is, and its shape (read without the data).

    Attributes:
        file_of: checkpoint key -> local safetensors file.
        shapes: checkpoint key -> shape.
    """

    file_of: Mapping[str, str]
    shapes: Mapping[str, Tuple[int, ...]]

    @property
    def files(self) -> List[str]:
        """The files, in the order their first key appears."""
        return list(dict.fromkeys(self.file_of.values()))


def _shapes_in(path: str) -> Dict[str, Tuple[int, ...]]:
    """key -> shape of one safetensors file.

    Raises:
        CheckpointError: the file is not a readable safetensors file.
    """
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, framework="pt") as handle:
            return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{path}: cannot read the weights ({err}); download or copy it again") from None


def read_hf_weight_files(model_path: str) -> HfWeightFiles:
    """The tensors of a Hugging Face-layout checkpoint: ``model.safetensors.index.json`` and its shards,
    else one ``model.safetensors``.

    Raises:
        CheckpointError: neither file exists; the index is not a JSON object (or nested too deeply),
            names a missing shard or a key the shard lacks; a file is unreadable.
    """
    index_path = checkpoint_file(model_path, SAFETENSORS_INDEX, required=False)
    if index_path is None:
        single = checkpoint_file(model_path, SAFETENSORS_SINGLE, required=False)
        if single is None:
            raise CheckpointError(f"{model_path}: holds neither {SAFETENSORS_INDEX} nor {SAFETENSORS_SINGLE}")
        shapes = _shapes_in(single)
        return HfWeightFiles({key: single for key in shapes}, shapes)
    weight_map = read_json_object(index_path).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f"{index_path}: field 'weight_map' is missing or empty")
    if not all(isinstance(shard, str) for shard in weight_map.values()):
        raise CheckpointError(f"{index_path}: field 'weight_map' must map each key to a file name")
    file_of, shapes = {}, {}
    for shard in dict.fromkeys(weight_map.values()):
        path = checkpoint_file(model_path, shard)
        in_shard = _shapes_in(path)
        for key in (k for k, v in weight_map.items() if v == shard):
            if key not in in_shard:
                raise CheckpointError(f"{path}: key '{key}' is missing (named by {index_path})")
            file_of[key], shapes[key] = path, in_shard[key]
    return HfWeightFiles(file_of, shapes)


def plan_hf_names(
    files: HfWeightFiles, expected: Mapping[str, Tuple[int, ...]], parameters: Iterable[str], vocab_size: int
) -> Dict[str, str]:
    """Checkpoint key -> our name, checked against our model.

    Args:
        files: the checkpoint's tensors.
        expected: our model's state-dict shapes (parameters and buffers).
        parameters: our parameter names: each must come from the checkpoint (buffers may).
        vocab_size: our vocabulary (`VOCAB_KEYS` rows past it are dropped).

    Raises:
        CheckpointError: a key of no tensor of ours, a parameter the checkpoint lacks, or a shape
            that differs (one line naming the key, its file and the shapes).
    """
    style = key_style_of(files.shapes)
    plan = {}
    for key, shape in files.shapes.items():
        ours = style.to_ours(key)
        if ours is None or ours not in expected:
            raise CheckpointError(f"{files.file_of[key]}: unknown key '{key}' (no tensor of this model is stored "
                                  f"under it in the {style.name} Hugging Face layout)")
        wanted = expected[ours]
        fits = shape == wanted or (ours in VOCAB_KEYS and shape[1:] == wanted[1:] and shape[0] >= vocab_size)
        if not fits:
            raise CheckpointError(f"{files.file_of[key]}: key '{key}' has shape {list(shape)}, but this model's "
                                  f"{ours} is {list(wanted)}")
        plan[key] = ours
    missing = sorted(set(parameters) - set(plan.values()))
    if missing:
        raise CheckpointError(f"{files.files[0]}: key '{style.to_hf(missing[0])}' is missing ({len(missing)} weights "
                              f"of this model are not in the checkpoint, e.g. {missing[0]})")
    return plan


def resolve_device_map(model: torch.nn.Module, device_map: DeviceMap, dtype: torch.dtype) -> Dict[str, object]:
    """A module -> device map for an empty model, as transformers' ``from_pretrained`` makes one:
    "auto", "balanced", "balanced_low_0" and "sequential" are inferred by accelerate from the
    free memory; a dict is used as is; a device ("cpu", "cuda:1") holds everything."""
    if isinstance(device_map, dict):
        return dict(device_map)
    if device_map in ("auto", "balanced", "balanced_low_0", "sequential"):
        from accelerate import infer_auto_device_map
        from accelerate.utils import get_balanced_memory

        no_split = list(getattr(model, "_no_split_modules", None) or [])
        max_memory = None
        if device_map != "sequential":
            max_memory = get_balanced_memory(model, dtype=dtype, low_zero=device_map == "balanced_low_0",
                                             no_split_module_classes=no_split)
        return infer_auto_device_map(model, max_memory=max_memory, no_split_module_classes=no_split, dtype=dtype)
    return {"": device_map}


def _device_for(name: str, device_map: Mapping[str, object]) -> object:
    """The device of a tensor: that of the longest module prefix of `name` in the map."""
    parts = name.split(".")
    for end in range(len(parts), -1, -1):
        prefix = ".".join(parts[:end])
        if prefix in device_map:
            return device_map[prefix]
    raise ValueError(f"device_map places no module holding {name}")


def fit_vocab_rows(tensor: torch.Tensor, rows: int) -> torch.Tensor:
    """A (vocab, D) tensor (one of `VOCAB_KEYS`) with `rows` rows: its first `rows`, or padded with
    its mean row (for the image, pad and padding rows of the Hugging Face layout)."""
    if tensor.shape[0] == rows:
        return tensor
    if tensor.shape[0] > rows:
        return tensor[:rows]
    extra = tensor.float().mean(dim=0, keepdim=True).to(tensor.dtype).expand(rows - tensor.shape[0], -1)
    return torch.cat([tensor, extra], dim=0)


def load_hf_weights(
    model: torch.nn.Module, model_path: str, dtype: torch.dtype, device_map: DeviceMap
) -> Dict[str, object]:
    """Fills an empty (meta-device) model with a Hugging Face-layout checkpoint's weights, tensor by
    tensor onto the devices of `device_map`, in `dtype` (floating tensors), then dispatches it.

    Args:
        model: our `LlavaLlamaForCausalLM`, built under ``accelerate.init_empty_weights``.
        model_path: checkpoint directory or hub name.
        dtype: weights dtype.
        device_map: as for transformers' ``from_pretrained`` (see `resolve_device_map`).

    Returns:
        The module -> device map used.

    Raises:
        CheckpointError: see `read_hf_weight_files` and `plan_hf_names`.
    """
    from accelerate import dispatch_model
    from accelerate.utils import set_module_tensor_to_device
    from safetensors import safe_open

    files = read_hf_weight_files(model_path)
    expected = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    plan = plan_hf_names(files, expected, [name for name, _ in model.named_parameters()], model.config.vocab_size)
    placement = resolve_device_map(model, device_map, dtype)
    for path in files.files:
        with safe_open(path, framework="pt") as handle:
            for key in (k for k, f in files.file_of.items() if f == path):
                ours, tensor = plan[key], handle.get_tensor(key)
                if ours in VOCAB_KEYS:
                    tensor = fit_vocab_rows(tensor, expected[ours][0])
                set_module_tensor_to_device(model, ours, _device_for(ours, placement), value=tensor,
                                            dtype=dtype if tensor.is_floating_point() else None)
    dispatch_model(model, placement)
    return placement


def hf_tensors(model: torch.nn.Module, style: KeyStyle = CLASSIC) -> Dict[str, torch.Tensor]:
    """Our model's parameters under Hugging Face-layout names, with the vocabulary rows padded
    (`hf_vocab_rows`); buffers (rotary ``inv_freq``) are not part of that layout.

    Raises:
        CheckpointError: a parameter the layout has no name for.
    """
    rows = hf_vocab_rows(model.config.vocab_size)
    tensors = {}
    for name, param in model.named_parameters():
        key = style.to_hf(name)
        if key is None:
            raise CheckpointError(f"parameter {name} has no name in the {style.name} Hugging Face layout")
        tensor = param.detach()
        tensors[key] = (fit_vocab_rows(tensor, rows) if name in VOCAB_KEYS else tensor).contiguous()
    return tensors


def _shard_names(count: int, stem: str, suffix: str) -> List[str]:
    if count == 1:
        return [f"{stem}{suffix}"]
    return [f"{stem}-{i:05d}-of-{count:05d}{suffix}" for i in range(1, count + 1)]


def write_shards(tensors: Mapping[str, torch.Tensor], out_dir: str, safetensors: bool, max_shard_bytes: int) -> List[str]:
    """Writes tensors as transformers' checkpoints are: ``model.safetensors`` (or ``pytorch_model.bin``),
    or, past `max_shard_bytes`, numbered shards plus an index (``weight_map``, ``metadata.total_size``).

    Returns:
        The files written (shards, then the index when there is one).
    """
    shards: List[Dict[str, torch.Tensor]] = [{}]
    size = 0
    for key, tensor in tensors.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = tensor
        size += nbytes
    stem, suffix = ("model", ".safetensors") if safetensors else ("pytorch_model", ".bin")
    names = _shard_names(len(shards), stem, suffix)
    for name, shard in zip(names, shards):
        path = os.path.join(out_dir, name)
        if safetensors:
            from safetensors.torch import save_file

            save_file(dict(shard), path, metadata={"format": "pt"})
        else:
            torch.save(dict(shard), path)
    written = [os.path.join(out_dir, name) for name in names]
    if len(shards) > 1:
        index = {
            "metadata": {"total_size": sum(t.numel() * t.element_size() for t in tensors.values())},
            "weight_map": {key: name for name, shard in zip(names, shards) for key in shard},
        }
        index_path = os.path.join(out_dir, f"{stem}{suffix}.index.json")
        with open(index_path, "w", encoding="utf-8") as handle:
            json.dump(index, handle, indent=2, sort_keys=True)
            handle.write("\n")
        written.append(index_path)
    return written
