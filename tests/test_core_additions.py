"""Jacobi drafting, guided (CFG + masked) verifiers, group and additive rules: exact where promised."""
import copy

import pytest
import torch

import multispec
from multispec.acceptance import AdditiveTolerance, GroupAcceptance, NeighborhoodRelaxation, neighbor_table
from multispec.drafters import DraftModel, Jacobi
from multispec.guidance import GuidedLM

from conftest import ARCHS, VOCAB, hf_greedy, prompts, tiny_model


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("window", [1, 4, 16])
def test_jacobi_greedy_matches_hf(arch, window):
    target = tiny_model(arch)
    for ids in prompts(6, seed=11):
        out = multispec.generate(target, ids, drafter=Jacobi(VOCAB, window=window), max_new_tokens=20)
        assert torch.equal(out.sequences, hf_greedy(target, ids, 20))


def test_jacobi_window_comes_from_the_stale_predictions():
    """After accepting n of γ, the next window starts with p[n+1:] (argmax / sampled) and q = those rows."""
    from multispec.drafters import Feedback
    from multispec.sampling import Sampling
    drafter = Jacobi(VOCAB, window=6, init_tokens=torch.arange(10, 20))
    p = torch.softmax(5 * torch.randn(5, VOCAB, generator=torch.Generator().manual_seed(0)), -1)
    drafter.observe(Feedback(4, 1, p))
    draft = drafter.propose(torch.tensor([1, 2, 3]), 16, Sampling(0.0), torch.Generator().manual_seed(0))
    assert torch.equal(draft.tokens[:3], p[2:].argmax(-1))
    assert ((draft.tokens[3:] >= 10) & (draft.tokens[3:] < 20)).all() and draft.tokens.shape[0] == 6
    assert torch.equal(draft.probs[:3], p[2:]) and torch.allclose(draft.probs[3:, 10:20], torch.full((3, 10), 0.1))
    drafter.observe(Feedback(6, 6, torch.softmax(torch.randn(7, VOCAB), -1)))  # full accept: nothing stale
    assert drafter.propose(torch.tensor([1]), 2, Sampling(0.0), None).tokens.shape[0] == 2


def test_jacobi_rejects_bad_arguments():
    with pytest.raises(ValueError, match="window"):
        Jacobi(VOCAB, window=0)
    with pytest.raises(ValueError, match="init_tokens"):
        Jacobi(VOCAB, init_tokens=torch.tensor([VOCAB]))


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


def random_case(seed, v=32, gamma=5):
    g = torch.Generator().manual_seed(seed)
    p = torch.softmax(3 * torch.randn(gamma + 1, v, generator=g), -1)
    q = torch.softmax(3 * torch.randn(gamma, v, generator=g), -1)
    x = torch.multinomial(q, 1, generator=g).squeeze(1)
    return x, q, p


@pytest.mark.parametrize("greedy", [True, False])
def test_zero_budget_rules_decide_like_the_exact_rule(greedy):
    emb = torch.randn(32, 4, generator=torch.Generator().manual_seed(0))
    exact = multispec.SpeculativeSampling()
    for rule in (GroupAcceptance(emb, group_size=1), AdditiveTolerance(0.0), NeighborhoodRelaxation(emb, delta=0.0)):
        for seed in range(20):
            x, q, p = random_case(seed)
            a = exact(x, q, p, greedy=greedy, generator=torch.Generator().manual_seed(seed))
            b = rule(x, q, p, greedy=greedy, generator=torch.Generator().manual_seed(seed))
            assert (a.num_accepted, a.next_token) == (b.num_accepted, b.next_token)


def test_relaxed_rules_accept_more_but_never_a_zero_probability_token():
    emb = torch.randn(32, 4, generator=torch.Generator().manual_seed(0))
    rules = [GroupAcceptance(emb, group_size=6), AdditiveTolerance(0.3), NeighborhoodRelaxation(emb, k=8, delta=0.5)]
    for rule in rules:
        more = 0
        for seed in range(30):
            x, q, p = random_case(seed)
            exact = multispec.SpeculativeSampling()(x, q, p, greedy=False, generator=torch.Generator().manual_seed(1))
            relaxed = rule(x, q, p, greedy=False, generator=torch.Generator().manual_seed(1))
            more += relaxed.num_accepted - exact.num_accepted
            assert relaxed.num_accepted >= exact.num_accepted
            p0 = p.clone()
            p0[0, x[0]] = 0.0  # the target forbids the first drafted token
            for greedy in (True, False):
                assert rule(x, q, p0, greedy=greedy, generator=torch.Generator().manual_seed(2)).num_accepted == 0
        assert more > 0, type(rule).__name__


