"""Trees sized by the measured cost of verification (trees.size_by_cost, multispec.timing): literal
choices of the sizing rule, grow keeping whole paths, the cost curve's interpolation, and sized
trees still token-identical to Hugging Face greedy."""
import math

import pytest
import torch

import multispec
from multispec import timing, trees
from multispec.methods import EagleConfig
from multispec.tree_drafters import DraftTree

from conftest import hf_greedy, prompts, tiny_model


def log(values):
    return [math.log(v) for v in values]


def test_size_by_cost_literals():
    flat = torch.tensor([1.0] * 18)  # verification as cheap for 17 tokens as for one: keep every node
    assert trees.size_by_cost(log([0.9, 0.5, 0.1]), flat, 16) == 3
    assert trees.size_by_cost(log([0.9, 0.5, 0.1]), flat, 2) == 2  # never past max_nodes
    linear = torch.tensor([1.0, 1.0, 1.5, 2.0, 2.5])  # each extra token costs half a step
    # n=1: 1.9/1.5 = 1.27; n=2: 2.4/2.0 = 1.2; n=3: 2.5/2.5 = 1: one node pays best
    assert trees.size_by_cost(log([0.9, 0.5, 0.1]), linear, 16) == 1
    # nothing likely enough to pay for its verification: no draft at all (rate 1.0 at n = 0)
    assert trees.size_by_cost(log([0.2, 0.1]), linear, 16) == 0
    # sizes past the table's end cost its last entry
    assert trees.size_by_cost(log([0.9] * 6), torch.tensor([1.0, 1.0, 1.2]), 16) == 6
    with pytest.raises(ValueError, match="1-D tensor"):
        trees.size_by_cost([0.0], torch.tensor([1.0]), 4)


def test_grow_sized_by_cost_keeps_whole_paths():
    g = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(32, 50, generator=g)
    calls = iter(range(1, 32))

    def expand(frontier, tokens, parents):
        return torch.stack([logits[next(calls) % 32] for _ in frontier])

    step = torch.cat([torch.ones(2), 1 + 0.08 * torch.arange(1, 30)])  # each token beyond one costs 8%
    tokens, parents = trees.grow(logits[0], 5, 3, 3, 20, expand, cost=step)
    assert 0 < len(tokens) < 20  # sized below max_nodes
    for parent in parents:  # every kept node's parent is kept (parents index the kept list)
        assert -1 <= parent < len(tokens)


def test_verify_costs_interpolates(monkeypatch):
    seconds = {1: 0.010, 2: 0.011, 4: 0.013, 8: 0.020}
    monkeypatch.setattr(timing, "forward_seconds", lambda target, k, context, repeats: seconds[k])
    costs = timing.verify_costs(None, (1, 2, 4, 8))
    assert costs.shape == (9,)
    torch.testing.assert_close(costs[[1, 2, 3, 4, 6, 8]],
                               torch.tensor([1.0, 1.1, 1.2, 1.3, 1.65, 2.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="start at 1"):
        timing.verify_costs(None, (2, 4))


def test_forward_seconds_measures_a_real_model():
    model = tiny_model("llama")
    assert timing.forward_seconds(model, 4, context=8, repeats=2) > 0
    costs = timing.verify_costs(model, (1, 2, 4), context=8, repeats=2)
    assert costs[1] == 1.0 and costs.shape == (5,)


def test_sized_trees_equal_hf_greedy():
    target = tiny_model("llama")
    cheap_then_dear = torch.tensor([1.0, 1.0, 1.0, 1.05, 1.1, 1.5, 3.0, 5.0, 8.0])
    drafter = DraftTree(tiny_model("llama", layers=1, hidden=16, seed=7), branches=3, width=3, max_nodes=12,
                        cost=cheap_then_dear)
    for ids in prompts(8, seed=4):
        out = multispec.generate(target, ids, drafter=drafter, max_new_tokens=16)
        assert torch.equal(out.sequences, hf_greedy(target, ids, 16))
        assert out.stats.drafted <= 5 * out.stats.steps  # past 5 nodes, verification costs more than it brings


def test_size_by_timing_config_label():
    assert EagleConfig(branches=4, size_by_timing=True).label() == "eagle-tree 4×4/≤16"
    assert EagleConfig().label() == "eagle"
