"""LLaVA-1.5 inference and evaluation (v1.1.3 interfaces) with FitPrune visual-token pruning."""
from llava.model import LlavaLlamaForCausalLM

__all__ = ["LlavaLlamaForCausalLM"]
