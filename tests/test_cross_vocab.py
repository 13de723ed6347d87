"""Drafting across vocabularies (multispec.cross_vocab, modalities.text.vocabulary): greedy output equals
plain decoding in both modes; the sampling distribution is kept (chi-square); the tokenizer bridge
finds twins across byte-level BPE ("Ġ") and SentencePiece-style ("▁") vocabularies and re-encodes
drafts at a token boundary; bad bridges are refused by name."""
from __future__ import annotations

import functools

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

import multispec
from modalities.text.vocabulary import TokenizerBridge, token_texts
from multispec.cross_vocab import CrossVocabularyDraft
from multispec.sampling import Sampling

from conftest import tiny_model
from test_distribution import N, PROMPT, V, chi_square_pvalue, exact_marginals

DRAFT_VOCAB = 12


class ShiftBridge:
    """A literal bridge: target token t is draft token t + 2 (draft 0, 1, 10, 11 have no twin); only
    even target tokens are shared, so "shared" drafts from half the vocabulary."""

    target_vocab_size = V

    def __init__(self):
        self.draft_to_target = torch.full((DRAFT_VOCAB,), -1, dtype=torch.long)
        for t in range(0, V, 2):
            self.draft_to_target[t + 2] = t

    def to_draft(self, target_ids):
        return target_ids + 2

    def to_target(self, target_ids, drafted):
        out = []
        for d in drafted.tolist():
            if not 2 <= d < 2 + V:
                break
            out.append(d - 2)
        return torch.tensor(out, dtype=torch.long)


def pair():
    return tiny_model("llama", vocab=V, seed=3), tiny_model("llama", layers=1, hidden=16, vocab=DRAFT_VOCAB, seed=9)


@pytest.mark.parametrize("mode", ["shared", "text"])
def test_greedy_equals_plain(mode):
    target, draft = pair()
    for seed in range(4):
        ids = torch.randint(0, V, (1, 3 + seed), generator=torch.Generator().manual_seed(seed))
        plain = multispec.generate(target, ids, max_new_tokens=20).sequences
        out = multispec.generate(target, ids, drafter=CrossVocabularyDraft(draft, ShiftBridge(), mode=mode),
                                 max_new_tokens=20)
        assert torch.equal(out.sequences, plain)


@pytest.mark.parametrize("mode", ["shared", "text"])
def test_sampling_keeps_the_distribution(mode):
    target, draft = pair()
    sampling = Sampling(1.0)
    generator = torch.Generator().manual_seed(0)
    counts, drafted = torch.zeros(2, V), 0
    for _ in range(N):
        out = multispec.generate(target, PROMPT, drafter=CrossVocabularyDraft(draft, ShiftBridge(), mode=mode,
                                                                               num_draft_tokens=2),
                                 max_new_tokens=3, temperature=1.0, generator=generator)
        tokens = out.sequences[0, -2:]
        counts[0, tokens[0]] += 1
        counts[1, tokens[1]] += 1
        drafted += out.stats.accepted
    assert drafted > (0.1 if mode == "shared" else 0.02) * N  # the drafts were actually used
    for observed, expected in zip(counts, exact_marginals(target, sampling)):
        assert chi_square_pvalue(observed, expected) > 0.01 / 4


