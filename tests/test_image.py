"""Image adapter: exact methods equal plain guided decoding, zero budgets are exact, bad input errors."""
import functools

import pytest
import torch
import transformers

from modalities.image import ImageTokenizer
from modalities.image.generation import ImageModels, generate_image, generate_tokens
from multispec.methods import (DraftModelConfig, DraftTreeConfig, GroupConfig, JacobiConfig, Method,
                               NeighborhoodConfig, PromptLookupConfig, TypicalConfig)

K, CLASSES = 16, ["cats", "dogs", "flags"]
PLAIN, DRAFT = Method(), Method(DraftModelConfig())
DRAFTERS = {"draft": DraftModelConfig(), "jacobi": JacobiConfig(), "lookup": PromptLookupConfig(),
            "draft-tree": DraftTreeConfig(branches=2, width=2, max_nodes=6)}
V = K + len(CLASSES) + 1


def tiny_lm(layers, hidden, seed):
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(vocab_size=V, hidden_size=hidden, intermediate_size=2 * hidden,
                                      num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=2,
                                      max_position_embeddings=80, bos_token_id=V - 1, eos_token_id=V - 1,
                                      pad_token_id=V - 1)
    model = transformers.LlamaForCausalLM(config)
    with torch.no_grad():
        model.lm_head.weight.mul_(6.0)  # peaked distributions, far from uniform
    return model.eval()


@functools.lru_cache(maxsize=None)
def models() -> ImageModels:
    from models.recipes.image.vq import VQShape

    torch.manual_seed(0)
    vq = VQShape(block_out_channels=(8, 8, 8), latent_channels=4, vq_embed_dim=4, codebook_size=K,
                 norm_num_groups=4).build()
    with torch.no_grad():
        vq.quantize.embedding.weight.normal_(0, 0.3)
    meta = {"vocab_size": V, "codebook_size": K, "grid_size": [8, 8], "image_size": 32,
            "class_names": CLASSES, "class_token_offset": K, "null_token": V - 1, "unconditional_prefix": [V - 1]}
    return ImageModels(tiny_lm(2, 32, 0), ImageTokenizer(vq.eval()), meta, tiny_lm(1, 16, 1))


@pytest.mark.parametrize("guidance", [1.0, 3.0])
@pytest.mark.parametrize("drafter", ["draft", "jacobi", "lookup", "draft-tree"])
def test_exact_methods_equal_plain_greedy(drafter, guidance):
    m = models()
    for label in CLASSES:
        plain = generate_tokens(m, label, PLAIN, temperature=0.0, guidance_scale=guidance)
        fast = generate_tokens(m, label, Method(DRAFTERS[drafter]), temperature=0.0, guidance_scale=guidance)
        assert torch.equal(plain.tokens, fast.tokens), (drafter, label)
        assert plain.tokens.shape == (8, 8) and int(plain.tokens.max()) < K  # codes only
        assert fast.stats.steps <= plain.stats.steps == 64


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_zero_budget_relaxation_is_exact(temperature):
    m = models()
    for drafter in DRAFTERS.values():
        for zero_budget in (NeighborhoodConfig(delta=0.0), GroupConfig(group_size=1)):
            exact = generate_tokens(m, "dogs", Method(drafter), temperature=temperature,
                                    generator=torch.Generator().manual_seed(4))
            relaxed = generate_tokens(m, "dogs", Method(drafter, zero_budget), temperature=temperature,
                                      generator=torch.Generator().manual_seed(4))
            assert torch.equal(exact.tokens, relaxed.tokens) and relaxed.stats.moved_mass == 0.0


def test_relaxation_moves_at_most_delta_per_token_and_saves_forwards():
    m = models()
    exact_steps = relaxed_steps = 0
    for seed in range(4):
        kw = dict(temperature=1.0, guidance_scale=2.0)
        exact = generate_tokens(m, "cats", DRAFT, generator=torch.Generator().manual_seed(seed), **kw)
        relaxed = generate_tokens(m, "cats", Method(DraftModelConfig(), NeighborhoodConfig(delta=0.3)),
                                  generator=torch.Generator().manual_seed(seed), **kw)
        assert relaxed.stats.moved_mass <= 0.3 * relaxed.stats.accepted + 1e-6
        exact_steps, relaxed_steps = exact_steps + exact.stats.steps, relaxed_steps + relaxed.stats.steps
    assert relaxed_steps < exact_steps


def test_generate_image_returns_a_pil_image():
    image, stats = generate_image(models(), 0, method=Method(JacobiConfig()), generator=torch.Generator().manual_seed(0))
    assert image.size == (32, 32) and stats.new_tokens == 64


def test_bad_input_errors():
    m = models()
    with pytest.raises(ValueError, match="unknown class 'horses'"):
        generate_tokens(m, "horses")
    with pytest.raises(ValueError, match="unknown class 7"):
        m.prompt(7)
    with pytest.raises(ValueError, match="the image adapter has no 'typical' acceptance; it supports exact, "
                                         "neighborhood, group"):
        generate_tokens(m, "cats", Method(DraftModelConfig(), TypicalConfig()))
    with pytest.raises(ValueError, match="drafter must be None or one of"):
        generate_tokens(m, "cats", Method("medusa"))
    with pytest.raises(ValueError, match="32x32"):
        m.tokenizer.encode(torch.zeros(1, 16, 16, 3, dtype=torch.uint8))
    with pytest.raises(ValueError):
        m.tokenizer.decode(torch.full((1, 8, 8), K))  # outside the codebook


