"""Turn the synthesised speech set into text-conditioned codec-token sequences for the AR speech model.

    python -m models.recipes.speech.tokens [--data runs/speech] [--codec DIR] [--layout flattened|delay|aligned]
                                   [--max-seconds 4] [--out runs/speech/ar]

Each clip becomes [bos] text [sep] audio tokens [eos] (vocabulary: ``modalities.speech.vocab``);
the loss is scored from the first audio token to eos. Clips longer than ``--max-seconds`` are
skipped (and counted) so sequences stay short enough to train on. The ``aligned`` layout reads
phones instead of characters and labels each frame with the index of the phone it falls in and
that phone, from the phone end times flite printed at synthesis (``models.recipes.speech.data``); the
model learns to generate those labels, i.e. the durations.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from models.recipes.speech.data import load_split

SPLITS = {"train": 0, "heldout": 1}


def frame_phones(phones: list, num_frames: int, frame_rate: float) -> torch.Tensor:
    """[(phone, end s)] -> the index of the phone each frame's centre falls in [num_frames]."""
    ends = torch.tensor([end for _, end in phones], dtype=torch.float64)
    centres = (torch.arange(num_frames, dtype=torch.float64) + 0.5) / frame_rate
    return torch.searchsorted(ends, centres, right=True).clamp_max(len(phones) - 1)


def build(data_dir: Path, codec_dir: Path, out: Path, layout_name: str = "flattened",
          max_seconds: float = 4.0, num_codebooks: int | None = None) -> dict:
    from modalities.speech.codec import load_codec
    from modalities.speech.generation import make_layout
    from modalities.speech.vocab import (CODE_OFFSET, EOS, PAD, PHONE_CODE_OFFSET, PHONE_OFFSET, encode_phones,
                                         encode_text)

    codec = load_codec(codec_dir, num_codebooks)  # the bundled MelRVQ codec, or an HF EnCodec/DAC/Mimi folder
    aligned = layout_name == "aligned"
    meta = {"modality": "speech", "layout": layout_name, "num_codebooks": codec.num_codebooks,
            "codebook_size": codec.codebook_size, "frame_rate": codec.frame_rate,
            "sample_rate": codec.sample_rate, "code_offset": PHONE_CODE_OFFSET if aligned else CODE_OFFSET,
            "text_units": "phones" if aligned else "chars", "bos": 1, "eos": EOS, "pad": PAD,
            # greedy decoding stalls on a phone (see the speech-target card): sample by default
            **({"default_temperature": 0.7} if aligned else {}),
            "condition_dropout": 0.0, "unconditional_prefix": []}
    layout = make_layout(meta)
    meta["vocab_size"] = layout.offset + layout.num_tokens
    rows, split, skipped = [], [], 0
    with torch.inference_mode():
        for name, code in SPLITS.items():
            for info, wave in tqdm(load_split(data_dir, name), desc=f"encode {name}", mininterval=10):
                wave = torch.from_numpy(wave.astype(np.float32) / 32768.0)
                if wave.numel() > max_seconds * codec.sample_rate:
                    skipped += 1
                    continue
                frames = codec.encode(wave, codec.sample_rate)
                if aligned:
                    if "phones" not in info:
                        raise ValueError(f"{data_dir}/{name}.jsonl has no phone times: rebuild it with "
                                         "python -m models.recipes.speech.data")
                    prompt = encode_phones([p for p, _ in info["phones"]])[0]
                    audio = layout.to_tokens(frames, frame_phones(info["phones"], len(frames), codec.frame_rate),
                                             prompt[2:-1:2] - PHONE_OFFSET)
                else:
                    prompt = encode_text(info["text"])[0]
                    audio = layout.to_tokens(frames)
                rows.append(torch.cat([prompt, audio, torch.tensor([EOS])]).numpy())
                split.append((code, len(prompt)))
    length = max(len(r) for r in rows)
    tokens = np.full((len(rows), length), PAD, np.int16)
    mask = np.zeros((len(rows), length - 1), bool)
    for i, (row, (_, prompt_len)) in enumerate(zip(rows, split)):
        tokens[i, :len(row)] = row
        mask[i, prompt_len - 1:len(row) - 1] = True  # targets: every audio token and eos
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / "tokens.npz", tokens=tokens, mask=mask,
                        split=np.array([s for s, _ in split], np.int8))
    meta.update(seq_len=int(length), train_sequences=sum(s == 0 for s, _ in split),
                heldout_sequences=sum(s == 1 for s, _ in split), skipped_longer_than_s=[max_seconds, skipped])
    (out / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    return meta


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("runs/speech"))
    ap.add_argument("--codec", type=Path, default=Path("runs/speech/codec"))
    ap.add_argument("--layout", choices=["flattened", "delay", "aligned"], default="aligned",
                    help="aligned (phones, the bundled model) or flattened / delay (characters)")
    ap.add_argument("--max-seconds", type=float, default=4.0)
    ap.add_argument("--num-codebooks", type=int, help="K of a Hugging Face codec (default: its own)")
    ap.add_argument("--out", type=Path, default=Path("runs/speech/ar"))
    args = ap.parse_args()
    meta = build(args.data, args.codec, args.out, args.layout, args.max_seconds, args.num_codebooks)
    print(json.dumps({k: meta[k] for k in ("vocab_size", "seq_len", "train_sequences", "heldout_sequences",
                                           "skipped_longer_than_s")}))


if __name__ == "__main__":
    main()
