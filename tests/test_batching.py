"""Batch > 1 (multispec.batching, multispec.ragged): every row of a ragged, left-padded batch decodes
exactly as it does alone and as Hugging Face's batched greedy does, for every drafter (chains and
trees, feature drafters included); rows keep the sampling distribution; the ragged cache keeps each
row's logits equal to a fresh forward through rollbacks, tree keeps and compaction; bad batches get
errors that name the problem."""
from __future__ import annotations

import pytest
import torch

import multispec
from multispec import GuidedLM
from multispec.drafters import DraftModel, Jacobi, LayerSkip, PromptLookup
from multispec.feature_drafters import Eagle, Medusa
from multispec.batching import left_pad
from multispec.ragged import RaggedLM, Request
from multispec.sampling import Sampling
from multispec.tree_drafters import DraftTree

from conftest import ARCHS, VOCAB, prompts, tiny_model
from test_distribution import PROMPT, V, chi_square_pvalue, exact_marginals, target_and_draft
from test_feature_drafters import random_head
from test_medusa import untrained_heads


def left_padded(rows: list[torch.Tensor], pad: int = 0):
    ids, mask = left_pad(rows, pad)
    assert mask.sum().item() == sum(r.shape[1] for r in rows) and (mask[:, -1] == 1).all()
    return ids, mask


def hf_batched_greedy(model, ids, mask, max_new_tokens):
    config = multispec.compat.hf_greedy_config(model, max_new_tokens)
    with torch.no_grad():
        return model.generate(ids, attention_mask=mask, generation_config=config)


def check_rows_exact(target, drafter, rows, max_new_tokens=16, hf=True):
    ids, mask = left_padded(rows)
    out = multispec.generate(target, ids, attention_mask=mask, drafter=drafter, max_new_tokens=max_new_tokens)
    assert out.sequences.shape == (len(rows), ids.shape[1] + max_new_tokens)
    for i, row in enumerate(rows):
        alone = multispec.generate(target, row, drafter=drafter, max_new_tokens=max_new_tokens).sequences[0]
        assert out.sequences[i, ids.shape[1]:].tolist() == alone[row.shape[1]:].tolist(), f"row {i}"
    if hf:
        assert torch.equal(out.sequences, hf_batched_greedy(target, ids, mask, max_new_tokens))
    return out


@pytest.mark.parametrize("arch", ARCHS)
def test_plain_and_draft_model_rows_equal_alone_and_hf(arch):
    target = tiny_model(arch)
    rows = prompts(5, seed=2)
    check_rows_exact(target, None, rows)
    out = check_rows_exact(target, DraftModel(target), rows)  # full acceptance: long drafts, many rollbacks
    assert out.stats.acceptance_rate > 0.9
    check_rows_exact(target, DraftModel(tiny_model(arch, layers=1, seed=3)), rows)  # mostly rejected


DRAFTERS = {
    "lookup": lambda t: PromptLookup(),
    "lookup-tree": lambda t: PromptLookup(branches=3),
    "draft-tree": lambda t: DraftTree(t, branches=2, width=3),
    "layer-skip": lambda t: LayerSkip(t, 1),
    "jacobi": lambda t: Jacobi(VOCAB, window=4),
    "eagle": lambda t: Eagle(random_head(t)),
    "eagle-tree": lambda t: Eagle(random_head(t, draft_vocab=48), branches=3),
    "medusa-tree": lambda t: Medusa(untrained_heads(t), branches=3),
}


@pytest.mark.parametrize("name", list(DRAFTERS))
def test_every_drafter_keeps_rows_exact(name):
    target = tiny_model("llama")
    check_rows_exact(target, DRAFTERS[name](target), prompts(4, seed=4), hf=False)


def test_rows_stop_at_their_own_eos_and_are_padded():
    target = tiny_model("llama")
    rows = prompts(4, seed=6)
    ids, mask = left_padded(rows)
    free = multispec.generate(target, ids, attention_mask=mask, max_new_tokens=12).sequences[:, ids.shape[1]:]
    eos = int(free[1, 3])  # row 1 stops at its 4th new token (others wherever that token comes, if at all)
    out = multispec.generate(target, ids, attention_mask=mask, drafter=DraftModel(target), max_new_tokens=12,
                             eos_token_id=eos, pad_token_id=VOCAB - 1)
    for i in range(len(rows)):
        new = free[i].tolist()
        stop = new.index(eos) + 1 if eos in new else len(new)
        assert out.sequences[i, ids.shape[1]: ids.shape[1] + stop].tolist() == new[:stop]
        assert (out.sequences[i, ids.shape[1] + stop:] == VOCAB - 1).all()
        assert out.row_stats[i].new_tokens == stop
    assert out.stats.new_tokens == sum(s.new_tokens for s in out.row_stats)


