"""Training data for feature drafters: the target's own continuations and its hidden states on them.

1. Prompts: windows of the bundled text corpus's training split (``corpus``), or Spec-Bench
   questions outside the benchmark's evaluation slice (``spec-bench``: the first ``EVAL_PER_CATEGORY``
   questions of each category are never used), wrapped in the chat template when the tokenizer has one,
   or questions the chat target writes itself (``self-instruct``, Magpie-style: it samples a user turn
   after its own chat template's user header), so the data grows without any dataset.
   ``spec-bench+self-instruct`` takes Spec-Bench's questions and fills the rest with its own.
2. Self-distillation: the target continues each prompt greedily (batched Hugging Face generate),
   so the drafter learns on the sequences it will be asked to draft.
3. Target pass: one teacher-forced forward per batch records, for every position, the fused hidden
   states the drafter reads and the target's top-k next-token distribution (the soft labels).
Everything lands in one safetensors file (resumable: finished stages are reused).
Knows nothing about the drafter's architecture or training.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tqdm import tqdm

EVAL_PER_CATEGORY = 4  # Spec-Bench questions per category kept out of training (the bench uses the first N)
TOP_K = 8  # target probabilities kept per position
SOURCES = ("corpus", "spec-bench", "self-instruct", "spec-bench+self-instruct")  # where the prompts come from


def pad_id(tokenizer) -> int:
    """The id that pads batched prompts: the tokenizer's pad token, else its eos."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def corpus_prompts(corpus_dir: Path, tokenizer, num: int, prompt_tokens: int, seed: int) -> list[list[int]]:
    """``num`` windows of ``prompt_tokens`` tokens from random training documents of the corpus."""
    path = Path(corpus_dir) / "train.txt"
    if not path.is_file():
        raise ValueError(f"{path} not found: build the corpus first (python -m models.recipes.text.corpus)")
    docs = [d for d in path.read_text(encoding="utf-8").split("<|endoftext|>") if len(d) > 200]
    rng = random.Random(seed)
    prompts = []
    while len(prompts) < num:
        ids = tokenizer(rng.choice(docs)).input_ids
        if len(ids) < prompt_tokens + 8:
            continue
        start = rng.randrange(0, len(ids) - prompt_tokens) if rng.random() < 0.5 else 0
        prompts.append(ids[start:start + prompt_tokens])
    return prompts


def spec_bench_prompts(path: Path, tokenizer, num: int | None, seed: int, max_tokens: int = 1024) -> list[list[int]]:
    """Spec-Bench turns (each as a single-turn question), minus the first ``EVAL_PER_CATEGORY``
    questions of each category (the bench's), without prompts over ``max_tokens`` tokens."""
    seen: dict[str, int] = {}
    texts = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        seen[record["category"]] = seen.get(record["category"], 0) + 1
        if seen[record["category"]] > EVAL_PER_CATEGORY:
            texts.extend(record["turns"])
    random.Random(seed).shuffle(texts)
    texts = texts[:num] if num else texts
    if getattr(tokenizer, "chat_template", None):
        encoded = [tokenizer.apply_chat_template([{"role": "user", "content": t}], add_generation_prompt=True,
                                                 tokenize=True, return_dict=True)["input_ids"] for t in texts]
    else:
        encoded = [tokenizer(t).input_ids for t in texts]
    return [ids for ids in encoded if len(ids) <= max_tokens]


SENTINEL = "\x00multispec-user-turn\x00"


@torch.inference_mode()
def self_instruct_prompts(target, tokenizer, num: int, seed: int, question_tokens: int = 64,
                          batch: int = 32) -> list[list[int]]:
    """``num`` chat prompts whose questions the target wrote: after the template's user header it
    samples (temperature 1, top-p 0.95, seeded) up to ``question_tokens`` tokens; questions that end
    (eos) with at least 4 words and are new are wrapped in the template like any user turn."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("source self-instruct needs a chat model: the tokenizer has no chat template")
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": SENTINEL}], tokenize=False,
                                             add_generation_prompt=True)
    header = tokenizer(rendered[: rendered.index(SENTINEL)], add_special_tokens=False, return_tensors="pt").input_ids
    ids = header.expand(batch, -1)
    questions: dict[str, None] = {}  # insertion-ordered and deduplicated
    bar = tqdm(total=max(num, 0), desc="self-instruct", dynamic_ncols=True)
    rounds = 8 * num // batch + 8 if num > 0 else 0  # bounded: a model that never ends its questions gives up
    with torch.random.fork_rng():  # generate samples from the global generator: seed a private copy of it
        torch.manual_seed(seed)
        for _ in range(rounds):
            out = target.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=question_tokens,
                                  do_sample=True, temperature=1.0, top_p=0.95, top_k=None, pad_token_id=pad_id(tokenizer),
                                  eos_token_id=tokenizer.eos_token_id)[:, header.shape[1]:]
            for row in out.tolist():
                if tokenizer.eos_token_id not in row or len(questions) >= num:
                    continue
                text = tokenizer.decode(row[: row.index(tokenizer.eos_token_id)], skip_special_tokens=True).strip()
                if len(text.split()) >= 4 and text not in questions:
                    questions[text] = None
                    bar.update(1)
            if len(questions) >= num:
                break
    bar.close()
    return [tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                          tokenize=True, return_dict=True)["input_ids"] for q in questions]


@torch.inference_mode()
def continue_greedily(target, prompts: list[list[int]], new_tokens: int, batch: int, pad_id: int,
                      eos_id: int | None) -> list[list[int]]:
    """prompt + the target's greedy continuation (up to and including eos) for each prompt."""
    out = []
    prompts = sorted(prompts, key=len)  # batches of similar length pad little
    for i in tqdm(range(0, len(prompts), batch), desc="self-distil", dynamic_ncols=True):
        chunk = prompts[i:i + batch]
        width = max(len(p) for p in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, p in enumerate(chunk):  # left padding, as generate expects for decoder-only models
            ids[row, width - len(p):] = torch.tensor(p)
            mask[row, width - len(p):] = 1
        generated = target.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens, do_sample=False,
                                    pad_token_id=pad_id, eos_token_id=eos_id, temperature=None, top_k=None,
                                    top_p=None)[:, width:]
        for p, continuation in zip(chunk, generated.tolist()):
            if eos_id is not None and eos_id in continuation:
                continuation = continuation[: continuation.index(eos_id) + 1]
            out.append(p + continuation)
    return out


