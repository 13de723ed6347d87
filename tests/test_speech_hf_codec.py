"""HFCodec end to end: tiny random EnCodec, DAC and Mimi models saved as Hugging Face codec folders,
each with a tiny random Llama speech model (and drafter) whose multispec.json matches the codec,
through load_codec, generate_speech, `multispec speech` (a WAV file) and `multispec bench speech`
(a results file); greedy speculative decoding must equal plain decoding. Plus load_codec's errors."""
from __future__ import annotations

import json

import pytest
import soundfile
import torch
from test_speech import tiny_lm
from test_speech_codec import SR, _tiny_hf, codec as fitted_mel_codec, voiced

from modalities.cli import main
from modalities.speech.codec import Codec, HFCodec, MelCodec, MelRVQCodec, load_codec
from modalities.speech.generation import SpeechModels, generate_codes, generate_speech, make_layout
from modalities.speech.vocab import CODE_OFFSET, EOS, PAD
from multispec.methods import DraftModelConfig, Method, NeighborhoodConfig, PromptLookupConfig

KINDS = ("encodec", "dac", "mimi")
LAYOUT = {"encodec": "flattened", "dac": "delay", "mimi": "flattened"}  # delay covers the pad corner too
TARGET_SEED = {"encodec": 0, "dac": 2, "mimi": 0}  # a random target whose greedy output has frames for TEXTS
FRAMES = 10  # frames to generate at most: the tiny codecs run at 400 to 2000 frames/s
TEXTS = ["hello there.", "good day."]


def speech_meta(codec: Codec, layout: str) -> dict:
    """The vocabulary meta a character model over ``codec``'s codes has (as models.recipes.speech.tokens
    writes it)."""
    meta = {"modality": "speech", "layout": layout, "num_codebooks": codec.num_codebooks,
            "codebook_size": codec.codebook_size, "frame_rate": codec.frame_rate, "sample_rate": codec.sample_rate,
            "code_offset": CODE_OFFSET, "text_units": "chars", "bos": 1, "eos": EOS, "pad": PAD}
    meta["vocab_size"] = make_layout(meta).vocab_end
    return meta


def save_token_lm(model, meta: dict, folder):
    model.save_pretrained(folder)  # safetensors
    (folder / "multispec.json").write_text(json.dumps(meta))
    return folder


@pytest.fixture(scope="module", params=KINDS)
def folders(request, tmp_path_factory):
    """(kind, {"target", "draft", "codec": folder}, max_seconds) for one tiny Hugging Face codec."""
    kind, root = request.param, tmp_path_factory.mktemp(request.param)
    _tiny_hf(kind).save_pretrained(root / "codec")
    codec = load_codec(root / "codec", num_codebooks=2)
    meta = speech_meta(codec, LAYOUT[kind])
    paths = {"codec": root / "codec",
             "target": save_token_lm(tiny_lm(meta["vocab_size"], 2, 32, TARGET_SEED[kind]), meta, root / "target"),
             "draft": save_token_lm(tiny_lm(meta["vocab_size"], 1, 16, 1), meta, root / "draft")}
    return kind, paths, FRAMES / codec.frame_rate


def model_flags(paths) -> list[str]:
    return [flag for name in ("target", "codec", "draft") for flag in (f"--{name}", str(paths[name]))]


def test_load_codec_picks_the_class_from_the_folder(folders, tmp_path):
    kind, paths, _ = folders
    codec = load_codec(paths["codec"], num_codebooks=2)
    assert isinstance(codec, HFCodec) and isinstance(codec, Codec) and not isinstance(codec, MelCodec)
    wave = voiced(0.05, 150, seed=0)
    in_memory = HFCodec(_tiny_hf(kind), num_codebooks=2)  # same seed: the weights the folder holds
    assert torch.equal(codec.encode(wave, SR), in_memory.encode(wave, SR))
    fitted_mel_codec().save(tmp_path / "mel")
    mel = load_codec(tmp_path / "mel")
    assert isinstance(mel, MelRVQCodec) and isinstance(mel, MelCodec)


