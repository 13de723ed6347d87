"""The bundled speech models: they load, read phones, and exact decoding equals plain greedy on
held-out sentences; every frame names a phone of its sentence, in order."""
import json

import pytest
import torch

from modalities.speech.generation import SpeechModels, generate_codes
from modalities.speech.vocab import text_to_phones
from models import zoo
from multispec.methods import DraftModelConfig, Method, TopKConfig


@pytest.fixture(scope="module")
def bundled():
    return SpeechModels.from_zoo()


def heldout_sentences(n: int = 2) -> list[str]:
    return [json.loads(line)["text"] for line in zoo.SPEECH_PROMPTS.read_text().splitlines()][:n]


def test_bundled_speech_models_load(bundled):
    assert bundled.meta.layout == "aligned" and bundled.text_units == "phones"
    assert not bundled.target.training and bundled.draft is not None
    assert bundled.codec.frame_rate == bundled.meta.frame_rate and bundled.default_temperature == 0.7


def test_exact_decoding_equals_plain_greedy_on_heldout_sentences(bundled):
    for text in heldout_sentences():
        plain = generate_codes(bundled, text, Method(), max_seconds=1.0, temperature=0.0)
        fast = generate_codes(bundled, text, Method(DraftModelConfig()), max_seconds=1.0, temperature=0.0)
        assert torch.equal(plain.tokens, fast.tokens)
        index = bundled.layout.phone_index(plain.tokens)
        assert index.numel() > 0 and index.max() < len(text_to_phones(text))
        assert (index.diff() >= 0).float().mean() > 0.9  # the model walks through the phones in order


def test_default_sampling_is_reproducible_under_a_seed(bundled):
    text = heldout_sentences(1)[0]
    runs = [generate_codes(bundled, text, Method(DraftModelConfig(), TopKConfig(k=4)), max_seconds=1.0,
                           generator=torch.Generator().manual_seed(3)) for _ in range(2)]
    assert torch.equal(runs[0].tokens, runs[1].tokens) and runs[0].frames.shape[0] > 0
