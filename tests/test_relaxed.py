"""Relaxed acceptance rules: the mass they move stays within budget, and a zero budget is exact."""
import pytest
import torch

import multispec
from multispec.acceptance import (Greedy, NeighborhoodRelaxation, SpeculativeSampling, TopKTolerance,
                                  TypicalAcceptance)
from multispec.drafters import DraftModel

from conftest import prompts, tiny_model

V, GAMMA = 64, 5


def random_case(seed):
    g = torch.Generator().manual_seed(seed)
    p = torch.softmax(3 * torch.randn(GAMMA + 1, V, generator=g), -1)
    q = torch.softmax(3 * torch.randn(GAMMA, V, generator=g), -1)
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
