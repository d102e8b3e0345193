"""Issue 29, LLaVA-HR: the dual-resolution tower's parameter names against the released models,
its output against an independent computation, the tiny checkpoint's strict load and
preprocessing, and one-line errors for bad HR fields."""
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from accelerate import init_empty_weights
from PIL import Image
from transformers import CLIPVisionConfig, CLIPVisionModel

from fitprune.lab.tiny_checkpoint import TinyLlavaSpec
from fitprune.lab.tiny_hr_checkpoint import TinyHrSpec, hr_config_fields, randomise_tower, write_tiny_hr
from llava.eval import run_llava
from llava.mm_utils import process_images
from llava.model.builder import load_pretrained_model
from llava.model.language_model.llava_llama import LlavaConfig, LlavaLlamaForCausalLM
from llava.model.multimodal_encoder.multipath_encoder import MultiPathVisionTower

REFERENCE = Path("/work/shared/reference") if Path("/work/shared/reference").is_dir() else None
REFERENCE_FILES = {"7b": "llava_hr_7b_state_dict.json", "x_13b": "llava_hr_x_13b_state_dict.json"}
TOWER = "model.vision_tower."
FAST = TOWER + "fast_vision_tower.vision_tower.vision_model."
SLOW = TOWER + "slow_vision_tower.vision_tower."


# ------------------------------------------------------------ real configs on the meta device


@pytest.mark.skipif(REFERENCE is None, reason="the shared reference files are not on this machine")
@pytest.mark.parametrize("variant", sorted(REFERENCE_FILES))
def test_real_config_on_meta_has_the_released_parameter_names_and_shapes(variant):
    reference = json.loads((REFERENCE / REFERENCE_FILES[variant]).read_text())
    with init_empty_weights():
        model = LlavaLlamaForCausalLM(LlavaConfig(**reference["config"]))
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    theirs = {k: tuple(v["shape"]) for k, v in reference["tensors"].items()}
    assert set(ours) ^ set(theirs) == set()
    assert {k: s for k, s in ours.items() if theirs[k] != s} == {}
    assert len(ours) == reference["n_keys"]
    # kept only so the checkpoint loads strictly: upstream never runs them
    unused = {FAST + "post_layernorm.weight", FAST + "embeddings.class_embedding"}
    unused |= {SLOW + k for k in reference["convnext"]["head_keys"]}
    assert unused <= set(ours)
    tower = model.get_model().get_vision_tower()
    assert tower.num_visual_tokens == reference["visual_tokens"]["n_fast_tokens"] == 1024
    assert tower.settings.fast_image_size == reference["visual_tokens"]["fast_branch_px"]


# ------------------------------------------------------------ tower output against plain torch


def _tower_fields(clip_image_size: int) -> dict:
    spec = TinyHrSpec(llava=TinyLlavaSpec(vision_layers=4, image_size=clip_image_size, patch_size=4))
    return hr_config_fields(spec, vocab_size=spec.llava.vocab_size)


def _random_tower(fields: dict) -> MultiPathVisionTower:
    torch.manual_seed(0)
    tower = MultiPathVisionTower(SimpleNamespace(**fields))
    with torch.no_grad():
        for name, param in tower.named_parameters():
            is_norm = name.endswith("weight") and param.dim() == 1 and "norm" in name or ".stem.1." in name
            param.copy_((1.0 if is_norm else 0.0) + 0.2 * torch.randn_like(param))
    return tower.eval()


def _ln2d(x, w, b, eps):
    """LayerNorm over channels of (B, C, H, W), as timm's LayerNorm2d."""
    return F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), w, b, eps).permute(0, 3, 1, 2)


def _convnext(sd, x, arch):
    """timm's ConvNeXt forward to the last stage, from its definition, on the checkpoint's keys."""
    p = lambda k: sd[SLOW[len(TOWER):] + k]  # noqa: E731
    eps = arch.layer_norm_eps
    x = F.conv2d(x, p("stem.0.weight"), p("stem.0.bias"), stride=arch.stem_patch)
    x = _ln2d(x, p("stem.1.weight"), p("stem.1.bias"), eps)
    for i, depth in enumerate(arch.depths):
        if i:
            x = _ln2d(x, p(f"stages.{i}.downsample.0.weight"), p(f"stages.{i}.downsample.0.bias"), eps)
            x = F.conv2d(x, p(f"stages.{i}.downsample.1.weight"), p(f"stages.{i}.downsample.1.bias"), stride=2)
        for j in range(depth):
            b = f"stages.{i}.blocks.{j}."
            h = F.conv2d(x, p(b + "conv_dw.weight"), p(b + "conv_dw.bias"), padding=3, groups=x.shape[1])
            h = F.layer_norm(h.permute(0, 2, 3, 1), (x.shape[1],), p(b + "norm.weight"), p(b + "norm.bias"), eps)
            h = F.linear(F.gelu(F.linear(h, p(b + "mlp.fc1.weight"), p(b + "mlp.fc1.bias"))),
                         p(b + "mlp.fc2.weight"), p(b + "mlp.fc2.bias"))
            x = x + (h * p(b + "weight")).permute(0, 3, 1, 2)
    return x


