"""Writes a tiny random LLaVA-1.5 or LLaVA-NeXT (v1.6) checkpoint in the exact layout of the real one.

The directory holds `config.json` with every field llava-v1.5 (or llava-v1.6-vicuna) has,
`generation_config.json`, `pytorch_model.bin` with the real key names, a locally trained
SentencePiece tokenizer, and a tiny CLIP vision tower directory (weights +
`preprocessor_config.json`) that `mm_vision_tower` points to. A v1.6 checkpoint, like the
released ones, also holds `model.image_newline` and the (fine-tuned) tower's weights under
`model.vision_tower.vision_tower.*`. Tests and the README demo load it with
`load_pretrained_model` offline.

    python -m fitprune.lab.tiny_checkpoint --output checkpoints/llava-tiny
    python -m fitprune.lab.tiny_checkpoint --version v1.6 --output checkpoints/llava-v1.6-tiny
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel, GenerationConfig

from llava.model.language_model.llava_llama import LlavaConfig, LlavaLlamaForCausalLM
from fitprune.lab.tokenizer import train_tiny_tokenizer

VISION_TOWER_DIR = "clip-vision-tower"
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
CONTEXT_LENGTH = 4096  # ok: LLaVA-1.5's context (max_position_embeddings), as the real configs


VERSIONS = ("v1.5", "v1.6")

LLAVA_NEXT_GRID_MULTIPLES = ((1, 2), (2, 1), (2, 2), (3, 1), (1, 3))
"""llava-v1.6's ``image_grid_pinpoints`` in units of the tower's image size (336 px there):
[[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]], as (width, height)."""


@dataclass(frozen=True)
class TinyLlavaSpec:
    """Sizes of a tiny LLaVA; the defaults give 144 visual tokens (48 px / 4 px patches).

    ``version`` "v1.6" writes a LLaVA-NeXT checkpoint: anyres images with grid pinpoints
    ``grid_multiples`` × ``image_size`` (width, height), ``spatial_unpad`` merging with an
    ``image_newline`` embedding, and the tower's weights inside the checkpoint.
    """

    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    vision_hidden_size: int = 32
    vision_layers: int = 2
    vision_heads: int = 2
    image_size: int = 48
    patch_size: int = 4
    vocab_size: int = 512
    projector_type: str = "mlp2x_gelu"
    initializer_range: float = 0.1
    version: str = "v1.5"
    grid_multiples: tuple = LLAVA_NEXT_GRID_MULTIPLES

    def __post_init__(self) -> None:
        if self.version not in VERSIONS:
            raise ValueError(f"TinyLlavaSpec.version={self.version!r} is not one of {VERSIONS}")

    @property
    def grid_pinpoints(self) -> list:
        """``image_grid_pinpoints`` of a v1.6 spec: [width, height] pairs in pixels."""
        return [[across * self.image_size, down * self.image_size] for across, down in self.grid_multiples]


def llava_next_config_fields(spec: TinyLlavaSpec) -> dict:
    """The config.json fields llava-v1.6-vicuna adds to (or changes from) llava-v1.5."""
    return {
        "image_aspect_ratio": "anyres",
        "image_grid_pinpoints": spec.grid_pinpoints,
        "mm_patch_merge_type": "spatial_unpad",
        "image_crop_resolution": 224,
        "image_split_resolution": 224,
        "mm_projector_lr": None,
        "mm_vision_tower_lr": 2e-06,
        "unfreeze_mm_vision_tower": True,
        "tokenizer_model_max_length": CONTEXT_LENGTH,
        "tokenizer_padding_side": "right",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "rope_theta": 10000.0,
    }


# the sizes of the lab's trained demo models (`fitprune.lab.train_demo`)
DEMO_SPEC = TinyLlavaSpec(
    hidden_size=64,
    intermediate_size=256,
    num_hidden_layers=8,
    num_attention_heads=4,
    num_key_value_heads=4,
    vision_hidden_size=64,
    vision_layers=3,
    vision_heads=4,
    image_size=96,
    patch_size=8,
    vocab_size=768,
    # at 0.02 (LLaMA's value) attention starts uniform over the 144 visual tokens and the
    # model spends thousands of steps answering from priors; 0.1 finds the object early
    initializer_range=0.1,
)
SCENES_SPEC = replace(
    DEMO_SPEC,
    hidden_size=96,
    intermediate_size=256,
    # 128 px images in 8 px patches: 256 visual tokens, one per cell of the relational grid
    image_size=128,
)


def llava_config_fields(spec: TinyLlavaSpec, vision_tower: str, vocab_size: int) -> dict:
    """The config.json fields of llava-v1.5 (or v1.6, per `spec.version`), with the tiny sizes of `spec`."""
    fields = _llava_v15_config_fields(spec, vision_tower, vocab_size)
    if spec.version == "v1.6":
        del fields["max_length"]  # llava-v1.6's config.json has no generation default
        fields.update(llava_next_config_fields(spec))
    return fields


def _llava_v15_config_fields(spec: TinyLlavaSpec, vision_tower: str, vocab_size: int) -> dict:
    return {
        "architectures": ["LlavaLlamaForCausalLM"],
        "model_type": "llava",
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 0,
        "hidden_act": "silu",
        "hidden_size": spec.hidden_size,
        "intermediate_size": spec.intermediate_size,
        "num_hidden_layers": spec.num_hidden_layers,
        "num_attention_heads": spec.num_attention_heads,
        "num_key_value_heads": spec.num_key_value_heads,
        "max_position_embeddings": CONTEXT_LENGTH,
        "max_length": CONTEXT_LENGTH,
        "rms_norm_eps": 1e-05,
        "initializer_range": spec.initializer_range,
        "pretraining_tp": 1,
        "rope_scaling": None,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "use_cache": True,
        "vocab_size": vocab_size,
        "image_aspect_ratio": "pad",
        "mm_hidden_size": spec.vision_hidden_size,
        "mm_projector_type": spec.projector_type,
        "mm_vision_tower": vision_tower,
        "mm_vision_select_layer": -2,
        "mm_vision_select_feature": "patch",
        "mm_use_im_start_end": False,
        "mm_use_im_patch_token": False,
        "mm_resampler_type": None,
        "use_mm_proj": True,
        "tune_mm_mlp_adapter": False,
        "freeze_mm_mlp_adapter": False,
        "freeze_mm_vision_resampler": False,
        "tune_mm_vision_resampler": False,
        "unfreeze_mm_vision_tower": False,
    }


def write_vision_tower(out_dir: Path, spec: TinyLlavaSpec) -> Path:
    """Saves a random tiny CLIP vision model and its image processor into `out_dir`."""
    config = CLIPVisionConfig(
        hidden_size=spec.vision_hidden_size,
        intermediate_size=spec.vision_hidden_size * 4,
        num_hidden_layers=spec.vision_layers,
        num_attention_heads=spec.vision_heads,
        image_size=spec.image_size,
        patch_size=spec.patch_size,
        hidden_act="quick_gelu",
        projection_dim=spec.vision_hidden_size,
    )
    CLIPVisionModel(config).save_pretrained(out_dir, safe_serialization=False)
    CLIPImageProcessor(
        size={"shortest_edge": spec.image_size},
        crop_size={"height": spec.image_size, "width": spec.image_size},
        image_mean=CLIP_MEAN,
        image_std=CLIP_STD,
        resample=3,
    ).save_pretrained(out_dir)
    return out_dir


def write_tiny_llava(
    out_dir: str | Path, spec: TinyLlavaSpec = TinyLlavaSpec(), seed: int = 0, relative_tower: bool = False
) -> Path:
    """Writes a tiny random LLaVA checkpoint to `out_dir` and returns the directory.

    Args:
        out_dir: where to write (created).
        spec: model sizes and layout version (``TinyLlavaSpec(version="v1.6")`` for LLaVA-NeXT).
        seed: torch seed of the random weights.
        relative_tower: write `mm_vision_tower` relative to the checkpoint (for shipped
            checkpoints); by default it is the tower's absolute path.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    tokenizer = train_tiny_tokenizer(out_dir, vocab_size=spec.vocab_size)
    tower_dir = write_vision_tower(out_dir / VISION_TOWER_DIR, spec)
    tower_ref = VISION_TOWER_DIR if relative_tower else str(tower_dir.resolve())
    config = LlavaConfig(**llava_config_fields(spec, str(tower_dir.resolve()), len(tokenizer)))
    model = LlavaLlamaForCausalLM(config)
    if spec.version == "v1.6":
        _fill_llava_next_weights(model, tower_dir)
    model.config.mm_vision_tower = tower_ref
    model.save_pretrained(out_dir, safe_serialization=False)
    generation = GenerationConfig(bos_token_id=1, eos_token_id=2, pad_token_id=0, max_length=CONTEXT_LENGTH)
    generation.save_pretrained(out_dir)
    (out_dir / "tiny_spec.json").write_text(json.dumps(asdict(spec), indent=1) + "\n")
    return out_dir


def _fill_llava_next_weights(model: LlavaLlamaForCausalLM, tower_dir: Path) -> None:
    """Copies the saved tiny tower into the model (v1.6 checkpoints hold its weights) and
    draws `image_newline` as LLaVA-NeXT's training initialises it: N(0, 1/hidden_size)."""
    inner = model.get_model()
    inner.get_vision_tower().vision_tower.load_state_dict(CLIPVisionModel.from_pretrained(tower_dir).state_dict())
    hidden_size = inner.image_newline.shape[0]
    with torch.no_grad():
        inner.image_newline.copy_(torch.randn(hidden_size) / hidden_size**0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", required=True, help="checkpoint directory to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--version", choices=VERSIONS, default="v1.5", help="checkpoint layout to write")
    args = parser.parse_args()
    spec = TinyLlavaSpec(version=args.version)
    print(write_tiny_llava(args.output, spec=spec, seed=args.seed, relative_tower=True))


if __name__ == "__main__":
    main()
