"""Image adapter: VQ tokenizer (and, added by the image AR work, generation) on top of the multispec core."""
from .tokenizer import ImageTokenizer

__all__ = ["ImageTokenizer"]
