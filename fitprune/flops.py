"""Deprecated: this module's names have moved to `llava.model.pruning.flops`; this alias goes in the next release."""
from llava.utils import deprecated_alias

__getattr__ = deprecated_alias(__name__, "llava.model.pruning.flops")
