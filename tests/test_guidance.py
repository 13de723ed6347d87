"""Classifier-free guidance and token masks (multispec.guidance.GuidedLM): guided logits and their
rollback match full forwards, and guided decoding is exact for every drafter."""
import pytest
import torch

import multispec
from multispec.drafters import DraftModel, Jacobi
from multispec.guidance import GuidedLM

from conftest import VOCAB, tiny_model


def manual_guided_logits(model, cond, uncond, scale):
    with torch.no_grad():
        c = model(cond[None]).logits[0].float()
        u = model(uncond[None]).logits[0].float()
    return u + scale * (c - u)


def test_guided_logits_and_rollback_match_full_forwards():
    model = tiny_model("llama")
    seq = torch.tensor([5, 7, 1, 9, 3, 3, 8, 2])
    uncond = seq.clone()
    uncond[:2] = torch.tensor([0, 0])
    allowed = torch.zeros(VOCAB, dtype=torch.bool)
    allowed[10:60] = True
    lm = GuidedLM(model, guidance_scale=3.0, unconditional_prefix=torch.tensor([0, 0]), allowed_tokens=allowed)
    expected = manual_guided_logits(model, seq, uncond, 3.0).masked_fill(~allowed, float("-inf"))
    with torch.no_grad():
        got = torch.cat([lm.forward(seq[:1]), lm.forward(seq[1:5]), lm.forward(seq[5:])])
        assert torch.allclose(got, expected, atol=1e-4)
        lm.rollback(3)  # drop 3 positions, re-feed different tokens
        alt = torch.tensor([4, 4, 4])
        again = lm.forward(alt)
    seq2 = torch.cat([seq[:3], alt])
    uncond2 = seq2.clone()
    uncond2[:2] = 0
    ref = manual_guided_logits(model, seq2, uncond2, 3.0)[3:].masked_fill(~allowed, float("-inf"))
    assert torch.allclose(again, ref, atol=1e-4)


def test_guided_decoding_is_exact_for_every_drafter():
    """Greedy with CFG: plain, draft model (same guidance) and Jacobi give the same tokens."""
    target, small = tiny_model("llama"), tiny_model("llama", layers=1, hidden=16, seed=7)
    allowed = torch.ones(VOCAB, dtype=torch.bool)
    allowed[:4] = False  # "class tokens" are never generated

    def guided(model):
        return GuidedLM(model, guidance_scale=2.5, unconditional_prefix=torch.tensor([0]), allowed_tokens=allowed)

    for cls in (1, 2, 3):
        ids = torch.tensor([[cls]])
        plain = multispec.generate(guided(target), ids, max_new_tokens=24).sequences
        assert (plain[0, 1:] >= 4).all()
        for drafter in (DraftModel(guided(small), num_draft_tokens=3), Jacobi(VOCAB, window=6),
                        DraftModel(guided(target), num_draft_tokens=4)):
            out = multispec.generate(guided(target), ids, drafter=drafter, max_new_tokens=24)
            assert torch.equal(out.sequences, plain)


def test_guidance_needs_an_unconditional_prefix():
    with pytest.raises(ValueError, match="unconditional_prefix"):
        GuidedLM(tiny_model("llama"), guidance_scale=2.0)
    with pytest.raises(ValueError, match="allowed_tokens"):
        GuidedLM(tiny_model("llama"), allowed_tokens=torch.ones(3, dtype=torch.bool))


def slot_mask(positions: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
    """A position-dependent mask like a codec's slots: even positions take ids 4..49, odd ones 50..95,
    and every 7th position is forced to id 60."""
    allowed = torch.zeros(positions.shape[0], VOCAB, dtype=torch.bool)
    for row, position in enumerate(positions.tolist()):
        if position % 7 == 0:
            allowed[row, 60] = True
        elif position % 2 == 0:
            allowed[row, 4:50] = True
        else:
            allowed[row, 50:96] = True
    return allowed


def test_guided_trees_score_like_chains_and_decode_exactly():
    """A tree through GuidedLM: each node's row equals the guided, masked chain along its path, and
    tree drafters decode exactly like plain guided decoding, forced positions inside the trees."""
    from multispec.tree_drafters import DraftTree
    from multispec import trees

    target = tiny_model("llama")

    def guided(model):
        return GuidedLM(model, guidance_scale=2.0, unconditional_prefix=torch.tensor([0]), allowed_tokens=slot_mask)

    prefix, nodes = torch.tensor([2, 11, 57, 12]), torch.tensor([55, 13, 70, 14])
    parents = torch.tensor([-1, 0, -1, 2])  # two chains of two under the newest token
    with torch.no_grad():
        lm = guided(target)
        lm.forward(prefix)
        scored = lm.forward_tree(nodes, parents)
        for node, path in ((1, [0, 1]), (3, [2, 3])):
            chain = guided(target)
            reference = chain.forward(torch.cat([prefix, nodes[path]]))[-1]
            torch.testing.assert_close(scored[node], reference, atol=1e-4, rtol=1e-4)
    assert trees.depths(parents).tolist() == [1, 2, 1, 2]
    small = tiny_model("llama", layers=1, hidden=16, seed=7)
    for cls in (1, 2, 3):
        ids = torch.tensor([[cls]])
        plain = multispec.generate(guided(target), ids, max_new_tokens=30).sequences
        for drafter in (DraftTree(guided(small), branches=2, width=2, max_nodes=6),
                        DraftTree(guided(target), branches=3, width=2, max_nodes=8)):
            out = multispec.generate(guided(target), ids, drafter=drafter, max_new_tokens=30)
            assert torch.equal(out.sequences, plain)
        assert plain[0, 7::7].tolist() == [60] * 4 and plain.shape[1] == 31  # the forced slots hold their token



def test_masked_out_tokens_never_become_tree_nodes():
    from multispec import trees

    logits = torch.full((6,), float("-inf"))
    logits[3] = 0.0  # a forced slot: one token allowed

    def expand(frontier, tokens, parents):
        return logits.expand(len(frontier), -1)

    tokens, parents = trees.grow(logits, 3, 4, 4, 16, expand)
    assert (tokens, parents) == ([3, 3, 3], [-1, 0, 1])  # one chain, not 4 branches of impossible tokens
