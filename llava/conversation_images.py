"""How the web demo shows the images of a conversation: padded as the user asked, shrunk to a
thumbnail, sent as a base64 PNG. Display only: the model gets its own pixels (`process_images`).

    image = display_image(upload, "Pad")      # padded to a square with CLIP's mean colour, shrunk
    html = chatbot_html("What is this?", upload)
"""
import base64
from io import BytesIO

from PIL import Image

from llava.constants import DEFAULT_IMAGE_TOKEN
from llava.mm_utils import expand2square

GRADIO_PAD_COLOR = (122, 116, 104)
"""Pad colour of the ``Pad`` mode: CLIP's mean pixel, int(mean * 255)."""
THUMBNAIL_MAX_LONG_EDGE = 800
THUMBNAIL_MAX_SHORT_EDGE = 400
"""Bounds of a thumbnail's long and short edge, in pixels."""
IMAGE_PROCESS_MODES = ("Pad", "Default", "Crop")
"""The web UI's image process modes; only ``Pad`` changes the displayed image."""


def encode_png_base64(image: Image.Image) -> str:
    """The image as a base64 string of a PNG file."""
    buffer = BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def thumbnail(image: Image.Image) -> Image.Image:
    """The image shrunk to fit `THUMBNAIL_MAX_LONG_EDGE` x `THUMBNAIL_MAX_SHORT_EDGE` pixels,
    keeping its aspect ratio; never enlarged (the image itself when it already fits)."""
    long_edge, short_edge = max(image.size), min(image.size)
    aspect_ratio = long_edge / short_edge
    new_short = int(min(THUMBNAIL_MAX_LONG_EDGE / aspect_ratio, THUMBNAIL_MAX_SHORT_EDGE, short_edge))
    new_long = int(new_short * aspect_ratio)
    if new_long == long_edge:
        return image
    width, height = image.size
    if height > width:
        return image.resize((new_short, new_long))
    return image.resize((new_long, new_short))


def display_image(image: Image.Image, mode: str) -> Image.Image:
    """The thumbnail of an uploaded image in its process mode (``Pad``: padded to a square first).

    Raises:
        ValueError: `mode` is not one of `IMAGE_PROCESS_MODES`.
    """
    if mode not in IMAGE_PROCESS_MODES:
        raise ValueError(f"Invalid image_process_mode: {mode!r}; expected 'Pad', 'Default' or 'Crop'")
    if mode == "Pad":
        image = expand2square(image, GRADIO_PAD_COLOR)
    return thumbnail(image)


def chatbot_html(text: str, image: Image.Image) -> str:
    """A user turn with an image as the chatbot shows it: the thumbnail as an inline PNG, then the
    text without the image placeholder."""
    img_b64 = encode_png_base64(thumbnail(image))
    img_html = f'<img src="data:image/png;base64,{img_b64}" alt="user upload image" />'
    return img_html + text.replace(DEFAULT_IMAGE_TOKEN, "").strip()
