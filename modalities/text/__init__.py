"""Text adapter: tokenizers, chat templates and the text CLI/benchmark on top of the multispec core."""
from .generation import METHODS, TextStream, encode_prompt, generate_text, make_drafter, stream_text
from .loading import check_same_tokenizer, load_model, load_pair, load_tokenizer

__all__ = ["generate_text", "stream_text", "TextStream", "encode_prompt", "make_drafter", "METHODS",
           "load_model", "load_tokenizer", "load_pair", "check_same_tokenizer"]
