"""A tiny *random* Llama target/draft pair with a real byte-level BPE tokenizer, for tests and demos.

Used where no trained checkpoint is needed (or until the bundled models exist): the weights are
random, so the text is gibberish and acceptance rates mean nothing. Deterministic for a given seed.

    python -m models.recipes.tiny_random OUT_DIR      # writes OUT_DIR/target and OUT_DIR/draft
"""
from __future__ import annotations

import argparse
import pathlib
import sysconfig

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

EOS = "<|endoftext|>"


def build_tokenizer(vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained in a second on a few CPython standard-library files (always present)."""
    stdlib = pathlib.Path(sysconfig.get_paths()["stdlib"])
    texts = [(stdlib / name).read_text(encoding="utf-8") for name in ("textwrap.py", "string.py", "shlex.py")]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, bos_token=EOS, pad_token=EOS)


def build_pair(seed: int = 0, vocab_size: int = 512):
    """(target, draft, tokenizer): a 4-layer and a 1-layer random Llama sharing the tokenizer."""
    tokenizer = build_tokenizer(vocab_size)
    shapes = {"target": (4, 128), "draft": (1, 64)}
    out = {}
    for i, (name, (layers, hidden)) in enumerate(shapes.items()):
        torch.manual_seed(seed + i)
        config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                             num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                             max_position_embeddings=1024, eos_token_id=tokenizer.eos_token_id,
                             bos_token_id=tokenizer.bos_token_id, pad_token_id=tokenizer.pad_token_id)
        out[name] = LlamaForCausalLM(config).eval()
    return out["target"], out["draft"], tokenizer


def save_pair(directory: str | pathlib.Path, seed: int = 0) -> dict[str, pathlib.Path]:
    directory = pathlib.Path(directory)
    target, draft, tokenizer = build_pair(seed)
    paths = {}
    for name, model in (("target", target), ("draft", draft)):
        paths[name] = directory / name
        model.save_pretrained(paths[name], safe_serialization=True)
        tokenizer.save_pretrained(paths[name])
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="directory to write target/ and draft/ into")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for name, path in save_pair(args.out, args.seed).items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
