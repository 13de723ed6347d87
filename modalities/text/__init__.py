"""Text adapter: tokenizers, chat templates, generation and streaming, and the text CLI/benchmark on
top of the multispec core. Knows nothing about the other adapters or the recipes."""
from .generation import (ACCEPTANCES, DRAFTERS, TextStream, encode_prompt, generate_text, make_acceptance,
                         make_drafter, stream_text)
from .loading import check_same_tokenizer, load_model, load_pair, load_tokenizer

__all__ = ["generate_text", "stream_text", "TextStream", "encode_prompt", "make_drafter", "make_acceptance",
           "DRAFTERS", "ACCEPTANCES", "load_model", "load_tokenizer", "load_pair", "check_same_tokenizer"]
