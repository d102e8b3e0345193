"""Conversation templates and prompt rendering for LLaVA.

A :class:`Conversation` holds a system text, two role names and the list of
``[role, message]`` turns; :meth:`Conversation.get_prompt` renders them into the
single string that is tokenized for the language model. The module-level
templates are shared and read-only: always work on ``template.copy()``.
"""

import dataclasses
from enum import Enum, auto
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from PIL import Image

from llava.constants import DEFAULT_IMAGE_TOKEN
from llava.conversation_images import chatbot_html, display_image, encode_png_base64

# A message is plain text, ``None`` (the slot the model will fill), or, for the
# first user turn of the web UI, a ``(text, PIL image, image_process_mode)`` tuple.
Message = Union[None, str, Tuple[str, Image.Image, str]]


class SeparatorStyle(Enum):
    """How turns are joined into a prompt."""

    SINGLE = auto()
    TWO = auto()
    MPT = auto()
    PLAIN = auto()
    LLAMA_2 = auto()


def _message_text(message: Message) -> Optional[str]:
    """Return the text part of a message (the first element of an image tuple)."""
    if isinstance(message, tuple):
        return message[0]
    return message


@dataclasses.dataclass
class Conversation:
    """A chat history plus the formatting rules of one model family.

    Attributes:
        system: System text placed at the start of the prompt.
        roles: The two role names, user first.
        messages: ``[role, message]`` turns. Templates store a tuple so that they
            cannot be mutated by accident; :meth:`copy` returns a list.
        offset: Number of leading example turns hidden from the UI.
        sep_style: How turns are joined (see :class:`SeparatorStyle`).
        sep: First separator.
        sep2: Second separator (used after assistant turns by ``TWO``).
        version: Template version tag, e.g. ``"v1"`` or ``"v1_mmtag"``.
        skip_next: UI flag: skip generation for the next turn.
    """

    system: str
    roles: Sequence[str]
    messages: Sequence[Sequence[Message]]
    offset: int
    sep_style: SeparatorStyle = SeparatorStyle.SINGLE
    sep: str = "###"
    sep2: Optional[str] = None
    version: str = "Unknown"
    skip_next: bool = False

    def _prompt_messages(self) -> List[Tuple[str, Message]]:
        """Return the turns to render, with the image placeholder normalised.

        When the first message carries an image tuple, ``<image>`` is moved to the
        front of its text (or, for ``mmtag`` versions, replaced by two extra turns
        that announce the image).
        """
        messages = [(role, message) for role, message in self.messages]
        if not messages or not isinstance(messages[0][1], tuple):
            return messages
        first_role, first_message = messages[0]
        text = first_message[0].replace(DEFAULT_IMAGE_TOKEN, "").strip()
        if "mmtag" in self.version:
            messages[0] = (first_role, text)
            messages.insert(0, (self.roles[0], "<Image><image></Image>"))
            messages.insert(1, (self.roles[1], "Received."))
        else:
            messages[0] = (first_role, f"{DEFAULT_IMAGE_TOKEN}\n{text}")
        return messages

    def get_prompt(self) -> str:
        """Render the conversation into the prompt string.

        Returns:
            The prompt. For ``TWO`` style this is ``system + sep`` followed by
            ``"ROLE: message" + (sep or sep2)`` per filled turn and ``"ROLE:"`` for
            an empty (``None``) turn.

        Raises:
            ValueError: For ``LLAMA_2`` style when the first turn is empty or is not
                a user turn, or for an unknown separator style.
        """
        messages = self._prompt_messages()
        if self.sep_style == SeparatorStyle.SINGLE:
            return self._render_alternating(messages, self.sep, self.sep, ": ", ":")
        if self.sep_style == SeparatorStyle.TWO:
            return self._render_alternating(messages, self.sep, self.sep2, ": ", ":")
        if self.sep_style == SeparatorStyle.MPT:
            return self._render_alternating(messages, self.sep, self.sep, "", "")
        if self.sep_style == SeparatorStyle.PLAIN:
            return self._render_plain(messages)
        if self.sep_style == SeparatorStyle.LLAMA_2:
            return self._render_llama_2(messages)
        raise ValueError(f"Unknown separator style: {self.sep_style!r}")

    def _render_alternating(
        self,
        messages: List[Tuple[str, Message]],
        user_sep: str,
        assistant_sep: Optional[str],
        role_suffix: str,
        empty_suffix: str,
    ) -> str:
        """Render ``system + sep`` then ``role + suffix + message + sep`` per turn."""
        seps = (user_sep, assistant_sep)
        parts = [self.system, self.sep]
        for index, (role, message) in enumerate(messages):
            text = _message_text(message)
            if text:
                parts.append(f"{role}{role_suffix}{text}{seps[index % 2]}")
            else:
                parts.append(f"{role}{empty_suffix}")
        return "".join(parts)

    def _render_plain(self, messages: List[Tuple[str, Message]]) -> str:
        """Render messages back to back with no roles (pretraining format).

        The assistant separator is ``sep2``, falling back to ``sep`` when it is unset.
        """
        seps = (self.sep, self.sep if self.sep2 is None else self.sep2)
        parts = [self.system]
        for index, (_, message) in enumerate(messages):
            text = _message_text(message)
            if text:
                parts.append(text + seps[index % 2])
        return "".join(parts)

    def _render_llama_2(self, messages: List[Tuple[str, Message]]) -> str:
        """Render the ``[INST] <<SYS>> ... [/INST]`` format of LLaMA-2 chat models."""
        parts = []
        for index, (role, message) in enumerate(messages):
            text = _message_text(message)
            if index == 0:
                if not text:
                    raise ValueError("LLAMA_2 prompts need a non-empty first message")
                if role != self.roles[0]:
                    raise ValueError(f"LLAMA_2 prompts must start with role {self.roles[0]!r}, got {role!r}")
                text = f"<<SYS>>\n{self.system}\n<</SYS>>\n\n{text}"
            if not text:
                continue
            if index % 2 == 0:
                parts.append(f"{self.sep}[INST] {text} [/INST]")
            else:
                parts.append(f" {text} {self.sep2}")
        return "".join(parts).removeprefix(self.sep)

    def append_message(self, role: str, message: Message) -> None:
        """Append one turn.

        Args:
            role: The speaker, normally one of ``self.roles``.
            message: Text, ``None`` for the turn the model should complete, or a
                ``(text, image, image_process_mode)`` tuple.

        Raises:
            TypeError: If called on a shared template (whose messages are a tuple)
                instead of a :meth:`copy`.
        """
        if not isinstance(self.messages, list):
            raise TypeError("This conversation is a shared template; call .copy() before appending messages")
        self.messages.append([role, message])

    def get_images(self, return_pil: bool = False) -> List[Union[str, Image.Image]]:
        """Collect the images attached to user turns (web UI helper).

        Args:
            return_pil: Return PIL images instead of base64 PNG strings.

        Returns:
            One entry per image, shrunk for display.

        Raises:
            ValueError: If an image's process mode is not ``Pad``, ``Default`` or ``Crop``.
        """
        images = []
        for index, (_, message) in enumerate(self.messages[self.offset:]):
            if index % 2 != 0 or not isinstance(message, tuple):
                continue
            _, image, mode = message
            image = display_image(image, mode)
            images.append(image if return_pil else encode_png_base64(image))
        return images

    def to_gradio_chatbot(self) -> List[List[Optional[str]]]:
        """Return the visible history as ``[[user_html, assistant_text], ...]`` pairs."""
        pairs: List[List[Optional[str]]] = []
        for index, (_, message) in enumerate(self.messages[self.offset:]):
            if index % 2 == 0:
                if isinstance(message, tuple):
                    message = chatbot_html(message[0], message[1])
                pairs.append([message, None])
            else:
                pairs[-1][-1] = message
        return pairs

    def copy(self) -> "Conversation":
        """Return a new conversation with its own (list) copy of the messages."""
        return Conversation(
            system=self.system,
            roles=self.roles,
            messages=[[role, message] for role, message in self.messages],
            offset=self.offset,
            sep_style=self.sep_style,
            sep=self.sep,
            sep2=self.sep2,
            version=self.version,
        )

    def dict(self) -> Dict[str, Any]:
        """Return a JSON-friendly summary; image tuples are reduced to their text."""
        return {
            "system": self.system,
            "roles": self.roles,
            "messages": [[role, _message_text(message)] for role, message in self.messages],
            "offset": self.offset,
            "sep": self.sep,
            "sep2": self.sep2,
        }


