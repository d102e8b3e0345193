"""What one web demo server lets its requests take: images read at once, and answer length.

    slots = ImageSlots()
    with slots.held():            # waits for a free slot; RequestError when none frees up in time
        image = load_image(path)
    tokens, note = cap_new_tokens(1024, prompt_tokens=1700, context=2048)   # 348, "Max new tokens ..."
    return_large_blocks()         # once, at server start

Reading an upload (decoding, converting to RGB, bounding its geometry, drawing the tower's view)
takes up to a few times its decoded bytes (`llava.image_loading.decoded_bytes`, at most
`llava.image_loading.DEFAULT_MAX_DECODED_BYTES`). Without a limit, N simultaneous uploads take N
times that; with `IMAGE_SLOTS` slots the server holds at most that many images at once, however
many uploads arrive, provided freed image buffers go back to the system: glibc's allocator
otherwise raises its mmap threshold to the largest block freed (up to 32 MiB), after which
each thread's arena keeps the image buffers it freed, and the resident set grows with the number
of threads that ever read an image (`return_large_blocks` fixes the threshold). The answer
length is capped as upstream LLaVA's model worker caps it: the prompt (text and visual tokens)
plus the new tokens must fit the model's context.
"""
from __future__ import annotations

import ctypes
import threading
from contextlib import contextmanager
from typing import Iterator, Optional, Tuple

IMAGE_SLOTS = 2
"""Images read at once by one server. Two keep both of a small machine's cores busy; the page's
upload previews are queued by gradio to the same number, so a waiting user sees the queue."""

IMAGE_SLOT_WAIT_S = 60.0
"""Seconds a request waits for an image slot before it is refused with `BUSY_MESSAGE`."""

BUSY_MESSAGE = "Image: the server is busy reading other images; try again in a moment."

MMAP_THRESHOLD_BYTES = 1024 * 1024
"""Blocks of this size or more get their own mapping, returned to the system when freed: image
buffers (PIL allocates in blocks of up to 16 MiB) do, a decoding step's small tensors do not."""

_M_MMAP_THRESHOLD = -3
"""glibc's mallopt parameter number for the mmap threshold (malloc.h)."""


class ImageSlotsBusy(RuntimeError):
    """No image slot freed up within the wait; the message is `BUSY_MESSAGE`."""


class ImageSlots:
    """A bounded number of images read at once (a semaphore with a wait limit).

    Attributes:
        count: images read at once.
        wait_s: seconds a reader waits for a slot.
    """

    def __init__(self, count: int = IMAGE_SLOTS, wait_s: float = IMAGE_SLOT_WAIT_S):
        if count < 1:
            raise ValueError(f"image slots must be >= 1, got {count}")
        self.count = count
        self.wait_s = wait_s
        self._semaphore = threading.BoundedSemaphore(count)

    @contextmanager
    def held(self) -> Iterator[None]:
        """Holds one slot for the body of a ``with`` statement.

        Raises:
            ImageSlotsBusy: no slot freed up within `wait_s` seconds.
        """
        if not self._semaphore.acquire(timeout=self.wait_s):
            raise ImageSlotsBusy(BUSY_MESSAGE)
        try:
            yield
        finally:
            self._semaphore.release()


def return_large_blocks(threshold: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Fixes glibc's mmap threshold at `threshold` bytes, so every freed block of that size or
    more goes back to the system at once instead of staying in a thread's arena.

    Returns:
        True when set; False where the C library has no ``mallopt`` (not glibc) or refused.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, threshold))


def cap_new_tokens(requested: int, prompt_tokens: int, context: int) -> Tuple[int, Optional[str]]:
    """The answer length a request may have: `requested`, lowered to the context's room after
    the prompt (context − prompt tokens), as upstream LLaVA's model worker does.

    Args:
        requested: the answer length asked for, tokens.
        prompt_tokens: the prompt's tokens, text and visual.
        context: the model's context (``max_position_embeddings``), tokens.

    Returns:
        (tokens, note): the length allowed, and a one-line note saying why when it is lower than
        asked (None when it is not).

    Raises:
        ValueError: the prompt leaves no room for a single new token.
    """
    room = context - prompt_tokens
    if room < 1:
        raise ValueError(f"prompt is {prompt_tokens} tokens, which leaves no room for an answer in the model's "
                         f"context of {context} tokens (max_position_embeddings)")
    if requested <= room:
        return requested, None
    return room, (f"Max new tokens lowered from {requested} to {room}: the prompt takes {prompt_tokens} of the "
                  f"model's {context}-token context.")
