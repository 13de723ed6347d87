"""Drafters and their proposal policies (multispec.drafters): which continuation PromptLookup
proposes, DraftLength's adaptive schedule, the Jacobi window, and forced tokens in a DraftModel's
draft. Most cases are literal: token lists in, the expected proposal out. Exactness tests cannot
catch a bad proposal policy (a bad draft is only rejected), so these assert the policies themselves."""
import pytest
import torch

import multispec
from multispec.drafters import DraftLength, DraftModel, Feedback, Jacobi, PromptLookup
from multispec.guidance import GuidedLM
from multispec.sampling import Sampling

from conftest import VOCAB, ScriptedLM, even_forces_next, forcing, prompts, successor, tiny_model

GREEDY = Sampling()


def one_hot(*tokens, vocab=16):
    """Point-mass distributions [len(tokens), vocab], one row per token."""
    return torch.nn.functional.one_hot(torch.tensor(tokens), vocab).float()


# --- PromptLookup: which continuation it proposes ---------------------------------------------

def lookup(tokens, max_tokens=16, **kwargs):
    """PromptLookup's proposal after ``tokens`` (γ = num_draft_tokens, capped at ``max_tokens``)."""
    drafter = PromptLookup(**kwargs)
    drafter.reset()
    draft = drafter.propose(torch.tensor(tokens), max_tokens, GREEDY, None)
    assert draft.probs is None  # model-free: q is a point mass on each drafted token
    return draft.tokens.tolist()


def test_prompt_lookup_proposes_what_followed_the_match():
    # the last 3 tokens [6, 1, 2] never occurred before; the last 2, [1, 2], did at the start:
    # what followed them is proposed
    assert lookup([1, 2, 3, 4, 5, 6, 1, 2], num_draft_tokens=4) == [3, 4, 5, 6]
    # the continuation may run on into the matched suffix itself
    assert lookup([1, 2, 3, 4, 5, 6, 1, 2], num_draft_tokens=8) == [3, 4, 5, 6, 1, 2]


def test_prompt_lookup_takes_the_most_recent_match_that_has_a_full_draft():
    tokens = [5, 6, 7, 9, 5, 6, 8, 5, 6]  # [5, 6] occurred at 0 (then 7 9 ...) and at 4 (then 8 5 6)
    # both matches have γ = 2 tokens after them: the most recent wins
    assert lookup(tokens, num_draft_tokens=2) == [8, 5]
    # γ = 3: the most recent still has 3 tokens after it (up to the context end)
    assert lookup(tokens, num_draft_tokens=3) == [8, 5, 6]
    # γ = 4: the most recent has only 3 after it, the earlier one has 4: the earlier one wins
    assert lookup(tokens, num_draft_tokens=4) == [7, 9, 5, 6]


def test_prompt_lookup_without_a_full_draft_takes_the_earliest_match_cut_at_the_context_end():
    # [1, 2] matched at 0 with only 3 tokens after it: the draft is cut at the end of the context
    assert lookup([1, 2, 3, 1, 2], num_draft_tokens=5) == [3, 1, 2]
    # unigram [4] matched at 0 (then 9 4 8 4) and at 2 (then 8 4)
    assert lookup([4, 9, 4, 8, 4], max_ngram=1, num_draft_tokens=2) == [8, 4]  # both full: most recent
    assert lookup([4, 9, 4, 8, 4], max_ngram=1, num_draft_tokens=4) == [9, 4, 8, 4]  # only the first is full
    assert lookup([4, 9, 4, 8, 4], max_ngram=1, num_draft_tokens=5) == [9, 4, 8, 4]  # none: the earliest, cut


def test_prompt_lookup_tries_the_longest_ngram_first():
    tokens = [1, 2, 3, 4, 5, 0, 3, 6, 1, 2, 3]
    # the trigram [1, 2, 3] matched at 0 (then 4 5 0 3); the unigram [3] matched later (then 6 1 2 3)
    assert lookup(tokens, num_draft_tokens=4) == [4, 5, 0, 3]
    # with max_ngram=1 only the unigram is tried, and its most recent full match wins
    assert lookup(tokens, max_ngram=1, num_draft_tokens=4) == [6, 1, 2, 3]
    # the trigram [8, 2, 3] never occurred before: the bigram [2, 3] (at 1, then 9 8 2 3) is used
    assert lookup([7, 2, 3, 9, 8, 2, 3], num_draft_tokens=4) == [9, 8, 2, 3]


