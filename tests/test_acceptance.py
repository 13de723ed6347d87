"""Verification rules (multispec.acceptance), exact and relaxed: a zero budget decides like the exact
rule, relaxed rules accept a superset but never a zero-probability token, and the mass they move
stays within budget."""
import pytest
import torch

import multispec
from multispec.acceptance import (AdditiveTolerance, Greedy, GroupAcceptance, NeighborhoodRelaxation,
                                  SpeculativeSampling, TopKTolerance, TypicalAcceptance, neighbor_table)
from multispec.drafters import DraftModel

from conftest import prompts, tiny_model

V, GAMMA = 64, 5


def random_case(seed, v=V, gamma=GAMMA):
    """A draft x ~ q of γ tokens with q [γ, v] and p [γ+1, v] far from uniform."""
    g = torch.Generator().manual_seed(seed)
    p = torch.softmax(3 * torch.randn(gamma + 1, v, generator=g), -1)
    q = torch.softmax(3 * torch.randn(gamma, v, generator=g), -1)
    x = torch.multinomial(q, 1, generator=g).squeeze(1)
    return x, q, p


@pytest.fixture(scope="module")
def codebook():
    return torch.randn(V, 4, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("delta", [0.02, 0.1, 0.3])
def test_lantern_moves_at_most_delta_and_as_much_as_allowed(codebook, delta):
    rule = NeighborhoodRelaxation(codebook, k=16, delta=delta)
    for seed in range(50):
        x, q, p = random_case(seed)
        p_tilde = rule.relax(x, q, p, greedy=False)
        p_x = p[:GAMMA].gather(1, x[:, None]).squeeze(1)
        moved = p_tilde - p_x
        assert (moved >= 0).all() and (moved <= delta + 1e-7).all()
        # maximal: adding the next neighbour would exceed δ
        nbr = rule.neighbors[x]  # [γ, k]
        cum = p[:GAMMA].gather(1, nbr).cumsum(-1)
        used = (cum <= delta).sum(-1)
        for i in range(GAMMA):
            if used[i] < nbr.shape[1]:
                assert cum[i, used[i]] > delta
        verdict = rule(x, q, p, greedy=False, generator=torch.Generator().manual_seed(seed))
        assert verdict.moved_mass <= delta * verdict.num_accepted + 1e-6


def test_neighbours_are_nearest_by_l2(codebook):
    nbrs = NeighborhoodRelaxation.nearest_neighbors(codebook, 3)
    dist = torch.cdist(codebook, codebook)
    dist.fill_diagonal_(float("inf"))
    assert torch.equal(nbrs[:, 0], dist.argmin(-1))


@pytest.mark.parametrize("greedy", [False, True])
def test_zero_delta_gives_the_exact_decisions(codebook, greedy):
    relaxed = NeighborhoodRelaxation(codebook, k=16, delta=0.0)
    exact = Greedy() if greedy else SpeculativeSampling()
    for seed in range(200):
        x, q, p = random_case(seed)
        a = relaxed(x, q, p, greedy=greedy, generator=torch.Generator().manual_seed(seed))
        b = exact(x, q, p, greedy=greedy, generator=torch.Generator().manual_seed(seed))
        assert (a.num_accepted, a.next_token, a.moved_mass) == (b.num_accepted, b.next_token, 0.0)


def test_top1_tolerance_is_exact_greedy():
    for seed in range(100):
        x, q, p = random_case(seed)
        x[:2] = p[:2].argmax(-1)  # make some drafts right
        assert TopKTolerance(1)(x, q, p, greedy=True) == Greedy()(x, q, p, greedy=True)


def test_topk_tolerance_per_token_k():
    """k as a [V] tensor: ids with k = V always pass (where p > 0), ids with k = 1 are greedy-exact."""
    for seed in range(50):
        x, q, p = random_case(seed)
        V = p.shape[-1]
        loose_even = TopKTolerance(torch.where(torch.arange(V) % 2 == 0, V, 1))
        verdict = loose_even(x, q, p, greedy=True)
        ok = (x % 2 == 0) | (x == p[:x.shape[0]].argmax(-1))
        expected = int(ok.long().cumprod(0).sum())
        assert verdict.num_accepted == expected
        assert TopKTolerance(torch.ones(V, dtype=torch.long))(x, q, p, greedy=True) == Greedy()(x, q, p, greedy=True)
    with pytest.raises(ValueError, match="k has 3 entries"):
        TopKTolerance(torch.ones(3, dtype=torch.long))(x, q, p, greedy=True)
    for bad in (0, 2.5, torch.zeros(V, dtype=torch.long)):
        with pytest.raises(ValueError, match="integer >= 1"):
            TopKTolerance(bad)


def test_topk_ratio_floor_tolerates_only_tokens_near_the_best():
    """min_ratio ρ: under greedy a draft passes iff it is in the top k and p(x) >= ρ·max p;
    ρ = 0 is plain top-k, ρ = 1 is exact greedy."""
    for seed in range(50):
        x, q, p = random_case(seed)
        px, best = p[:x.shape[0]].gather(1, x[:, None])[:, 0], p[:x.shape[0]].amax(-1)
        ok = ((p[:x.shape[0]] > px[:, None]).sum(-1) < 4) & (px >= 0.5 * best)
        assert TopKTolerance(4, min_ratio=0.5)(x, q, p, greedy=True).num_accepted == int(ok.long().cumprod(0).sum())
        assert TopKTolerance(4, min_ratio=0.0)(x, q, p, greedy=True) == TopKTolerance(4)(x, q, p, greedy=True)
        assert TopKTolerance(4, min_ratio=1.0)(x, q, p, greedy=True) == Greedy()(x, q, p, greedy=True)
    with pytest.raises(ValueError, match="min_ratio"):
        TopKTolerance(4, min_ratio=1.5)


@pytest.mark.parametrize("rule", [TopKTolerance(3), TypicalAcceptance(0.3, 0.09)])
def test_tolerant_rules_accept_a_superset_and_report_mass(rule):
    for seed in range(100):
        x, q, p = random_case(seed)
        exact = Greedy()(x, q, p, greedy=True)
        relaxed = rule(x, q, p, greedy=True)
        assert relaxed.num_accepted >= exact.num_accepted
        assert (relaxed.moved_mass > 0) == (relaxed.num_accepted > exact.num_accepted) or relaxed.moved_mass > 0


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_relaxed_decoding_reports_moved_mass_within_budget(temperature):
    target = tiny_model("llama")
    embeddings = target.get_input_embeddings().weight
    delta = 0.1
    rule = NeighborhoodRelaxation(embeddings, k=8, delta=delta)
    drafter = DraftModel(tiny_model("llama", layers=1, hidden=16, seed=7))
    total_accepted, total_moved = 0, 0.0
    for ids in prompts(5, seed=21):
        out = multispec.generate(target, ids, drafter=drafter, acceptance=rule, max_new_tokens=20,
                                 temperature=temperature, generator=torch.Generator().manual_seed(0))
        assert out.stats.moved_mass <= delta * out.stats.accepted + 1e-6
        total_accepted += out.stats.accepted
        total_moved += out.stats.moved_mass
    assert total_accepted > 0


def test_relaxation_checks_its_table_against_the_vocabulary():
    rule = NeighborhoodRelaxation(torch.randn(10, 4), k=3, delta=0.1)
    x, q, p = random_case(0)
    with pytest.raises(ValueError, match="neighbour table covers 10 tokens but the target has 64"):
        rule(x, q, p, greedy=True)
    with pytest.raises(ValueError, match="delta"):
        NeighborhoodRelaxation(torch.randn(10, 4), delta=-1)


@pytest.mark.parametrize("greedy", [True, False])
def test_zero_budget_rules_decide_like_the_exact_rule(greedy):
    emb = torch.randn(32, 4, generator=torch.Generator().manual_seed(0))
    exact = multispec.SpeculativeSampling()
    for rule in (GroupAcceptance(emb, group_size=1), AdditiveTolerance(0.0), NeighborhoodRelaxation(emb, delta=0.0)):
        for seed in range(20):
            x, q, p = random_case(seed, v=32)
            a = exact(x, q, p, greedy=greedy, generator=torch.Generator().manual_seed(seed))
            b = rule(x, q, p, greedy=greedy, generator=torch.Generator().manual_seed(seed))
            assert (a.num_accepted, a.next_token) == (b.num_accepted, b.next_token)


def test_relaxed_rules_accept_more_but_never_a_zero_probability_token():
    emb = torch.randn(32, 4, generator=torch.Generator().manual_seed(0))
    rules = [GroupAcceptance(emb, group_size=6), AdditiveTolerance(0.3), NeighborhoodRelaxation(emb, k=8, delta=0.5)]
    for rule in rules:
        more = 0
        for seed in range(30):
            x, q, p = random_case(seed, v=32)
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
    _, q, p = random_case(3, v=32)
    assert rule(x, q, p, greedy=False, generator=torch.Generator().manual_seed(0)).num_accepted >= 2
    with pytest.raises(ValueError, match="beta"):
        AdditiveTolerance(-0.1)


def test_protected_tokens_are_judged_exactly():
    """Where the target's top token is protected (eos), a tolerant rule decides like the exact one."""
    from multispec.acceptance import ExactOn
    x, q, p = random_case(5, v=32)
    top = p[:5].argmax(-1)
    x = torch.where(x == top, (x + 1) % 32, x)  # never the argmax, so only tolerance could accept
    loose = TopKTolerance(32)
    assert loose(x, q, p, greedy=True).num_accepted == 5
    strict = ExactOn(loose, top[2:3])
    assert strict(x, q, p, greedy=True).num_accepted == 2  # position 2's top token is protected
    drafted = ExactOn(loose, x[3:4])
    assert drafted(x, q, p, greedy=True).num_accepted <= 3  # a protected drafted token is judged exactly
