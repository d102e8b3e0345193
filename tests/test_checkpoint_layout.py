"""The model's state_dict matches the released llava-v1.5-7b/13b weight maps (spec 3.1, 3.2, 3.7).

Built on the meta device from the real configs, so no memory is spent and no weights are needed.
"""
import json

import pytest
import torch
from transformers import AutoConfig, CLIPVisionConfig

from llava.model.language_model.llava_llama import LlavaConfig, LlavaLlamaForCausalLM

# Released config.json of liuhaotian/llava-v1.5-7b (spec 3.1); mm_vision_tower is replaced per test.
LLAVA_V15_7B_CONFIG = {
    "_name_or_path": "./checkpoints/llava-v1.5-7b",
    "architectures": ["LlavaLlamaForCausalLM"],
    "model_type": "llava",
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 0,
    "hidden_act": "silu",
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "max_position_embeddings": 4096,
    "max_length": 4096,
    "rms_norm_eps": 1e-05,
    "initializer_range": 0.02,
    "pretraining_tp": 1,
    "rope_scaling": None,
    "tie_word_embeddings": False,
    "torch_dtype": "float16",
    "transformers_version": "4.31.0",
    "use_cache": True,
    "vocab_size": 32000,
    "image_aspect_ratio": "pad",
    "mm_hidden_size": 1024,
    "mm_projector_type": "mlp2x_gelu",
    "mm_vision_tower": "openai/clip-vit-large-patch14-336",
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
LLAVA_V15_13B_CONFIG = {
    **LLAVA_V15_7B_CONFIG,
    "_name_or_path": "./checkpoints/llava-v1.5-13b",
    "hidden_size": 5120,
    "intermediate_size": 13824,
    "num_hidden_layers": 40,
    "num_attention_heads": 40,
    "num_key_value_heads": 40,
}
# The checkpoint's dimensions, written out from spec 3.7 rather than read from the config.
WEIGHT_MAP_DIMS = {
    "7b": dict(vocab=32000, hidden=4096, ffn=11008, layers=32, head_dim=128, vision=1024),
    "13b": dict(vocab=32000, hidden=5120, ffn=13824, layers=40, head_dim=128, vision=1024),
}
CONFIGS = {"7b": LLAVA_V15_7B_CONFIG, "13b": LLAVA_V15_13B_CONFIG}

LLAVA_V15_7B_TOTAL_SIZE = 13_518_798_848  # pytorch_model.bin.index.json "total_size"
LLAVA_V15_7B_LLAMA_PARAMS = 6_738_415_616
LLAVA_V15_7B_PROJECTOR_PARAMS = 20_979_712
CLIP_L_336_VISUAL_TOKENS = (336 // 14) ** 2  # 576


def expected_weight_map(vocab, hidden, ffn, layers, head_dim, vision):
    """{key: shape} of the released LLaVA-1.5 checkpoint (spec 3.7)."""
    shapes = {"model.embed_tokens.weight": (vocab, hidden)}
    for i in range(layers):
        prefix = f"model.layers.{i}"
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            shapes[f"{prefix}.self_attn.{proj}.weight"] = (hidden, hidden)
        shapes[f"{prefix}.self_attn.rotary_emb.inv_freq"] = (head_dim // 2,)
        shapes[f"{prefix}.mlp.gate_proj.weight"] = (ffn, hidden)
        shapes[f"{prefix}.mlp.up_proj.weight"] = (ffn, hidden)
        shapes[f"{prefix}.mlp.down_proj.weight"] = (hidden, ffn)
        shapes[f"{prefix}.input_layernorm.weight"] = (hidden,)
        shapes[f"{prefix}.post_attention_layernorm.weight"] = (hidden,)
    shapes["model.norm.weight"] = (hidden,)
    shapes["lm_head.weight"] = (vocab, hidden)
    shapes["model.mm_projector.0.weight"] = (hidden, vision)
    shapes["model.mm_projector.0.bias"] = (hidden,)
    shapes["model.mm_projector.2.weight"] = (hidden, hidden)
    shapes["model.mm_projector.2.bias"] = (hidden,)
    return shapes


@pytest.fixture(scope="module")
def clip_l_336_config_dir(tmp_path_factory):
    """Just the config of openai/clip-vit-large-patch14-336 (spec 3.2): what a delay-loaded tower reads."""
    path = tmp_path_factory.mktemp("clip-vit-large-patch14-336")
    CLIPVisionConfig(
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=24,
        num_attention_heads=16,
        image_size=336,
        patch_size=14,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
        projection_dim=768,
    ).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def meta_models(clip_l_336_config_dir, tmp_path_factory):
    """{size: (fields, config written and read back from config.json, meta-device model)}."""
    built = {}
    for size, released in CONFIGS.items():
        fields = {**released, "mm_vision_tower": str(clip_l_336_config_dir)}
        checkpoint = tmp_path_factory.mktemp(f"llava-v1.5-{size}")
        (checkpoint / "config.json").write_text(json.dumps(fields, indent=2))
        config = AutoConfig.from_pretrained(checkpoint)
        with torch.device("meta"):
            model = LlavaLlamaForCausalLM(config)
        built[size] = (fields, config, model)
    return built


SIZES = pytest.mark.parametrize("size", list(CONFIGS))


@SIZES
def test_config_json_round_trips_every_field(meta_models, size):
    fields, config, _ = meta_models[size]
    assert isinstance(config, LlavaConfig)
    saved = config.to_dict()
    for key, value in fields.items():
        if key == "_name_or_path":
            continue
        assert saved[key] == value, key


@SIZES
def test_state_dict_is_the_released_weight_map(meta_models, size):
    _, _, model = meta_models[size]
    expected = expected_weight_map(**WEIGHT_MAP_DIMS[size])
    actual = {key: tuple(tensor.shape) for key, tensor in model.state_dict().items()}
    assert sorted(set(actual) - set(expected)) == [], "keys the checkpoint does not have"
    assert sorted(set(expected) - set(actual)) == [], "checkpoint keys the model lacks"
    assert actual == expected
    assert {name for name, _ in model.named_parameters()} <= set(actual)
    assert all(t.device.type == "meta" for t in model.state_dict().values())


def test_7b_byte_total_matches_the_index_total_size(meta_models):
    _, _, model = meta_models["7b"]
    state = model.state_dict()
    inv_freq = sum(t.numel() for k, t in state.items() if k.endswith("rotary_emb.inv_freq"))
    projector = sum(t.numel() for k, t in state.items() if ".mm_projector." in k)
    params = sum(t.numel() for k, t in state.items() if not k.endswith("rotary_emb.inv_freq"))
    assert params - projector == LLAVA_V15_7B_LLAMA_PARAMS
    assert projector == LLAVA_V15_7B_PROJECTOR_PARAMS
    assert params == sum(p.numel() for p in model.parameters())
    assert params * 2 + inv_freq * 4 == LLAVA_V15_7B_TOTAL_SIZE  # fp16 weights, fp32 inv_freq


@SIZES
def test_vision_tower_gives_576_visual_tokens(meta_models, size):
    _, _, model = meta_models[size]
    tower = model.get_vision_tower()
    assert not tower.is_loaded, "the tower must be delay-loaded: its weights are not in the checkpoint"
    assert model.get_model().num_visual_tokens() == CLIP_L_336_VISUAL_TOKENS == 576
    assert tower.hidden_size == model.config.mm_hidden_size