_HUMAN_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)
_USER_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
_MMTAG_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant is able to understand the visual content that the user provides, "
    "and assist the user with a variety of tasks using natural language."
    "The visual content will be provided with the following format: <Image>visual content</Image>."
)
_LLAMA_2_SYSTEM = (
    "You are a helpful, respectful and honest assistant. Always answer as helpfully as possible, "
    "while being safe.  Your answers should not include any harmful, unethical, racist, sexist, "
    "toxic, dangerous, or illegal content. Please ensure that your responses are socially unbiased "
    "and positive in nature.\n\n"
    "If a question does not make any sense, or is not factually coherent, explain why instead of "
    "answering something not correct. If you don't know the answer to a question, please don't "
    "share false information."
)
_LLAVA_LLAMA_2_SYSTEM = (
    "You are a helpful language and vision assistant. "
    "You are able to understand the visual content that the user provides, "
    "and assist the user with a variety of tasks using natural language."
)
_VICUNA_V0_EXAMPLE = (
    ("Human", "What are the key differences between renewable and non-renewable energy sources?"),
    (
        "Assistant",
        "Renewable energy sources are those that can be replenished naturally in a relatively "
        "short amount of time, such as solar, wind, hydro, geothermal, and biomass. "
        "Non-renewable energy sources, on the other hand, are finite and will eventually be "
        "depleted, such as coal, oil, and natural gas. Here are some key differences between "
        "renewable and non-renewable energy sources:\n"
        "1. Availability: Renewable energy sources are virtually inexhaustible, while non-renewable "
        "energy sources are finite and will eventually run out.\n"
        "2. Environmental impact: Renewable energy sources have a much lower environmental impact "
        "than non-renewable sources, which can lead to air and water pollution, greenhouse gas emissions, "
        "and other negative effects.\n"
        "3. Cost: Renewable energy sources can be more expensive to initially set up, but they typically "
        "have lower operational costs than non-renewable sources.\n"
        "4. Reliability: Renewable energy sources are often more reliable and can be used in more remote "
        "locations than non-renewable sources.\n"
        "5. Flexibility: Renewable energy sources are often more flexible and can be adapted to different "
        "situations and needs, while non-renewable sources are more rigid and inflexible.\n"
        "6. Sustainability: Renewable energy sources are more sustainable over the long term, while "
        "non-renewable sources are not, and their depletion can lead to economic and social instability.\n",
    ),
)

