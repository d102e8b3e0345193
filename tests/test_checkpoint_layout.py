"""The model's state_dict matches the released llava-v1.5-7b/13b weight maps (spec 3.1, 3.2, 3.7).

Built on the meta device from the real configs, so no memory is spent and no weights are needed.
"""
import json

import pytest
import torch
from transformers import AutoConfig, CLIPVisionConfig

from llava.model.language_model.llava_llama import LlavaConfig, LlavaLlamaForCausalLM
from tests.released_configs import LLAVA_V15_13B_CONFIG, LLAVA_V15_7B_CONFIG, WEIGHT_MAP_DIMS, expected_weight_map

CONFIGS = {"7b": LLAVA_V15_7B_CONFIG, "13b": LLAVA_V15_13B_CONFIG}

LLAVA_V15_7B_TOTAL_SIZE = 13_518_798_848  # pytorch_model.bin.index.json "total_size"
LLAVA_V15_7B_LLAMA_PARAMS = 6_738_415_616
LLAVA_V15_7B_PROJECTOR_PARAMS = 20_979_712
CLIP_L_336_VISUAL_TOKENS = (336 // 14) ** 2  # 576


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
