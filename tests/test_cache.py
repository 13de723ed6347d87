"""The cached LM (multispec.lm.CachedLM) and the draft model's cache: after any rollback the next
logits equal a fresh prefill of the accepted sequence."""
import pytest
import torch

import multispec
from multispec.drafters import DraftModel
from multispec.lm import CachedLM
from multispec.sampling import Sampling

from conftest import AlwaysWrong, prompts, tiny_model


class CheckedLM(CachedLM):
    """A target whose every forward is compared with a fresh, cache-free forward of the whole sequence."""

    def __init__(self, model):
        super().__init__(model)
        self.checked = 0

    def reset(self):
        super().reset()
        self.ids = torch.empty(0, dtype=torch.long)

    def forward(self, tokens, last_only=False):
        logits = super().forward(tokens, last_only)
        self.ids = torch.cat([self.ids, tokens])
        with torch.no_grad():
            fresh = self.model(self.ids[None]).logits[0, -logits.shape[0]:]
        torch.testing.assert_close(logits, fresh, atol=1e-4, rtol=0)
        self.checked += 1
        return logits

    def rollback(self, length):
        super().rollback(length)
        self.ids = self.ids[:length]


@pytest.mark.parametrize("arch", ["llama", "mistral", "gpt2"])
@pytest.mark.parametrize("kind", ["wrong", "draft-model"])
def test_target_cache_after_rejections(arch, kind):
    model = tiny_model(arch)
    drafter = AlwaysWrong(model, num_draft_tokens=3) if kind == "wrong" else \
        DraftModel(tiny_model(arch, layers=1, hidden=16, seed=7))
    target = CheckedLM(model)
    out = multispec.generate(target, prompts(1, seed=8)[0], drafter=drafter, max_new_tokens=30)
    assert target.checked == out.stats.steps + 1  # every step plus the prefill
    if kind == "wrong":
        assert out.stats.accepted == 0


@pytest.mark.parametrize("arch", ["llama", "mistral"])
def test_draft_model_cache_after_rejection(arch):
    """A drafter that saw a rejected draft proposes exactly what a fresh drafter proposes."""
    model = tiny_model(arch, layers=1, hidden=16, seed=7)
    greedy = Sampling()
    used, fresh = DraftModel(model, num_draft_tokens=6, adaptive=False), DraftModel(model, num_draft_tokens=6,
                                                                                   adaptive=False)
    used.reset()
    fresh.reset()
    seq = prompts(1, seed=12)[0][0]
    seq = torch.cat([seq, seq, seq])[:14]  # longer than Mistral's sliding window of 8
    first = used.propose(seq, 6, greedy, None)
    # the target accepted two drafted tokens and then disagreed
    accepted = torch.cat([seq, first.tokens[:2], (first.tokens[2:3] + 1) % model.config.vocab_size])
    again = used.propose(accepted, 6, greedy, None)
    reference = fresh.propose(accepted, 6, greedy, None)
    assert torch.equal(again.tokens, reference.tokens)
    torch.testing.assert_close(again.probs, reference.probs, atol=1e-4, rtol=0)


def test_rollback_rejects_impossible_lengths():
    lm = CachedLM(tiny_model("llama"))
    lm.forward(torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="roll back"):
        lm.rollback(5)


def test_forward_uses_this_versions_cache_argument(recwarn):
    """No deprecation warning about the cache argument's name (it moved in transformers 5.24)."""
    multispec.generate(tiny_model("llama"), prompts(1)[0], drafter=DraftModel(tiny_model("llama")), max_new_tokens=5)
    assert not [w for w in recwarn if "past_key_values" in str(w.message)]