conv_vicuna_v0 = Conversation(
    system=_HUMAN_SYSTEM,
    roles=("Human", "Assistant"),
    messages=_VICUNA_V0_EXAMPLE,
    offset=len(_VICUNA_V0_EXAMPLE),
    sep_style=SeparatorStyle.SINGLE,
    sep="###",
)

conv_vicuna_v1 = Conversation(
    system=_USER_SYSTEM,
    roles=("USER", "ASSISTANT"),
    version="v1",
    messages=(),
    offset=0,
    sep_style=SeparatorStyle.TWO,
    sep=" ",
    sep2="</s>",
)

conv_llama_2 = Conversation(
    system=_LLAMA_2_SYSTEM,
    roles=("USER", "ASSISTANT"),
    version="llama_v2",
    messages=(),
    offset=0,
    sep_style=SeparatorStyle.LLAMA_2,
    sep="<s>",
    sep2="</s>",
)

conv_llava_llama_2 = dataclasses.replace(conv_llama_2, system=_LLAVA_LLAMA_2_SYSTEM)

conv_mpt = Conversation(
    system=(
        "<|im_start|>system\n"
        "A conversation between a user and an LLM-based AI assistant. "
        "The assistant gives helpful and honest answers."
    ),
    roles=("<|im_start|>user\n", "<|im_start|>assistant\n"),
    version="mpt",
    messages=(),
    offset=0,
    sep_style=SeparatorStyle.MPT,
    sep="<|im_end|>",
)

conv_llava_plain = Conversation(
    system="",
    roles=("", ""),
    messages=(),
    offset=0,
    sep_style=SeparatorStyle.PLAIN,
    sep="\n",
)

conv_llava_v0 = Conversation(
    system=_HUMAN_SYSTEM,
    roles=("Human", "Assistant"),
    messages=(),
    offset=0,
    sep_style=SeparatorStyle.SINGLE,
    sep="###",
)

conv_llava_v0_mmtag = Conversation(
    system=_MMTAG_SYSTEM,
    roles=("Human", "Assistant"),
    messages=(),
    offset=0,
    sep_style=SeparatorStyle.SINGLE,
    sep="###",
    version="v0_mmtag",
)

conv_llava_v1 = dataclasses.replace(conv_vicuna_v1, system=_HUMAN_SYSTEM)

conv_llava_v1_mmtag = Conversation(
    system=_MMTAG_SYSTEM,
    roles=("USER", "ASSISTANT"),
    messages=(),
    offset=0,
    sep_style=SeparatorStyle.TWO,
    sep=" ",
    sep2="</s>",
    version="v1_mmtag",
)

default_conversation = conv_vicuna_v1

conv_templates: Dict[str, Conversation] = {
    "default": conv_vicuna_v0,
    "v0": conv_vicuna_v0,
    "v1": conv_vicuna_v1,
    "vicuna_v1": conv_vicuna_v1,
    "llama_2": conv_llama_2,
    "plain": conv_llava_plain,
    "v0_plain": conv_llava_plain,
    "llava_v0": conv_llava_v0,
    "v0_mmtag": conv_llava_v0_mmtag,
    "llava_v1": conv_llava_v1,
    "v1_mmtag": conv_llava_v1_mmtag,
    "llava_llama_2": conv_llava_llama_2,
    "mpt": conv_mpt,
}
