"""Export to serving engines (models.export): an EAGLE-3 checkpoint read back by an independent reader
written from the format's description (vLLM's llama_eagle3 math: [input_layernorm(embed);
hidden_norm(fc(aux))] through 2H-wide q/k/v, residual from the raw hidden state, final norm, d2t
offsets) gives the head's own logits; the speculators layout and config; Medusa in vLLM's layout read
back; a draft model as a plain checkpoint; clear refusals for heads that cannot be exported."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from models import export
from models.feature_heads import EagleHead, MedusaHead, eagle3_settings_for, medusa_settings_for, settings_for

from conftest import tiny_model


def eagle3_head(target, draft_vocab=None, seed=0):
    torch.manual_seed(seed)
    vocab = target.get_output_embeddings().weight.shape[0]
    head = EagleHead(eagle3_settings_for(target, draft_vocab or vocab), target.get_input_embeddings())
    for p in head.parameters():  # norms away from 1, so a misplaced norm shows
        if p.ndim == 1:
            p.data.uniform_(0.5, 1.5)
    if draft_vocab:
        head.d2t.copy_(torch.randperm(vocab)[:draft_vocab].sort().values)
    return head.eval()


def _rms(x, weight, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def _rope(x, positions, theta):  # x [n, heads, d]: Llama's rotate-half convention
    d = x.shape[-1]
    freqs = positions[:, None].float() / theta ** (torch.arange(0, d, 2).float() / d)
    cos, sin = torch.cat([freqs.cos()] * 2, -1)[:, None], torch.cat([freqs.sin()] * 2, -1)[:, None]
    return x * cos + torch.cat([-x[..., d // 2:], x[..., : d // 2]], -1) * sin


def eagle3_reader(folder, embedding, aux, tokens, target_vocab):
    """Target-vocabulary logits [n, V] of an EAGLE-3 checkpoint for one prefill: aux [n, 3H] target
    states at positions 0..n-1, tokens [n] the token after each position."""
    config = json.loads((folder / "config.json").read_text())
    w = {k: v.float() for k, v in load_file(str(folder / "model.safetensors")).items()}
    eps, heads, kv, d = config["rms_norm_eps"], config["num_attention_heads"], config["num_key_value_heads"], config["head_dim"]
    n = tokens.shape[0]
    g = aux @ w["fc.weight"].T
    e = embedding[tokens]
    x = torch.cat([_rms(e, w["midlayer.input_layernorm.weight"], eps), _rms(g, w["midlayer.hidden_norm.weight"], eps)], -1)
    positions = torch.arange(n)
    q = _rope((x @ w["midlayer.self_attn.q_proj.weight"].T).view(n, heads, d), positions, config["rope_theta"])
    k = _rope((x @ w["midlayer.self_attn.k_proj.weight"].T).view(n, kv, d), positions, config["rope_theta"])
    v = (x @ w["midlayer.self_attn.v_proj.weight"].T).view(n, kv, d)
    k, v = k.repeat_interleave(heads // kv, 1), v.repeat_interleave(heads // kv, 1)
    scores = torch.einsum("qhd,khd->hqk", q, k) / d ** 0.5
    scores = scores.masked_fill(~torch.ones(n, n, dtype=torch.bool).tril(), float("-inf"))
    attended = torch.einsum("hqk,khd->qhd", scores.softmax(-1), v).reshape(n, heads * d)
    r = g + attended @ w["midlayer.self_attn.o_proj.weight"].T
    y = _rms(r, w["midlayer.post_attention_layernorm.weight"], eps)
    m = (torch.nn.functional.silu(y @ w["midlayer.mlp.gate_proj.weight"].T) * (y @ w["midlayer.mlp.up_proj.weight"].T)) \
        @ w["midlayer.mlp.down_proj.weight"].T
    draft_logits = _rms(m + r, w["norm.weight"], eps) @ w["lm_head.weight"].T
    draft_vocab = config["draft_vocab_size"]
    ids = torch.arange(draft_vocab) + (w["d2t"].long() if "d2t" in w else 0)
    out = torch.full((n, target_vocab), float("-inf"))
    out[:, ids] = draft_logits
    return out


@pytest.mark.parametrize("draft_vocab", [None, 40])
def test_eagle3_checkpoint_reads_back_to_the_heads_logits(tmp_path, draft_vocab):
    target = tiny_model("llama", layers=6)
    head = eagle3_head(target, draft_vocab)
    assert head.feature_layers == (2, 3)  # (2, L // 2, L − 3) for L = 6, distinct
    folder = export.export_eagle3(head, target, tmp_path, "tiny", dtype=torch.float32)
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLMEagle3"] and config["num_hidden_layers"] == 1
    assert config["draft_vocab_size"] == (draft_vocab or 96) and config["tie_word_embeddings"] is False
    assert "eagle_aux_hidden_state_layer_ids" not in config  # the engines' default layers
    names = load_file(str(folder / "model.safetensors"))
    assert ("d2t" in names) == (draft_vocab is not None) and "embed_tokens.weight" not in names
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 96, (7,), generator=g)
    aux = torch.randn(7, 2 * 32, generator=g)
    with torch.no_grad():
        logits, _ = head.step(tokens[None], head.fuse(aux)[None], head.new_cache(), torch.arange(7)[None])
    expected = torch.full((7, 96), float("-inf"))
    expected[:, head.d2t] = logits[0]
    got = eagle3_reader(folder, target.get_input_embeddings().weight.detach(), aux, tokens, 96)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_speculators_layout(tmp_path):
    target = tiny_model("llama", layers=6)
    head = eagle3_head(target, 40)
    folder = export.export_eagle3(head, target, tmp_path, "tiny-target", speculators=True)
    config = json.loads((folder / "config.json").read_text())
    assert config["speculators_model_type"] == "eagle3" and config["transformer_layer_config"]["model_type"] == "llama"
    assert config["eagle_aux_hidden_state_layer_ids"] == [2, 3] and config["norm_before_residual"] is False
    assert config["speculators_config"]["verifier"]["name_or_path"] == "tiny-target"
    tensors = load_file(str(folder / "model.safetensors"))
    assert tensors["t2d"].dtype == torch.bool and int(tensors["t2d"].sum()) == 40
    assert torch.equal(torch.arange(40) + tensors["d2t"], head.d2t)
    assert tensors["layers.0.self_attn.q_proj.weight"].shape[1] == 2 * 32 and "embed_tokens.weight" in tensors


def test_medusa_reads_back(tmp_path):
    target = tiny_model("llama")
    torch.manual_seed(0)
    head = MedusaHead(medusa_settings_for(target, 3, 96))
    for p in head.parameters():
        p.data.normal_()
    folder = export.export_medusa(head, tmp_path, dtype=torch.float32)
    config = json.loads((folder / "config.json").read_text())
    assert (config["model_type"], config["num_heads"], config["medusa_fc_bias"]) == ("medusa", 3, True)
    w = load_file(str(folder / "model.safetensors"))
    x = torch.randn(5, 32)
    for k in range(3):  # vLLM's ResidualBlock: x + SiLU(W x + b), then lm_heads.k
        block = x + torch.nn.functional.silu(x @ w[f"blocks.{k}.layers.0.weight"].T + w[f"blocks.{k}.layers.0.bias"])
        torch.testing.assert_close(block @ w[f"lm_heads.{k}.weight"].T, head.predict(x)[k].detach())


def test_draft_model_is_a_plain_checkpoint(tmp_path):
    draft = tiny_model("llama", layers=1, seed=3)
    folder = export.export_draft_model(draft, None, tmp_path)
    again = AutoModelForCausalLM.from_pretrained(folder, use_safetensors=True)
    ids = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        torch.testing.assert_close(again(ids).logits, draft(ids).logits)


def test_refusals_name_the_problem(tmp_path):
    target = tiny_model("llama", layers=6)
    concat = EagleHead(settings_for(target, 96), target.get_input_embeddings())
    with pytest.raises(ValueError, match="layout is 'concat'.*--layout eagle3"):
        export.export_eagle3(concat, target, tmp_path, "tiny")
    reduced = MedusaHead(medusa_settings_for(target, 2, 40))
    with pytest.raises(ValueError, match="full vocabulary"):
        export.export_medusa(reduced, tmp_path)


def test_serving_commands():
    text = export.serving_commands("eagle3", "HuggingFaceTB/SmolLM2-135M-Instruct", "out/eagle3", 4)
    assert '"method": "eagle3"' in text and "--speculative-algorithm EAGLE3" in text and '"num_speculative_tokens": 4' in text
    assert '"method": "draft_model"' in export.serving_commands("draft", "t", "d")
    assert "STANDALONE" in export.serving_commands("draft", "t", "d")


def test_cli_writes_and_prints_the_commands(tmp_path, capsys):
    from modalities.cli import main
    target = tiny_model("llama", layers=6)
    target.save_pretrained(tmp_path / "target")
    eagle3_head(target, 40).save(tmp_path / "head")
    assert main(["export", "eagle", "--head", str(tmp_path / "head"), "--target", str(tmp_path / "target"),
                 "--out", str(tmp_path / "out"), "--num-speculative-tokens", "4"]) == 0
    printed = capsys.readouterr().out
    assert '"method": "eagle3"' in printed and "--speculative-draft-model-path" in printed
    assert json.loads((tmp_path / "out" / "config.json").read_text())["architectures"] == ["LlamaForCausalLMEagle3"]
    concat = EagleHead(settings_for(target, 96), target.get_input_embeddings())
    concat.save(tmp_path / "concat")
    assert main(["export", "eagle", "--head", str(tmp_path / "concat"), "--target", str(tmp_path / "target"),
                 "--out", str(tmp_path / "bad")]) != 0
    assert "--layout eagle3" in capsys.readouterr().err
