"""Image padding, preprocessing, prompt tokenization and stopping rules (spec section 1.4)."""

import base64
import io
from types import SimpleNamespace

import pytest
import torch
from PIL import Image
from transformers import AutoTokenizer, CLIPImageProcessor, LlamaTokenizer

from llava.constants import IMAGE_TOKEN_INDEX
from llava.conversation import conv_templates
from llava.mm_utils import (
    KeywordsStoppingCriteria,
    expand2square,
    get_model_name_from_path,
    load_image_from_base64,
    process_images,
    tokenizer_image_token,
)
from fitprune.lab.tokenizer import train_tiny_tokenizer

CLIP_PAD_COLOR = (122, 116, 104)
QUESTION = "Is there a dog in the image?\nAnswer the question using a single word or phrase."


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("tiny_tokenizer")
    train_tiny_tokenizer(out_dir)
    return out_dir


@pytest.fixture(scope="session")
def tokenizer(tiny_tokenizer_dir):
    return AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir), use_fast=False)


@pytest.fixture()
def image_processor():
    return CLIPImageProcessor(size={"shortest_edge": 48}, crop_size={"height": 48, "width": 48})


def vicuna_v1_prompt(question: str = QUESTION) -> str:
    conv = conv_templates["vicuna_v1"].copy()
    conv.append_message(conv.roles[0], "<image>\n" + question)
    conv.append_message(conv.roles[1], None)
    return conv.get_prompt()


def solid(size, color, mode="RGB"):
    return Image.new(mode, size, color)


def gradient(width, height):
    image = Image.new("RGB", (width, height))
    image.putdata([((7 * x) % 256, (11 * y) % 256, (x * y) % 256) for y in range(height) for x in range(width)])
    return image


# ---------------------------------------------------------------- images


def test_expand2square_wide_pads_top_and_bottom():
    out = expand2square(solid((10, 4), (255, 0, 0)), CLIP_PAD_COLOR)
    assert out.size == (10, 10) and out.mode == "RGB"
    # Offset (0, (10 - 4) // 2) = (0, 3): rows 3..6 hold the image.
    assert [out.getpixel((5, y)) for y in (2, 3, 6, 7)] == [CLIP_PAD_COLOR, (255, 0, 0), (255, 0, 0), CLIP_PAD_COLOR]


def test_expand2square_tall_pads_left_and_right():
    out = expand2square(solid((5, 10), (0, 255, 0)), CLIP_PAD_COLOR)
    assert out.size == (10, 10)
    # Offset ((10 - 5) // 2, 0) = (2, 0): columns 2..6 hold the image.
    assert [out.getpixel((x, 5)) for x in (1, 2, 6, 7)] == [CLIP_PAD_COLOR, (0, 255, 0), (0, 255, 0), CLIP_PAD_COLOR]


def test_expand2square_square_is_returned_unchanged_and_mode_is_kept():
    square = solid((6, 6), (1, 2, 3))
    assert expand2square(square, CLIP_PAD_COLOR) is square
    grey = expand2square(solid((2, 6), 200, mode="L"), 9)
    assert grey.mode == "L" and grey.getpixel((0, 0)) == 9 and grey.getpixel((2, 0)) == 200


def test_load_image_from_base64_keeps_mode():
    buffer = io.BytesIO()
    solid((3, 2), (10, 20, 30, 40), mode="RGBA").save(buffer, format="PNG")
    image = load_image_from_base64(base64.b64encode(buffer.getvalue()).decode())
    assert image.mode == "RGBA" and image.size == (3, 2) and image.getpixel((0, 0)) == (10, 20, 30, 40)


def test_process_images_pad_matches_manual_expand_then_preprocess(image_processor):
    background = tuple(int(x * 255) for x in image_processor.image_mean)
    assert background == CLIP_PAD_COLOR
    images = [gradient(64, 40), gradient(30, 70), gradient(50, 50)]
    out = process_images(images, image_processor, SimpleNamespace(image_aspect_ratio="pad"))
    expected = torch.stack(
        [
            image_processor.preprocess(expand2square(im, background), return_tensors="pt")["pixel_values"][0]
            for im in images
        ]
    )
    assert out.shape == (3, 3, 48, 48)
    assert torch.equal(out, expected)


