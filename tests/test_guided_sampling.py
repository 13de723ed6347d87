"""One guided sampler for decoding, distillation and target sampling: the same logits, the same masks."""
import json

import numpy as np
import pytest
import torch
import transformers

import multispec
from modalities.image.generation import ImageModels
from modalities.speech.generation import SpeechModels
from modalities.speech.vocab import EOS, PHONE_CODE_OFFSET, encode_phones
from models.recipes import target_samples
from models.recipes.decoding_masks import prompt_masks, row_masks
from models.recipes.token_lm import GuidedTeacher
from models.recipes.trainer import lm_loss
from multispec.guidance import GuidedLM, mask_logits

K, CLASSES = 12, ["a", "b", "c"]
V = K + len(CLASSES) + 1
IMAGE_META = {"modality": "image", "vocab_size": V, "codebook_size": K, "grid_size": [2, 4], "image_size": 8,
              "class_names": CLASSES, "class_token_offset": K, "null_token": V - 1, "bos": V - 1, "eos": V - 1,
              "pad": V - 1, "unconditional_prefix": [V - 1], "condition_dropout": 0.1, "seq_len": 9}
C = 16
SPEECH_V = PHONE_CODE_OFFSET + 2 * C
SPEECH_META = {"modality": "speech", "layout": "aligned", "num_codebooks": 2, "codebook_size": C,
               "code_offset": PHONE_CODE_OFFSET, "text_units": "phones", "frame_rate": 100.0, "sample_rate": 16000,
               "bos": 1, "eos": EOS, "pad": 0, "unconditional_prefix": [], "vocab_size": SPEECH_V, "seq_len": 40}
PHRASES = [["hh", "ay", "pau"], ["g", "uh", "d"]]  # same length: one batch


def tiny_lm(vocab, seed=0, sharpen=4.0):
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(vocab_size=vocab, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64)
    model = transformers.LlamaForCausalLM(config)
    with torch.no_grad():
        model.lm_head.weight.mul_(sharpen)
    return model.eval()


def codes_only():
    mask = torch.zeros(V, dtype=torch.bool)
    mask[:K] = True
    return mask


def recorded_sampling(monkeypatch):
    """Record the logits each step of target_samples.sample_batch turns into probabilities."""
    seen = []

    class Recording(target_samples.Sampling):
        def probs(self, logits):
            seen.append(logits.clone())
            return super().probs(logits)
    monkeypatch.setattr(target_samples, "Sampling", Recording)
    return seen


def reference_guided(model, rows, null, scale, allowed):
    """u + s·(c − u) from two full forwards, masked: what all three call sites must give."""
    uncond = rows.clone()
    uncond[:, : len(null)] = torch.tensor(null)
    with torch.no_grad():
        c, u = model(rows).logits.float(), model(uncond).logits.float()
    return (u + scale * (c - u)).masked_fill(~allowed, float("-inf"))


def test_three_call_sites_give_the_same_guided_masked_logits(monkeypatch):
    """Decoding (the image adapter's verifier), the distillation teacher and target sampling."""
    model, seen = tiny_lm(V), recorded_sampling(monkeypatch)
    allowed = prompt_masks(model, IMAGE_META, [])
    assert torch.equal(allowed, codes_only())  # the recipes take the adapter's mask
    prompts = torch.tensor([[K], [K + 2]])
    cont, _ = target_samples.sample_batch(model, prompts, 8, IMAGE_META, 3.0, 1.0, torch.Generator().manual_seed(0),
                                          allowed)
    rows = torch.cat([prompts, cont], 1)[:, :-1]  # [2, 8]: logits row i predicts token i + 1
    sampled = torch.stack(seen, 1)  # [2, 8, V]
    teacher = GuidedTeacher(model, IMAGE_META["unconditional_prefix"], 3.0, row_masks(model, IMAGE_META))
    with torch.no_grad():
        taught = teacher(input_ids=rows).logits
        decoded = []
        for row in rows:
            verifier = ImageModels(model, None, IMAGE_META).guided(model, 3.0)
            decoded.append(verifier.forward(row))
    reference = reference_guided(model, rows, IMAGE_META["unconditional_prefix"], 3.0, codes_only())
    for logits in (sampled, taught, torch.stack(decoded)):
        torch.testing.assert_close(logits, reference, atol=1e-4, rtol=1e-4)
    assert (cont < K).all()


def save_speech_target(folder):
    tiny_lm(SPEECH_V, seed=3, sharpen=1.0).save_pretrained(folder)
    (folder / "multispec.json").write_text(json.dumps(SPEECH_META))
    return folder


def forbidden(model, meta, prompt, continuation, length):
    """How many of the first ``length`` tokens of ``continuation`` [L] decoding's mask forbids."""
    hook = SpeechModels(model, None, meta).allowed(prompt[None])
    seq = torch.cat([prompt, continuation[:length]])
    positions = torch.arange(len(prompt), len(seq))
    return int((~hook(positions, seq[positions - 1])[torch.arange(length), seq[positions]]).sum())


