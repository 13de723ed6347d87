"""Feature drafters (EAGLE-style heads over the target's hidden states): greedy output identical to
Hugging Face greedy on every architecture (chain and tree, untrained and trained heads), the
features the drafter receives equal a fresh prefill's, the sampled distribution is kept, the
recipe trains, saves and loads, and bad input gets a clear error."""
import functools
import tempfile

import pytest
import torch

import multispec
from models.feature_heads import EagleHead, load_head, settings_for
from models.recipes.feature import data as feature_data
from models.recipes.feature import eagle as eagle_recipe
from multispec import trees
from multispec.feature_drafters import Eagle, FeatureDrafter
from multispec.lm import CachedLM, FeatureVerifier
from multispec.sampling import Sampling

from conftest import ARCHS, hf_greedy, prompts, tiny_model
from test_distribution import chi_square_pvalue, exact_marginals, sample_counts, target_and_draft


def random_head(target, draft_vocab=None, seed=0):
    torch.manual_seed(seed)
    vocab = target.get_output_embeddings().weight.shape[0]
    head = EagleHead(settings_for(target, draft_vocab or vocab), target.get_input_embeddings()).eval()
    if draft_vocab:
        head.d2t.copy_(torch.randperm(vocab)[:draft_vocab].sort().values)
    return head


@functools.lru_cache(maxsize=None)
def trained_head(arch="llama", steps=150):
    """A head trained briefly on the tiny target's own greedy continuations (through the recipe)."""
    target = tiny_model(arch)
    settings = settings_for(target, 96)
    sequences = feature_data.continue_greedily(target, [p[0].tolist() for p in prompts(24, seed=5)], 24, 8, 0, None)
    data = feature_data.target_pass(target, sequences, settings["feature_layers"])
    torch.manual_seed(0)
    head = EagleHead(settings, target.get_input_embeddings())
    eagle_recipe.warm_start(head, target)
    with tempfile.TemporaryDirectory() as folder:
        if steps:  # 0: the warm start alone
            eagle_recipe.train(head, data, folder, steps=steps, batch=8, width=32, unroll=3, lr=3e-3, seed=0,
                               eval_every=steps)
    return head.eval()


def accepted_if_exact(target, drafters, cases, max_new_tokens: int) -> list[int]:
    """Check every drafter's greedy output on every prompt against Hugging Face greedy; returns the
    drafts each drafter got accepted in all."""
    accepted = []
    for drafter in drafters:
        accepted.append(0)
        for ids in cases:
            out = multispec.generate(target, ids, drafter=drafter, max_new_tokens=max_new_tokens)
            assert torch.equal(out.sequences, hf_greedy(target, ids, max_new_tokens)), type(drafter).__name__
            accepted[-1] += out.stats.accepted
    return accepted


def check_eos_and_budget(target, drafters, budgets=(1, 2, 5, 11)) -> None:
    """An eos inside a draft ends the output there; a budget ending inside a draft is kept exactly."""
    ids = prompts(3, seed=2)[2]
    reference = hf_greedy(target, ids, 30)[0, ids.shape[1]:]
    eos = int(reference[7])
    stop = reference.tolist().index(eos) + 1
    for drafter in drafters:
        out = multispec.generate(target, ids, drafter=drafter, max_new_tokens=30, eos_token_id=eos)
        assert out.sequences[0, ids.shape[1]:].tolist() == reference[:stop].tolist()
        for budget in budgets:
            out = multispec.generate(target, ids, drafter=drafter, max_new_tokens=budget)
            assert torch.equal(out.sequences, hf_greedy(target, ids, budget))


@pytest.mark.parametrize("arch", ARCHS)
def test_greedy_equals_hf_greedy_untrained(arch):
    target = tiny_model(arch)
    head = random_head(target, draft_vocab=48)
    accepted_if_exact(target, (Eagle(head), Eagle(head, branches=3, width=2, max_nodes=8)), prompts(6), 20)