def test_process_images_without_pad_resizes_and_crops(image_processor):
    images = [gradient(64, 40), gradient(30, 70)]
    for cfg in (SimpleNamespace(), SimpleNamespace(image_aspect_ratio=None), SimpleNamespace(image_aspect_ratio="x")):
        out = process_images(images, image_processor, cfg)
        assert torch.equal(out, image_processor(images, return_tensors="pt")["pixel_values"])
    padded = process_images(images, image_processor, SimpleNamespace(image_aspect_ratio="pad"))
    assert not torch.equal(out, padded)


# ---------------------------------------------------------------- tokenizer


def test_tiny_tokenizer_loads_like_llava_tokenizer(tokenizer, tiny_tokenizer_dir):
    assert isinstance(tokenizer, LlamaTokenizer)
    assert sorted(p.name for p in tiny_tokenizer_dir.iterdir()) == [
        "special_tokens_map.json", "tokenizer.model", "tokenizer_config.json",
    ]
    assert (tokenizer.unk_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (0, 1, 2)
    assert tokenizer.add_bos_token and not tokenizer.add_eos_token
    assert (tokenizer.pad_token, tokenizer.pad_token_id) == ("<unk>", 0)
    assert tokenizer.padding_side == "right" and tokenizer.model_max_length == 2048
    assert tokenizer.clean_up_tokenization_spaces is False
    assert tokenizer.vocab_size == 512
    # The newline is the byte piece <0x0A>, as in LLaMA.
    assert tokenizer.convert_ids_to_tokens(tokenizer("\nIs").input_ids)[1:3] == ["\u2581", "<0x0A>"]


def test_tiny_tokenizer_training_is_deterministic(tiny_tokenizer_dir, tmp_path):
    train_tiny_tokenizer(tmp_path)
    assert (tmp_path / "tokenizer.model").read_bytes() == (tiny_tokenizer_dir / "tokenizer.model").read_bytes()


def test_tiny_tokenizer_rejects_too_small_vocab(tmp_path):
    with pytest.raises(ValueError, match="vocab_size must be at least"):
        train_tiny_tokenizer(tmp_path, vocab_size=300)


def test_tokenizer_image_token_splices_one_index_between_chunks(tokenizer):
    prompt = vicuna_v1_prompt()
    prefix, suffix = prompt.split("<image>")
    ids = tokenizer_image_token(prompt, tokenizer)
    chunk0 = tokenizer(prefix).input_ids
    chunk1 = tokenizer(suffix).input_ids
    assert chunk0[0] == chunk1[0] == tokenizer.bos_token_id
    assert ids == [tokenizer.bos_token_id] + chunk0[1:] + [IMAGE_TOKEN_INDEX] + chunk1[1:]
    assert ids.count(tokenizer.bos_token_id) == 1 and ids[0] == tokenizer.bos_token_id
    assert ids.count(IMAGE_TOKEN_INDEX) == 1
    assert ids.index(IMAGE_TOKEN_INDEX) == len(chunk0)
    # After the image: the dummy-prefix piece, then the newline byte.
    after = tokenizer.convert_ids_to_tokens(ids[len(chunk0) + 1:len(chunk0) + 3])
    assert after == ["\u2581", "<0x0A>"]


def test_tokenizer_image_token_two_images(tokenizer):
    ids = tokenizer_image_token("a <image> b <image> c", tokenizer)
    first = ids.index(IMAGE_TOKEN_INDEX)
    assert ids.count(IMAGE_TOKEN_INDEX) == 2 and ids.count(tokenizer.bos_token_id) == 1
    expected = [tokenizer.bos_token_id]
    for index, chunk in enumerate(["a ", " b ", " c"]):
        if index:
            expected.append(IMAGE_TOKEN_INDEX)
        expected += tokenizer(chunk).input_ids[1:]
    assert ids == expected and first == len(tokenizer("a ").input_ids)


def test_tokenizer_image_token_at_start_and_without_image(tokenizer):
    ids = tokenizer_image_token("<image>\nhi", tokenizer)
    assert ids[:2] == [tokenizer.bos_token_id, IMAGE_TOKEN_INDEX]
    assert tokenizer_image_token("just text", tokenizer) == tokenizer("just text").input_ids


def test_tokenizer_image_token_return_tensors(tokenizer):
    prompt = vicuna_v1_prompt()
    tensor = tokenizer_image_token(prompt, tokenizer, IMAGE_TOKEN_INDEX, return_tensors="pt")
    assert tensor.dtype == torch.long and tensor.dim() == 1
    assert tensor.tolist() == tokenizer_image_token(prompt, tokenizer)
    with pytest.raises(ValueError, match="'np'"):
        tokenizer_image_token(prompt, tokenizer, return_tensors="np")


def test_image_position_equals_prefix_length_for_both_v1_templates(tokenizer):
    for mode in ("vicuna_v1", "llava_v1"):
        conv = conv_templates[mode].copy()
        conv.append_message(conv.roles[0], "<image>\n" + QUESTION)
        conv.append_message(conv.roles[1], None)
        prompt = conv.get_prompt()
        prefix = prompt.split("<image>")[0]
        assert prefix.endswith("USER: ")
        ids = tokenizer_image_token(prompt, tokenizer)
        assert ids.index(IMAGE_TOKEN_INDEX) == len(tokenizer(prefix).input_ids)


# ---------------------------------------------------------------- names


@pytest.mark.parametrize(
    "path, name",
    [
        ("liuhaotian/llava-v1.5-7b", "llava-v1.5-7b"),
        ("/ckpts/llava-v1.5-13b/", "llava-v1.5-13b"),
        ("llava-v1.5-7b", "llava-v1.5-7b"),
        ("runs/llava-v1.5-7b-lora/checkpoint-500", "llava-v1.5-7b-lora_checkpoint-500"),
        ("/abs/runs/llava-x/checkpoint-12/", "llava-x_checkpoint-12"),
    ],
)
def test_get_model_name_from_path(path, name):
    assert get_model_name_from_path(path) == name


@pytest.mark.parametrize("path", ["", "/", "checkpoint-500"])
def test_get_model_name_from_path_rejects_unnameable_paths(path):
    with pytest.raises(ValueError):
        get_model_name_from_path(path)


# ---------------------------------------------------------------- stopping


def _generated(prompt_ids, *new_ids):
    return torch.cat([prompt_ids, torch.tensor([list(new_ids)], dtype=torch.long)], dim=1)


def test_keywords_stopping_criteria_stops_on_eos_string(tokenizer):
    prompt_ids = tokenizer_image_token(vicuna_v1_prompt(), tokenizer, return_tensors="pt").unsqueeze(0)
    criteria = KeywordsStoppingCriteria(["</s>"], tokenizer, prompt_ids)
    assert [ids.tolist() for ids in criteria.keyword_ids] == [[tokenizer.eos_token_id]]
    answer = tokenizer("yes").input_ids[1:]
    assert criteria(_generated(prompt_ids, *answer), None) is False
    assert criteria(_generated(prompt_ids, *answer, tokenizer.eos_token_id), None) is True


def test_keywords_stopping_criteria_matches_decoded_text(tokenizer):
    prompt_ids = torch.tensor([tokenizer("Count them.").input_ids])
    criteria = KeywordsStoppingCriteria(["es"], tokenizer, prompt_ids)
    generated = tokenizer("circles").input_ids[1:]
    keyword_ids = criteria.keyword_ids[0].tolist()
    assert generated[-len(keyword_ids):] != keyword_ids  # only the text path can match
    assert criteria(_generated(prompt_ids, *tokenizer("There are").input_ids[1:]), None) is False
    assert criteria(_generated(prompt_ids, *generated), None) is True


def test_keywords_stopping_criteria_waits_for_every_sample(tokenizer):
    eos, other = tokenizer.eos_token_id, tokenizer("yes").input_ids[-1]
    prompt_ids = torch.tensor([tokenizer("Is it red?").input_ids] * 2)
    criteria = KeywordsStoppingCriteria(["</s>"], tokenizer, prompt_ids)
    step1 = torch.cat([prompt_ids, torch.tensor([[eos], [other]])], dim=1)
    assert criteria(step1, None) is False
    step2 = torch.cat([step1, torch.tensor([[other], [eos]])], dim=1)
    assert criteria(step2, None) is True


def test_keywords_stopping_criteria_needs_keywords(tokenizer):
    with pytest.raises(ValueError):
        KeywordsStoppingCriteria([], tokenizer, torch.tensor([[1]]))
