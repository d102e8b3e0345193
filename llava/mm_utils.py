"""Image and prompt helpers shared by the evaluation drivers and the CLI."""

import base64
from io import BytesIO
from typing import Any, List, Optional, Sequence, Tuple, Union

import torch
from PIL import Image
from transformers import PreTrainedTokenizerBase, StoppingCriteria

from llava.constants import DEFAULT_IMAGE_TOKEN, IMAGE_TOKEN_INDEX
from llava.image_tiling import (  # noqa: F401 (upstream's anyres names, imported from llava.mm_utils by its callers)
    get_anyres_image_grid_shape,
    parse_grid_pinpoints,
    process_anyres_image,
    select_best_resolution,
)


def uses_anyres(config: Any) -> bool:
    """Whether a config asks for LLaVA-NeXT image handling.

    Args:
        config: A LLaVA config (or anything with an ``image_aspect_ratio`` attribute).

    Returns:
        True when ``image_aspect_ratio`` is ``"anyres"``.
    """
    return getattr(config, "image_aspect_ratio", None) == "anyres"


def load_image_from_base64(image: Union[str, bytes]) -> Image.Image:
    """Decode a base64-encoded image.

    Args:
        image: Base64 text of an encoded image file (PNG, JPEG, ...).

    Returns:
        The decoded PIL image, in its original mode (no RGB conversion).
    """
    return Image.open(BytesIO(base64.b64decode(image)))


