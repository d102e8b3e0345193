"""The demo model's checkpoint as training sees it: built at random, started from an earlier
stage or a pretrained tower, written in LLaVA-1.5's layout.

    tokenizer, model, processor = build_untrained(out_dir, spec, task, seed, sentences)
    load_initial_weights(model, out_dir, read_checkpoint_weights(previous))   # --init-from
    ... train ...
    save_checkpoint(model, out_dir)    # config.json, pytorch_model.bin, clip-vision-tower/

The checkpoint has the real layout: config.json, pytorch_model.bin without the tower, the tower
(weights and image processor) in `clip-vision-tower/` named relative to the checkpoint, the
tokenizer files; `fitprune.lab.train_demo` adds `training.json`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Tuple

import torch
from transformers import GenerationConfig

from fitprune.lab.answers import answer_token
from fitprune.lab.shapes.data import tokenizer_sentences
from fitprune.lab.shapes.scenes import ShapesTask
from fitprune.lab.tiny_checkpoint import VISION_TOWER_DIR, TinyLlavaSpec, llava_config_fields, write_vision_tower
from llava.model.language_model.llava_llama import LlavaConfig, LlavaLlamaForCausalLM


class TrainableLlava(LlavaLlamaForCausalLM):
    """The LLaVA model with gradients through the vision tower (at inference the tower
    is frozen and runs under no_grad)."""

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Projected visual features (N, V, D) of images (N, 3, H, W), differentiable."""
        tower = self.get_model().get_vision_tower()
        outputs = tower.vision_tower(images.to(tower.dtype), output_hidden_states=True)
        return self.get_model().mm_projector(tower.feature_select(outputs))


def read_checkpoint_weights(checkpoint: Path) -> Tuple[dict, dict, bytes]:
    """The weights of a checkpoint written by this script, read before anything is written.

    Returns:
        (state dict of everything but the tower, state dict of the tower, tokenizer.model bytes).

    Raises:
        FileNotFoundError: naming the first missing file.
    """
    from transformers import CLIPVisionModel

    for name in ("pytorch_model.bin", f"{VISION_TOWER_DIR}/config.json", "tokenizer.model"):
        if not (checkpoint / name).is_file():
            raise FileNotFoundError(f"{checkpoint / name}: --init-from needs a checkpoint written by this script")
    language = torch.load(checkpoint / "pytorch_model.bin", map_location="cpu", weights_only=True)
    tower = CLIPVisionModel.from_pretrained(checkpoint / VISION_TOWER_DIR).state_dict()
    return language, tower, (checkpoint / "tokenizer.model").read_bytes()


def load_initial_weights(model: "TrainableLlava", out_dir: Path, weights: Tuple[dict, dict, bytes]) -> None:
    """Replaces the random weights of `model` with a checkpoint's (`read_checkpoint_weights`).

    Raises:
        ValueError: if the checkpoint's tokenizer differs from the one written into `out_dir`
            (its token ids would mean other pieces), a weight is missing or extra, or has another size.
    """
    language, tower, tokenizer_bytes = weights
    if (out_dir / "tokenizer.model").read_bytes() != tokenizer_bytes:
        raise ValueError("--init-from: the checkpoint's tokenizer.model differs from this task's; "
                         "its colours and shapes must be the same")
    try:
        missing, unexpected = model.load_state_dict(language, strict=False)
    except RuntimeError as err:
        raise ValueError(f"--init-from: the checkpoint's decoder has other sizes (pass the --hidden-size etc. of "
                         f"its training.json spec): {str(err).splitlines()[-1].strip()}") from None
    missing = [name for name in missing if not name.startswith("model.vision_tower.")]
    if missing or unexpected:
        raise ValueError(f"--init-from: weights missing {missing[:3]}, unexpected {unexpected[:3]}")
    model.get_model().get_vision_tower().vision_tower.load_state_dict(tower)


def load_tower(model: "TrainableLlava", directory: Path) -> dict:
    """Puts a pretrained tower (`fitprune.lab.patch_pretraining`) into `model`; returns its record.

    Raises:
        FileNotFoundError: the directory lacks the tower or its record.
        ValueError: its sizes are not the model's tower's.
    """
    from fitprune.lab.patch_pretraining import read_pretrained_tower

    state, record = read_pretrained_tower(directory)
    tower = model.get_model().get_vision_tower().vision_tower
    try:
        tower.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"--init-tower {directory}: not this task's tower ({str(err).splitlines()[-1].strip()})") from None
    return record


def reuse_tokenizer(out_dir: Path, checkpoint: Path, task):
    """Replaces the tokenizer files in `out_dir` with `checkpoint`'s and loads them.

    Raises:
        ValueError: if an answer of `task` is not one of its pieces.
    """
    import shutil

    from transformers import LlamaTokenizer

    for name in ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copyfile(checkpoint / name, out_dir / name)
    tokenizer = LlamaTokenizer.from_pretrained(str(out_dir))
    for answer in task.answers:
        answer_token(tokenizer, answer)
    return tokenizer


def build_untrained(out_dir: Path, spec: TinyLlavaSpec, task: ShapesTask, seed: int,
                    sentences: Callable = tokenizer_sentences):
    """Writes the tokenizer (trained with `sentences(task)`) and a random tower into `out_dir`
    and builds the random model.

    Returns:
        (tokenizer, model, image_processor), the model's every parameter trainable.
    """
    from fitprune.lab.tokenizer import train_tiny_tokenizer

    torch.manual_seed(seed)
    tokenizer = train_tiny_tokenizer(out_dir, vocab_size=spec.vocab_size, extra_sentences=sentences(task))
    tower_dir = write_vision_tower(out_dir / VISION_TOWER_DIR, spec)
    config = LlavaConfig(**llava_config_fields(spec, str(tower_dir.resolve()), len(tokenizer)))
    model = TrainableLlava(config)
    tower = model.get_model().get_vision_tower()
    tower.load_model()
    tower.vision_tower.requires_grad_(True)
    return tokenizer, model, tower.image_processor


def save_checkpoint(model: TrainableLlava, out_dir: Path) -> None:
    """Writes the trained tower into `clip-vision-tower/` and the rest as a LLaVA-1.5
    checkpoint (no tower weights in pytorch_model.bin; `mm_vision_tower` relative)."""
    tower = model.get_model().get_vision_tower()
    tower.vision_tower.config._name_or_path = VISION_TOWER_DIR  # not the absolute path it was loaded from
    tower.vision_tower.save_pretrained(out_dir / VISION_TOWER_DIR, safe_serialization=False)
    plain = LlavaLlamaForCausalLM(model.config)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("model.vision_tower.")}
    plain.load_state_dict(state)
    plain.config.mm_vision_tower = VISION_TOWER_DIR
    plain.config.architectures = ["LlavaLlamaForCausalLM"]
    plain.save_pretrained(out_dir, safe_serialization=False)
    config = plain.config
    GenerationConfig(bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id,
                     pad_token_id=config.pad_token_id, max_length=config.max_position_embeddings).save_pretrained(out_dir)


def training_record(checkpoint: Path) -> dict:
    """The training.json of a checkpoint (the stage a run starts from), or a stub naming it."""
    path = checkpoint / "training.json"
    if path.is_file():
        return json.loads(path.read_text())
    return {"checkpoint": str(checkpoint), "wall_time_s": 0.0}