@pytest.mark.parametrize("drafter", ["draft-model", "draft-tree"])
def test_each_row_keeps_the_sampling_distribution(drafter):
    """PROMPT sits in the left-padded row 1 of a ragged batch; its 2nd and 3rd tokens keep p."""
    model, draft = target_and_draft()
    sampling = Sampling(1.0)
    make = (lambda: DraftModel(draft, num_draft_tokens=2)) if drafter == "draft-model" else \
        (lambda: DraftTree(draft, branches=2, width=2, num_draft_tokens=2))
    other = torch.tensor([[3, 1, 4, 1, 5, 2, 6, 2]])
    ids, mask = left_padded([other, PROMPT])
    generator = torch.Generator().manual_seed(0)
    counts = torch.zeros(2, V)
    for _ in range(600):
        out = multispec.generate(model, ids, attention_mask=mask, drafter=make(), max_new_tokens=3,
                                 temperature=1.0, generator=generator).sequences[1, -2:]
        counts[0, out[0]] += 1
        counts[1, out[1]] += 1
    for observed, expected in zip(counts, exact_marginals(model, sampling)):
        assert chi_square_pvalue(observed, expected) > 0.01 / 4


def test_sampling_is_reproducible_from_the_generator():
    target = tiny_model("llama")
    ids, mask = left_padded(prompts(3, seed=8))

    def run():
        return multispec.generate(target, ids, attention_mask=mask, drafter=DraftModel(target), max_new_tokens=10,
                                  temperature=1.0, generator=torch.Generator().manual_seed(5)).sequences
    assert torch.equal(run(), run())


def test_ragged_cache_matches_a_fresh_forward(monkeypatch):
    """Random appends, rollbacks and tree keeps on 3 rows (compaction included) -> each row's next
    logits equal the model's forward over that row's sequence."""
    model = tiny_model("mistral")  # sliding window 8: positions and the window must survive compaction
    monkeypatch.setattr("multispec.ragged._COMPACT_SLACK", 0)
    lm = RaggedLM(model, 3)
    g = torch.Generator().manual_seed(0)
    sequences = [torch.randint(0, VOCAB, (int(n),), generator=g) for n in (3, 7, 1)]
    for row, seq in enumerate(sequences):
        lm.run({row: Request(seq)})
    for step in range(30):
        requests = {}
        for row in range(3):
            if torch.rand(1, generator=g) < 0.3:
                continue
            fed = torch.randint(0, VOCAB, (int(torch.randint(1, 6, (1,), generator=g)),), generator=g)
            if step % 3 == 2:  # a tree: the fed tokens hang as two branches off the newest position
                parents = torch.tensor([-1] + [max(i - 2, -1) for i in range(1, fed.shape[0])])
                requests[row] = Request(fed, parents=parents, tree_start=lm.length(row))
            else:
                requests[row] = Request(fed)
        if not requests:
            continue
        lm.run(requests)
        for row, request in requests.items():
            start = lm.length(row) - request.tokens.shape[0]
            if request.parents is None:
                keep = int(torch.randint(0, min(2, request.tokens.shape[0]) + 1, (1,), generator=g))
                lm.rollback(row, start + keep)
                sequences[row] = torch.cat([sequences[row], request.tokens[:keep]])
            else:  # keep the path to the last node
                path, node = [], request.tokens.shape[0] - 1
                while node >= 0:
                    path.insert(0, node)
                    node = int(request.parents[node])
                lm.keep(row, torch.cat([torch.arange(start), start + torch.tensor(path)]))
                sequences[row] = torch.cat([sequences[row], request.tokens[path]])
        probe = {row: Request(torch.tensor([7]), last_only=True) for row in range(3)}
        results = lm.run(probe)
        with torch.no_grad():
            for row in range(3):
                full = torch.cat([sequences[row], torch.tensor([7])])
                expected = model(full[None]).logits[0, -1]
                torch.testing.assert_close(results[row][0][0], expected, atol=1e-4, rtol=1e-4)
                lm.rollback(row, lm.length(row) - 1)
    assert lm.compactions > 0


@pytest.mark.parametrize("mask, message", [
    (torch.ones(2, 3), "shaped like input_ids"),
    (torch.tensor([[1, 0, 1, 1], [1, 1, 1, 1]]), "padding between its tokens"),
    (torch.tensor([[0, 0, 0, 0], [1, 1, 1, 1]]), "all padding"),
    (torch.tensor([[2, 1, 1, 1], [1, 1, 1, 1]]), r"only 0 \(padding\) and 1"),
])
def test_bad_masks_are_refused_by_name(mask, message):
    ids = torch.ones(2, 4, dtype=torch.long)
    with pytest.raises(ValueError, match=message):
        multispec.generate(tiny_model("llama"), ids, attention_mask=mask, max_new_tokens=2)


