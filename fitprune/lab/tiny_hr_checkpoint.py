"""Writes a tiny random LLaVA-HR checkpoint in the layout and key names of the released ones
(favor123/llava-hr-7b-sft-1024): config.json with upstream's HR fields, `pytorch_model.bin` holding
the LLaMA, the projector and the whole dual tower under ``model.vision_tower.{fast_vision_tower,
slow_vision_tower,align_stages_latent,align_stages}.*``, and the lab's SentencePiece tokenizer.

Being tiny, it records the sizes upstream hard-codes per model name: the ViT's in
``mm_vision_tower_config`` and the ConvNeXt's in ``vision_tower_slow_config``.

    python -m fitprune.lab.tiny_hr_checkpoint --output checkpoints/llava-hr-tiny
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from transformers import GenerationConfig

from fitprune.lab.tiny_checkpoint import CONTEXT_LENGTH, TinyLlavaSpec, llava_config_fields
from fitprune.lab.tokenizer import train_tiny_tokenizer
from llava.model.language_model.llava_llama import LlavaConfig, LlavaLlamaForCausalLM
from llava.model.multimodal_encoder.convnext_tower import ConvNextBlock

TINY_FAST_TOWER = "tiny-clip-vit"
"""The tiny checkpoint's ``mm_vision_tower``: a name only; the ViT is built from ``mm_vision_tower_config``."""


@dataclass(frozen=True)
class TinyHrSpec:
    """Sizes of a tiny LLaVA-HR.

    The defaults give 64 visual tokens: a 256 px image makes an 8x8 ConvNeXt map (stride 32), and
    the ViT (4 px patches, 16 px position table of 4x4) sees max(256 * 4 / 32, 16) = 32 px, 8x8 patches.

    Attributes:
        llava: the LLaMA and ViT sizes (``vision_layers`` must be a multiple of 4).
        input_image_size: the processed image's side, in pixels.
        convnext_depths, convnext_dims: blocks and channels per ConvNeXt stage.
        convnext_eps: its LayerNorm eps.
        convnext_head_hidden: width of its unused head's ``pre_logits.fc`` (0: none, as xxlarge).
        convnext_classes: rows of its unused ``head.fc``.
    """

    llava: TinyLlavaSpec = field(default_factory=lambda: TinyLlavaSpec(vision_layers=4, image_size=16, patch_size=4))
    input_image_size: int = 256
    convnext_depths: tuple = (1, 1, 2, 1)
    convnext_dims: tuple = (8, 16, 24, 32)
    convnext_eps: float = 1e-6
    convnext_head_hidden: int = 32
    convnext_classes: int = 10


def hr_config_fields(spec: TinyHrSpec, vocab_size: int) -> dict:
    """config.json of a tiny LLaVA-HR: llava-v1.5's fields plus upstream's HR fields and the recorded sizes."""
    fields = llava_config_fields(spec.llava, TINY_FAST_TOWER, vocab_size)
    llava = spec.llava
    fields.update(
        is_multipath_encoder=True,
        vision_tower_slow="convnext_tiny_hr",
        input_image_size=spec.input_image_size,
        freeze_vision=False,
        mm_vision_tower_config=dict(
            hidden_size=llava.vision_hidden_size, intermediate_size=4 * llava.vision_hidden_size,
            num_hidden_layers=llava.vision_layers, num_attention_heads=llava.vision_heads, num_channels=3,
            image_size=llava.image_size, patch_size=llava.patch_size, hidden_act="quick_gelu",
            projection_dim=llava.vision_hidden_size, layer_norm_eps=1e-5,
        ),
        vision_tower_slow_config=dict(
            depths=list(spec.convnext_depths), dims=list(spec.convnext_dims), layer_norm_eps=spec.convnext_eps,
            head_hidden_size=spec.convnext_head_hidden or None, num_classes=spec.convnext_classes,
        ),
    )
    return fields


def randomise_tower(model: LlavaLlamaForCausalLM, generator: torch.Generator) -> None:
    """Gives the tower weights that make every path count: ConvNeXt layer scales in [0.2, 1]
    (timm's 1e-6 init would make its blocks near-identities) and nonzero S2F projections
    (upstream zero-initialises them; trained checkpoints are not zero)."""
    tower = model.get_model().get_vision_tower()
    with torch.no_grad():
        for block in tower.slow_vision_tower.modules():
            if isinstance(block, ConvNextBlock):
                block.weight.copy_(0.2 + 0.8 * torch.rand(block.weight.shape, generator=generator))
        for adapter in getattr(tower, "align_stages_latent", []):
            for proj in (adapter.slow_proj, adapter.fast_proj):
                proj.weight.copy_(0.1 * torch.randn(proj.weight.shape, generator=generator))


def write_tiny_hr(out_dir: str | Path, spec: TinyHrSpec = TinyHrSpec(), seed: int = 0) -> Path:
    """Writes a tiny random LLaVA-HR checkpoint to `out_dir` (created) and returns the directory.

    Raises:
        ValueError: `spec` describes a model LLaVA-HR cannot build (via the tower's checks).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    tokenizer = train_tiny_tokenizer(out_dir, vocab_size=spec.llava.vocab_size)
    model = LlavaLlamaForCausalLM(LlavaConfig(**hr_config_fields(spec, len(tokenizer))))
    randomise_tower(model, torch.Generator().manual_seed(seed))
    model.save_pretrained(out_dir, safe_serialization=False)
    GenerationConfig(bos_token_id=1, eos_token_id=2, pad_token_id=0, max_length=CONTEXT_LENGTH).save_pretrained(out_dir)
    (out_dir / "tiny_hr_spec.json").write_text(json.dumps(asdict(spec), indent=1) + "\n")
    return out_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", required=True, help="checkpoint directory to write")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(write_tiny_hr(args.output, seed=args.seed))


if __name__ == "__main__":
    main()