def test_shared_drafts_only_shared_tokens():
    target, draft = pair()
    drafter = CrossVocabularyDraft(draft, ShiftBridge(), num_draft_tokens=4, adaptive=False)
    drafter.reset()
    proposal = drafter.propose(PROMPT[0], 4, Sampling(1.0), torch.Generator().manual_seed(1))
    assert proposal.tokens.shape == (4,) and (proposal.tokens % 2 == 0).all()
    assert proposal.probs.shape == (4, V) and torch.allclose(proposal.probs[:, 1::2], torch.zeros(4, V // 2))
    assert torch.allclose(proposal.probs.sum(-1), torch.ones(4))


def test_bad_bridges_are_refused():
    _, draft = pair()
    with pytest.raises(ValueError, match="lacks target_vocab_size, draft_to_target, to_draft"):
        CrossVocabularyDraft(draft, object())
    with pytest.raises(ValueError, match="mode must be one of"):
        CrossVocabularyDraft(draft, ShiftBridge(), mode="bytes")
    bridge = ShiftBridge()
    bridge.draft_to_target = torch.full((DRAFT_VOCAB,), -1)
    with pytest.raises(ValueError, match="share no token"):
        CrossVocabularyDraft(draft, bridge)


TEXT = ["the cat sat on the mat", "the dog ate the bone", "a cat and a dog", "then the cat ran home",
        "the mat was red and the bone was white", "cats and dogs ran on the mat at home"] * 4


@functools.lru_cache(maxsize=None)
def tokenizer(kind: str, vocab: int):
    """A tiny BPE tokenizer: ``bytelevel`` (GPT-2's "Ġ") or ``metaspace`` (SentencePiece's "▁")."""
    tok = Tokenizer(models.BPE(unk_token="<unk>" if kind == "metaspace" else None))
    if kind == "bytelevel":
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    else:
        tok.normalizer = normalizers.Replace(" ", "▁")
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never")
        tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="never")
        alphabet = []
    tok.train_from_iterator(TEXT, trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<s>", "<unk>"],
                                                      initial_alphabet=alphabet, show_progress=False))
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", unk_token="<unk>")


def test_twins_across_space_conventions():
    target, draft = tokenizer("metaspace", 60), tokenizer("bytelevel", 300)
    bridge = TokenizerBridge(target, draft)
    target_texts = token_texts(target)
    draft_texts = token_texts(draft)
    assert " the" in target_texts and " the" in draft_texts  # "▁the" and "Ġthe" read the same
    twin = bridge.draft_to_target[draft_texts.index(" the")]
    assert target.convert_ids_to_tokens(int(twin)) == "▁the"
    assert bridge.draft_to_target[draft.convert_tokens_to_ids("<s>")] == -1  # specials have no twin
    for i, t in enumerate(bridge.draft_to_target.tolist()):
        if t >= 0:
            assert draft_texts[i] == target_texts[t]


def test_to_target_reencodes_at_the_boundary():
    target, draft = tokenizer("metaspace", 60), tokenizer("bytelevel", 300)
    bridge = TokenizerBridge(target, draft)
    prefix, rest = "the cat sat", " on the mat"
    ids = torch.tensor(target.encode(prefix, add_special_tokens=False))
    drafted = torch.tensor(draft.encode(rest, add_special_tokens=False))
    expected = target.encode(prefix + rest, add_special_tokens=False)[len(ids):]
    assert bridge.to_target(ids, drafted).tolist() == expected
    assert draft.decode(bridge.to_draft(ids).tolist()) == prefix


@pytest.mark.parametrize("mode", ["shared", "text"])
def test_tokenizer_pair_greedy_equals_plain(mode):
    target_tok, draft_tok = tokenizer("metaspace", 60), tokenizer("bytelevel", 300)
    target = tiny_model("llama", vocab=len(target_tok), seed=4)
    draft = tiny_model("llama", layers=1, vocab=len(draft_tok), seed=5)
    bridge = TokenizerBridge(target_tok, draft_tok)
    for text in TEXT[:4]:
        ids = torch.tensor([target_tok.encode(text, add_special_tokens=False)])
        plain = multispec.generate(target, ids, max_new_tokens=16).sequences
        out = multispec.generate(target, ids, drafter=CrossVocabularyDraft(draft, bridge, mode=mode), max_new_tokens=16)
        assert torch.equal(out.sequences, plain)


def test_text_command_drafts_across_vocabularies(tmp_path, capsys):
    from modalities.cli import main
    target_tok, draft_tok = tokenizer("metaspace", 60), tokenizer("bytelevel", 300)
    target = tiny_model("llama", vocab=len(target_tok), seed=4)
    draft = tiny_model("llama", layers=1, vocab=len(draft_tok), seed=5)
    for folder, model, tok in ((tmp_path / "t", target, target_tok), (tmp_path / "d", draft, draft_tok)):
        model.save_pretrained(folder)
        tok.save_pretrained(folder)
    outputs = []
    for drafter in ("plain", "cross-vocab"):
        args = ["text", "the cat sat", "--target", str(tmp_path / "t"), "--draft", str(tmp_path / "d"),
                "--drafter", drafter, "--max-new-tokens", "12", "--no-compare-plain", "--no-chat"]
        assert main(args + (["--vocab-mode", "text"] if drafter != "plain" else [])) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1]
