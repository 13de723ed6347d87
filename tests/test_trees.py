"""Token trees (multispec.trees, compat.tree_attention, CachedLM.forward_tree/keep, the loop's tree
step): literal layouts and walks, one forward scoring a tree exactly like the paths one by one, the
cache after keeping a path equal to a fresh prefill, and tree drafts token-identical to HF greedy."""
import pytest
import torch

import multispec
from multispec import compat, trees
from multispec.drafters import Draft, DraftModel, PromptLookup
from multispec.lm import CachedLM
from multispec.tree_drafters import DraftTree

from conftest import ARCHS, hf_greedy, prompts, tiny_model


def test_tree_layout_literals():
    parents = torch.tensor([-1, 0, 0, 1, -1])  # two roots' children (0 and 4); 0 has children 1, 2; 1 has 3
    assert trees.depths(parents).tolist() == [1, 2, 2, 3, 1]
    assert trees.ancestor_mask(parents).int().tolist() == [
        [1, 0, 0, 0, 0],
        [1, 1, 0, 0, 0],
        [1, 0, 1, 0, 0],  # a sibling is not seen
        [1, 1, 0, 1, 0],
        [0, 0, 0, 0, 1],
    ]
    assert trees.chain_parents(3).tolist() == [-1, 0, 1]
    for bad in ([0], [-1, 1], [-2]):
        with pytest.raises(ValueError, match="earlier node"):
            trees.check_parents(torch.tensor(bad))


def test_tree_attention_mask_and_positions_literal():
    model = tiny_model("llama")
    mask, positions = compat.tree_attention(model, 2, torch.tensor([-1, 0, -1]), torch.float32)
    assert positions.tolist() == [[2, 3, 2]]  # prefix length − 1 + depth; siblings share a position
    allowed = (mask[0, 0] == 0).int().tolist()
    assert allowed == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 1, 0, 0, 1]]
    assert float(mask.min()) == torch.finfo(torch.float32).min  # additive 0 / min, never a 0/1 float mask


def test_tree_attention_applies_the_sliding_window():
    model = tiny_model("mistral")  # sliding_window 8
    mask, positions = compat.tree_attention(model, 10, torch.tensor([-1, 0]), torch.float32)
    allowed = mask[0, 0] == 0
    assert positions.tolist() == [[10, 11]]
    # node 0 at position 10 sees positions 3..10 (itself included); node 1 at 11 sees 4..11
    assert allowed[0].int().tolist() == [0, 0, 0] + [1] * 8 + [0]
    assert allowed[1].int().tolist() == [0, 0, 0, 0] + [1] * 8


def _path_to(parents, i):
    path = []
    while i >= 0:
        path.append(i)
        i = int(parents[i])
    return path[::-1]


@pytest.mark.parametrize("arch", ARCHS)
def test_one_forward_scores_every_path_and_keep_equals_a_fresh_prefill(arch):
    model = tiny_model(arch)
    g = torch.Generator().manual_seed(0)
    prefix, nodes = torch.randint(0, 90, (12,), generator=g), torch.randint(0, 90, (7,), generator=g)
    parents = torch.tensor([-1, 0, 0, 1, 2, -1, 5])
    lm = CachedLM(model)
    with torch.inference_mode():
        lm.forward(prefix)
        scored = lm.forward_tree(nodes, parents)
        for i in range(7):
            reference = CachedLM(model).forward(torch.cat([prefix, nodes[_path_to(parents, i)]]))[-1]
            torch.testing.assert_close(scored[i], reference, atol=1e-5, rtol=1e-5)
        lm.keep(torch.cat([torch.arange(12), 12 + torch.tensor([0, 1, 3])]))
        after = lm.forward(torch.tensor([5]))[-1]
        fresh = CachedLM(model).forward(torch.cat([prefix, nodes[[0, 1, 3]], torch.tensor([5])]))[-1]
    assert lm.length == 16
    torch.testing.assert_close(after, fresh, atol=1e-5, rtol=1e-5)


