"""Prompt rendering of the conversation templates (spec section 2)."""

import pytest

from llava.conversation import (
    Conversation,
    SeparatorStyle,
    conv_llava_v1,
    conv_templates,
    conv_vicuna_v1,
    default_conversation,
)

VICUNA_V1_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
LLAVA_V1_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)
QUESTION = "Is there a dog in the image?\nAnswer the question using a single word or phrase."


def single_turn_prompt(template: Conversation, question: str) -> str:
    conv = template.copy()
    conv.append_message(conv.roles[0], "<image>\n" + question)
    conv.append_message(conv.roles[1], None)
    return conv.get_prompt()


def test_vicuna_v1_single_turn_prompt_is_exact():
    expected = (
        "A chat between a curious user and an artificial intelligence assistant. The assistant gives "
        "helpful, detailed, and polite answers to the user's questions. USER: <image>\n"
        "Is there a dog in the image?\nAnswer the question using a single word or phrase. ASSISTANT:"
    )
    assert single_turn_prompt(conv_templates["vicuna_v1"], QUESTION) == expected


def test_llava_v1_single_turn_prompt_is_exact():
    expected = f"{LLAVA_V1_SYSTEM} USER: <image>\n{QUESTION} ASSISTANT:"
    assert single_turn_prompt(conv_templates["llava_v1"], QUESTION) == expected


def test_v1_templates_differ_only_in_system_text():
    assert conv_vicuna_v1.system == VICUNA_V1_SYSTEM
    assert conv_llava_v1.system == LLAVA_V1_SYSTEM
    for template in (conv_vicuna_v1, conv_llava_v1):
        assert tuple(template.roles) == ("USER", "ASSISTANT")
        assert template.sep_style == SeparatorStyle.TWO
        assert (template.sep, template.sep2, template.version) == (" ", "</s>", "v1")
        assert (len(template.messages), template.offset) == (0, 0)


def test_multi_turn_prompt_uses_sep2_after_answers():
    conv = conv_vicuna_v1.copy()
    conv.append_message("USER", "<image>\nWhat is this?")
    conv.append_message("ASSISTANT", "A dog.")
    conv.append_message("USER", "What color is it?")
    conv.append_message("ASSISTANT", None)
    expected = (
        f"{VICUNA_V1_SYSTEM} USER: <image>\nWhat is this? ASSISTANT: A dog.</s>"
        "USER: What color is it? ASSISTANT:"
    )
    assert conv.get_prompt() == expected


def test_conv_templates_keys_and_aliases():
    assert set(conv_templates) == {
        "default", "v0", "v1", "vicuna_v1", "llama_2", "plain", "v0_plain", "llava_v0",
        "v0_mmtag", "llava_v1", "v1_mmtag", "llava_llama_2", "mpt",
    }
    assert conv_templates["v1"] is conv_templates["vicuna_v1"] is default_conversation
    assert conv_templates["default"] is conv_templates["v0"]
    assert conv_templates["plain"] is conv_templates["v0_plain"]


def test_copy_is_independent_and_templates_are_read_only():
    conv = conv_vicuna_v1.copy()
    conv.append_message("USER", "hi")
    assert len(conv_vicuna_v1.messages) == 0
    with pytest.raises(TypeError, match="copy"):
        conv_vicuna_v1.append_message("USER", "hi")


def test_single_style_prompt():
    conv = conv_templates["llava_v0"].copy()
    conv.append_message("Human", "Hello")
    conv.append_message("Assistant", None)
    assert conv.get_prompt() == f"{LLAVA_V1_SYSTEM}###Human: Hello###Assistant:"


def test_vicuna_v0_hides_its_example_turns():
    template = conv_templates["v0"]
    assert template.offset == len(template.messages) == 2
    assert template.copy().to_gradio_chatbot() == []


def test_mpt_style_prompt():
    conv = conv_templates["mpt"].copy()
    conv.append_message(conv.roles[0], "Hi")
    conv.append_message(conv.roles[1], None)
    assert conv.get_prompt() == conv.system + "<|im_end|><|im_start|>user\nHi<|im_end|><|im_start|>assistant\n"


def test_plain_style_prompt():
    conv = conv_templates["plain"].copy()
    conv.append_message(conv.roles[0], "<image>\n")
    conv.append_message(conv.roles[1], None)
    assert conv.get_prompt() == "<image>\n\n"


def test_llama_2_style_prompt():
    conv = conv_templates["llava_llama_2"].copy()
    conv.append_message("USER", "Hi")
    conv.append_message("ASSISTANT", "Hello!")
    conv.append_message("USER", "Bye")
    conv.append_message("ASSISTANT", None)
    expected = f"[INST] <<SYS>>\n{conv.system}\n<</SYS>>\n\nHi [/INST] Hello! </s><s>[INST] Bye [/INST]"
    assert conv.get_prompt() == expected


def test_llama_2_rejects_empty_first_message():
    conv = conv_templates["llama_2"].copy()
    conv.append_message("USER", None)
    with pytest.raises(ValueError, match="first message"):
        conv.get_prompt()


def test_image_tuple_moves_placeholder_to_front():
    from PIL import Image

    image = Image.new("RGB", (8, 4))
    conv = conv_vicuna_v1.copy()
    conv.append_message("USER", ("What is this? <image>", image, "Pad"))
    conv.append_message("ASSISTANT", None)
    assert conv.get_prompt() == f"{VICUNA_V1_SYSTEM} USER: <image>\nWhat is this? ASSISTANT:"
    assert conv.dict()["messages"][0] == ["USER", "What is this? <image>"]
    padded = conv.get_images(return_pil=True)
    assert len(padded) == 1 and padded[0].size == (8, 8)
    assert isinstance(conv.get_images()[0], str)

    mmtag = conv_templates["v1_mmtag"].copy()
    mmtag.append_message("USER", ("What is this? <image>", image, "Default"))
    mmtag.append_message("ASSISTANT", None)
    assert mmtag.get_prompt() == (
        f"{mmtag.system} USER: <Image><image></Image> ASSISTANT: Received.</s>USER: What is this? ASSISTANT:"
    )