def test_per_row_speech_masks_reach_every_call_site(monkeypatch):
    """Aligned layout: slot, phone-index and eos masks per prompt; sampled tokens respect them, and
    the teacher and the speech adapter's verifier give the sampler's logits."""
    model, seen = tiny_lm(SPEECH_V, seed=3, sharpen=1.0), recorded_sampling(monkeypatch)
    prompts = torch.cat([encode_phones(p) for p in PHRASES])
    masks = prompt_masks(model, SPEECH_META, list(prompts))
    cont, lengths = target_samples.sample_batch(model, prompts, 12, SPEECH_META, 1.0, 1.0,
                                                torch.Generator().manual_seed(0), masks)
    assert [forbidden(model, SPEECH_META, p, c, int(n)) for p, c, n in zip(prompts, cont, lengths)] == [0, 0]
    rows = torch.cat([prompts, cont], 1)[:, :-1]
    sampled = torch.stack(seen, 1)
    with torch.no_grad():
        taught = GuidedTeacher(model, [], 1.0, row_masks(model, SPEECH_META))(input_ids=rows).logits
        speech = SpeechModels(model, None, SPEECH_META)
        decoded = torch.stack([speech.guided(model, p[None]).forward(r) for p, r in zip(prompts, rows)])
    steps = prompts.shape[1] - 1 + torch.arange(sampled.shape[1])  # the rows that predicted sampled tokens
    for b, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(taught[b, steps[:n]], sampled[b, :n], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(decoded[b, steps[:n]], sampled[b, :n], atol=1e-4, rtol=1e-4)
    free, free_lengths = target_samples.sample_batch(model, prompts, 12, SPEECH_META, 1.0, 1.0,
                                                     torch.Generator().manual_seed(0))
    assert sum(forbidden(model, SPEECH_META, p, c, int(n)) for p, c, n in zip(prompts, free, free_lengths)) > 0


def test_target_samples_command_keeps_to_decodings_masks(tmp_path):
    """The command's image grids hold codes only; its speech rows only what decoding allows."""
    folder = tmp_path / "image"
    tiny_lm(V).save_pretrained(folder)
    (folder / "multispec.json").write_text(json.dumps(IMAGE_META))
    target_samples.main(["--target", str(folder), "--out", str(tmp_path / "image-samples"), "--num", "12",
                         "--guidance", "3", "--batch-size", "5", "--device", "cpu"])
    assert (np.load(tmp_path / "image-samples/tokens.npz")["tokens"][:, 1:] < K).all()

    target = save_speech_target(tmp_path / "speech")
    data = tmp_path / "speech-data"
    data.mkdir()
    prompts = [encode_phones(p)[0] for p in PHRASES + [["pau"]]]
    tokens = np.zeros((6, SPEECH_META["seq_len"]), dtype=np.int64)
    mask = np.zeros((6, SPEECH_META["seq_len"] - 1), dtype=bool)
    for r in range(6):
        prompt = prompts[r % 3]
        tokens[r, : len(prompt)] = prompt.numpy()
        mask[r, len(prompt) - 1:] = True
    np.savez(data / "tokens.npz", tokens=tokens, mask=mask, split=np.zeros(6, dtype=np.int8))
    target_samples.main(["--target", str(target), "--out", str(tmp_path / "speech-samples"), "--num", "6",
                         "--data", str(data), "--batch-size", "4", "--device", "cpu", "--temperature", "1"])
    out = np.load(tmp_path / "speech-samples/tokens.npz")
    model = tiny_lm(SPEECH_V, seed=3, sharpen=1.0)
    for row, scored in zip(torch.from_numpy(out["tokens"].astype(np.int64)), out["mask"]):
        start = int(scored.argmax()) + 1
        assert forbidden(model, SPEECH_META, row[:start], row[start:], int(scored.sum())) == 0


def test_a_mask_that_forbids_everything_raises():
    model, nothing = tiny_lm(V), torch.zeros(V, dtype=torch.bool)
    with pytest.raises(ValueError, match="forbids every token"):
        multispec.generate(GuidedLM(model, allowed_tokens=nothing), torch.tensor([[K]]), max_new_tokens=2)
    with pytest.raises(ValueError, match="forbids every token"):
        target_samples.sample_batch(model, torch.tensor([[K]]), 2, IMAGE_META, 3.0, 1.0, torch.Generator(), nothing)
    with pytest.raises(ValueError, match="forbids every token"):
        GuidedTeacher(model, [V - 1], 3.0, lambda rows: nothing)(input_ids=torch.tensor([[K, 0, 1]]))
    partly = torch.ones(2, V, dtype=torch.bool)
    partly[1] = False
    with pytest.raises(ValueError, match=r"1 row\(s\) \(first at index \(1,\)\)"):
        mask_logits(torch.zeros(2, V), partly)
    with pytest.raises(ValueError, match="one mask per row"):
        target_samples.sample_batch(model, torch.tensor([[K]]), 2, IMAGE_META, 1.0, 1.0, torch.Generator(),
                                    [codes_only(), codes_only()])


def test_a_masked_teacher_distils_without_nan():
    """KL towards a teacher with −inf logits (masked ids) is finite and pulls the drafter inside the mask."""
    target, draft = tiny_lm(V), tiny_lm(V, seed=1)
    teacher = GuidedTeacher(target, IMAGE_META["unconditional_prefix"], 3.0, row_masks(target, IMAGE_META))
    batch = torch.cat([torch.tensor([[K], [K + 1]]), torch.randint(0, K, (2, 8))], 1)
    loss = lm_loss(draft, batch, teacher, distill=0.8)
    assert torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in draft.parameters() if p.grad is not None)
