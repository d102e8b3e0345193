"""Errors of checkpoint loading that command lines report in one line (exit status 2)."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded as asked: its config lacks a field the model needs,
    or names a vision tower that is not available; the message names the file and the field."""