def _to_count(tokens, count):
    """Upstream's src2dst_align: bilinear (align_corners, fp32) up, avg-pool down."""
    b, n, c = tokens.shape
    if n == count:
        return tokens
    side, dst = int(n**0.5), int(count**0.5)
    grid = tokens.transpose(1, 2).reshape(b, c, side, side)
    if n < count:
        grid = F.interpolate(grid.float(), size=(dst, dst), mode="bilinear", align_corners=True).to(tokens.dtype)
    else:
        grid = F.avg_pool2d(grid, side // dst)
    return grid.flatten(2).transpose(1, 2)


def _s2f(sd, k, y, slow):
    """S2FStitchAlignModuleV2's equations."""
    p = lambda n: sd[f"align_stages_latent.{k}.{n}"]  # noqa: E731
    b, n, c = y.shape
    s = F.conv2d(F.gelu(F.conv2d(slow, p("slow_conv.weight"), p("slow_conv.bias"))), p("slow_proj.weight"),
                 p("slow_proj.bias"))
    s = _to_count(s.flatten(2).transpose(1, 2), n)
    side = int(n**0.5)
    g = y.transpose(1, 2).reshape(b, c, side, side)
    g = g + F.conv2d(F.gelu(F.conv2d(g, p("fast_conv.weight"), p("fast_conv.bias"), padding=3, groups=c)),
                     p("fast_proj.weight"), p("fast_proj.bias"))
    f = g.flatten(2).transpose(1, 2)
    pooled = torch.cat([f, s], -1).mean(1)
    gate = F.linear(F.gelu(F.linear(pooled, p("gate.0.weight"), p("gate.0.bias"))), p("gate.2.weight"), p("gate.2.bias"))
    return f + s * gate.tanh().unsqueeze(1)


def _reference(tower, fields, x):
    """The LLaVA-HR tower's output from the spec's equations; the ViT layers are transformers' own."""
    sd = tower.state_dict()
    arch, settings = tower.settings.arch, tower.settings
    clip = CLIPVisionModel(CLIPVisionConfig(**fields["mm_vision_tower_config"])).to(x.dtype).eval()
    clip.load_state_dict({k[len("fast_vision_tower.vision_tower."):]: v for k, v in sd.items()
                          if k.startswith("fast_vision_tower.")})
    slow = _convnext(sd, x, arch)
    patch = clip.config.patch_size
    fast_px = max(int(fields["input_image_size"] / 32 * patch), clip.config.image_size)
    y = F.interpolate(x.float(), size=(fast_px, fast_px), mode="bilinear", align_corners=True).to(x.dtype)
    y = F.conv2d(y, sd["fast_vision_tower.vision_tower.vision_model.embeddings.patch_embedding.weight"], stride=patch)
    grid = y.shape[-1]
    table = sd["fast_vision_tower.vision_tower.vision_model.embeddings.position_embedding.weight"]
    old = int((table.shape[0] - 1) ** 0.5)
    pos = table[1:].reshape(1, old, old, -1).permute(0, 3, 1, 2)
    if old != grid:
        pos = F.interpolate(pos.float(), size=(grid, grid), mode="bicubic", antialias=True).to(table.dtype)
    y = y.flatten(2).transpose(1, 2) + pos.flatten(2).transpose(1, 2)
    pre = clip.vision_model.pre_layrnorm
    y = F.layer_norm(y, (y.shape[-1],), pre.weight, pre.bias, pre.eps)
    layers = clip.vision_model.encoder.layers
    group = len(layers) // 4
    for i, layer in enumerate(layers):
        y = layer(y, None, None)[0]
        if (i + 1) % group == 0 and i + 1 < len(layers):
            y = _s2f(sd, (i + 1) // group - 1, y, slow)
    s = _to_count(slow.flatten(2).transpose(1, 2), y.shape[1])
    assert settings.fast_grid == grid
    return F.linear(y, sd["align_stages.0.fast_proj.weight"], sd["align_stages.0.fast_proj.bias"]) + F.linear(
        s, sd["align_stages.0.slow_proj.weight"], sd["align_stages.0.slow_proj.bias"])


# ViT table 4x4 (16 px), seen at 32 px: 8x8 patches = the 8x8 ConvNeXt map; table 16x16 (64 px): 16x16
# patches, the ConvNeXt map upsampled to them
@pytest.mark.parametrize("clip_image_size,tokens", [(16, 64), (64, 256)])
def test_tower_matches_the_spec_equations_in_float32_and_half(clip_image_size, tokens):
    fields = _tower_fields(clip_image_size)
    tower = _random_tower(fields)
    x = torch.randn(2, 3, fields["input_image_size"], fields["input_image_size"])
    with torch.no_grad():
        expected = _reference(tower, fields, x)
        out = tower(x)
    assert out.shape == (2, tokens, fields["mm_hidden_size"]) and tower.num_visual_tokens == tokens
    scale = expected.abs().max()
    # float32: the same operations in another order; 1e-5 of the output's range is ~100 ulps of float32
    assert (out - expected).abs().max() <= 1e-5 * scale
    for dtype in (torch.float16, torch.bfloat16):
        half_tower = _random_tower(fields).to(dtype)
        with torch.no_grad():
            ours = half_tower(x.to(dtype)).float()
            theirs = _reference(half_tower, fields, x.to(dtype)).float()
        # The same computation in plain half-precision torch sets the scale of rounding error: ours
        # (half weights, float32 interpolation and normalisation) must be within 2x of its error
        # against the float32 result, plus one unit roundoff of the output range.
        ours_error = (ours - expected).abs().max()
        their_error = (theirs - expected).abs().max()
        assert ours_error <= 2 * their_error + torch.finfo(dtype).eps * scale, (dtype, ours_error, their_error)


# ------------------------------------------------------------ the tiny checkpoint


@pytest.fixture(scope="module")
def tiny_hr(tmp_path_factory) -> Path:
    return write_tiny_hr(tmp_path_factory.mktemp("hr") / "llava-hr-tiny")


def test_tiny_hr_checkpoint_loads_strictly_and_processes_images_at_input_size(tiny_hr):
    _, model, processor, _ = load_pretrained_model(str(tiny_hr), None, "llava-hr-tiny", device="cpu")
    saved = torch.load(tiny_hr / "pytorch_model.bin", map_location="cpu", weights_only=True)
    state = model.state_dict()
    assert set(state) == set(saved)
    assert all(torch.equal(state[k], v) for k, v in saved.items())
    size = model.config.input_image_size
    wide = Image.new("RGB", (size * 2, size), (250, 10, 10))
    images = process_images([wide, Image.new("RGB", (10, 30), (0, 200, 0))], processor, model.config)
    assert images.shape == (2, 3, size, size)
    mean, std = torch.tensor(processor.image_mean), torch.tensor(processor.image_std)
    padding = (torch.tensor([int(m * 255) for m in processor.image_mean]) / 255 - mean) / std
    # the wide image fills the middle rows; the top rows are the mean-colour padding
    assert torch.allclose(images[0, :, 0, 0], padding, atol=1e-5)
    assert not torch.allclose(images[0, :, size // 2, 0], padding, atol=1e-2)
    assert model.get_model().num_visual_tokens() == 64
    assert model.encode_images(images).shape == (2, 64, model.config.hidden_size)


def _broken_copy(tiny_hr: Path, tmp_path: Path, change) -> Path:
    checkpoint = tmp_path / "llava-hr-broken"
    shutil.copytree(tiny_hr, checkpoint)
    fields = json.loads((checkpoint / "config.json").read_text())
    change(fields)
    (checkpoint / "config.json").write_text(json.dumps(fields))
    return checkpoint


def _missing_size(fields):
    del fields["input_image_size"]


def _wider_convnext(fields):
    fields["vision_tower_slow_config"]["dims"][1] += 8


def _odd_size(fields):
    fields["input_image_size"] = 100


@pytest.mark.parametrize("change,message", [
    (_missing_size, "field 'input_image_size' is missing; LLaVA-HR (is_multipath_encoder) needs it"),
    (_odd_size, "field 'input_image_size' is 100: it must be a positive multiple of the ConvNeXt's stride 32"),
    (_wider_convnext, "field 'vision_tower_slow_config': the ConvNeXt it gives (depths [1, 1, 2, 1], dims "
                      "[8, 24, 24, 32]) does not match the checkpoint's weights: model.vision_tower."
                      "slow_vision_tower.vision_tower.stages.1.downsample.1.weight: checkpoint (16, 8, 2, 2), "
                      "config (24, 8, 2, 2)"),
])
def test_a_bad_hr_field_is_one_line_naming_config_json_exit_2(tiny_hr, tmp_path, capsys, change, message):
    checkpoint = _broken_copy(tiny_hr, tmp_path, change)
    image = tmp_path / "red.png"
    Image.new("RGB", (30, 20), (200, 30, 30)).save(image)
    with pytest.raises(SystemExit) as exit_info:
        run_llava.main(["--model-path", str(checkpoint), "--image-file", str(image), "--query", "Q?", "--device", "cpu"])
    err = capsys.readouterr().err.splitlines()
    assert exit_info.value.code == 2
    assert err[-1].startswith(f"run_llava: error: {checkpoint / 'config.json'}: "), err
    line = err[-1]
    if change is _wider_convnext:  # the first mismatching key, then how many more
        line = line[: line.rindex(" (and ")]
    assert line.endswith(message), err
    assert not any("Traceback" in line for line in err)
