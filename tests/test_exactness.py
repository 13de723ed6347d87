"""Greedy exactness: every drafter's output is token-identical to Hugging Face greedy decoding."""
import pytest
import torch

import multispec
from multispec.drafters import Draft, DraftModel, LayerSkip, PromptLookup

from conftest import ARCHS, hf_greedy, prompts, tiny_model


class AlwaysWrong(DraftModel):
    """Drafts the target's own greedy tokens shifted by one id: every draft is rejected at once."""

    def propose(self, tokens, max_tokens, sampling, generator):
        draft = super().propose(tokens, max_tokens, sampling, generator)
        return Draft((draft.tokens + 1) % self.vocab_size)


def drafters_for(arch):
    target = tiny_model(arch)
    return {
        "plain": None,
        "draft-model": DraftModel(tiny_model(arch, layers=1, hidden=16, seed=7)),
        "draft-model-fixed": DraftModel(tiny_model(arch, layers=1, hidden=16, seed=7), num_draft_tokens=3,
                                        adaptive=False),
        "draft-model-unsure-stop": DraftModel(tiny_model(arch, layers=1, hidden=16, seed=7), num_draft_tokens=6,
                                              confidence_threshold=0.5),
        "prompt-lookup": PromptLookup(max_ngram=3),
        "layer-skip": LayerSkip(target, num_layers=1),
        "always-right": DraftModel(target, num_draft_tokens=5),
        "always-wrong": AlwaysWrong(target, num_draft_tokens=3),
    }


@pytest.mark.parametrize("arch", ARCHS)
def test_greedy_matches_hf_generate(arch):
    target = tiny_model(arch)
    cases = prompts(20)
    references = [hf_greedy(target, ids, 16) for ids in cases]
    for name, drafter in drafters_for(arch).items():
        for ids, ref in zip(cases, references):
            out = multispec.generate(target, ids, drafter=drafter, max_new_tokens=16)
            assert torch.equal(out.sequences, ref), f"{arch}/{name}: differs from HF greedy for prompt {ids.tolist()}"
            assert out.stats.new_tokens == 16


def test_sliding_window_is_exceeded():
    """The Mistral case really decodes past its sliding window (8) with drafts crossing it."""
    target = tiny_model("mistral")
    assert target.config.sliding_window == 8
    ids = prompts(1, seed=5)[0]
    ref = hf_greedy(target, ids, 40)
    out = multispec.generate(target, ids, drafter=DraftModel(target, num_draft_tokens=6), max_new_tokens=40)
    assert out.sequences.shape[1] > 3 * 8 and torch.equal(out.sequences, ref)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_always_right_and_always_wrong_statistics(arch):
    target = tiny_model(arch)
    ids = prompts(1, seed=3)[0]
    right = multispec.generate(target, ids, drafter=DraftModel(target, num_draft_tokens=4, adaptive=False),
                               max_new_tokens=21)
    assert right.stats.acceptance_rate == 1.0 and right.stats.steps == 5  # 4 drafts + 1 bonus per step
    wrong = multispec.generate(target, ids, drafter=AlwaysWrong(target, num_draft_tokens=4, adaptive=False),
                               max_new_tokens=21)
    assert wrong.stats.accepted == 0 and wrong.stats.steps == 21 and wrong.stats.mean_accepted == 1.0


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_eos_inside_an_accepted_draft(arch):
    target = tiny_model(arch)
    for ids in prompts(6, seed=11):
        continuation = hf_greedy(target, ids, 12)[0, ids.shape[1]:]
        eos = int(continuation[6])  # accepted inside a draft of length 8 from a self-drafter
        ref = hf_greedy(target, ids, 12, eos_token_id=eos)
        out = multispec.generate(target, ids, drafter=DraftModel(target, num_draft_tokens=8, adaptive=False),
                                 max_new_tokens=12, eos_token_id=eos)
        assert torch.equal(out.sequences, ref)
        assert int(out.sequences[0, -1]) == eos and (out.sequences[0, ids.shape[1]:-1] != eos).all()


@pytest.mark.parametrize("max_new_tokens", [1, 2, 5, 7])
def test_max_new_tokens_ends_mid_draft(max_new_tokens):
    target = tiny_model("llama")
    ids = prompts(1, seed=2)[0]
    ref = hf_greedy(target, ids, max_new_tokens)
    for drafter in (DraftModel(target, num_draft_tokens=8, adaptive=False), PromptLookup(num_draft_tokens=8)):
        out = multispec.generate(target, ids, drafter=drafter, max_new_tokens=max_new_tokens)
        assert torch.equal(out.sequences, ref) and out.stats.new_tokens == max_new_tokens


def test_stream_yields_what_generate_returns():
    target = tiny_model("llama")
    ids = prompts(1, seed=4)[0]
    drafter = DraftModel(tiny_model("llama", layers=1, hidden=16, seed=7))
    pieces = [step.tokens.clone() for step in multispec.stream(target, ids, drafter=drafter, max_new_tokens=20)]
    out = multispec.generate(target, ids, drafter=drafter, max_new_tokens=20)
    assert torch.equal(torch.cat([ids[0], *pieces]), out.sequences[0])
    assert len(pieces) == out.stats.steps == len(out.stats.accepted_per_step)
    assert out.stats.mean_accepted == pytest.approx(20 / out.stats.steps)


def test_seeded_sampling_is_deterministic():
    target = tiny_model("llama")
    ids = prompts(1, seed=4)[0]
    drafter = DraftModel(tiny_model("llama", layers=1, hidden=16, seed=7))
    runs = [multispec.generate(target, ids, drafter=drafter, max_new_tokens=20, temperature=0.8, top_p=0.9,
                               generator=torch.Generator().manual_seed(123)).sequences for _ in range(2)]
    assert torch.equal(runs[0], runs[1])
