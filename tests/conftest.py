"""Helpers shared by the tests: tiny random Hugging Face models (CPU, deterministic, built once per
session), a scripted model-free verifier for literal-case tests, and drafters and masks several files use."""
from __future__ import annotations

import functools

import pytest
import torch
import transformers
from transformers import AutoModelForCausalLM

from multispec.drafters import Draft, DraftModel

torch.set_num_threads(1)  # tiny ops: a second thread only adds synchronisation cost
VOCAB = 96


def _config(arch: str, layers: int = 4, hidden: int = 32, seed_vocab: int = VOCAB):
    common = dict(vocab_size=seed_vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                  num_attention_heads=4, max_position_embeddings=256, tie_word_embeddings=False)
    if arch == "llama":
        return transformers.LlamaConfig(num_key_value_heads=2, **common)
    if arch == "mistral":  # sliding window far shorter than the sequences the tests decode
        return transformers.MistralConfig(num_key_value_heads=2, sliding_window=8, **common)
    if arch == "qwen2":
        return transformers.Qwen2Config(num_key_value_heads=1, **common)
    if arch == "phi3":
        return transformers.Phi3Config(num_key_value_heads=2, pad_token_id=0, **common)
    if arch == "gemma":
        return transformers.GemmaConfig(num_key_value_heads=1, head_dim=8, **common)
    if arch == "gpt2":
        return transformers.GPT2Config(vocab_size=seed_vocab, n_embd=hidden, n_layer=layers, n_head=4, n_positions=256,
                                       resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=False)
    raise KeyError(arch)


ARCHS = ["llama", "mistral", "qwen2", "phi3", "gemma", "gpt2"]


@functools.lru_cache(maxsize=None)
def tiny_model(arch: str, layers: int = 2, hidden: int = 32, seed: int = 0, sharpen: float = 8.0,
               vocab: int = VOCAB):
    """A random model whose LM head is scaled up so that its distributions are far from uniform."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(_config(arch, layers, hidden, vocab))
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(sharpen)
    return model.eval()


@pytest.fixture(params=ARCHS)
def arch(request):
    return request.param


def prompts(n: int = 20, seed: int = 1, vocab: int = VOCAB):
    """n prompts of varied length (1..24 tokens) with repeats, so that n-gram lookup finds matches."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        length = 1 + int(torch.randint(0, 24, (1,), generator=g))
        base = torch.randint(0, vocab, (max(1, length // 2),), generator=g)
        out.append(torch.cat([base, base])[:length][None])
    return out


def hf_greedy(model, input_ids, max_new_tokens, eos_token_id=None):
    """Hugging Face's own greedy decoding (the reference); eos only where given, as in multispec."""
    from multispec.compat import hf_greedy_config
    config = hf_greedy_config(model, max_new_tokens)
    if eos_token_id is not None:
        config.eos_token_id = eos_token_id
    with torch.no_grad():
        return model.generate(input_ids, attention_mask=torch.ones_like(input_ids), generation_config=config)


class ScriptedLM:
    """A model-free verifier (or a draft model's LM) for literal-case tests: a point mass on a scripted token.

    The logits row for a token ``t`` fed at position ``i`` allows only ``predict(i, t)`` (0, -inf
    elsewhere), or the token ``forced(i + 1, t)`` names when it names one; ``forced_token`` answers
    the same hook a masked :class:`~multispec.guidance.GuidedLM` answers. ``fed`` logs every chunk fed.
    """

    max_length = None  # no context limit
    device = torch.device("cpu")

    def __init__(self, predict, vocab: int = 16, forced=None):
        self.predict, self.vocab_size, self.forced = predict, vocab, forced
        self.reset()

    def reset(self):
        self.length, self.fed = 0, []

    def forced_token(self, position, previous):
        return None if self.forced is None else self.forced(position, previous)

    def forward(self, tokens, last_only=False):
        self.fed.append(tokens.tolist())
        logits = torch.full((tokens.shape[0], self.vocab_size), float("-inf"))
        for row, token in enumerate(tokens.tolist()):
            position = self.length + row
            forced = self.forced_token(position + 1, token)
            logits[row, self.predict(position, token) if forced is None else forced] = 0.0
        self.length += tokens.shape[0]
        return logits[-1:] if last_only else logits

    def rollback(self, length):
        assert 0 <= length <= self.length
        self.length = length


def successor(step: int = 1, vocab: int = 16):
    """A ScriptedLM rule: the token after ``t`` is ``(t + step) % vocab``, wherever it stands."""
    return lambda position, token: (token + step) % vocab


def forcing(table: dict):
    """A ScriptedLM ``forced`` rule from {previous token: the token forced after it}, at any position."""
    return lambda position, previous: table.get(previous)


def even_forces_next(positions, previous):
    """A mask that allows only token + 1 after an even token (a forced token), anything elsewhere."""
    mask = torch.ones(positions.shape[0], VOCAB, dtype=torch.bool)
    even = (previous % 2 == 0) & (previous + 1 < VOCAB)
    mask[even] = False
    mask[even.nonzero()[:, 0], (previous + 1)[even]] = True
    return mask


class AlwaysWrong(DraftModel):
    """Drafts the target's own greedy tokens shifted by one id: every draft is rejected at once."""

    def propose(self, tokens, max_tokens, sampling, generator):
        draft = super().propose(tokens, max_tokens, sampling, generator)
        return Draft((draft.tokens + 1) % self.vocab_size)