def test_prompt_lookup_without_a_match_proposes_nothing():
    # no token repeats: no n-gram of any length matched
    assert lookup([1, 2, 3, 4], num_draft_tokens=4) == []
    # a single token: nothing before it to match
    assert lookup([7], num_draft_tokens=4) == []
    # only the bigram [2, 3] matched, below min_ngram=3
    assert lookup([7, 2, 3, 9, 8, 2, 3], min_ngram=3, num_draft_tokens=4) == []


def test_prompt_lookup_without_a_match_falls_back_to_plain_steps():
    # the target continues 1 2 3 with 4 5 6 7 8: nothing ever repeats, so nothing is drafted and
    # every step is one plain target step
    steps = list(multispec.stream(ScriptedLM(successor()), torch.tensor([[1, 2, 3]]), drafter=PromptLookup(),
                                  max_new_tokens=5))
    assert [step.tokens.tolist() for step in steps] == [[4], [5], [6], [7], [8]]
    assert [step.num_drafted for step in steps] == [0] * 5


def test_prompt_lookup_respects_the_requested_length():
    tokens = [1, 2, 3, 4, 5, 6, 1, 2]
    # γ = 10, but the loop asks for at most 3 (max_new_tokens nearly reached)
    assert lookup(tokens, num_draft_tokens=10, max_tokens=3) == [3, 4, 5]
    # asked for none: nothing, even though a match exists
    assert lookup(tokens, num_draft_tokens=10, max_tokens=0) == []
    # the current adaptive γ caps the draft too: γ = 4 after six rejections from 10 (its floor)
    drafter = PromptLookup(num_draft_tokens=10)
    for _ in range(6):
        drafter.observe(Feedback(drafter.length.current, 0))
    assert drafter.propose(torch.tensor(tokens), 16, GREEDY, None).tokens.tolist() == [3, 4, 5, 6]


def test_prompt_lookup_rejects_bad_ngram_bounds():
    for low, high in ((0, 3), (3, 2)):
        with pytest.raises(ValueError, match="min_ngram"):
            PromptLookup(max_ngram=high, min_ngram=low)


# --- DraftLength: γ += 2 after a fully accepted draft, γ −= 1 otherwise, within its bounds -------

def lengths(length: DraftLength, verdicts):
    """γ after each (drafted, accepted) verdict."""
    out = []
    for drafted, accepted in verdicts:
        length.update(Feedback(drafted, accepted))
        out.append(length.current)
    return out


def test_draft_length_grows_by_two_after_a_full_accept_and_shrinks_by_one_otherwise():
    # 4/4 and 6/6 accepted: +2 each; 3/8 and 0/7 and 5/6: −1 each, however many were accepted
    assert lengths(DraftLength(4), [(4, 4), (6, 6), (8, 3), (7, 0), (6, 5)]) == [6, 8, 7, 6, 5]


def test_draft_length_stays_within_its_bounds():
    # grows to the maximum and stays there
    assert lengths(DraftLength(13, maximum=16), [(13, 13), (15, 15), (16, 16)]) == [15, 16, 16]
    # shrinks to the minimum and stays there
    assert lengths(DraftLength(2), [(2, 0), (1, 0), (1, 0)]) == [1, 1, 1]
    assert lengths(DraftLength(5, minimum=3), [(5, 1)] * 4) == [4, 3, 3, 3]


def test_draft_length_counts_a_short_draft_accepted_in_full_as_a_full_accept():
    # the drafter proposed only 3 of γ = 8 (context end, max_new_tokens) and all 3 were accepted: +2
    assert lengths(DraftLength(8), [(3, 3)]) == [10]
    # an empty draft (nothing to propose) tells nothing: γ unchanged
    assert lengths(DraftLength(8), [(0, 0)]) == [8]


def test_fixed_draft_length_never_changes_and_reset_restores_the_initial_length():
    assert lengths(DraftLength(4, adaptive=False), [(4, 4), (4, 0), (4, 4)]) == [4, 4, 4]
    length = DraftLength(4)
    lengths(length, [(4, 4), (6, 6)])
    length.reset()
    assert length.current == 4


