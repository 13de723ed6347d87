"""Speech adapter: codecs that turn audio into code frames [T, K], layouts that turn frames into
one token stream, intelligibility metrics (pocketsphinx WER), generation, CLI and benchmark, on top
of the multispec core. Knows nothing about the other adapters or the recipes."""

from modalities.speech.codec import Codec, HFCodec, MelCodec, MelRVQCodec, MelRVQConfig, load_codec
from modalities.speech.layouts import AlignedLayout, DelayLayout, FlattenedLayout
from modalities.speech.wer import corpus_wer, normalize_text, transcribe, word_error_rate

__all__ = ["Codec", "MelCodec", "load_codec", "HFCodec", "MelRVQCodec", "MelRVQConfig", "AlignedLayout",
           "DelayLayout", "FlattenedLayout", "corpus_wer", "normalize_text", "transcribe", "word_error_rate"]
