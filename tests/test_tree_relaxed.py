"""Relaxed acceptance rules over token trees (multispec.trees.relaxed_path): literal walks, the exact
limit (a tolerance that moves nothing walks like the exact rules), and end to end through the loop
with the moved mass reported and bounded per accepted token."""
import pytest
import torch

import multispec
from multispec import trees
from multispec.acceptance import AdditiveTolerance, TopKTolerance

from conftest import hf_greedy, prompts, tiny_model
from test_trees import TwoBranches


def exact(ids, rows):  # a tolerance that moves nothing: p̃ = p
    return rows.gather(1, ids[:, None])[:, 0]


def as_relax(rule, greedy):
    return lambda ids, rows: rule.relax(ids, None, rows, greedy)


def test_relaxed_greedy_literals():
    tokens, parents = torch.tensor([2, 1, 3]), torch.tensor([-1, -1, 1])  # root children 2 and 1; 3 under 1
    probs = torch.tensor([[0.5, 0.3, 0.2, 0.0],   # after the root: argmax 0, token 1 second, token 2 third
                          [0.0, 0.0, 0.0, 1.0],
                          [0.1, 0.2, 0.3, 0.4],  # after node 1 (token 1): token 3 is the argmax
                          [1.0, 0.0, 0.0, 0.0]])
    # top-2 tolerates token 1 (second most likely), not token 2: node 1, then node 2 exactly
    path, token, moved = trees.relaxed_path(tokens, parents, probs, as_relax(TopKTolerance(2), True), True, None)
    assert (path, token) == ([1, 2], 0)
    assert moved == pytest.approx(0.5 - 0.3, abs=1e-5)  # token 1 lifted just above the argmax's 0.5
    # top-3 tolerates both root children: the first in order (token 2) is taken; it is a leaf
    path, token, moved = trees.relaxed_path(tokens, parents, probs, as_relax(TopKTolerance(3), True), True, None)
    assert (path, token) == ([0], 3) and moved == pytest.approx(0.3, abs=1e-5)
    # an exact child comes first, whatever its order: token 0 would be taken over a tolerated sibling
    probs_first = probs.clone()
    probs_first[0] = torch.tensor([0.1, 0.3, 0.6, 0.0])
    path, token, moved = trees.relaxed_path(tokens, parents, probs_first, as_relax(TopKTolerance(2), True), True,
                                            None)
    assert path == [0] and moved == 0.0
    # nothing tolerated: the target's argmax
    assert trees.relaxed_path(tokens, parents, probs, exact, True, None) == ([], 0, 0.0)


def test_relaxed_walks_equal_the_exact_walks_when_nothing_moves():
    g = torch.Generator().manual_seed(3)
    for case in range(50):
        n = 9
        parents = torch.tensor([-1] + [int(torch.randint(-1, i, (), generator=g)) for i in range(1, n)])
        tokens = torch.randint(0, 5, (n,), generator=g)
        probs = torch.softmax(3 * torch.randn(n + 1, 5, generator=g), dim=-1)
        path, token, moved = trees.relaxed_path(tokens, parents, probs, exact, True, None)
        greedy = trees.greedy_path(tokens, parents, probs.argmax(dim=-1))
        assert (path, moved) == (greedy, 0.0) and token == int(probs[greedy[-1] + 1 if greedy else 0].argmax())
        seed = 100 + case
        sampled = trees.relaxed_path(tokens, parents, probs, exact, False, torch.Generator().manual_seed(seed))
        reference = trees.sample_path(tokens, parents, probs, torch.Generator().manual_seed(seed))
        assert sampled == (*reference, 0.0)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_relaxed_rules_over_trees_through_the_loop(temperature):
    target = tiny_model("llama")
    drafter = TwoBranches(tiny_model("llama", layers=1, hidden=16, seed=7), num_draft_tokens=3)
    ids = prompts(4, seed=1)
    if temperature == 0.0:  # top-1 tolerance is exact greedy: identical to Hugging Face greedy
        for prompt in ids:
            out = multispec.generate(target, prompt, drafter=drafter, max_new_tokens=16,
                                     acceptance=TopKTolerance(1))
            assert torch.equal(out.sequences, hf_greedy(target, prompt, 16))
            assert out.stats.moved_mass == 0.0
    accepted = {}
    for name, rule in (("exact", None), ("top-4", TopKTolerance(4)), ("additive", AdditiveTolerance(0.2))):
        accepted[name] = 0
        for i, prompt in enumerate(ids):
            g = torch.Generator().manual_seed(i)
            out = multispec.generate(target, prompt, drafter=drafter, max_new_tokens=16, acceptance=rule,
                                     temperature=temperature, generator=g)
            accepted[name] += out.stats.accepted
            assert out.sequences.shape[1] == prompt.shape[1] + 16
            assert 0.0 <= out.stats.moved_mass <= out.stats.accepted + 1e-6  # at most 1 per accepted token
            if rule is not None and temperature == 1.0 and name == "additive":  # p̃ ≤ p + β for point masses
                assert out.stats.moved_mass <= 0.2 * out.stats.accepted + 1e-6
    assert accepted["top-4"] > accepted["exact"]


def test_relaxed_rules_refuse_sampled_children():
    from multispec.tree_drafters import DraftTree

    target = tiny_model("llama")
    drafter = DraftTree(tiny_model("llama", layers=1, hidden=16, seed=7), sample_children=True)
    with pytest.raises(ValueError, match="point-mass drafts"):
        multispec.generate(target, prompts(1)[0], drafter=drafter, max_new_tokens=8, temperature=1.0,
                           acceptance=TopKTolerance(3), generator=torch.Generator().manual_seed(0))
