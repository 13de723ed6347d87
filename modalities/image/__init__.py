"""Image adapter: VQ tokenizer, guided generation with its methods, metrics and the in-domain classifier,
CLI and benchmark, on top of the multispec core. Knows nothing about the other adapters or the recipes."""
from .tokenizer import ImageTokenizer

__all__ = ["ImageTokenizer"]
