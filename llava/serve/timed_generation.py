"""One `generate` call in a background thread, streamed as text, with its phases timed.

    streamed = stream_in_thread(tokenizer, work)   # work(streamer, cancel) calls model.generate
    for text_so_far in streamed: ...               # the answer as it grows
    # the generator's return value (``result = yield from streamed``) is work's result

The web demo answers through this so the page shows tokens as they come while the model,
not the page, decides when a generation ends. Closing the stream early (a client that went
away) asks the generation to stop at its next token; it never leaves the thread running
forever.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable, Generator, List, Optional, TypeVar

from transformers import StoppingCriteria, TextIteratorStreamer

ResultT = TypeVar("ResultT")


class TimedTextStreamer(TextIteratorStreamer):
    """A `TextIteratorStreamer` (prompt skipped, special tokens dropped) that notes the time
    each batch of token ids arrives: the prompt first, then one arrival per generated token."""

    def __init__(self, tokenizer):
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self.arrivals: List[float] = []

    def put(self, value) -> None:
        """Records the arrival time of `value` (token ids), then streams it as text."""
        self.arrivals.append(time.perf_counter())
        super().put(value)


class CancelCriteria(StoppingCriteria):
    """Stops `generate` at its next token once `event` is set."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids, scores, **kwargs) -> bool:
        return self.event.is_set()


@dataclass(frozen=True)
class GenerationTiming:
    """The two phases of one generation, from a `TimedTextStreamer`'s arrivals.

    Attributes:
        prefill_s: from the start of `generate` to the first new token (vision encoder and
            decoder prefill, first token included), or None when no token came.
        decode_s: from the first new token to the last, or None with fewer than two tokens.
        decode_tokens: tokens generated after the first.
    """

    prefill_s: Optional[float]
    decode_s: Optional[float]
    decode_tokens: int

    @classmethod
    def from_arrivals(cls, start: float, arrivals: List[float]) -> "GenerationTiming":
        """Timing of a generation that began at `start` (perf_counter) whose streamer saw
        `arrivals` (the prompt's first)."""
        tokens = arrivals[1:]
        if not tokens:
            return cls(None, None, 0)
        decode_s = tokens[-1] - tokens[0] if len(tokens) > 1 else None
        return cls(tokens[0] - start, decode_s, len(tokens) - 1)

    @property
    def decode_tokens_per_s(self) -> Optional[float]:
        """Decode speed in tokens per second, or None without decode steps."""
        if not self.decode_s or not self.decode_tokens:
            return None
        return self.decode_tokens / self.decode_s


def stream_in_thread(tokenizer, work: Callable[[TimedTextStreamer, threading.Event], ResultT]
                     ) -> Generator[str, None, ResultT]:
    """Runs ``work(streamer, cancel)`` in a daemon thread and yields the answer text so far
    each time the streamer gets text.

    Args:
        tokenizer: decodes the streamed ids.
        work: calls ``model.generate(..., streamer=streamer)`` with a `CancelCriteria(cancel)`
            among its stopping criteria, and returns what the caller needs.

    Returns:
        (as the generator's return value) what `work` returned, once its thread has ended.

    Raises:
        Whatever `work` raised, after its thread has ended.

    Closing the generator before the end sets `cancel` and returns at once; the thread ends
    after its next token.
    """
    streamer = TimedTextStreamer(tokenizer)
    cancel = threading.Event()
    outcome: dict = {}

    def target() -> None:
        try:
            outcome["result"] = work(streamer, cancel)
        except BaseException as err:  # handed to the consumer, which raises it
            outcome["error"] = err
        finally:
            streamer.end()

    thread = threading.Thread(target=target, name="llava-serve-generate", daemon=True)
    thread.start()
    completed = False
    try:
        text = ""
        for piece in streamer:
            if piece:
                text += piece
                yield text
        thread.join()
        completed = True
    finally:
        if not completed:
            cancel.set()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]