def test_trained_head_is_accepted_and_exact():
    target = tiny_model("llama")
    cases = prompts(10, seed=2)
    accepted = {steps: sum(accepted_if_exact(target, (Eagle(head), Eagle(head, branches=3, width=3, max_nodes=12)),
                                             cases, 24))
                for steps, head in ((0, trained_head(steps=0)), (150, trained_head()))}
    # the head learned something (warm start only: 14 accepted here, 150 steps: 201), so the
    # always-right branches of the tree are exercised as well as the wrong ones
    assert accepted[150] > 4 * max(accepted[0], 10), accepted


def test_eos_and_budget_inside_a_draft():
    head = trained_head()
    check_eos_and_budget(tiny_model("llama"), (Eagle(head), Eagle(head, branches=3)))


def check_fresh_features(target, drafter, layers) -> torch.Tensor:
    """Decode with ``drafter`` and check that the feature rows it is given are those of a fresh
    prefill of the output, every committed position once, in order; returns the fresh rows [T, F]."""
    seen, observe = [], drafter.observe_features
    drafter.observe_features = lambda features: (seen.append(features.clone()), observe(features))
    ids = prompts(4, seed=2)[3]
    out = multispec.generate(target, ids, drafter=drafter, max_new_tokens=20)
    seen = torch.cat(seen)
    with torch.no_grad():
        hidden = target(out.sequences, output_hidden_states=True).hidden_states
    fresh = torch.cat([hidden[i][0] for i in layers], dim=-1)
    assert seen.shape[0] == out.sequences.shape[1] - 1  # every committed position, once, in order
    torch.testing.assert_close(seen, fresh[: seen.shape[0]], atol=1e-4, rtol=1e-4)
    return fresh


@pytest.mark.parametrize("branches", [1, 3])
def test_features_equal_a_fresh_prefill(branches):
    target, head = tiny_model("llama"), trained_head()
    check_fresh_features(target, Eagle(head, branches=branches), head.feature_layers)


@pytest.mark.parametrize("branches, sampling", [(1, Sampling(1.0)), (1, Sampling(0.7, top_k=4)), (3, Sampling(1.0))],
                         ids=["chain-T1", "chain-T0.7-top4", "tree-T1"])
def test_sampling_keeps_the_distribution(branches, sampling):
    target, _ = target_and_draft()
    head = random_head(target, seed=4)
    with torch.no_grad():  # a head that agrees with the target often enough to accept drafts
        head.lm_head.weight.mul_(0.0)
    counts = sample_counts(target, Eagle(head, branches=branches), sampling, seed=13)
    second, third = exact_marginals(target, sampling)
    assert chi_square_pvalue(counts[0], second) > 0.01 / 3 and chi_square_pvalue(counts[1], third) > 0.01 / 3


def test_protocols_and_capture():
    target = tiny_model("llama")
    assert isinstance(Eagle(random_head(target)), FeatureDrafter)
    lm = CachedLM(target)
    assert isinstance(lm, FeatureVerifier)
    with pytest.raises(ValueError, match="hidden-state indices"):
        lm.capture((0, 99))
    lm.capture((1, 2))
    lm.forward(torch.tensor([1, 2, 3]))
    assert lm.features.shape == (3, 2 * target.config.hidden_size)


def test_errors_name_the_problem(tmp_path):
    target = tiny_model("llama")
    with pytest.raises(ValueError, match="lacks"):
        Eagle(object())
    with pytest.raises(ValueError, match="branches"):
        Eagle(random_head(target), branches=0)

    class PlainVerifier:  # a complete Verifier without features
        vocab_size, length, max_length, forced_token = 96, 0, None, None
        device = torch.device("cpu")
        def reset(self): pass
        def forward(self, tokens, last_only=False): return torch.zeros(tokens.shape[0], 96)
        def rollback(self, length): pass

    with pytest.raises(ValueError, match="FeatureVerifier"):
        multispec.generate(PlainVerifier(), torch.tensor([[1, 2]]), drafter=Eagle(random_head(target)),
                           max_new_tokens=4)
    with pytest.raises(ValueError, match="not an EAGLE head folder"):
        load_head(tmp_path, target)
    random_head(target).save(tmp_path / "head")
    with pytest.raises(ValueError, match="vocabulary"):
        load_head(tmp_path / "head", tiny_model("llama", vocab=32))