@torch.inference_mode()
def target_pass(target, sequences: list[list[int]], feature_layers, batch_tokens: int = 4096) -> dict:
    """Concatenated per-position records: tokens [N], features [N, F] (fp16), top_ids [N, k] (int32),
    top_probs [N, k] (fp16), offsets [S + 1] (sequence s is rows offsets[s]:offsets[s + 1])."""
    order = sorted(range(len(sequences)), key=lambda s: len(sequences[s]))
    records = {s: None for s in order}
    bar = tqdm(total=len(order), desc="target features", dynamic_ncols=True)
    i = 0
    while i < len(order):
        width = len(sequences[order[i]])
        group = [order[i]]
        while i + len(group) < len(order) and len(sequences[order[i + len(group)]]) * (len(group) + 1) <= batch_tokens:
            group.append(order[i + len(group)])
        width = max(len(sequences[s]) for s in group)
        ids = torch.zeros(len(group), width, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, s in enumerate(group):
            ids[row, : len(sequences[s])] = torch.tensor(sequences[s])
            mask[row, : len(sequences[s])] = 1
        out = target(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        features = torch.cat([out.hidden_states[j] for j in feature_layers], dim=-1)
        top = torch.softmax(out.logits.float(), dim=-1).topk(TOP_K, dim=-1)
        for row, s in enumerate(group):
            n = len(sequences[s])
            records[s] = (features[row, :n].half(), top.indices[row, :n].int(), top.values[row, :n].half())
        i += len(group)
        bar.update(len(group))
    bar.close()
    lengths = torch.tensor([0] + [len(s) for s in sequences])
    return {"tokens": torch.tensor([t for s in sequences for t in s]),
            "features": torch.cat([records[s][0] for s in range(len(sequences))]),
            "top_ids": torch.cat([records[s][1] for s in range(len(sequences))]),
            "top_probs": torch.cat([records[s][2] for s in range(len(sequences))]),
            "offsets": lengths.cumsum(0)}


def build(out: Path, target, tokenizer, source: str, num: int, new_tokens: int, feature_layers, seed: int,
          corpus_dir: Path, spec_bench: Path, prompt_tokens: int = 64, batch: int = 32, name: str = "data") -> dict:
    """The data file ``out/<name>.safetensors`` (built once; reused when present, if it holds the same
    feature layers, or more of them: then the asked layers' columns are taken). The self-distilled
    sequences (``out/sequences.json``) are shared by every name."""
    path = Path(out) / f"{name}.safetensors"
    if path.is_file():
        with safe_open(str(path), "pt") as f:
            stored = (f.metadata() or {}).get("feature_layers")
        stored = list(feature_layers) if stored is None else json.loads(stored)
        if not set(feature_layers) <= set(stored):
            raise ValueError(f"{path} holds the features of layers {stored}, not {list(feature_layers)}: "
                             f"use another --out folder")
        data = load_file(str(path))
        if stored != list(feature_layers):
            width = data["features"].shape[1] // len(stored)
            columns = torch.cat([torch.arange(width) + stored.index(layer) * width for layer in feature_layers])
            data["features"] = data["features"][:, columns]
        return data
    sequences_path = Path(out) / "sequences.json"
    if sequences_path.is_file():
        sequences = json.loads(sequences_path.read_text())
    else:
        if source not in SOURCES:
            raise ValueError(f"unknown prompt source {source!r} (one of {', '.join(SOURCES)})")
        parts = source.split("+")
        prompts = corpus_prompts(corpus_dir, tokenizer, num, prompt_tokens, seed) if "corpus" in parts else []
        if "spec-bench" in parts:
            prompts += spec_bench_prompts(spec_bench, tokenizer, num, seed)
        if "self-instruct" in parts:
            prompts += self_instruct_prompts(target, tokenizer, num - len(prompts), seed)
        sequences = continue_greedily(target, prompts, new_tokens, batch, pad_id(tokenizer), tokenizer.eos_token_id)
        Path(out).mkdir(parents=True, exist_ok=True)
        sequences_path.write_text(json.dumps(sequences))
    data = target_pass(target, sequences, feature_layers)
    save_file(data, str(path), metadata={"feature_layers": json.dumps(list(feature_layers))})
    return data
