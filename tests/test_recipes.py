"""Training recipes: target samples for on-policy distillation, and a drafter distilled on them."""
import json

import numpy as np
import pytest
import torch
import transformers

from models.recipes import target_samples
from models.recipes.token_lm import main as seq_train_main

K, CLASSES = 12, ["a", "b", "c"]
V = K + len(CLASSES) + 1
META = {"modality": "image", "vocab_size": V, "codebook_size": K, "grid_size": [2, 4], "image_size": 8,
        "class_names": CLASSES, "class_token_offset": K, "null_token": V - 1, "bos": V - 1, "eos": V - 1,
        "pad": V - 1, "unconditional_prefix": [V - 1], "condition_dropout": 0.1, "seq_len": 9}


def save_target(folder):
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=V, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=16)
    transformers.LlamaForCausalLM(config).save_pretrained(folder)
    (folder / "multispec.json").write_text(json.dumps(META))
    return folder


def sample(target, out, seed=0, guidance=3.0, num=12):
    return target_samples.main(["--target", str(target), "--out", str(out), "--num", str(num), "--guidance",
                                str(guidance), "--batch-size", "5", "--seed", str(seed), "--device", "cpu",
                                "--heldout-fraction", "0.25"])


def test_image_samples_are_balanced_codes_and_reproducible(tmp_path):
    target = save_target(tmp_path / "target")
    sample(target, tmp_path / "s1")
    sample(target, tmp_path / "s2")
    one, two = np.load(tmp_path / "s1/tokens.npz"), np.load(tmp_path / "s2/tokens.npz")
    tokens = one["tokens"]
    assert tokens.shape == (12, 9) and one["mask"].shape == (12, 8) and one["mask"].all()
    assert sorted(np.bincount(tokens[:, 0] - K).tolist()) == [4, 4, 4]  # balanced class prompts
    assert tokens[:, 1:].max() < K  # decoding's codes-only mask holds for the samples too (no class or null id)
    np.testing.assert_array_equal(tokens, two["tokens"])  # the seed fixes the samples
    meta = json.loads((tmp_path / "s1/meta.json").read_text())
    assert meta["condition_dropout"] == 0.0 and meta["samples"]["guidance"] == 3.0
    assert meta["train_sequences"] + meta["heldout_sequences"] == 12


def test_guidance_needs_an_unconditional_prefix(tmp_path):
    target = save_target(tmp_path / "target")
    meta = json.loads((target / "multispec.json").read_text())
    (target / "multispec.json").write_text(json.dumps({**meta, "unconditional_prefix": []}))
    with pytest.raises(ValueError, match="unconditional_prefix"):
        sample(target, tmp_path / "s")


def test_drafter_distils_on_target_samples(tmp_path):
    """The recipe of models/recipes/gpu/distill_gpu.sh at smoke size: samples -> guided distillation -> export
    (class-balanced, which the exported card records)."""
    target = save_target(tmp_path / "run" / "target")
    sample(target, tmp_path / "samples", num=16)
    seq_train_main(["image", "--preset", "smoke", "--which", "draft", "--data", str(tmp_path / "samples"),
                    "--out", str(tmp_path / "run"), "--distill-guidance", "3", "--device", "cpu", "--balance", "0.5"])
    exported = json.loads((tmp_path / "run/draft/multispec.json").read_text())
    assert exported["draft_guidance_distilled"] == 3.0 and exported["vocab_size"] == V
    assert exported["train_balance"] == 0.5


def test_drafter_warm_start_and_unknown_preset(tmp_path):
    """--draft-init-from starts the drafter from given weights, --bf16 trains under CPU autocast and
    --lr overrides the preset's (all recorded in training.json); a preset the modality lacks is refused
    by name."""
    from safetensors.torch import save_model

    from models.recipes.token_lm import SMOKE_SHAPE
    target = save_target(tmp_path / "run" / "target")
    sample(target, tmp_path / "samples", num=16)
    torch.manual_seed(1)
    start = transformers.LlamaForCausalLM(SMOKE_SHAPE.config(V, bos=V - 1, eos=V - 1, pad=V - 1))
    save_model(start, str(tmp_path / "start.safetensors"))
    seq_train_main(["image", "--preset", "smoke", "--which", "draft", "--data", str(tmp_path / "samples"),
                    "--out", str(tmp_path / "run"), "--device", "cpu", "--bf16", "--lr", "3e-4",
                    "--draft-init-from", str(tmp_path / "start.safetensors")])
    record = json.loads((tmp_path / "run/draft/training.json").read_text())
    assert record["init_from"] == str(tmp_path / "start.safetensors")
    assert record["bf16_autocast"] is True and record["train"]["lr"] == 3e-4  # CPU autocast and the lr override
    with pytest.raises(SystemExit, match="no preset 'cpu-deep'"):
        seq_train_main(["image", "--preset", "cpu-deep", "--data", str(tmp_path / "samples")])


def test_class_balance_weights_rows_by_their_first_token():
    """--balance α draws a row ∝ count(its first token)^−α: 1 gives each class the same share, 0.5 the
    square root of its count's, 0 the data's own mix; α outside [0, 1] is refused by name."""
    from models.recipes.token_lm import first_token_weights
    first = torch.tensor([7, 7, 7, 7, 9])  # four rows of class 7, one of class 9
    assert first_token_weights(first, 1.0).tolist() == pytest.approx([0.125] * 4 + [0.5])
    assert first_token_weights(first, 0.5).tolist() == pytest.approx([1 / 6] * 4 + [1 / 3])
    assert first_token_weights(first, 0.0).tolist() == pytest.approx([0.2] * 5)
    with pytest.raises(ValueError, match="balance"):
        first_token_weights(first, 1.5)


def test_balanced_sampling_draws_the_rare_class_as_often(tmp_path):
    """SequenceData with balance 1 draws a class with 1 row in 4 as often as the class with 3."""
    from models.recipes.presets import TrainSpec
    from models.recipes.token_lm import SequenceData
    tokens = np.array([[K, 1, 2], [K, 2, 3], [K, 3, 4], [K + 1, 4, 5], [K, 1, 1]])
    np.savez(tmp_path / "tokens.npz", tokens=tokens, mask=np.ones((5, 2), bool), split=np.array([0, 0, 0, 0, 1]))
    spec = TrainSpec(max_steps=1, batch_size=1, seq_len=3, lr=1e-3, minutes=1, eval_tokens=4)
    meta = {**META, "condition_dropout": 0.0}
    rng = np.random.default_rng(0)
    firsts = SequenceData(tmp_path, spec, meta, balance=1.0).sample(400, rng)[0][:, 0]
    share = (firsts == K + 1).float().mean().item()
    assert 0.42 < share < 0.58
    plain = SequenceData(tmp_path, spec, meta).sample(400, np.random.default_rng(0))[0][:, 0]
    assert (plain == K + 1).float().mean().item() < 0.35
