"""Token trees under sampling keep the target's distribution: the same chi-square goodness-of-fit
test as tests/test_distribution.py (2nd and 3rd new token, exact marginals by enumeration over an
8-token vocabulary), at α = 0.01 over this file's 6 positive tests; a negative control (a walk that
always accepts the first child) is rejected with p < 1e-6."""
import pytest
import torch

import multispec
from multispec import trees
from multispec.drafters import PromptLookup
from multispec.sampling import Sampling
from multispec.tree_drafters import DraftTree

from test_distribution import chi_square_pvalue, exact_marginals, sample_counts, target_and_draft

ALPHA = 0.01 / 6


@pytest.mark.parametrize("kind, sampling", [("draft-tree", Sampling(1.0)), ("draft-tree", Sampling(0.7, top_k=4)),
                                            ("lookup-tree", Sampling(1.0))], ids=["draft-T1", "draft-T0.7-top4", "lookup-T1"])
def test_tree_sampling_keeps_the_distribution(kind, sampling):
    target, draft = target_and_draft()
    drafter = DraftTree(draft, branches=3, width=2, max_nodes=6) if kind == "draft-tree" else PromptLookup(branches=3)
    counts = sample_counts(target, drafter, sampling, seed=11)
    second, third = exact_marginals(target, sampling)
    assert chi_square_pvalue(counts[0], second) > ALPHA and chi_square_pvalue(counts[1], third) > ALPHA


def test_tree_sampling_actually_accepts_drafts():
    target, draft = target_and_draft()
    out = multispec.generate(target, torch.tensor([[1, 5, 2, 1, 5]]), drafter=DraftTree(draft, 3, 2, 6),
                             max_new_tokens=24, temperature=1.0, generator=torch.Generator().manual_seed(0))
    assert out.stats.accepted > 0 and out.stats.steps < 24


def test_the_test_rejects_a_biased_walk(monkeypatch):
    def always_first_child(tokens, parents, probs, generator):
        first = [i for i, parent in enumerate(parents.tolist()) if parent == -1]
        if not first:
            return [], int(torch.multinomial(probs[0].float(), 1, generator=generator))
        return [first[0]], int(torch.multinomial(probs[first[0] + 1].float(), 1, generator=generator))

    monkeypatch.setattr(trees, "sample_path", always_first_child)
    target, draft = target_and_draft()
    counts = sample_counts(target, DraftTree(draft, branches=3, width=2, max_nodes=6), Sampling(1.0), seed=11)
    second, _ = exact_marginals(target, Sampling(1.0))
    assert chi_square_pvalue(counts[0], second) < 1e-6