def test_greedy_path_literals():
    tokens, parents = torch.tensor([5, 6, 7, 8, 9]), torch.tensor([-1, 0, 0, 1, -1])
    # the target predicts 5 after the root, 7 after node 0, then 1 after node 2: path 0 → 2
    assert trees.greedy_path(tokens, parents, torch.tensor([5, 7, 0, 1, 0, 0])) == [0, 2]
    assert trees.greedy_path(tokens, parents, torch.tensor([9, 0, 0, 0, 0, 0])) == [4]  # the second root child
    assert trees.greedy_path(tokens, parents, torch.tensor([3, 0, 0, 0, 0, 0])) == []  # nothing matches


class TwoBranches(DraftModel):
    """A tree of two chains: the draft model's own guess, and a sibling branch that is always wrong."""

    def propose(self, tokens, max_tokens, sampling, generator):
        chain = super().propose(tokens, max_tokens, sampling, generator).tokens
        if chain.numel() == 0:
            return Draft(chain)
        wrong = (chain + 1) % self.vocab_size
        n = chain.shape[0]
        parents = torch.cat([trees.chain_parents(n), trees.chain_parents(n) + n])
        parents[n] = -1
        order = torch.cat([wrong, chain]) if int(tokens[-1]) % 2 else torch.cat([chain, wrong])
        return Draft(order, parents=parents)


@pytest.mark.parametrize("arch", ARCHS)
def test_tree_drafts_equal_hf_greedy(arch):
    target = tiny_model(arch)
    drafters = {"lookup tree": PromptLookup(branches=3),
                "draft tree": DraftTree(tiny_model(arch, layers=1, hidden=16, seed=7), branches=2, width=2, max_nodes=8),
                "right and wrong branches": TwoBranches(target, num_draft_tokens=3),
                "small drafter, wrong sibling": TwoBranches(tiny_model(arch, layers=1, hidden=16, seed=7))}
    for ids in prompts(20):
        reference = hf_greedy(target, ids, 16)
        for name, drafter in drafters.items():
            out = multispec.generate(target, ids, drafter=drafter, max_new_tokens=16)
            assert torch.equal(out.sequences, reference), (arch, name, ids.tolist())
    # eos inside a branch, and max_new_tokens ending inside a tree
    ids = prompts(1)[0]
    reference = hf_greedy(target, ids, 12)
    eos = int(reference[0, ids.shape[1] + 5])
    first = int((reference[0, ids.shape[1]:] == eos).nonzero()[0, 0])
    cut = reference[0, : ids.shape[1] + first + 1]
    for drafter in drafters.values():
        out = multispec.generate(target, ids, drafter=drafter, max_new_tokens=12, eos_token_id=eos)
        assert torch.equal(out.sequences[0], cut)
        assert multispec.generate(target, ids, drafter=drafter, max_new_tokens=5).sequences.shape[1] == \
            ids.shape[1] + 5


def test_trees_are_refused_where_they_are_not_supported():
    target = tiny_model("llama")
    ids = prompts(1)[0]
    with pytest.raises(ValueError, match="rule with relax"):
        multispec.generate(target, ids, drafter=TwoBranches(target), max_new_tokens=8,
                           acceptance=lambda *args, **kwargs: None)
    with pytest.raises(ValueError, match="branches must be an integer >= 1"):
        PromptLookup(branches=0)


def test_sample_path_literals():
    tokens, parents = torch.tensor([1, 2, 3]), torch.tensor([-1, -1, 0])  # root children 1 and 2; 3 under 1
    certain = torch.zeros(4, 4)
    certain[0, 2] = certain[1, 3] = certain[2, 0] = certain[3, 0] = 1.0  # p after root: all on token 2
    g = torch.Generator().manual_seed(0)
    # token 1 has p = 0: rejected for sure; token 2 has p = 1: accepted; node 1 (token 2) is a leaf
    assert trees.sample_path(tokens, parents, certain, g) == ([1], 0)
    nothing = torch.zeros(4, 4)
    nothing[0, 0] = 1.0  # neither child is possible: the next token comes from the residual
    assert trees.sample_path(tokens, parents, nothing, g) == ([], 0)
