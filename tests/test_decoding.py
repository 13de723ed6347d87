"""The decoding loop (multispec.decoding): greedy output is token-identical to Hugging Face greedy
decoding for every drafter, eos and length cuts land where plain decoding puts them, stream agrees
with generate, and tokens the verifier forces are appended without a forward."""
import pytest
import torch

import multispec
from multispec.drafters import DraftModel, Jacobi, LayerSkip, PromptLookup
from multispec.guidance import GuidedLM

from conftest import (ARCHS, VOCAB, AlwaysWrong, ScriptedLM, even_forces_next, forcing, hf_greedy, prompts,
                      successor, tiny_model)


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


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("window", [1, 4, 16])
def test_jacobi_greedy_matches_hf(arch, window):
    target = tiny_model(arch)
    for ids in prompts(6, seed=11):
        out = multispec.generate(target, ids, drafter=Jacobi(VOCAB, window=window), max_new_tokens=20)
        assert torch.equal(out.sequences, hf_greedy(target, ids, 20))


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


class NoForcing(GuidedLM):
    """The same masked verifier, but every token costs a forward (the loop's reference path)."""

    def forced_token(self, position, previous):
        return None


def test_forced_tokens_skip_a_forward_and_change_nothing():
    """A mask that allows one id after an even token (token + 1) forces it: the loop appends it
    without a forward; plain and draft-model decoding give the tokens of the unskipped loop."""
    target, small = tiny_model("llama"), tiny_model("llama", layers=1, hidden=16, seed=7)

    for ids in prompts(4, seed=5):
        reference = multispec.generate(NoForcing(target, allowed_tokens=even_forces_next), ids, max_new_tokens=30)
        plain = multispec.generate(GuidedLM(target, allowed_tokens=even_forces_next), ids, max_new_tokens=30)
        assert torch.equal(plain.sequences, reference.sequences)
        before = plain.sequences[0, ids.shape[1] - 1:-1]  # the token before each new one
        forced = int(((before % 2 == 0) & (before + 1 < VOCAB)).sum())
        assert plain.stats.forced == forced and plain.stats.steps == reference.stats.steps - forced
        fast = multispec.generate(GuidedLM(target, allowed_tokens=even_forces_next), ids, max_new_tokens=30,
                                  drafter=DraftModel(GuidedLM(small, allowed_tokens=even_forces_next), num_draft_tokens=3))
        assert torch.equal(fast.sequences, reference.sequences)


# Literal cases of the forced-token contract: ScriptedLM(successor()) predicts t + 1 after t, and
# forcing({t: f}) makes its mask allow f alone after t (forced_token(position, t) == f).


def test_forced_token_is_appended_and_fed_with_the_next_step():
    # prompt [1, 2]; the mask forces 7 after 3: the target predicts 3, the loop appends 7 without a
    # forward and feeds [3, 7] together in the next step, which predicts 8.
    target = ScriptedLM(successor(), forced=forcing({3: 7}))
    out = multispec.generate(target, torch.tensor([[1, 2]]), max_new_tokens=5)
    assert out.sequences[0].tolist() == [1, 2, 3, 7, 8, 9, 10]
    assert target.fed == [[1], [2], [3, 7], [8], [9]]  # prefill, then one forward per step
    assert (out.stats.steps, out.stats.forced, out.stats.new_tokens) == (4, 1, 5)


def test_forced_tokens_right_after_the_prompt_and_in_a_chain():
    # prompt [1, 3]: 7 is forced after 3 and 11 after 7 before any step runs; the first step feeds
    # [3, 7, 11] and yields the forced tokens together with its own (12).
    target = ScriptedLM(successor(), forced=forcing({3: 7, 7: 11}))
    steps = list(multispec.stream(target, torch.tensor([[1, 3]]), max_new_tokens=4))
    assert [step.tokens.tolist() for step in steps] == [[7, 11, 12], [13]]
    assert target.fed == [[1], [3, 7, 11], [12]]
    assert steps[-1].stats.forced == 2


def test_forced_tokens_count_against_the_budget_and_stop_at_eos():
    # the forced chain 4, 5, 6 after the prompt's 3 is cut at max_new_tokens=2: no step runs at all
    chain = ScriptedLM(successor(), forced=forcing({3: 4, 4: 5, 5: 6}))
    out = multispec.generate(chain, torch.tensor([[1, 3]]), max_new_tokens=2)
    assert out.sequences[0].tolist() == [1, 3, 4, 5] and out.stats.steps == 0 and chain.fed == [[1]]
    # a forced eos (7) ends the generation, the remaining budget unused
    out = multispec.generate(ScriptedLM(successor(), forced=forcing({3: 7})), torch.tensor([[1, 3]]),
                             max_new_tokens=10, eos_token_id=7)
    assert out.sequences[0].tolist() == [1, 3, 7] and (out.stats.steps, out.stats.forced) == (0, 1)
    # after a step: the target's 4 is followed by the forced 5, then nothing more is forced
    out = multispec.generate(ScriptedLM(successor(), forced=forcing({4: 5})), torch.tensor([[1, 3]]),
                             max_new_tokens=2)
    assert out.sequences[0].tolist() == [1, 3, 4, 5] and (out.stats.steps, out.stats.forced) == (1, 1)
