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
