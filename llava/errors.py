"""Errors of bad input and checkpoint loading that command lines report in one line (exit status 2)."""


class InputError(ValueError):
    """Bad user input (a question file, an image, a data file); the one-line message names the
    file, and the line and field where there is one. Command lines print it and exit with 2."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded as asked: its config lacks a field the model needs,
    or names a vision tower that is not available; the message names the file and the field."""


class MissingDependencyError(ImportError):
    """An optional package a requested feature needs is not installed (bitsandbytes for
    --load-8bit/--load-4bit); the message names it and its pip command."""


class ContextLengthError(ValueError):
    """A prompt longer than the model's context (`max_position_embeddings`): past it the
    model's positions are untrained and its answers meaningless. The message gives the
    prompt's length in tokens (text and visual) and the limit."""


def check_context_length(text_tokens: int, visual_tokens: int, limit: int) -> None:
    """Raises `ContextLengthError` when a prompt of `text_tokens` + `visual_tokens` tokens
    does not fit a context of `limit` tokens."""
    total = text_tokens + visual_tokens
    if total > limit:
        raise ContextLengthError(
            f"prompt is {total} tokens ({text_tokens} text + {visual_tokens} visual), "
            f"longer than the model's context of {limit} tokens (max_position_embeddings)"
        )