def test_group_rule_uses_group_mass_ratio():
    emb = torch.tensor([[0.0], [0.1], [5.0], [5.1]])
    rule = GroupAcceptance(emb, group_size=2)  # groups {0,1} and {2,3}
    p = torch.tensor([[0.0, 0.5, 0.25, 0.25], [0.25] * 4])
    q = torch.tensor([[0.5, 0.0, 0.25, 0.25]])
    x = torch.tensor([0])  # p(x) = 0: never accepted even though P(G) = Q(G)
    assert rule(x, q, p, greedy=False).num_accepted == 0
    x = torch.tensor([2])
    assert float(rule.relax(x, q, p, greedy=False)[0]) == pytest.approx(0.25)  # q·min(1, 0.5/0.5)


def test_neighbor_table_stays_inside_each_codebook():
    books = [(4, torch.randn(8, 3)), (12, torch.randn(8, 3))]
    table = neighbor_table(books, 24, k=10)
    assert (table[:4] == -1).all() and (table[20:] == -1).all()
    first, second = table[4:12], table[12:20]
    assert ((first[first >= 0] >= 4) & (first[first >= 0] < 12)).all()
    assert ((second[second >= 0] >= 12) & (second[second >= 0] < 20)).all()
    assert (first[:, 7:] == -1).all()  # only 7 others in a codebook of 8
    rule = NeighborhoodRelaxation.from_codebooks(books, 24, k=10, delta=0.2)
    x, q, p = random_case(0, v=24)
    assert rule.relax(x, q, p, greedy=False).shape == x.shape


def test_additive_tolerance_per_token_beta():
    beta = torch.zeros(32)
    beta[16:] = 1.0  # tokens 16.. always pass (given p > 0), the rest exactly
    rule = AdditiveTolerance(beta)
    x = torch.tensor([20, 20, 3])
    _, q, p = random_case(3)
    assert rule(x, q, p, greedy=False, generator=torch.Generator().manual_seed(0)).num_accepted >= 2
    with pytest.raises(ValueError, match="beta"):
        AdditiveTolerance(-0.1)


def test_protected_tokens_are_judged_exactly():
    """Where the target's top token is protected (eos), a tolerant rule decides like the exact one."""
    from multispec.acceptance import ExactOn, TopKTolerance
    x, q, p = random_case(5)
    top = p[:5].argmax(-1)
    x = torch.where(x == top, (x + 1) % 32, x)  # never the argmax, so only tolerance could accept
    loose = TopKTolerance(32)
    assert loose(x, q, p, greedy=True).num_accepted == 5
    strict = ExactOn(loose, top[2:3])
    assert strict(x, q, p, greedy=True).num_accepted == 2  # position 2's top token is protected
    drafted = ExactOn(loose, x[3:4])
    assert drafted(x, q, p, greedy=True).num_accepted <= 3  # a protected drafted token is judged exactly


class NoForcing(GuidedLM):
    """The same masked verifier, but every token costs a forward (the loop's reference path)."""

    def forced_token(self, position, previous):
        return None


def even_forces_next(positions, previous):
    """A mask that allows only token + 1 after an even token (a forced token), anything elsewhere."""
    mask = torch.ones(positions.shape[0], VOCAB, dtype=torch.bool)
    even = (previous % 2 == 0) & (previous + 1 < VOCAB)
    mask[even] = False
    mask[even.nonzero()[:, 0], (previous + 1)[even]] = True
    return mask


def test_forced_tokens_skip_a_forward_and_change_nothing():
    """A mask that allows one id after an even token (token + 1) forces it: the loop appends it
    without a forward; plain and draft-model decoding give the tokens of the unskipped loop."""
    target, small = tiny_model("llama"), tiny_model("llama", layers=1, hidden=16, seed=7)

    for ids in prompts(4, seed=5):
        reference = multispec.generate(NoForcing(target, allowed_tokens=even_forces_next), ids, max_new_tokens=30)
        plain = multispec.generate(GuidedLM(target, allowed_tokens=even_forces_next), ids, max_new_tokens=30)
        assert torch.equal(plain.sequences, reference.sequences)
        before = plain.sequences[0, ids.shape[1] - 1:-1]  # the token before each new one
        forced = int(((before % 2 == 0) & (before + 1 < VOCAB)).sum())
        assert plain.stats.forced == forced and plain.stats.steps == reference.stats.steps - forced
        fast = multispec.generate(GuidedLM(target, allowed_tokens=even_forces_next), ids, max_new_tokens=30,
                                  drafter=DraftModel(GuidedLM(small, allowed_tokens=even_forces_next), num_draft_tokens=3))
        assert torch.equal(fast.sequences, reference.sequences)