def test_bad_batches_are_refused_by_name():
    target = tiny_model("llama")
    ids, mask = left_padded(prompts(2))
    with pytest.raises(ValueError, match="outside the target's vocabulary"):
        multispec.generate(target, ids + VOCAB, attention_mask=mask, max_new_tokens=2)
    with pytest.raises(ValueError, match="transformers causal LM as target"):
        multispec.generate(GuidedLM(target), ids, attention_mask=mask, max_new_tokens=2)
    with pytest.raises(ValueError, match="stream\\(\\) decodes one sequence"):
        next(multispec.stream(target, ids, max_new_tokens=2))
    with pytest.raises(ValueError, match="exceeds the target's context"):
        multispec.generate(target, ids, attention_mask=mask, max_new_tokens=250)
    with pytest.raises(ValueError, match="pad_token_id"):
        multispec.generate(target, ids, attention_mask=mask, max_new_tokens=2, pad_token_id=-1)


def test_policy_caps_literal_cases():
    from multispec.batch_policy import BatchPolicy
    linear = BatchPolicy({1: 1.0, 128: 128.0}, prior_acceptance=0.9)
    assert linear.cap(1) == 0  # each drafted token costs a full forward: never pays
    knee = BatchPolicy({1: 1.0, 64: 1.0, 128: 2.0}, prior_acceptance=0.8, max_draft_tokens=8)
    assert knee.cap(1) == 8  # flat cost: draft as far as allowed
    assert knee.cap(16) == 3  # 16 rows × 4 tokens fill the flat part
    assert knee.cap(128) == 0  # compute-bound: plain steps
    sloped = BatchPolicy({1: 1.0, 64: 1.5, 128: 3.0}, prior_acceptance=0.8)
    assert sloped.cap(1) > 0
    sloped.observe(drafted=1000, accepted=0)
    assert sloped.acceptance < 0.01 and sloped.cap(1) == 0  # nothing accepted: stop drafting
    with pytest.raises(ValueError, match="forward_seconds"):
        BatchPolicy({0: 1.0})


def test_policy_keeps_rows_exact_and_turns_drafting_off():
    from multispec.batch_policy import BatchPolicy
    target = tiny_model("llama")
    rows = prompts(4, seed=9)
    ids, mask = left_padded(rows)
    plain = multispec.generate(target, ids, attention_mask=mask, max_new_tokens=12).sequences
    for seconds, drafts in (({1: 1.0, 128: 1.0}, True), ({1: 1.0, 128: 128.0}, False)):
        policy = BatchPolicy(seconds, prior_acceptance=0.9)
        out = multispec.generate(target, ids, attention_mask=mask, drafter=DraftModel(target), max_new_tokens=12,
                                 batch_policy=policy)
        assert torch.equal(out.sequences, plain)
        assert (out.stats.drafted > 0) == drafts


def test_a_failing_forward_fails_every_row_with_its_error():
    target = tiny_model("llama")
    ids, mask = left_padded(prompts(3, seed=10))
    calls = {"n": 0}
    original = RaggedLM.run

    def failing(self, requests):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("forward exploded")
        return original(self, requests)

    RaggedLM.run = failing
    try:
        with pytest.raises(RuntimeError, match="forward exploded"):
            multispec.generate(target, ids, attention_mask=mask, drafter=DraftModel(target), max_new_tokens=8)
    finally:
        RaggedLM.run = original


def test_policy_counts_row_by_row_drafting():
    from multispec.batch_policy import BatchPolicy
    free = BatchPolicy({1: 1.0, 64: 1.0, 128: 2.0}, prior_acceptance=0.6)
    costly = BatchPolicy({1: 1.0, 64: 1.0, 128: 2.0}, prior_acceptance=0.6, row_draft_seconds=0.05)
    assert free.cap(16) > 0 and costly.cap(16) == 0  # 16 rows drafting on their own cost more than they save
    assert costly.cap(1) > 0


@pytest.mark.parametrize("rule", ["exact", "typical", "topk"])
def test_sampled_rows_equal_each_row_sampled_alone(rule):
    """Row r of a batch samples with a generator seeded from the batch's generator (its r-th draw):
    with that generator, the row decoded alone gives the same tokens, under exact and relaxed rules."""
    from multispec.acceptance import TopKTolerance, TypicalAcceptance
    make_rule = {"exact": lambda: None, "typical": lambda: TypicalAcceptance(),
                 "topk": lambda: TopKTolerance(k=4)}[rule]
    target = tiny_model("llama")
    rows = prompts(4, seed=12)
    ids, mask = left_padded(rows)
    out = multispec.generate(target, ids, attention_mask=mask, drafter=DraftModel(tiny_model("llama", layers=1, seed=3)),
                             acceptance=make_rule(), max_new_tokens=12, temperature=0.9,
                             generator=torch.Generator().manual_seed(7))
    seeds = torch.randint(2 ** 62, (len(rows),), generator=torch.Generator().manual_seed(7)).tolist()
    for r, row in enumerate(rows):
        alone = multispec.generate(target, row, drafter=DraftModel(tiny_model("llama", layers=1, seed=3)),
                                   acceptance=make_rule(), max_new_tokens=12, temperature=0.9,
                                   generator=torch.Generator().manual_seed(seeds[r])).sequences[0]
        assert out.sequences[r, ids.shape[1]:].tolist() == alone[row.shape[1]:].tolist(), f"row {r}"
