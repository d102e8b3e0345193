"""CLIP vision tower and projector builders (spec sections 1.9 and 1.10), on a tiny random CLIP."""

from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

from llava.model.multimodal_encoder.builder import build_vision_tower
from llava.model.multimodal_encoder.clip_encoder import CLIPVisionTower
from llava.model.multimodal_projector.builder import IdentityMap, build_vision_projector

TINY_CLIP = dict(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=48, patch_size=4
)
NUM_PATCHES = (TINY_CLIP["image_size"] // TINY_CLIP["patch_size"]) ** 2


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("tiny_clip")
    torch.manual_seed(0)
    CLIPVisionModel(CLIPVisionConfig(**TINY_CLIP)).save_pretrained(str(out_dir))
    size = TINY_CLIP["image_size"]
    CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size}).save_pretrained(
        str(out_dir)
    )
    return out_dir


def tower_args(clip_dir, **overrides):
    fields = dict(mm_vision_tower=str(clip_dir), mm_vision_select_layer=-2, mm_vision_select_feature="patch")
    fields.update(overrides)
    return SimpleNamespace(**fields)


@pytest.fixture()
def pixels():
    torch.manual_seed(1)
    return torch.randn(2, 3, TINY_CLIP["image_size"], TINY_CLIP["image_size"])


def reference_hidden_states(clip_dir, pixels):
    model = CLIPVisionModel.from_pretrained(str(clip_dir))
    with torch.no_grad():
        return model(pixels, output_hidden_states=True).hidden_states


def test_delay_load_reads_only_the_config(clip_dir):
    tower = build_vision_tower(tower_args(clip_dir), delay_load=True)
    assert isinstance(tower, CLIPVisionTower)
    assert not tower.is_loaded
    assert tower.vision_tower_name == str(clip_dir)
    assert tower.config.hidden_size == tower.hidden_size == TINY_CLIP["hidden_size"]
    assert tower.num_patches == tower.num_visual_tokens == NUM_PATCHES
    assert list(tower.state_dict()) == []
    with pytest.raises(RuntimeError, match="load_model"):
        tower(torch.zeros(1, 3, 48, 48))
    with pytest.raises(RuntimeError, match="load_model"):
        _ = tower.dtype


def test_forward_matches_clip_penultimate_layer_without_cls(clip_dir, pixels):
    tower = build_vision_tower(tower_args(clip_dir), delay_load=True)
    tower.load_model()
    assert tower.is_loaded
    assert tower.image_processor.crop_size == {"height": 48, "width": 48}
    assert not any(p.requires_grad for p in tower.parameters())
    assert tower.dtype == torch.float32 and tower.device.type == "cpu"
    assert tower.dummy_feature.shape == (1, TINY_CLIP["hidden_size"])

    features = tower(pixels)
    assert features.shape == (2, NUM_PATCHES, TINY_CLIP["hidden_size"])
    assert not features.requires_grad
    expected = reference_hidden_states(clip_dir, pixels)[-2][:, 1:]
    torch.testing.assert_close(features, expected, rtol=0, atol=0)


def test_list_input_is_encoded_image_by_image(clip_dir, pixels):
    tower = CLIPVisionTower(str(clip_dir), args=tower_args(clip_dir))
    batched = tower(pixels)
    listed = tower([pixels[0], pixels[1]])
    assert [f.shape for f in listed] == [(1, NUM_PATCHES, TINY_CLIP["hidden_size"])] * 2
    torch.testing.assert_close(torch.cat(listed), batched, rtol=1e-5, atol=1e-5)


def test_output_is_cast_back_to_input_dtype(clip_dir, pixels):
    tower = CLIPVisionTower(str(clip_dir), args=tower_args(clip_dir))
    out = tower(pixels.double())
    assert out.dtype == torch.float64
    torch.testing.assert_close(out.float(), tower(pixels), rtol=1e-5, atol=1e-5)


def test_bad_image_shapes_raise(clip_dir, pixels):
    tower = CLIPVisionTower(str(clip_dir), args=tower_args(clip_dir))
    with pytest.raises(ValueError, match="B, 3, H, W"):
        tower(pixels[0])
    with pytest.raises(ValueError, match="3, H, W"):
        tower([pixels])


def test_cls_patch_keeps_the_cls_token(clip_dir, pixels):
    tower = build_vision_tower(tower_args(clip_dir, mm_vision_select_feature="cls_patch"))
    assert tower.num_visual_tokens == NUM_PATCHES + 1
    features = tower(pixels)
    assert features.shape == (2, NUM_PATCHES + 1, TINY_CLIP["hidden_size"])
    torch.testing.assert_close(features, reference_hidden_states(clip_dir, pixels)[-2], rtol=0, atol=0)


