"""Core error handling (multispec.checks and the drafters' constructors): bad input raises ValueError
naming the argument and the problem."""
import pytest
import torch

import multispec
from multispec.drafters import DraftModel, LayerSkip

from conftest import tiny_model

IDS = torch.tensor([[1, 2, 3]])


@pytest.fixture(scope="module")
def target():
    return tiny_model("llama")


@pytest.mark.parametrize("kwargs, match", [
    (dict(max_new_tokens=0), "max_new_tokens"),
    (dict(max_new_tokens=2.5), "max_new_tokens"),
    (dict(temperature=-0.1), "temperature"),
    (dict(temperature=float("nan")), "temperature"),
    (dict(top_p=0.0), "top_p"),
    (dict(top_p=1.5), "top_p"),
    (dict(top_k=0), "top_k"),
    (dict(eos_token_id=10_000), "eos_token_id"),
    (dict(generator=123), "generator"),
    (dict(drafter=object()), "drafter"),
])
def test_bad_arguments(target, kwargs, match):
    with pytest.raises(ValueError, match=match):
        multispec.generate(target, IDS, **kwargs)


@pytest.mark.parametrize("input_ids, match", [
    (torch.empty(1, 0, dtype=torch.long), "empty"),
    (torch.tensor([[1.0, 2.0]]), "input_ids must hold integer"),
    (torch.tensor([1, 2, 3]), r"shape \[1, T\]"),
    (torch.tensor([[1, 2, 96]]), "token id 96, outside"),
    (torch.tensor([[-1, 2]]), "token id -1"),
    ([[1, 2, 3]], "torch.LongTensor"),
])
def test_bad_input_ids(target, input_ids, match):
    with pytest.raises(ValueError, match=match):
        multispec.generate(target, input_ids)


def test_vocabulary_mismatch(target):
    other = tiny_model("llama", layers=1, hidden=16, vocab=50)
    with pytest.raises(ValueError, match="vocabulary mismatch"):
        multispec.generate(target, IDS, drafter=DraftModel(other))


def test_greedy_rule_refuses_sampling(target):
    with pytest.raises(ValueError, match="temperature=0"):
        multispec.generate(target, IDS, drafter=DraftModel(target), acceptance=multispec.Greedy(), temperature=1.0)


def test_layer_skip_errors(target):
    with pytest.raises(ValueError, match="num_layers"):
        LayerSkip(target, num_layers=2)  # the target has only 2 layers

    class NotAnLM(torch.nn.Module):
        config = None

    with pytest.raises(ValueError, match="Llama family"):
        LayerSkip(NotAnLM(), 1)


def test_target_must_be_a_model():
    with pytest.raises(ValueError, match="causal LM"):
        multispec.generate("gpt2", IDS)


def test_request_past_the_context_is_refused(target):
    # the tiny models have max_position_embeddings 256: 3 prompt tokens leave room for 253
    with pytest.raises(ValueError, match=r"max_new_tokens=1000000000000 .* context of 256 positions.*at most 253"):
        multispec.generate(target, IDS, max_new_tokens=10**12)
    assert multispec.generate(target, IDS, max_new_tokens=253).sequences.shape == (1, 256)


def test_unbounded_verifier_grows_its_buffer_instead_of_preallocating(target):
    """A verifier without a context limit may be asked for any count: memory follows what it emits."""
    verifier = multispec.CachedLM(target)
    verifier.max_length = None
    out = multispec.generate(verifier, IDS, max_new_tokens=10**12, eos_token_id=list(range(96)))
    assert out.sequences.shape == (1, 4)  # every id is eos: one new token, no huge allocation
    long = multispec.generate(verifier, IDS, max_new_tokens=1100)  # past the first buffer (1024)
    ref = multispec.generate(target, IDS, max_new_tokens=253).sequences
    assert long.sequences.shape == (1, 1103) and torch.equal(long.sequences[:, :256], ref)
