"""Medusa heads (models.feature_heads.MedusaHead, multispec.feature_drafters.Medusa): greedy output
identical to Hugging Face greedy on every architecture (chain and tree, untrained and trained heads),
eos and the token budget inside a draft, the sampled distribution is kept, the literal tree the heads
propose, save/load, clear errors, and the recipe's smoke preset end to end (train, export, load, bench)."""
import functools
import json
import tempfile
from pathlib import Path

import pytest
import torch

import multispec
from modalities.text.generation import make_drafter
from models.feature_heads import MedusaHead, load_medusa, medusa_settings_for
from models.recipes.feature import data as feature_data
from models.recipes.feature import medusa as medusa_recipe
from multispec.feature_drafters import FeatureDrafter, Medusa
from multispec.methods import MedusaConfig, method_from_names
from multispec.sampling import Sampling

from conftest import ARCHS, prompts, tiny_model
from test_feature_drafters import accepted_if_exact, check_eos_and_budget, check_fresh_features
from test_distribution import chi_square_pvalue, exact_marginals, sample_counts, target_and_draft


def untrained_heads(target, num_heads=4, draft_vocab=None, seed=0):
    """Zero-initialised heads (each the target's own LM head on its final hidden state)."""
    vocab = target.get_output_embeddings().weight.shape[0]
    head = MedusaHead(medusa_settings_for(target, num_heads, draft_vocab or vocab))
    if draft_vocab:
        head.d2t.copy_(torch.randperm(vocab, generator=torch.Generator().manual_seed(seed))[:draft_vocab].sort().values)
    head.warm_start(target)
    return head.eval()


@functools.lru_cache(maxsize=None)
def trained_heads(steps=200):
    """Heads trained briefly on the tiny llama's own greedy continuations (through the recipe)."""
    target = tiny_model("llama")
    sequences = feature_data.continue_greedily(target, [p[0].tolist() for p in prompts(24, seed=5)], 24, 8, 0, None)
    data = feature_data.target_pass(target, sequences, (target.config.num_hidden_layers,))
    torch.manual_seed(0)
    head = untrained_heads(target, num_heads=4).train()
    with tempfile.TemporaryDirectory() as folder:
        final = medusa_recipe.train(head, data, Path(folder) / "checkpoint", Path(folder) / "log.json", steps,
                                    rows_per_step=128, lr=1e-2, seed=0, eval_every=steps)
    assert len(final["heldout_top1"]) == 4
    return head.eval()


@pytest.mark.parametrize("arch", ARCHS)
def test_greedy_equals_hf_greedy_untrained(arch):
    target = tiny_model(arch)
    head = untrained_heads(target, draft_vocab=48)
    assert head.feature_layers == (target.config.num_hidden_layers,)
    accepted_if_exact(target, (Medusa(head), Medusa(head, branches=3, width=2, max_nodes=8)), prompts(6), 20)


def test_trained_heads_are_accepted_and_exact():
    target, head = tiny_model("llama"), trained_heads()
    chain, tree = accepted_if_exact(target, (Medusa(head), Medusa(head, branches=3, width=3, max_nodes=12)),
                                    prompts(10, seed=2), 24)
    untrained = untrained_heads(target)
    before = accepted_if_exact(target, (Medusa(untrained),), prompts(10, seed=2), 24)[0]
    assert chain > max(20, 2 * before) and tree >= chain, (before, chain, tree)  # learned; the tree finds more


def test_eos_and_budget_inside_a_draft():
    head = trained_heads()
    check_eos_and_budget(tiny_model("llama"), (Medusa(head), Medusa(head, branches=3)), budgets=(1, 2, 3, 5, 11))