def test_select_layer_is_honoured(clip_dir, pixels):
    tower = build_vision_tower(tower_args(clip_dir, mm_vision_select_layer=-1))
    torch.testing.assert_close(tower(pixels), reference_hidden_states(clip_dir, pixels)[-1][:, 1:], rtol=0, atol=0)


def test_unknown_select_feature_raises(clip_dir, pixels):
    with pytest.raises(ValueError, match="'cls'"):
        build_vision_tower(tower_args(clip_dir, mm_vision_select_feature="cls"), delay_load=True)
    tower = build_vision_tower(tower_args(clip_dir))
    tower.select_feature = "all"
    with pytest.raises(ValueError, match="'all'"):
        tower(pixels)


def test_missing_select_layer_raises(clip_dir):
    args = SimpleNamespace(mm_vision_tower=str(clip_dir))
    with pytest.raises(ValueError, match="mm_vision_select_layer"):
        build_vision_tower(args, delay_load=True)


def test_builder_falls_back_to_vision_tower_field(clip_dir):
    args = SimpleNamespace(vision_tower=str(clip_dir), mm_vision_select_layer=-2)
    tower = build_vision_tower(args, delay_load=True)
    assert tower.vision_tower_name == str(clip_dir) and tower.select_feature == "patch"


@pytest.mark.parametrize("name", ["no/such/tower", "facebook/dinov2-small"])
def test_builder_rejects_unknown_towers(name):
    with pytest.raises(ValueError, match="Unknown vision tower.*existing directory"):
        build_vision_tower(SimpleNamespace(mm_vision_tower=name, mm_vision_select_layer=-2), delay_load=True)


def test_builder_needs_a_tower_name():
    with pytest.raises(ValueError, match="mm_vision_tower"):
        build_vision_tower(SimpleNamespace(mm_vision_select_layer=-2))


# ---------------------------------------------------------------- projector

MM_HIDDEN, HIDDEN = TINY_CLIP["hidden_size"], 48


def projector_config(**fields):
    return SimpleNamespace(mm_hidden_size=MM_HIDDEN, hidden_size=HIDDEN, **fields)


def test_linear_projector_is_the_default():
    for cfg in (projector_config(), projector_config(mm_projector_type="linear")):
        projector = build_vision_projector(cfg)
        assert isinstance(projector, nn.Linear)
        assert {k: tuple(v.shape) for k, v in projector.state_dict().items()} == {
            "weight": (HIDDEN, MM_HIDDEN), "bias": (HIDDEN,),
        }


@pytest.mark.parametrize(
    "projector_type, keys",
    [
        ("mlp2x_gelu", ["0.weight", "0.bias", "2.weight", "2.bias"]),
        ("mlp3x_gelu", ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"]),
    ],
)
def test_mlp_gelu_projector_layout(projector_type, keys):
    projector = build_vision_projector(projector_config(mm_projector_type=projector_type))
    assert isinstance(projector, nn.Sequential)
    state = projector.state_dict()
    assert list(state) == keys
    assert tuple(state["0.weight"].shape) == (HIDDEN, MM_HIDDEN)
    assert all(tuple(state[k].shape) == (HIDDEN, HIDDEN) for k in keys[2::2])
    assert all(isinstance(m, nn.GELU) and m.approximate == "none" for m in projector[1::2])
    assert projector(torch.zeros(2, NUM_PATCHES, MM_HIDDEN)).shape == (2, NUM_PATCHES, HIDDEN)


def test_identity_projector():
    projector = build_vision_projector(projector_config(mm_projector_type="identity"))
    assert isinstance(projector, IdentityMap)
    assert projector.config == {"mm_projector_type": "identity"}
    x = torch.randn(1, 3, MM_HIDDEN)
    assert projector(x) is x
    assert list(projector.state_dict()) == []


@pytest.mark.parametrize("projector_type", ["mlp2x_relu", "qformer", "mlp0x_gelu"])
def test_unknown_projector_raises(projector_type):
    with pytest.raises(ValueError, match=projector_type):
        build_vision_projector(projector_config(mm_projector_type=projector_type))


def test_projector_needs_sizes():
    with pytest.raises(ValueError, match="mm_hidden_size"):
        build_vision_projector(SimpleNamespace(hidden_size=HIDDEN, mm_projector_type="mlp2x_gelu"))
