"""Distribution preservation (exact rules under sampling, through the full loop): a formal chi-square
goodness-of-fit test that speculative sampling keeps the target distribution.

The exact distribution of the 2nd and 3rd new token is computed by enumerating every continuation
over an 8-token vocabulary. Each case draws N sequences through the full decoding loop and tests both
marginals at a family-wise significance α = 0.01 (Bonferroni over the 16 tests of this module's
positive cases: each at α/16). A negative control shows the same test rejects a deliberately biased
rule (always accept the draft) with p < 1e-6. Seeds are fixed, so the outcome is deterministic.
"""
import pytest
import torch
from scipy.stats import chisquare

import multispec
from multispec.acceptance import AcceptanceRule, Verdict
from multispec.drafters import DraftModel, Jacobi, PromptLookup
from multispec.sampling import Sampling

from conftest import tiny_model

V = 8
PROMPT = torch.tensor([[1, 5, 2, 1, 5]])
N = 1000
ALPHA = 0.01 / 16  # Bonferroni over the 16 chi-square tests in this file


def target_and_draft():
    """p and q far apart (total variation ≈ 0.26 on the 2nd token), so a biased rule is visible."""
    return (tiny_model("llama", vocab=V, seed=3), tiny_model("llama", layers=1, hidden=16, vocab=V, seed=9))


def exact_marginals(model, sampling: Sampling):
    """P(2nd new token) and P(3rd new token) [V] by enumeration."""
    with torch.no_grad():
        p1 = sampling.probs(model(PROMPT).logits[0, -1:])[0]  # [V]
        seq1 = torch.cat([PROMPT.repeat(V, 1), torch.arange(V)[:, None]], dim=1)  # [V, T+1]
        p2_given_1 = sampling.probs(model(seq1).logits[:, -1])  # [V, V]
        seq2 = torch.cat([seq1.repeat_interleave(V, 0), torch.arange(V).repeat(V)[:, None]], dim=1)  # [V², T+2]
        p3_given_12 = sampling.probs(model(seq2).logits[:, -1]).view(V, V, V)
    joint12 = p1[:, None] * p2_given_1  # [x1, x2]
    return joint12.sum(0), (joint12[:, :, None] * p3_given_12).sum((0, 1))


def sample_counts(model, drafter, sampling: Sampling, acceptance=None, seed=0):
    generator = torch.Generator().manual_seed(seed)
    counts = torch.zeros(2, V)
    for _ in range(N):
        out = multispec.generate(model, PROMPT, drafter=drafter, acceptance=acceptance, max_new_tokens=3,
                                 temperature=sampling.temperature, top_k=sampling.top_k, top_p=sampling.top_p,
                                 generator=generator).sequences[0, -2:]
        counts[0, out[0]] += 1
        counts[1, out[1]] += 1
    return counts


def chi_square_pvalue(observed: torch.Tensor, expected_probs: torch.Tensor) -> float:
    """Pearson chi-square GOF; cells with expected count < 5 are pooled into one."""
    observed = observed.double()
    expected = expected_probs.double() / expected_probs.double().sum() * observed.sum()
    small = expected < 5
    if small.any():
        observed = torch.cat([observed[~small], observed[small].sum()[None]])
        expected = torch.cat([expected[~small], expected[small].sum()[None]])
    assert observed[expected == 0].sum() == 0, "a token with zero target probability was sampled"
    keep = expected > 0
    return float(chisquare(observed[keep].numpy(), expected[keep].numpy()).pvalue)


CASES = {
    "T=1.0": Sampling(1.0),
    "T=0.7": Sampling(0.7),
    "T=1.0,top_k=3": Sampling(1.0, top_k=3),
    "T=1.0,top_p=0.8": Sampling(1.0, top_p=0.8),
    "T=0.7,top_k=4,top_p=0.9": Sampling(0.7, top_k=4, top_p=0.9),
}


@pytest.mark.parametrize("seed, case", list(enumerate(CASES)))
def test_speculative_sampling_preserves_distribution(seed, case):
    sampling = CASES[case]
    target, draft = target_and_draft()
    exact2, exact3 = exact_marginals(target, sampling)
    drafter = DraftModel(draft, num_draft_tokens=2, adaptive=False)
    counts = sample_counts(target, drafter, sampling, seed=seed)
    for observed, exact in zip(counts, (exact2, exact3)):
        assert chi_square_pvalue(observed, exact) > ALPHA, f"{case}: distribution differs from the target's"


def test_confidence_stopped_drafts_preserve_distribution():
    """A draft cut short after an unsure token (q(x) < threshold) depends on the draft alone: exact."""
    target, draft = target_and_draft()
    sampling = Sampling(1.0)
    exact2, exact3 = exact_marginals(target, sampling)
    drafter = DraftModel(draft, num_draft_tokens=3, adaptive=False, confidence_threshold=0.3)
    counts = sample_counts(target, drafter, sampling, seed=7)
    for observed, exact in zip(counts, (exact2, exact3)):
        assert chi_square_pvalue(observed, exact) > ALPHA
    with pytest.raises(ValueError, match="confidence_threshold"):
        DraftModel(draft, confidence_threshold=1.0)


def test_point_mass_drafts_preserve_distribution():
    """Prompt lookup drafts without q (a point mass); acceptance with probability p(x) stays exact."""
    target, _ = target_and_draft()
    sampling = Sampling(1.0)
    exact2, exact3 = exact_marginals(target, sampling)
    counts = sample_counts(target, PromptLookup(max_ngram=2, num_draft_tokens=2, adaptive=False), sampling, seed=5)
    for observed, exact in zip(counts, (exact2, exact3)):
        assert chi_square_pvalue(observed, exact) > ALPHA


def test_jacobi_drafts_preserve_distribution():
    """SJD drafts from stale target predictions and uniform fresh tokens; each is judged against its q."""
    target, _ = target_and_draft()
    sampling = Sampling(1.0)
    exact2, exact3 = exact_marginals(target, sampling)
    counts = sample_counts(target, Jacobi(V, window=2), sampling, seed=6)
    for observed, exact in zip(counts, (exact2, exact3)):
        assert chi_square_pvalue(observed, exact) > ALPHA


class AcceptEverything(AcceptanceRule):
    """A deliberately biased rule: accept every drafted token, then sample the bonus token from p."""

    def __call__(self, draft_tokens, draft_probs, target_probs, *, greedy, generator=None):
        gamma = draft_tokens.shape[0]
        return Verdict(gamma, int(torch.multinomial(target_probs[gamma], 1, generator=generator)))


def test_negative_control_rejects_a_biased_rule():
    sampling = Sampling(1.0)
    target, draft = target_and_draft()
    exact2, exact3 = exact_marginals(target, sampling)
    drafter = DraftModel(draft, num_draft_tokens=2, adaptive=False)
    counts = sample_counts(target, drafter, sampling, acceptance=AcceptEverything(), seed=1)
    assert chi_square_pvalue(counts[0], exact2) < 1e-6
    assert chi_square_pvalue(counts[1], exact3) < 1e-6