@pytest.mark.parametrize("branches", [1, 3])
def test_features_equal_a_fresh_prefill(branches):
    target, head = tiny_model("llama"), trained_heads()
    drafter = Medusa(head, branches=branches)
    assert isinstance(drafter, FeatureDrafter)
    fresh = check_fresh_features(target, drafter, head.feature_layers)
    torch.testing.assert_close(drafter._newest, fresh[drafter._committed - 1], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("branches, draft_vocab", [(1, 6), (3, None)], ids=["chain-T1-reduced-vocab", "tree-T1"])
def test_sampling_keeps_the_distribution(branches, draft_vocab):
    target, _ = target_and_draft()
    drafter = Medusa(untrained_heads(target, num_heads=3, draft_vocab=draft_vocab, seed=4), branches=branches)
    sampling = Sampling(1.0)
    counts = sample_counts(target, drafter, sampling, seed=17)
    second, third = exact_marginals(target, sampling)
    assert chi_square_pvalue(counts[0], second) > 0.01 / 2 and chi_square_pvalue(counts[1], third) > 0.01 / 2


class FixedHeads:
    """Three heads over a 4-token draft vocabulary (target ids 10..13 of 16) with fixed probabilities."""

    feature_layers, vocab_size, num_heads = (1,), 16, 3
    draft_to_target = torch.tensor([10, 11, 12, 13])
    probs = torch.tensor([[0.05, 0.25, 0.6, 0.1], [0.15, 0.1, 0.05, 0.7], [0.5, 0.3, 0.15, 0.05]])

    def predict(self, feature):
        return self.probs.log()[:, None].expand(-1, feature.shape[0], -1)


def test_literal_proposals():
    """Chain: each head's argmax in turn. Tree (2 branches, width 2, 6 nodes): products along paths
    .6 (12), .25 (11), .42 (12→13), .175 (11→13), .21 (12→13→10), .126 (12→13→11) are the six best."""
    tokens = torch.tensor([3, 1, 4, 1, 5])
    chain, tree = Medusa(FixedHeads(), num_draft_tokens=3), Medusa(FixedHeads(), branches=2, width=2, max_nodes=6)
    for drafter in (chain, tree):
        assert drafter.propose(tokens, 8, Sampling(), None).tokens.numel() == 0  # no features yet
        drafter.observe_features(torch.zeros(4, 8))
        assert drafter.propose(tokens[:3], 8, Sampling(), None).tokens.numel() == 0  # features of another length
    draft = chain.propose(tokens, 8, Sampling(), None)
    assert draft.tokens.tolist() == [12, 13, 10] and draft.probs is None and draft.parents is None
    assert chain.propose(tokens, 2, Sampling(), None).tokens.tolist() == [12, 13]
    sampled = chain.propose(tokens, 8, Sampling(1.0), torch.Generator().manual_seed(0))
    assert sampled.probs.shape == (3, 16) and torch.allclose(sampled.probs[:, 10:14], FixedHeads.probs)
    assert float(sampled.probs[:, :10].sum() + sampled.probs[:, 14:].sum()) == 0.0  # −inf off the draft vocabulary
    draft = tree.propose(tokens, 8, Sampling(), None)
    assert draft.tokens.tolist() == [12, 11, 13, 13, 10, 11] and draft.parents.tolist() == [-1, -1, 0, 1, 2, 2]
    assert draft.probs is None
    shallow = tree.propose(tokens, 1, Sampling(), None)
    assert shallow.tokens.tolist() == [12, 11] and shallow.parents.tolist() == [-1, -1]


def test_heads_save_and_load(tmp_path):
    target, head = tiny_model("llama"), trained_heads()
    head.save(tmp_path / "heads", {"training": {"steps": 200}})
    loaded = load_medusa(tmp_path / "heads", target)
    assert json.loads((tmp_path / "heads" / "config.json").read_text())["format"] == "multispec-medusa-v1"
    ids = prompts(3, seed=2)[1]
    for branches in (1, 3):
        a = multispec.generate(target, ids, drafter=Medusa(head, branches=branches), max_new_tokens=16)
        b = multispec.generate(target, ids, drafter=Medusa(loaded, branches=branches), max_new_tokens=16)
        assert torch.equal(a.sequences, b.sequences) and a.stats.accepted == b.stats.accepted


def test_errors_name_the_problem(tmp_path):
    target = tiny_model("llama")
    with pytest.raises(ValueError, match="lacks .*num_heads, predict"):
        Medusa(object())
    with pytest.raises(ValueError, match="max_nodes"):
        Medusa(untrained_heads(target), branches=2, max_nodes=0)
    with pytest.raises(ValueError, match="medusa width"):
        MedusaConfig(width=0)
    with pytest.raises(ValueError, match="needs trained Medusa heads"):
        make_drafter(MedusaConfig(), target)
    assert isinstance(make_drafter(MedusaConfig(branches=2), target, head=untrained_heads(target)), Medusa)
    assert method_from_names("medusa", branches=3).name == "medusa-tree 3×4/16"
    with pytest.raises(ValueError, match="not a Medusa head folder"):
        load_medusa(tmp_path / "missing", target)
    with pytest.raises(ValueError, match="not a Medusa head folder"):
        load_medusa(tmp_path, target)
    untrained_heads(target).save(tmp_path / "heads")
    with pytest.raises(ValueError, match="vocabulary of 96, the target has 32"):
        load_medusa(tmp_path / "heads", tiny_model("llama", vocab=32))
    with pytest.raises(ValueError, match="feature after 2 layers"):
        load_medusa(tmp_path / "heads", tiny_model("llama", layers=3))
    config = json.loads((tmp_path / "heads" / "config.json").read_text())
    (tmp_path / "heads" / "config.json").write_text(json.dumps({**config, "format": "multispec-eagle-v1"}))
    with pytest.raises(ValueError, match="expected 'multispec-medusa-v1'"):
        load_medusa(tmp_path / "heads", target)


def test_recipe_smoke(tmp_path, capsys):
    from modalities.cli import main as cli
    from modalities.text.bench import run_bench
    from models import zoo
    from models.recipes.feature.__main__ import main
    assert main(["medusa", "--target", "text-target", "--out", str(tmp_path / "run"), "--preset", "smoke",
                 "--source", "spec-bench", "--draft-vocab", "512", "--heads", "3",
                 "--export", str(tmp_path / "heads")]) == 0
    target, tokenizer = zoo.load("text-target")
    head = load_medusa(tmp_path / "heads", target)
    assert head.d2t.shape == (512,) and head.num_heads == 3
    card = json.loads((tmp_path / "heads" / "config.json").read_text())["training"]
    assert len(card["final"]["heldout_top1"]) == 3 and card["heads"] == 3
    assert (tmp_path / "run" / "medusa-training.json").is_file()
    with pytest.raises(ValueError, match="another --out folder"):  # eagle's layers against medusa's data
        feature_data.build(tmp_path / "run", target, tokenizer, "spec-bench", 8, 16, (0, 1), 0, None, None,
                           name="medusa-data")
    report = run_bench(target, None, tokenizer, ["Write a haiku about the sea."], methods=("plain", "medusa",
                       "medusa-tree"), max_new_tokens=12, progress=False, medusa=head)
    rows = {r["method"]: r for r in report["rows"]}
    assert rows["medusa"]["identical_to_plain"] == "1/1" and rows["medusa-tree"]["identical_to_plain"] == "1/1"
    assert rows["medusa"]["draft_forwards_per_step"] > 0
    assert cli(["text", "Hello", "--drafter", "medusa", "--max-new-tokens", "6", "--no-compare-plain"]) == 2
    assert "needs trained Medusa heads" in capsys.readouterr().err
    assert cli(["text", "Hello", "--drafter", "medusa", "--branches", "2", "--medusa", str(tmp_path / "heads"),
                "--max-new-tokens", "6", "--no-compare-plain"]) == 0
    assert "[medusa-tree 2×4/16]" in capsys.readouterr().err
