import sys, json, torch, torchaudio
from modalities.speech.generation import SpeechModels
from modalities.speech import wer
torch.set_num_threads(1)
d = torch.load(sys.argv[1])
codec = SpeechModels.from_zoo(with_draft=False).codec
c = codec.config
def to_wave(logmel, iters, mom=0.99):
    spec = codec.inverse_mel(logmel.T.exp()).clamp_min(0)
    return torchaudio.functional.griffinlim(spec, codec.window, c.n_fft, c.hop_length, c.n_fft, 1.0, iters, mom,
                                            (logmel.shape[0] - 1) * c.hop_length, False)
def smooth(lm, w):
    k = torch.tensor(w)[None, None] / sum(w)
    x = torch.nn.functional.pad(lm.T[:, None], (len(w)//2, len(w)//2), mode="replicate")
    return torch.nn.functional.conv1d(x, k)[:, 0].T
variants = {"gl32": lambda lm: to_wave(lm, 32), "gl100": lambda lm: to_wave(lm, 100),
            "sm121_gl32": lambda lm: to_wave(smooth(lm, [1., 2., 1.]), 32),
            "sm121_gl100": lambda lm: to_wave(smooth(lm, [1., 2., 1.]), 100)}
for name, fn in variants.items():
    pairs = []
    for s, fr in zip(d["sents"], d["frames"]):
        if fr.shape[0] == 0: pairs.append((s, "")); continue
        pairs.append((s, wer.transcribe(fn(codec.dequantize(fr)), c.sample_rate)))
    print(name, round(wer.corpus_wer(pairs), 4), flush=True)
