"""Token trees under sampling keep the target's distribution: the same chi-square goodness-of-fit
test as tests/test_distribution.py (2nd and 3rd new token, exact marginals by enumeration over an
8-token vocabulary), at α = 0.01 over this file's 8 positive tests (point-mass children, and children
sampled from q verified by multi-round speculative sampling); a negative control (a walk that always
accepts the first child) is rejected with p < 1e-6."""
import pytest
import torch

import multispec
from multispec import trees
from multispec.drafters import PromptLookup
from multispec.sampling import Sampling
from multispec.tree_drafters import DraftTree

from test_distribution import chi_square_pvalue, exact_marginals, sample_counts, target_and_draft

ALPHA = 0.01 / 8


@pytest.mark.parametrize("kind, sampling", [("draft-tree", Sampling(1.0)), ("draft-tree", Sampling(0.7, top_k=4)),
                                            ("lookup-tree", Sampling(1.0))], ids=["draft-T1", "draft-T0.7-top4", "lookup-T1"])
def test_tree_sampling_keeps_the_distribution(kind, sampling):
    target, draft = target_and_draft()
    drafter = DraftTree(draft, branches=3, width=2, max_nodes=6) if kind == "draft-tree" else PromptLookup(branches=3)
    counts = sample_counts(target, drafter, sampling, seed=11)
    second, third = exact_marginals(target, sampling)
    assert chi_square_pvalue(counts[0], second) > ALPHA and chi_square_pvalue(counts[1], third) > ALPHA


@pytest.mark.parametrize("sampling", [Sampling(1.0), Sampling(0.7, top_k=4)], ids=["T1", "T0.7-top4"])
def test_sampled_children_keep_the_distribution(sampling):
    target, draft = target_and_draft()
    drafter = DraftTree(draft, branches=2, width=2, num_draft_tokens=3, sample_children=True)
    counts = sample_counts(target, drafter, sampling, seed=13)
    second, third = exact_marginals(target, sampling)
    assert chi_square_pvalue(counts[0], second) > ALPHA and chi_square_pvalue(counts[1], third) > ALPHA


def test_sample_path_with_q_literals():
    tokens, parents = torch.tensor([1, 1]), torch.tensor([-1, -1])  # two draws of token 1 under the root
    probs = torch.tensor([[0.0, 0.5, 0.5], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    q = torch.tensor([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]])  # q puts everything on token 1
    g = torch.Generator().manual_seed(0)
    for _ in range(20):  # p(1)/q(1) = 0.5; after a rejection the residual max(0, p − q) is all on token 2
        path, token = trees.sample_path(tokens, parents, probs, g, draft_probs=q)
        assert (path, token) in (([0], 0), ([], 2))


def test_sampled_children_accept_more_than_point_masses():
    target, draft = target_and_draft()
    accepted = {}
    for sampled in (False, True):
        drafter = DraftTree(draft, branches=2, width=2, num_draft_tokens=3, sample_children=sampled)
        accepted[sampled] = sum(
            multispec.generate(target, torch.tensor([[1, 5, 2, 1, 5]]), drafter=drafter, max_new_tokens=24,
                               temperature=1.0, generator=torch.Generator().manual_seed(s)).stats.accepted
            for s in range(10))
    assert accepted[True] > accepted[False]


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


def test_the_test_rejects_sampled_children_without_the_residual(monkeypatch):
    """A plausible bug: after a sibling is rejected, the next is judged against the same p instead of
    norm(max(0, p − q)); the chi-square test must catch it."""
    def no_residual(tokens, parents, probs, generator, draft_probs=None):
        children, path, node = trees._children(parents), [], -1
        while True:
            p, accepted = probs[node + 1].double(), None
            for child in children.get(node, []):
                token, q = int(tokens[child]), draft_probs[child].double()
                if float(torch.rand((), generator=generator, dtype=torch.float64)) < float(p[token] / q[token]):
                    accepted = child
                    break
            if accepted is None:
                return path, int(torch.multinomial(p.float(), 1, generator=generator))
            path.append(accepted)
            node = accepted

    monkeypatch.setattr(trees, "sample_path", no_residual)
    target, draft = target_and_draft()
    drafter = DraftTree(draft, branches=2, width=2, num_draft_tokens=3, sample_children=True)
    counts = sample_counts(target, drafter, Sampling(1.0), seed=13)
    second, _ = exact_marginals(target, Sampling(1.0))
    assert chi_square_pvalue(counts[0], second) < 1e-6
