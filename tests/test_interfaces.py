"""The declared interfaces: every verifier and drafter the project ships is a complete
``multispec.Verifier`` / ``multispec.Drafter``, and an incomplete one is refused by name."""
import pytest
import torch

import multispec
from multispec.drafters import DraftModel, Jacobi, LayerSkip, PromptLookup
from multispec.guidance import GuidedLM
from multispec.lm import CachedLM, TreeVerifier, Verifier, as_verifier

from conftest import tiny_model


def test_shipped_verifiers_and_drafters_are_complete():
    model = tiny_model("llama")
    verifiers = [CachedLM(model), GuidedLM(model), GuidedLM(model, 2.0, torch.tensor([0]))]
    assert all(isinstance(v, Verifier) for v in verifiers)
    assert CachedLM(model).forced_token is None  # a plain LM forces nothing
    assert isinstance(CachedLM(model), TreeVerifier) and not isinstance(HalfVerifier(), TreeVerifier)
    drafters = [DraftModel(model), PromptLookup(), Jacobi(64), LayerSkip(model, 1), DraftModel(GuidedLM(model))]
    assert all(isinstance(d, multispec.Drafter) for d in drafters)


class HalfVerifier:
    """Has the old three members only: no device, max_length, forced_token or last_only logits."""

    vocab_size, length = 8, 0

    def reset(self):
        pass

    def forward(self, tokens):
        return torch.zeros(tokens.shape[0], 8)

    def rollback(self, length):
        pass


def test_an_incomplete_verifier_is_refused_by_name():
    with pytest.raises(ValueError, match="target must be a transformers causal LM or a multispec.Verifier; "
                                         "HalfVerifier lacks max_length, device, forced_token"):
        multispec.generate(HalfVerifier(), torch.tensor([[1, 2]]), max_new_tokens=2)
    with pytest.raises(ValueError, match="the draft model must be"):
        DraftModel(HalfVerifier())
    assert as_verifier(CachedLM(tiny_model("llama"))).vocab_size > 0


def test_a_drafter_without_vocab_size_is_refused():
    class NoVocab:
        def reset(self):
            pass

        def propose(self, tokens, max_tokens, sampling, generator):
            raise AssertionError("never called")

        def observe(self, feedback):
            pass

    with pytest.raises(ValueError, match="lacks vocab_size"):
        multispec.generate(tiny_model("llama"), torch.tensor([[1, 2]]), drafter=NoVocab(), max_new_tokens=2)