def test_head_saves_and_loads(tmp_path):
    target = tiny_model("llama")
    head = trained_head()
    head.save(tmp_path / "head", {"training": {"steps": 60}})
    loaded = load_head(tmp_path / "head", target)
    ids = prompts(3, seed=2)[1]
    a = multispec.generate(target, ids, drafter=Eagle(head), max_new_tokens=16)
    b = multispec.generate(target, ids, drafter=Eagle(loaded), max_new_tokens=16)
    assert torch.equal(a.sequences, b.sequences) and a.stats.accepted == b.stats.accepted


def test_grow_keeps_the_best_nodes():
    """Literal case: vocabulary 4, root logits favour 2 then 1; every expanded node prefers 3."""
    root = torch.log(torch.tensor([0.05, 0.25, 0.6, 0.1]))
    calls = []

    def expand(frontier, tokens, parents):
        calls.append(list(frontier))
        return torch.log(torch.tensor([[0.1, 0.1, 0.1, 0.7]] * len(frontier)))

    tokens, parents = trees.grow(root, depth=2, branches=2, width=1, max_nodes=3, expand=expand)
    assert calls == [[0]]  # only the best first-level node (token 2) is fed
    assert tokens == [2, 1, 3] and parents == [-1, -1, 0]


def test_recipe_smoke(tmp_path):
    from models.recipes.feature.__main__ import main
    assert main(["eagle", "--target", "text-target", "--out", str(tmp_path / "run"), "--preset", "smoke",
                 "--source", "spec-bench", "--draft-vocab", "512", "--export", str(tmp_path / "head")]) == 0
    target = tiny_model("llama")  # any target with the same vocabulary would do; here the bundled one
    from models import zoo
    text_target, _ = zoo.load("text-target")
    head = load_head(tmp_path / "head", text_target)
    assert head.d2t.shape == (512,) and (tmp_path / "run" / "training.json").is_file()
    del target


def test_residual_head_starts_as_its_draft_model():
    """Warm-started from a one-layer draft LM, a residual head computes exactly that model's logits
    (the feature path starts at zero), whatever the target's features; RoPE is relative, so the
    one-position shift of its entries changes nothing."""
    from models.feature_heads import settings_from_draft
    target, draft = tiny_model("llama"), tiny_model("llama", layers=1, seed=7)
    settings = settings_from_draft(target, draft)
    head = EagleHead({**settings, "draft_vocab_size": settings["vocab_size"]}, target.get_input_embeddings()).eval()
    eagle_recipe.warm_start(head, draft)
    ids = torch.randint(0, 96, (1, 12), generator=torch.Generator().manual_seed(0))
    features = torch.randn(1, 12, head.fc.in_features)
    with torch.no_grad():
        logits, _ = head.step(ids, head.fuse(features), None, torch.arange(3, 15)[None])
        torch.testing.assert_close(logits, draft(ids).logits, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="one-layer"):
        settings_from_draft(target, tiny_model("llama"))


def test_self_instruct_prompts_are_the_targets_own_questions():
    """Magpie-style data: the target samples user turns after its chat template's user header; each
    kept question is wrapped in the template like any user turn; no chat template, a clear error."""
    from models import zoo
    from models.recipes.feature.data import self_instruct_prompts
    target, tokenizer = zoo.load("text-target")
    with pytest.raises(ValueError, match="no chat template"):
        self_instruct_prompts(target, tokenizer, 2, seed=0)
    tokenizer.chat_template = "{% for m in messages %}Q: {{ m['content'] }}<|endoftext|>{% endfor %}A:"
    prompts = self_instruct_prompts(target, tokenizer, 3, seed=0, question_tokens=24, batch=8)
    assert len(prompts) == 3 and len({tuple(p) for p in prompts}) == 3
    for ids in prompts:
        text = tokenizer.decode(ids)
        assert text.startswith("Q: ") and text.endswith("<|endoftext|>A:") and len(text.split()) >= 5
    state = torch.get_rng_state()
    assert self_instruct_prompts(target, tokenizer, 3, seed=0, question_tokens=24, batch=8) == prompts  # seeded
    assert torch.equal(torch.get_rng_state(), state)  # the global generator is left as it was
    assert self_instruct_prompts(target, tokenizer, 0, seed=0) == []
