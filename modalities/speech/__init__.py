"""Speech adapter: codecs that turn audio into code frames [T, K], layouts that turn frames into
one token stream, and intelligibility metrics (pocketsphinx WER)."""

from modalities.speech.codec import Codec, HFCodec, MelCodec, MelRVQCodec, MelRVQConfig, load_codec
from modalities.speech.layouts import AlignedLayout, DelayLayout, FlattenedLayout
from modalities.speech.wer import corpus_wer, normalize_text, transcribe, word_error_rate

__all__ = ["Codec", "MelCodec", "load_codec", "HFCodec", "MelRVQCodec", "MelRVQConfig", "AlignedLayout",
           "DelayLayout", "FlattenedLayout", "corpus_wer", "normalize_text", "transcribe", "word_error_rate"]