def expand2square(pil_img: Image.Image, background_color: Union[int, Tuple[int, ...]]) -> Image.Image:
    """Pad an image to a square, centring it on its short axis.

    Args:
        pil_img: The image to pad.
        background_color: Fill colour of the padding, in the image's mode.

    Returns:
        ``pil_img`` itself when it is already square, otherwise a new image of the same
        mode with side ``max(width, height)`` and the original pasted at
        ``(0, (w - h) // 2)`` (wide) or ``((h - w) // 2, 0)`` (tall).
    """
    width, height = pil_img.size
    if width == height:
        return pil_img
    side = max(width, height)
    result = Image.new(pil_img.mode, (side, side), background_color)
    result.paste(pil_img, ((side - width) // 2, (side - height) // 2))
    return result


def _stack_if_same_shape(tensors: List[torch.Tensor]) -> Union[torch.Tensor, List[torch.Tensor]]:
    """Stack along a new dim 0 when every shape matches, else return the list."""
    if tensors and all(x.shape == tensors[0].shape for x in tensors):
        return torch.stack(tensors, dim=0)
    return tensors


def process_images(
    images: Sequence[Image.Image], image_processor: Any, model_cfg: Any
) -> Union[torch.Tensor, List[torch.Tensor]]:
    """Turn PIL images into the pixel tensors the vision tower expects.

    Args:
        images: The images.
        image_processor: A ``CLIPImageProcessor`` (anything with ``preprocess``,
            ``__call__`` and ``image_mean``).
        model_cfg: The model config or an argparse namespace; its optional
            ``image_aspect_ratio`` attribute selects the path. ``'pad'`` pads each
            image to a square with the processor's mean colour before preprocessing;
            ``'anyres'`` (LLaVA-NeXT) makes a base view plus grid tiles per image with
            :func:`process_anyres_image` and the config's ``image_grid_pinpoints``;
            any other value resizes and centre-crops without padding.

    Returns:
        A ``(N, 3, H, W)`` float tensor, or, on the pad path when the processed
        images differ in shape, a list of ``(3, H, W)`` tensors. On the anyres path a
        ``(N, 1 + tiles, 3, H, W)`` tensor when every image has the same number of
        tiles, else a list of ``(1 + tiles_i, 3, H, W)`` tensors; pass the images'
        ``(width, height)`` sizes to the model as ``image_sizes``.

    Raises:
        ValueError: On the anyres path, if the config has no valid ``image_grid_pinpoints``.
    """
    image_aspect_ratio = getattr(model_cfg, "image_aspect_ratio", None)
    if image_aspect_ratio == "anyres":
        pinpoints = parse_grid_pinpoints(getattr(model_cfg, "image_grid_pinpoints", None))
        return _stack_if_same_shape([process_anyres_image(image, image_processor, pinpoints) for image in images])
    if image_aspect_ratio != "pad":
        return image_processor(images, return_tensors="pt")["pixel_values"]
    background = tuple(int(x * 255) for x in image_processor.image_mean)
    processed = [
        image_processor.preprocess(expand2square(image, background), return_tensors="pt")["pixel_values"][0]
        for image in images
    ]
    return _stack_if_same_shape(processed)


def tokenizer_image_token(
    prompt: str,
    tokenizer: PreTrainedTokenizerBase,
    image_token_index: int = IMAGE_TOKEN_INDEX,
    return_tensors: Optional[str] = None,
) -> Union[List[int], torch.Tensor]:
    """Tokenize a prompt, replacing each ``<image>`` with ``image_token_index``.

    The prompt is split on ``<image>`` and each chunk is tokenized on its own with
    the tokenizer's defaults. When the first chunk starts with BOS, a single BOS is
    kept at the front and the first id of every chunk (its BOS) is dropped.

    Args:
        prompt: The rendered conversation prompt.
        tokenizer: A tokenizer that adds BOS to every call (LLaMA's slow tokenizer).
        image_token_index: The placeholder id put between chunks.
        return_tensors: ``None`` for a list of ids or ``'pt'`` for a 1-D
            ``torch.long`` tensor of shape ``(L,)``.

    Returns:
        The ids, as a list or as a tensor.

    Raises:
        ValueError: If ``return_tensors`` is neither ``None`` nor ``'pt'``.
    """
    if return_tensors not in (None, "pt"):
        raise ValueError(f"Unsupported tensor type: {return_tensors!r}; expected None or 'pt'")
    chunks = [tokenizer(chunk).input_ids for chunk in prompt.split(DEFAULT_IMAGE_TOKEN)]
    input_ids: List[int] = []
    skip = 0
    if chunks[0] and chunks[0][0] == tokenizer.bos_token_id:
        input_ids.append(tokenizer.bos_token_id)
        skip = 1
    for index, chunk in enumerate(chunks):
        if index > 0:
            input_ids.append(image_token_index)
        input_ids.extend(chunk[skip:])
    if return_tensors == "pt":
        return torch.tensor(input_ids, dtype=torch.long)
    return input_ids


def get_model_name_from_path(model_path: str) -> str:
    """Derive the model name from a checkpoint path or hub id.

    Args:
        model_path: E.g. ``liuhaotian/llava-v1.5-7b`` or ``runs/llava-x/checkpoint-500``.

    Returns:
        The last path component (``llava-v1.5-7b``), or ``"<parent>_<last>"`` when the
        last component starts with ``checkpoint-`` (``llava-x_checkpoint-500``).

    Raises:
        ValueError: If the path is empty, or is a bare ``checkpoint-*`` component with
            no parent to name it.
    """
    parts = model_path.strip("/").split("/")
    if not parts[-1]:
        raise ValueError(f"Cannot derive a model name from an empty model path: {model_path!r}")
    if parts[-1].startswith("checkpoint-"):
        if len(parts) < 2:
            raise ValueError(
                f"Model path {model_path!r} is a bare 'checkpoint-*' directory; "
                "pass it with its parent directory so the model can be named"
            )
        return f"{parts[-2]}_{parts[-1]}"
    return parts[-1]


class KeywordsStoppingCriteria(StoppingCriteria):
    """Stop generation once every sequence in the batch has produced a keyword.

    A sequence hits a keyword when its last ids equal the keyword's ids, or when the
    keyword string appears in the decoded tail of its generated tokens (the last
    ``min(generated_len, max_keyword_len)`` ids, decoded with
    ``skip_special_tokens=True``). A hit is remembered for later calls, since
    ``generate`` keeps extending sequences that already stopped.

    Args:
        keywords: Stop strings, e.g. ``["</s>"]``.
        tokenizer: Tokenizer used to encode the keywords and decode outputs.
        input_ids: The prompt ids, shape ``(B, L)``; ``L`` marks where generation starts.

    Raises:
        ValueError: If ``keywords`` is empty.
    """

    def __init__(self, keywords: Sequence[str], tokenizer: PreTrainedTokenizerBase, input_ids: torch.Tensor):
        if not keywords:
            raise ValueError("KeywordsStoppingCriteria needs at least one keyword, got none")
        self.keywords = list(keywords)
        self.tokenizer = tokenizer
        self.keyword_ids: List[torch.Tensor] = []
        for keyword in self.keywords:
            ids = tokenizer(keyword).input_ids
            if len(ids) > 1 and ids[0] == tokenizer.bos_token_id:
                ids = ids[1:]
            self.keyword_ids.append(torch.tensor(ids, dtype=torch.long))
        self.max_keyword_len = max(len(ids) for ids in self.keyword_ids)
        self.start_len = input_ids.shape[1]
        self._finished: Optional[torch.Tensor] = None

    def _hits(self, output_ids: torch.Tensor) -> torch.Tensor:
        """Return a ``(B,)`` bool tensor: which sequences end with a keyword now."""
        batch_size, seq_len = output_ids.shape
        hits = torch.zeros(batch_size, dtype=torch.bool, device=output_ids.device)
        for ids in self.keyword_ids:
            if len(ids) <= seq_len:
                tail = output_ids[:, seq_len - len(ids):]
                hits |= (tail == ids.to(output_ids.device)).all(dim=1)
        window = min(seq_len - self.start_len, self.max_keyword_len)
        if window <= 0:
            return hits
        texts = self.tokenizer.batch_decode(output_ids[:, seq_len - window:], skip_special_tokens=True)
        for row, text in enumerate(texts):
            if any(keyword in text for keyword in self.keywords):
                hits[row] = True
        return hits

    def __call__(self, output_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> bool:
        """Update the per-sequence hits and report whether all sequences are done.

        Args:
            output_ids: Prompt plus generated ids so far, shape ``(B, T)``.
            scores: Next-token scores (unused).
            **kwargs: Ignored; accepted for the transformers interface.

        Returns:
            True when every sequence has hit a keyword at this or an earlier step.
        """
        hits = self._hits(output_ids)
        if self._finished is None or self._finished.shape != hits.shape:
            self._finished = hits
        else:
            self._finished = self._finished | hits
        return bool(self._finished.all())


def image_model_inputs(image, image_processor, model_config, aspect_config=None) -> dict:
    """The `images` (and `image_sizes`) keyword arguments for one image, on the CPU.

    LLaVA-NeXT (anyres) models always get their base view plus tiles and the original
    size; otherwise `aspect_config` (e.g. a CLI's namespace with `image_aspect_ratio`)
    selects `process_images`, and without it the image is resized and center-cropped as
    upstream's `run_llava` does.

    Args:
        image: a PIL image.
        image_processor: the vision tower's CLIP image processor.
        model_config: the model's config.
        aspect_config: anything with `image_aspect_ratio`, or None.

    Returns:
        {"images": (1, ...) pixels} plus {"image_sizes": [(width, height)]} for anyres.
    """
    if uses_anyres(model_config):
        return {"images": process_images([image], image_processor, model_config), "image_sizes": [image.size]}
    if aspect_config is not None:
        return {"images": process_images([image], image_processor, aspect_config)}
    return {"images": image_processor.preprocess(image, return_tensors="pt")["pixel_values"]}


def move_images(images, device, dtype):
    """`images` (a tensor or a list of tensors) on `device` in `dtype`."""
    if isinstance(images, (list, tuple)):
        return [img.to(device=device, dtype=dtype) for img in images]
    return images.to(device=device, dtype=dtype)
