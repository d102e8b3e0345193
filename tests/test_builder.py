"""load_pretrained_model's paths: full checkpoint, projector-only with a base, bad paths."""
import shutil

import pytest
import torch

from llava.model.builder import load_pretrained_model


def test_full_checkpoint_loads_every_weight_from_disk(tiny_checkpoint):
    saved = torch.load(tiny_checkpoint / "pytorch_model.bin", map_location="cpu", weights_only=True)
    tokenizer, model, processor, context_len = load_pretrained_model(
        str(tiny_checkpoint), None, "llava-v1.5-tiny", device="cpu")
    state = model.state_dict()
    assert context_len == 2048 and processor is not None
    assert len(tokenizer) == model.config.vocab_size
    for key, value in saved.items():
        assert torch.equal(state[key], value), key
    assert model.get_vision_tower().is_loaded


def test_projector_only_checkpoint_takes_its_projector_over_the_base(tiny_checkpoint, tmp_path):
    base = torch.load(tiny_checkpoint / "pytorch_model.bin", map_location="cpu", weights_only=True)
    projector_dir = tmp_path / "llava-v1.5-tiny-pretrain"
    projector_dir.mkdir()
    shutil.copy(tiny_checkpoint / "config.json", projector_dir / "config.json")
    projector = {k: torch.randn_like(v) for k, v in base.items() if "mm_projector" in k}
    torch.save(projector, projector_dir / "mm_projector.bin")
    _, model, _, _ = load_pretrained_model(str(projector_dir), str(tiny_checkpoint), "llava-v1.5-tiny-pretrain",
                                           device="cpu")
    state = model.state_dict()
    for key, value in projector.items():
        assert torch.equal(state[key], value)
    assert torch.equal(state["model.layers.0.self_attn.q_proj.weight"], base["model.layers.0.self_attn.q_proj.weight"])


def test_missing_local_model_directory_is_named(tmp_path):
    missing = tmp_path / "nope" / "llava-v1.5-7b"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        load_pretrained_model(str(missing), None, "llava-v1.5-7b", device="cpu")