def test_generate_speech_greedy_speculative_equals_plain(folders):
    kind, paths, seconds = folders
    models = SpeechModels.from_folders(paths["target"], paths["codec"], paths["draft"])
    assert isinstance(models.codec, HFCodec) and models.codec.num_codebooks == 2
    for text in TEXTS:
        plain = generate_codes(models, text, Method(), max_seconds=seconds, temperature=0.0)
        for drafter in (DraftModelConfig(), PromptLookupConfig()):
            fast = generate_codes(models, text, Method(drafter), max_seconds=seconds, temperature=0.0)
            assert torch.equal(plain.tokens, fast.tokens), (kind, text, drafter.name)
        assert plain.frames.shape[0] > 0 and plain.frames.shape[1] == 2
    wave, stats = generate_speech(models, TEXTS[0], method=Method(DraftModelConfig()), max_seconds=seconds,
                                  temperature=0.0)
    frames = generate_codes(models, TEXTS[0], Method(), max_seconds=seconds, temperature=0.0).frames
    assert torch.equal(wave, models.codec.decode(frames)) and wave.dim() == 1 and stats.new_tokens > 0
    # the neighbourhood rule searches the codec's own code tables
    tolerant = generate_codes(models, TEXTS[1], Method(DraftModelConfig(), NeighborhoodConfig(delta=0.5, neighbors=64)),
                              max_seconds=seconds, temperature=0.0)
    allowed = models.layout.allowed_masks(torch.arange(tolerant.tokens.shape[0]), models.vocab_size)
    assert allowed[torch.arange(tolerant.tokens.shape[0]), tolerant.tokens].all()


def test_speech_command_writes_a_wav(folders, tmp_path):
    _, paths, seconds = folders
    out = tmp_path / "out.wav"
    assert main(["speech", TEXTS[0], *model_flags(paths), "--drafter", "draft", "--acceptance", "exact",
                 "--temperature", "0", "--max-seconds", str(seconds), "-o", str(out)]) == 0
    audio, rate = soundfile.read(out)
    assert rate == load_codec(paths["codec"], 2).sample_rate and audio.ndim == 1 and len(audio) > 0


def test_speech_bench_writes_results(folders, tmp_path):
    _, paths, seconds = folders
    sentences = tmp_path / "sentences.txt"
    sentences.write_text("\n".join(TEXTS) + "\n")
    out = tmp_path / "bench"
    assert main(["bench", "speech", *model_flags(paths), "--sentences", str(sentences), "--quick", "--no-wer",
                 "--temperature", "0", "--max-seconds", str(seconds), "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["settings"]["codec"] == "HFCodec" and results["settings"]["log_mel_of"] == "decoded audio"
    plain, draft = results["rows"][:2]
    assert draft["identical_to_plain"] == len(TEXTS) and draft["log_mel_l1_vs_plain"] == 0.0
    assert plain["length_ratio"] == 1.0 and (out / "results.md").is_file() and any((out / "wav").glob("*.wav"))
    pooled_out = tmp_path / "pooled"  # --seeds: one run per seed, then one pooled table
    assert main(["bench", "speech", *model_flags(paths), "--sentences", str(sentences), "--methods", "draft",
                 "--no-wer", "--seeds", "0,1", "--max-seconds", str(seconds), "--out", str(pooled_out)]) == 0
    pooled = json.loads((pooled_out / "pooled.json").read_text())
    assert pooled["seeds"] == [0, 1] and [r["method"] for r in pooled["rows"]] == ["plain", "draft"]
    assert pooled["rows"][1]["seeds"] == 2 and "wer" not in pooled["rows"][1]
    assert (pooled_out / "seed0" / "results.json").is_file() and (pooled_out / "seed1" / "results.json").is_file()


def test_load_codec_errors(tmp_path):
    with pytest.raises(ValueError, match="no config.json: not a codec folder"):
        load_codec(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="model_type 'llama', not a codec multispec reads"):
        load_codec(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 8}))
    with pytest.raises(ValueError, match="neither .* nor a Hugging Face model_type"):
        load_codec(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"codec": "OtherCodec"}))
    with pytest.raises(ValueError, match="the multispec codec is MelRVQCodec"):
        load_codec(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(ValueError, match="no .safetensors weights"):
        load_codec(tmp_path)
    with pytest.raises(ValueError, match="has 3 codebooks; cannot use 4"):
        HFCodec(_tiny_hf("dac"), num_codebooks=4)


def test_a_codec_that_does_not_match_the_model_is_refused():
    codec = HFCodec(_tiny_hf("encodec"), num_codebooks=2)
    meta = speech_meta(codec, "flattened")
    lm = tiny_lm(meta["vocab_size"], 1, 16, 0)
    with pytest.raises(ValueError, match=r"frame_rate 50.0 \(codec: 400.0\)"):
        SpeechModels(lm, codec, {**meta, "frame_rate": 50.0})
    with pytest.raises(ValueError, match="object is not a speech codec: it lacks sample_rate, frame_rate"):
        SpeechModels(lm, object(), meta)