def test_bench_report_has_every_method_and_writes_files(tmp_path):
    from modalities.image.classifier import ClassifierConfig, ImageClassifier
    from modalities.image import bench
    classifier = ImageClassifier(ClassifierConfig(num_classes=len(CLASSES))).eval()
    real = (torch.rand(12, 3, 32, 32) * 2 - 1, torch.arange(12) % len(CLASSES))
    report = bench.run_report(models(), tmp_path, per_class=1, quick=True, classifier=classifier, real=real)
    rows = report["rows"]
    assert [r["method"] for r in rows] == [m.name for m in bench.QUICK_METHODS]
    assert rows[0]["speedup"] == 1.0 and rows[0]["forwards_per_image"] == 64
    assert rows[1]["moved_mass_per_token"] == 0.0
    assert 0 < rows[3]["moved_mass_per_token"] <= bench.QUICK_METHODS[3].acceptance.delta  # the budget δ per token
    for name in ("results.json", "results.md", "grid.png", "sweep.png"):
        assert (tmp_path / name).is_file()


def test_guidance_distilled_drafter_runs_unguided_and_stays_exact():
    import dataclasses
    m = dataclasses.replace(models(), draft_meta={"draft_guidance_distilled": 3.0})
    from modalities.image.generation import make_drafter
    assert not make_drafter(m, DraftModelConfig(), 3.0).lm.guided  # one row, no classifier-free guidance
    for label in CLASSES:
        plain = generate_tokens(m, label, PLAIN, temperature=0.0, guidance_scale=3.0)
        fast = generate_tokens(m, label, DRAFT, temperature=0.0, guidance_scale=3.0)
        assert torch.equal(plain.tokens, fast.tokens)


def test_a_vq_trained_at_32_serves_64x64_images_with_a_16x16_grid(tmp_path):
    """The bundled 64x64 models share the 32x32 VQ: its convolutions take twice the side and give
    twice the grid; ``from_folders`` reads the size from the target's card and checks the grid."""
    import json
    vq = models().tokenizer.model
    vq.save_pretrained(tmp_path / "vq", safe_serialization=True)
    big = ImageTokenizer.from_pretrained(tmp_path / "vq", image_size=64)
    assert big.image_size == 64 and big.grid_size == (16, 16) and big.num_tokens == 256
    ids = big.encode(torch.randint(0, 256, (2, 64, 64, 3), dtype=torch.uint8))
    assert tuple(ids.shape) == (2, 16, 16) and tuple(big.decode_tensor(ids).shape) == (2, 3, 64, 64)
    with pytest.raises(ValueError, match="image size 34 is not a positive multiple of the VQ's downsampling 4"):
        ImageTokenizer.from_pretrained(tmp_path / "vq", image_size=34)
    # a target folder whose card says 64x64 / 16x16 loads with the 32x32 VQ and decodes 64x64 images
    card = {"vocab_size": V, "codebook_size": K, "grid_size": [16, 16], "image_size": 64, "class_names": CLASSES,
            "class_token_offset": K, "null_token": V - 1, "unconditional_prefix": [V - 1]}
    lm = tiny_lm(1, 16, 2)
    lm.config.max_position_embeddings = 300
    lm.save_pretrained(tmp_path / "target", safe_serialization=True)
    (tmp_path / "target" / "multispec.json").write_text(json.dumps(card))
    loaded = ImageModels.from_folders(tmp_path / "target", tmp_path / "vq")
    image, stats = generate_image(loaded, "dogs", generator=torch.Generator().manual_seed(0))
    assert image.size == (64, 64) and stats.new_tokens == 256
    (tmp_path / "target" / "multispec.json").write_text(json.dumps({**card, "grid_size": [8, 8]}))
    with pytest.raises(ValueError, match=r"a \(16, 16\) grid, but the target's card says \(8, 8\)"):
        ImageModels.from_folders(tmp_path / "target", tmp_path / "vq")


def test_unknown_bundled_size_is_refused():
    with pytest.raises(ValueError, match="no bundled image models for size 128; sizes: 64, 32"):
        ImageModels.from_zoo(size=128)


def test_the_classifier_scores_larger_images_at_its_own_size():
    from modalities.image.classifier import ClassifierConfig, ImageClassifier
    from modalities.image.metrics import fit_to
    classifier = ImageClassifier(ClassifierConfig(num_classes=3)).eval()
    small = torch.rand(2, 3, 32, 32) * 2 - 1
    assert fit_to(classifier, small) is small
    flat = torch.tensor([0.5, -0.25, 1.0])[None, :, None, None].expand(2, 3, 64, 64)  # one colour each channel
    reduced = fit_to(classifier, flat)
    assert tuple(reduced.shape) == (2, 3, 32, 32) and torch.allclose(reduced, flat[..., :32, :32], atol=1e-5)
    assert tuple(classifier.logits(reduced).shape) == (2, 3)


def test_bench_methods_are_chosen_by_name_with_plain_first():
    from modalities.image import bench
    chosen = bench.select_methods("draft+neighborhood d=0.2, draft+neighborhood d=0.4 lambda=20,draft")
    assert [m.name for m in chosen] == ["plain", "draft+neighborhood δ=0.2", "draft+neighborhood δ=0.4 λ=20", "draft"]
    with pytest.raises(ValueError, match=r"unknown image method 'draft\+topk'; known: plain, draft, jacobi"):
        bench.select_methods("draft+topk")
