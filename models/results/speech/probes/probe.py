"""Probe: plain decoding WER with a separate temperature for code tokens.
python probe.py T SCALE N SEED [TOP_K]; saves the frames to runs/speech-probes/ for decode.py."""
import sys, json, time, torch
from multispec import guidance
from modalities.speech.generation import SpeechModels, generate_codes
from modalities.speech.cli import default_sentences
from modalities.speech import wer

T, code_scale, n, seed = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
topk = int(sys.argv[5]) if len(sys.argv) > 5 and sys.argv[5] != "0" else None
torch.set_num_threads(1)
models = SpeechModels.from_zoo(with_draft=False)
lo, hi = models.layout.offset, models.layout.vocab_end
orig = guidance.GuidedLM.forward_rows
def forward_rows(self, tokens, last_only=False, allowed=None):
    logits = orig(self, tokens, last_only, allowed).clone()
    logits[..., lo:hi] *= code_scale
    return logits
guidance.GuidedLM.forward_rows = forward_rows
sents = default_sentences(n)
pairs = []; frames = []
t0 = time.time()
for i, s in enumerate(sents):
    g = torch.Generator().manual_seed(seed * 1000 + i)
    smp = generate_codes(models, s, temperature=T, top_k=topk, generator=g)
    wave = models.codec.decode(smp.frames) if smp.frames.shape[0] else torch.zeros(0)
    hyp = wer.transcribe(wave, models.codec.sample_rate) if wave.numel() else ""
    pairs.append((s, hyp)); frames.append(smp.frames)
print(json.dumps({"T": T, "code_scale": code_scale, "topk": topk, "n": n, "seed": seed,
                  "wer": wer.corpus_wer(pairs), "s": round(time.time() - t0)}), flush=True)
import pathlib
out = pathlib.Path("runs/speech-probes")
out.mkdir(parents=True, exist_ok=True)
torch.save({"sents": sents, "frames": frames}, out / f"frames_{T}_{code_scale}_{n}_{seed}.pt")