@pytest.mark.parametrize("initial, maximum, minimum", [(0, 16, 1), (5, 4, 1), (2, 16, 3), (4, 16, 0)])
def test_draft_length_rejects_bad_bounds(initial, maximum, minimum):
    with pytest.raises(ValueError, match="draft length needs"):
        DraftLength(initial, maximum=maximum, minimum=minimum)


def test_prompt_lookup_keeps_a_floor_of_four():
    # model-free drafts cost nothing: γ starts at 10 and never falls below 4
    drafter = PromptLookup()
    assert lengths(drafter.length, [(10, 0)] * 7) == [9, 8, 7, 6, 5, 4, 4]
    # a smaller start lowers the floor to it
    assert lengths(PromptLookup(num_draft_tokens=2).length, [(2, 0)]) == [2]


def test_jacobi_window_length_is_fixed():
    drafter = Jacobi(16, window=5)
    drafter.observe(Feedback(5, 5, one_hot(*range(6))))
    assert drafter.length.current == 5


def test_the_loop_drives_the_schedule():
    # a draft model that always agrees with the target (both continue t with t + 1): γ = 2, 4, 6, 8,
    # then the 5 tokens left before max_new_tokens=30 (the target adds one of its own each step)
    right = DraftModel(ScriptedLM(successor()), num_draft_tokens=2)
    steps = list(multispec.stream(ScriptedLM(successor()), torch.tensor([[1]]), drafter=right, max_new_tokens=30))
    assert [step.num_drafted for step in steps] == [2, 4, 6, 8, 5]
    assert [step.num_accepted for step in steps] == [2, 4, 6, 8, 5]
    # one that is always wrong (drafts t + 2): γ = 4, 3, 2, 1, 1; the last step drafts nothing (no room)
    wrong = DraftModel(ScriptedLM(successor(2)), num_draft_tokens=4)
    steps = list(multispec.stream(ScriptedLM(successor()), torch.tensor([[1]]), drafter=wrong, max_new_tokens=6))
    assert [step.num_drafted for step in steps] == [4, 3, 2, 1, 1, 0]
    assert [step.num_accepted for step in steps] == [0] * 6


# --- Jacobi: the window and how a verdict refreshes it ----------------------------------------

def test_jacobi_first_window_is_drawn_from_the_init_tokens():
    # nothing verified yet: every slot is a fresh token, q uniform over init_tokens
    draft = Jacobi(16, window=3, init_tokens=torch.tensor([5])).propose(torch.tensor([1, 2]), 16, GREEDY, None)
    assert draft.tokens.tolist() == [5, 5, 5] and torch.equal(draft.probs, one_hot(5, 5, 5))
    draft = Jacobi(16, window=4, init_tokens=torch.tensor([5, 6])).propose(
        torch.tensor([1, 2]), 16, GREEDY, torch.Generator().manual_seed(0))
    assert set(draft.tokens.tolist()) <= {5, 6}
    assert torch.equal(draft.probs, torch.zeros(4, 16).index_fill_(1, torch.tensor([5, 6]), 0.5))


def test_jacobi_next_window_is_the_targets_predictions_past_the_accepted_prefix():
    jacobi = Jacobi(16, window=5, init_tokens=torch.tensor([0]))
    assert jacobi.propose(torch.tensor([1, 2, 3]), 16, GREEDY, None).tokens.tolist() == [0, 0, 0, 0, 0]
    # the target's predictions at the 6 verified positions: x1 = 0 accepted, x2 = 0 rejected for 3
    p = one_hot(0, 3, 9, 2, 5, 11)
    jacobi.observe(Feedback(5, 1, p))
    # the sequence is now [1, 2, 3, 0, 3]: rows 2.. (9 2 5 11) predicted the next 4 positions, and
    # one fresh token tops the window up to 5
    draft = jacobi.propose(torch.tensor([1, 2, 3, 0, 3]), 16, GREEDY, None)
    assert draft.tokens.tolist() == [9, 2, 5, 11, 0]
    assert torch.equal(draft.probs, one_hot(9, 2, 5, 11, 0))
    # asked for 2: the first two rows only
    assert jacobi.propose(torch.tensor([1, 2, 3, 0, 3]), 2, GREEDY, None).tokens.tolist() == [9, 2]
    # sampling draws each slot from its row (here point masses, so the same tokens)
    sampled = jacobi.propose(torch.tensor([1, 2, 3, 0, 3]), 16, Sampling(1.0), torch.Generator().manual_seed(0))
    assert sampled.tokens.tolist() == [9, 2, 5, 11, 0]