class CountingGuidedLM(GuidedLM):
    """A guided LM that counts its forwards (``forcing=False``: it never reports a forced token)."""

    def __init__(self, *args, forcing=True, **kwargs):
        super().__init__(*args, **kwargs)
        self.forcing, self.forwards = forcing, 0

    def forced_token(self, position, previous):
        return super().forced_token(position, previous) if self.forcing else None

    def forward(self, tokens, last_only=False):
        self.forwards += 1
        return super().forward(tokens, last_only)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_drafter_feeds_forced_tokens_without_a_forward_of_their_own(temperature):
    """The drafter drafts a forced token as a point mass and feeds it with the token before it:
    fewer drafter forwards, the same tokens (greedy) and the same distribution rule (sampling: the
    forced token's q is one-hot, so it is always accepted and the output stays in the mask)."""
    target, small = tiny_model("llama"), tiny_model("llama", layers=1, hidden=16, seed=7)

    for ids in prompts(4, seed=6):
        runs = {}
        for forcing in (True, False):
            lm = CountingGuidedLM(small, allowed_tokens=even_forces_next, forcing=forcing)
            out = multispec.generate(GuidedLM(target, allowed_tokens=even_forces_next), ids, max_new_tokens=30,
                                     drafter=DraftModel(lm, num_draft_tokens=4, adaptive=False),
                                     temperature=temperature, generator=torch.Generator().manual_seed(3))
            runs[forcing] = (out, lm.forwards)
        (fast, fast_forwards), (slow, slow_forwards) = runs[True], runs[False]
        if temperature == 0.0:
            assert torch.equal(fast.sequences, slow.sequences)
        seq = fast.sequences[0, ids.shape[1] - 1:]
        even = (seq[:-1] % 2 == 0) & (seq[:-1] + 1 < VOCAB)
        assert torch.equal(seq[1:][even], seq[:-1][even] + 1)  # every forced token is in place
        assert bool(even.any()) and fast_forwards < slow_forwards


def test_block_expansion_starts_as_the_same_function():
    """models.recipes.surgery.grow_layers: the grown model (zeroed output projections in the new blocks) gives the
    source's logits, cached decoding included, and has the new depth."""
    from models.recipes.surgery.grow_layers import grow

    source = tiny_model("llama", layers=2)
    grown = grow(source, 6)
    assert len(grown.model.layers) == 6 and grown.config.num_hidden_layers == 6
    for ids in prompts(3, seed=2):
        assert torch.allclose(grown(ids).logits, source(ids).logits, atol=1e-5)
        assert torch.equal(multispec.generate(grown, ids, max_new_tokens=12).sequences, hf_greedy(source, ids, 12))
    with pytest.raises(ValueError, match="multiple"):
        grow(source, 3)


def test_layer_subset_skips_exactly_the_dropped_layers():
    """models.recipes.surgery.layer_subset: keeping layers 0 and 2 of 3 computes what the source computes with
    layer 1 turned into an identity (zero output projections); cached decoding agrees."""
    from models.recipes.surgery.layer_subset import keep_layers

    source = tiny_model("llama", layers=3)
    subset = keep_layers(source, [0, 2])
    skipped = copy.deepcopy(source)
    torch.nn.init.zeros_(skipped.model.layers[1].self_attn.o_proj.weight)
    torch.nn.init.zeros_(skipped.model.layers[1].mlp.down_proj.weight)
    assert len(subset.model.layers) == 2 and len(source.model.layers) == 3
    for ids in prompts(3, seed=4):
        assert torch.allclose(subset(ids).logits, skipped(ids).logits, atol=1e-5)
        assert torch.equal(multispec.generate(subset, ids, max_new_tokens=12).sequences, hf_greedy(subset, ids, 12))
    for bad in ([], [0, 0], [3]):
        with pytest.raises(ValueError, match="--keep"):
            keep_layers(source, bad)
