"""Shapes of a checkpoint's weights, read without loading their data (safetensors headers, or a
memory-mapped zip pickle), so a config can be checked against the weights before they load."""
from __future__ import annotations

import json
import os
from typing import Dict, Iterable, Optional, Tuple

import torch

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def _files_of(directory: str) -> Optional[Iterable[str]]:
    """The weight files of a checkpoint directory (its shards when it has an index), or None."""
    for name in WEIGHT_FILES:
        index = os.path.join(directory, f"{name}.index.json")
        if os.path.isfile(index):
            with open(index) as handle:
                shards = sorted(set(json.load(handle)["weight_map"].values()))
            return [os.path.join(directory, shard) for shard in shards]
        if os.path.isfile(os.path.join(directory, name)):
            return [os.path.join(directory, name)]
    return None


def _shapes_of_file(path: str, prefix: str) -> Dict[str, Tuple[int, ...]]:
    if path.endswith(".safetensors"):
        from safetensors import safe_open

        with safe_open(path, framework="pt") as handle:
            return {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys() if k.startswith(prefix)}
    tensors = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    return {k: tuple(v.shape) for k, v in tensors.items() if k.startswith(prefix)}


def checkpoint_shapes(directory: str, prefix: str) -> Optional[Dict[str, Tuple[int, ...]]]:
    """Shape of every weight whose key starts with `prefix` in the checkpoint `directory`.

    Returns:
        {key: shape}, or None when the directory holds no weights file this can read (the
        loader then reports the file itself).
    """
    files = _files_of(directory) if os.path.isdir(directory) else None
    if files is None:
        return None
    shapes: Dict[str, Tuple[int, ...]] = {}
    try:
        for path in files:
            shapes.update(_shapes_of_file(path, prefix))
    except Exception:  # noqa: BLE001 - an unreadable file is reported by the loader, with its own message
        return None
    return shapes
