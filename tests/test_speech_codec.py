"""Speech adapter: MelRVQCodec and HFCodec shapes and errors, token layouts, WER arithmetic.
Codecs are fitted inside the tests on a few seconds of a synthetic vowel-like signal (CPU, fast)."""

from __future__ import annotations

import functools
import math
import shutil

import numpy as np
import pytest
import torch

from modalities.speech import (AlignedLayout, DelayLayout, FlattenedLayout, HFCodec, MelRVQCodec, MelRVQConfig, corpus_wer,
                               normalize_text, word_error_rate)

SR = 16000


def voiced(seconds: float, f0: float, seed: int) -> torch.Tensor:
    """A harmonic signal with a gliding pitch and a little noise: [n] float."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * SR)) / SR
    pitch = f0 * (1 + 0.2 * torch.sin(2 * math.pi * 0.7 * t))
    phase = 2 * math.pi * torch.cumsum(pitch, 0) / SR
    wave = sum(torch.sin(h * phase) / h for h in range(1, 12)) * (0.5 + 0.5 * torch.sin(2 * math.pi * 2 * t))
    return 0.2 * wave + 0.01 * torch.randn(len(t), generator=g)


@functools.lru_cache(maxsize=None)
def codec(k: int = 2) -> MelRVQCodec:
    cfg = MelRVQConfig(num_codebooks=k, codebook_size=32, griffin_lim_iters=8)
    waves = [voiced(1.0, f0, seed) for seed, f0 in enumerate((110, 160, 220))]
    return MelRVQCodec.fit(waves, cfg, iters=10, generator=torch.Generator().manual_seed(0))


# ---- MelRVQCodec ----------------------------------------------------------------------------

def test_encode_decode_shapes_and_dtypes():
    c, wave = codec(), voiced(0.5, 130, seed=7)
    codes = c.encode(wave, SR)
    assert codes.dtype == torch.long and codes.shape == (len(wave) // 160 + 1, 2)
    assert 0 <= codes.min() and codes.max() < c.codebook_size
    audio = c.decode(codes)
    assert audio.dtype == torch.float32 and audio.shape == ((len(codes) - 1) * 160,)
    assert c.frame_rate == 100 and c.sample_rate == SR and c.num_codebooks == 2
    assert [tuple(t.shape) for t in c.codebooks] == [(32, 80)] * 2


def test_round_trip_codes_mostly_stable():
    c = codec()
    codes = c.encode(voiced(0.5, 130, seed=7), SR)
    again = c.encode(c.decode(codes), SR)
    # the first codebook (coarse spectral envelope) survives Griffin-Lim on most frames
    assert (again[:, 0] == codes[:, 0]).float().mean() > 0.5


def test_fit_is_seeded():
    cfg = MelRVQConfig(num_codebooks=2, codebook_size=16)
    waves = [voiced(0.5, 150, seed=1)]
    a = MelRVQCodec.fit(waves, cfg, iters=3, generator=torch.Generator().manual_seed(3))
    b = MelRVQCodec.fit(waves, cfg, iters=3, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.codebook, b.codebook)


def test_resample_path():
    c, wave = codec(), voiced(0.5, 130, seed=7)
    wave8k = torch.nn.functional.avg_pool1d(wave[None, None], 2)[0, 0]  # crude 8 kHz copy
    codes = c.encode(wave8k, 8000)
    assert codes.shape == (len(wave8k) * 2 // 160 + 1, 2)


def test_save_and_load(tmp_path):
    c = codec()
    c.save(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {"config.json", "model.safetensors"}
    d = MelRVQCodec.from_pretrained(tmp_path)
    wave = voiced(0.3, 200, seed=2)
    assert d.config == c.config and torch.equal(d.encode(wave, SR), c.encode(wave, SR))


def test_input_errors():
    c = codec()
    with pytest.raises(ValueError, match="mono"):
        c.encode(torch.zeros(2, 1600), SR)
    with pytest.raises(ValueError, match="empty"):
        c.encode(torch.zeros(0), SR)
    with pytest.raises(ValueError, match="float"):
        c.encode(torch.zeros(1600, dtype=torch.int16), SR)
    with pytest.raises(ValueError, match=r"\[0, 32\)"):
        c.decode(torch.tensor([[0, 32]]))
    with pytest.raises(ValueError, match=r"\[0, 32\)"):
        c.decode(torch.tensor([[-1, 0]]))
    with pytest.raises(ValueError, match="shape"):
        c.decode(torch.zeros(4, 3, dtype=torch.long))
    c.encode(torch.zeros(1, 1600), SR)  # [1, n] is mono


# ---- HFCodec --------------------------------------------------------------------------------

def _tiny_hf(kind: str):
    import transformers as T
    torch.manual_seed(0)  # tests only: the transformers constructors draw from the global generator
    if kind == "encodec":
        return T.EncodecModel(T.EncodecConfig(num_filters=4, hidden_size=8, codebook_size=16, codebook_dim=8,
                                              upsampling_ratios=[8, 5], sampling_rate=SR, num_lstm_layers=1,
                                              target_bandwidths=[3.2, 6.4], audio_channels=1))
    if kind == "dac":
        return T.DacModel(T.DacConfig(encoder_hidden_size=4, downsampling_ratios=[2, 4], decoder_hidden_size=8,
                                      n_codebooks=3, codebook_size=16, codebook_dim=4, hidden_size=16, sampling_rate=SR))
    return T.MimiModel(T.MimiConfig(hidden_size=16, num_filters=4, upsampling_ratios=[4, 4], codebook_size=16,
                                    codebook_dim=8, vector_quantization_hidden_dimension=8, num_quantizers=4,
                                    num_semantic_quantizers=1, num_hidden_layers=1, num_attention_heads=2,
                                    num_key_value_heads=2, head_dim=8, intermediate_size=32, sampling_rate=SR,
                                    upsample_groups=16, sliding_window=16))


@pytest.mark.parametrize("kind,frames", [("encodec", 40), ("dac", 200), ("mimi", 50)])
def test_hf_codec_tiny(kind, frames):
    c = HFCodec(_tiny_hf(kind), num_codebooks=2)
    codes = c.encode(voiced(0.1, 150, seed=0), SR)
    assert codes.dtype == torch.long and codes.shape == (frames, 2)
    assert len(c.codebooks) == 2 and c.codebooks[0].shape[0] == c.codebook_size == 16
    audio = c.decode(codes)
    assert audio.dim() == 1 and abs(len(audio) - 1600) < 64
    with pytest.raises(ValueError):
        c.decode(torch.full((4, 2), 16))
    with pytest.raises(ValueError, match="mono"):
        c.encode(torch.zeros(2, 160), SR)


# ---- layouts --------------------------------------------------------------------------------

FRAMES = torch.tensor([[1, 2, 3], [4, 5, 6], [7, 0, 9], [10, 11, 12]])  # T=4, K=3, C=16


def test_flattened_round_trip_and_slots():
    lay = FlattenedLayout(3, 16, offset=5)
    tokens = lay.to_tokens(FRAMES)
    assert tokens[:3].tolist() == [5 + 1, 5 + 16 + 2, 5 + 32 + 3] and len(tokens) == 12
    assert torch.equal(lay.to_frames(tokens), FRAMES)
    assert torch.equal(lay.to_frames(tokens[:-1]), FRAMES[:3])  # truncated last frame dropped
    assert torch.equal(lay.codebook_of(tokens), torch.arange(12) % 3)
    assert lay.codebook_of(torch.tensor([0, 5 + 48])).tolist() == [-1, -1]
    assert [lay.slot(p) for p in range(5)] == [0, 1, 2, 0, 1]
    assert torch.equal(lay.slots(torch.tensor([[0, 4], [5, 9]])), torch.tensor([[0, 1], [2, 0]]))


def test_flattened_masks():
    lay = FlattenedLayout(3, 16, offset=5)
    m = lay.allowed_mask(4, vocab_size=60, always_allowed=[2])
    assert m.shape == (60,) and m.dtype == torch.bool
    assert m.nonzero().squeeze(1).tolist() == [2] + list(range(21, 37))
    ms = lay.allowed_masks(torch.tensor([[0, 4]]), 60)
    assert ms.shape == (1, 2, 60) and torch.equal(ms[0, 1], lay.allowed_mask(4, 60))
    tokens = lay.to_tokens(FRAMES)
    assert lay.allowed_masks(torch.arange(12), 60)[torch.arange(12), tokens].all()
    with pytest.raises(ValueError, match="vocab_size"):
        lay.allowed_mask(0, 50)


def test_delay_round_trip_and_corners():
    lay = DelayLayout(3, 16, offset=5)
    pad = lay.pad_id
    assert pad == 5 + 48 and lay.vocab_end == 54
    tokens = lay.to_tokens(FRAMES)
    assert len(tokens) == (4 + 2) * 3
    grid = tokens.view(6, 3)
    assert grid[0].tolist() == [6, pad, pad] and grid[1].tolist() == [9, 5 + 16 + 2, pad]
    assert grid[5].tolist() == [pad, pad, 5 + 32 + 12]
    assert torch.equal(lay.to_frames(tokens), FRAMES)
    assert torch.equal(lay.to_frames(tokens[:-1]), FRAMES[:3])  # truncated last row
    assert torch.equal(lay.to_frames(tokens[:9]), FRAMES[:1])  # 3 rows -> frame 0 only
    assert lay.to_frames(tokens[:4]).shape == (0, 3)
    early = tokens.clone().view(6, 3)
    early[3, 0] = pad  # the model pads codebook 0 after 3 frames
    assert torch.equal(lay.to_frames(early.reshape(-1)), FRAMES[:3])
    assert lay.codebook_of(torch.tensor([pad, 6, 5 + 20])).tolist() == [-1, 0, 1]


def test_delay_masks():
    lay = DelayLayout(3, 16, offset=5)
    tokens = lay.to_tokens(FRAMES)
    masks = lay.allowed_masks(torch.arange(len(tokens)), 60)
    assert masks[torch.arange(len(tokens)), tokens].all()
    assert lay.allowed_mask(2, 60).nonzero().squeeze(1).tolist() == [lay.pad_id]  # row 0, slot 2
    assert lay.allowed_mask(3, 60)[lay.pad_id]  # slot 0 may pad: that ends the audio
    assert lay.allowed_mask(4, 60)[5 + 16] and not lay.allowed_mask(4, 60)[5]  # row 1, slot 1
    assert lay.allowed_mask(7, 60)[lay.pad_id] and lay.allowed_mask(7, 60).sum() == 17


def test_layout_errors():
    for lay in (FlattenedLayout(3, 16), DelayLayout(3, 16)):
        with pytest.raises(ValueError, match=r"\[0, 16\)"):
            lay.to_tokens(torch.tensor([[0, 16, 0]]))
        with pytest.raises(ValueError, match="shape"):
            lay.to_tokens(torch.zeros(2, 2, dtype=torch.long))
        bad = lay.to_tokens(FRAMES).clone()
        bad[7] = 0  # slot 1 holds a codebook-0 id
        with pytest.raises(ValueError, match="codebook"):
            lay.to_frames(bad)
        with pytest.raises(ValueError):
            lay.slot(-1)
    with pytest.raises(ValueError, match="pad"):
        DelayLayout(3, 16).to_frames(torch.tensor([0, 16, 32]))


def test_aligned_round_trip_masks_and_errors():
    lay = AlignedLayout(3, 16, offset=40, index_offset=8, max_index=20, phone_offset=30, num_phones=10)
    index, phones = torch.tensor([0, 0, 1, 3]), torch.tensor([5, 2, 7, 9])  # 4 prompt phones
    tokens = lay.to_tokens(FRAMES, index, phones)
    assert lay.tokens_per_frame == 5 and len(tokens) == 20 and lay.num_positions(4) == 20
    assert tokens[:5].tolist() == [8, 30 + 5, 40 + 1, 40 + 16 + 2, 40 + 32 + 3]
    assert torch.equal(lay.to_frames(tokens), FRAMES) and torch.equal(lay.phone_index(tokens), index)
    assert lay.phones(tokens).tolist() == [5, 5, 2, 9]
    assert torch.equal(lay.to_frames(tokens[:-1]), FRAMES[:3])  # truncated last frame dropped
    masks = lay.allowed_masks(torch.arange(20), 100, always_allowed=[3])
    assert masks[torch.arange(20), tokens].all()
    assert masks[0].nonzero().squeeze(1).tolist() == [3] + list(range(8, 28))  # index slot
    assert masks[1].nonzero().squeeze(1).tolist() == [3] + list(range(30, 40))  # phone slot
    assert masks[2].nonzero().squeeze(1).tolist() == [3] + list(range(40, 56))  # codebook 0
    with pytest.raises(ValueError, match="phone index and the prompt's phones"):
        lay.to_tokens(FRAMES)
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        lay.to_tokens(FRAMES, torch.tensor([0, 1, 2, 4]), phones)
    bad = tokens.clone()
    bad[5] = 41  # a code where frame 1's index belongs
    with pytest.raises(ValueError, match="phone-index"):
        lay.to_frames(bad)
    with pytest.raises(ValueError, match="below the codes"):
        AlignedLayout(3, 16, offset=20, index_offset=8, max_index=20, phone_offset=30, num_phones=10)


def test_frame_phone_labels():
    from models.recipes.speech.tokens import frame_phones
    phones = [("pau", 0.05), ("hh", 0.09), ("ay", 0.2)]
    # 50 frames/s: centres 0.01, 0.03, 0.05, 0.07, ...; a centre on an end time belongs to the next phone
    assert frame_phones(phones, 12, 50.0).tolist() == [0, 0, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2]


# ---- WER ------------------------------------------------------------------------------------

def test_word_error_rate():
    assert normalize_text("Hello, World!  It's  co-operative.") == "hello world it's co operative"
    assert word_error_rate("the cat sat", "the cat sat") == 0
    assert word_error_rate("the cat sat", "the bat sat") == pytest.approx(1 / 3)
    assert word_error_rate("the cat sat", "cat sat down now") == pytest.approx(3 / 3)
    assert word_error_rate("", "") == 0 and word_error_rate("", "x") == 1
    assert corpus_wer([("a b c d", "a b c d"), ("e f", "")]) == pytest.approx(2 / 6)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("flite") is None, reason="needs flite (apt-get install -y flite)")
def test_transcribe_flite(tmp_path):
    import subprocess

    import soundfile as sf

    from modalities.speech import transcribe
    path = tmp_path / "s.wav"
    subprocess.run(["flite", "-voice", "slt", "-t", "The quick brown fox jumps over the lazy dog.", "-o", str(path)],
                   check=True)
    wave, sr = sf.read(path, dtype="float32")
    assert sr == SR and word_error_rate("the quick brown fox jumps over the lazy dog",
                                        transcribe(torch.from_numpy(wave))) <= 0.2


def test_speech_data_voices():
    """models.recipes.speech.data: voices are taken in turn; an unknown or 8 kHz voice is refused by name."""
    from models.recipes.speech import data as speech_data

    with pytest.raises(ValueError, match="'kal' is not a 16 kHz voice"):
        speech_data.SpeechDataConfig(voices=("slt", "kal"))
    with pytest.raises(SystemExit):
        speech_data.main(["--voices", "slt,nobody"])
    if shutil.which("flite") is None:
        pytest.skip("needs flite (apt-get install -y flite)")
    cfg = speech_data.SpeechDataConfig(voices=("slt", "awb"), processes=1)
    (slt, phones), (awb, _) = speech_data.synthesize(["Good morning.", "Good morning."], cfg)
    assert slt.dtype == np.int16 and awb.dtype == np.int16 and phones
    assert slt.shape != awb.shape or not np.array_equal(slt, awb)  # two speakers, not one