def test_jacobi_window_after_a_first_token_rejection_and_after_a_full_accept():
    jacobi = Jacobi(16, window=3, init_tokens=torch.tensor([0]))
    jacobi.propose(torch.tensor([1]), 16, GREEDY, None)
    # x1 rejected at once (target's 4): rows 1.. are the window
    jacobi.observe(Feedback(3, 0, one_hot(4, 7, 8, 9)))
    assert jacobi.propose(torch.tensor([1, 4]), 16, GREEDY, None).tokens.tolist() == [7, 8, 9]
    # all 3 accepted plus the bonus token: no row is left, the window is fresh again
    jacobi.observe(Feedback(3, 3, one_hot(7, 8, 9, 10)))
    assert jacobi.propose(torch.tensor([1, 4, 7, 8, 9, 10]), 16, GREEDY, None).tokens.tolist() == [0, 0, 0]
    # reset forgets the window
    jacobi.observe(Feedback(3, 0, one_hot(4, 7, 8, 9)))
    jacobi.reset()
    assert jacobi.propose(torch.tensor([1, 4]), 16, GREEDY, None).tokens.tolist() == [0, 0, 0]


def by_position(sequence):
    """A ScriptedLM rule that predicts ``sequence[i + 1]`` at position i whatever was fed: the
    target's predictions past a rejection are then right, so a well-aligned Jacobi window is accepted."""
    return lambda position, token: sequence[position + 1]


def test_jacobi_window_skips_positions_filled_by_forced_tokens():
    truth = list(range(1, 16))  # the target continues 1 with 2 3 4 ... whatever the window held
    drafter = Jacobi(16, window=4, init_tokens=torch.tensor([0]))
    steps = list(multispec.stream(ScriptedLM(by_position(truth)), torch.tensor([[1]]), drafter=drafter,
                                  max_new_tokens=12))
    # a fresh window [0 0 0 0] is rejected at once (2); the stale rows then hold 3 4 5 6: all accepted
    assert [(step.tokens.tolist(), step.num_accepted) for step in steps] == \
        [([2], 0), ([3, 4, 5, 6, 7], 4), ([8], 0), ([9, 10, 11, 12, 13], 4)]
    # the mask forces the token at position 2 (3): the loop appends it after the first step, so the
    # window's first row (the prediction for position 2) is dropped and the rest (4 5 6) is accepted
    forced_at_2 = ScriptedLM(by_position(truth), forced=lambda position, previous: 3 if position == 2 else None)
    steps = list(multispec.stream(forced_at_2, torch.tensor([[1]]), drafter=drafter, max_new_tokens=12))
    assert [(step.tokens.tolist(), step.num_accepted) for step in steps] == \
        [([2, 3], 0), ([4, 5, 6, 7], 3), ([8, 9], 1), ([10, 11, 12, 13], 3)]


def test_jacobi_window_comes_from_the_stale_predictions():
    """After accepting n of γ, the next window starts with p[n+1:] (argmax / sampled) and q = those rows."""
    drafter = Jacobi(VOCAB, window=6, init_tokens=torch.arange(10, 20))
    p = torch.softmax(5 * torch.randn(5, VOCAB, generator=torch.Generator().manual_seed(0)), -1)
    drafter.observe(Feedback(4, 1, p))
    draft = drafter.propose(torch.tensor([1, 2, 3]), 16, Sampling(0.0), torch.Generator().manual_seed(0))
    assert torch.equal(draft.tokens[:3], p[2:].argmax(-1))
    assert ((draft.tokens[3:] >= 10) & (draft.tokens[3:] < 20)).all() and draft.tokens.shape[0] == 6
    assert torch.equal(draft.probs[:3], p[2:]) and torch.allclose(draft.probs[3:, 10:20], torch.full((3, 10), 0.1))
    drafter.observe(Feedback(6, 6, torch.softmax(torch.randn(7, VOCAB), -1)))  # full accept: nothing stale
    assert drafter.propose(torch.tensor([1]), 2, Sampling(0.0), None).tokens.shape[0] == 2


def test_jacobi_rejects_bad_arguments():
    with pytest.raises(ValueError, match="window"):
        Jacobi(VOCAB, window=0)
    with pytest.raises(ValueError, match="init_tokens"):
        Jacobi(VOCAB, init_tokens=torch.tensor([VOCAB]))


# --- Forced tokens in a DraftModel's draft ----------------------------------------------------

def test_draft_model_drafts_a_forced_token_without_a_forward():
    # the draft LM continues t with t + 1, but its mask allows only 9 after 4
    lm = ScriptedLM(successor(), forced=forcing({4: 9}))
    drafter = DraftModel(lm, num_draft_tokens=5, adaptive=False)
    drafter.reset()
    draft = drafter.propose(torch.tensor([1, 2]), 16, GREEDY, None)
    assert draft.tokens.tolist() == [3, 4, 9, 10, 11]
    assert torch.equal(draft.probs, one_hot(3, 4, 9, 10, 11))  # the forced 9 has q = a point mass
    # 5 tokens from 4 forwards: the forced 9 is fed together with the 4 before it; the last token
    # drafted (11) is not fed at all
    assert lm.fed == [[1, 2], [3], [4, 9], [10]]
    # the target accepted all 5 and added 12: the next proposal feeds only what the cache lacks
    lm.fed.clear()
    draft = drafter.propose(torch.tensor([1, 2, 3, 4, 9, 10, 11, 12]), 2, GREEDY, None)
    assert draft.tokens.tolist() == [13, 14] and lm.fed == [[11, 12], [13]]


def test_draft_model_drafts_a_chain_of_forced_tokens_up_to_its_length():
    # 9 is forced after 4 and 13 after 9; the draft stops at γ = 4 inside the chain
    lm = ScriptedLM(successor(), forced=forcing({4: 9, 9: 13, 13: 2}))
    drafter = DraftModel(lm, num_draft_tokens=4, adaptive=False)
    drafter.reset()
    assert drafter.propose(torch.tensor([1, 2]), 16, GREEDY, None).tokens.tolist() == [3, 4, 9, 13]
    assert lm.fed == [[1, 2], [3]]  # only 3 and 4 needed a forward of their own


class CountingGuidedLM(GuidedLM):
    """A guided LM that counts its forwards (``forcing=False``: it never reports a forced token)."""

    def __init__(self, *args, forcing=True, **kwargs):
        super().__init__(*args, **kwargs)
        self.forcing, self.forwards = forcing, 0

    def forced_token(self, position, previous):
        return super().forced_token(position, previous) if self.forcing else None

    def forward(self, tokens, last_only=False):
        self.forwards += 1
        return super().forward(tokens, last_only)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_drafter_feeds_forced_tokens_without_a_forward_of_their_own(temperature):
    """The drafter drafts a forced token as a point mass and feeds it with the token before it:
    fewer drafter forwards, the same tokens (greedy) and the same distribution rule (sampling: the
    forced token's q is one-hot, so it is always accepted and the output stays in the mask)."""
    target, small = tiny_model("llama"), tiny_model("llama", layers=1, hidden=16, seed=7)

    for ids in prompts(4, seed=6):
        runs = {}
        for forcing in (True, False):
            lm = CountingGuidedLM(small, allowed_tokens=even_forces_next, forcing=forcing)
            out = multispec.generate(GuidedLM(target, allowed_tokens=even_forces_next), ids, max_new_tokens=30,
                                     drafter=DraftModel(lm, num_draft_tokens=4, adaptive=False),
                                     temperature=temperature, generator=torch.Generator().manual_seed(3))
            runs[forcing] = (out, lm.forwards)
        (fast, fast_forwards), (slow, slow_forwards) = runs[True], runs[False]
        if temperature == 0.0:
            assert torch.equal(fast.sequences, slow.sequences)
        seq = fast.sequences[0, ids.shape[1] - 1:]
        even = (seq[:-1] % 2 == 0) & (seq[:-1] + 1 < VOCAB)
        assert torch.equal(seq[1:][even], seq[:-1][even] + 1)  # every forced token is in place
        assert bool(even.any()) and fast_forwards < slow_forwards
