"""Model shapes and training presets for the bundled text target and drafter.

Pure configuration: dataclasses, the named presets (``cpu``, ``gpu``) and the conversion of a
shape to a ``transformers.LlamaConfig``. Knows nothing about data or the training loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from transformers import LlamaConfig

VOCAB_SIZE = 8192
EOS_TOKEN = "<|endoftext|>"  # also the BOS token and the document separator
PAD_TOKEN = "<|pad|>"
EOS_ID = 0  # special tokens come first in the trained vocabulary
PAD_ID = 1


@dataclass(frozen=True)
class ModelShape:
    """Width and depth of one Llama-style decoder (tied input/output embeddings)."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    max_positions: int = 1024
    rope_theta: float = 10000.0

    def config(self, vocab_size: int = VOCAB_SIZE, bos: int = EOS_ID, eos: int = EOS_ID,
               pad: int = PAD_ID) -> LlamaConfig:
        """A ``LlamaConfig`` for this shape (default: the bundled text tokenizer's special ids)."""
        if self.hidden % self.heads or self.heads % self.kv_heads:
            raise ValueError(f"heads {self.heads}/{self.kv_heads} do not divide hidden {self.hidden}")
        return LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=self.hidden,
            intermediate_size=self.intermediate,
            num_hidden_layers=self.layers,
            num_attention_heads=self.heads,
            num_key_value_heads=self.kv_heads,
            max_position_embeddings=self.max_positions,
            rope_parameters={"rope_type": "default", "rope_theta": self.rope_theta},
            tie_word_embeddings=True,
            bos_token_id=bos,
            eos_token_id=eos,
            pad_token_id=pad,
            rms_norm_eps=1e-5,
        )

    def num_params(self, vocab_size: int = VOCAB_SIZE) -> int:
        """Parameter count with tied embeddings (the embedding matrix counted once)."""
        head_dim = self.hidden // self.heads
        attn = 2 * self.hidden * self.hidden + 2 * self.hidden * self.kv_heads * head_dim
        mlp = 3 * self.hidden * self.intermediate
        per_layer = attn + mlp + 2 * self.hidden  # + two RMSNorm weights
        return vocab_size * self.hidden + self.layers * per_layer + self.hidden


@dataclass(frozen=True)
class TrainSpec:
    """Optimisation settings for one model. The LR schedule is linear warmup then cosine to
    ``min_lr_ratio * lr``; its progress is max(step / max_steps, elapsed / budget), so a run
    that hits its wall-clock budget first still ends on a decayed learning rate."""

    max_steps: int
    batch_size: int
    seq_len: int
    lr: float
    minutes: float  # wall-clock budget for this model (training + evaluation)
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    eval_every: int = 250
    eval_tokens: int = 131072  # held-out tokens per evaluation (contiguous windows)
    checkpoint_every: int = 500
    log_every: int = 10
    distill: float = 0.0  # drafter only: weight of KL(p_target ‖ q_draft) against the trained target

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len


@dataclass(frozen=True)
class ModelPreset:
    """Everything needed to train a bundled target and drafter on one kind of machine."""

    name: str
    target: ModelShape
    draft: ModelShape
    target_train: TrainSpec
    draft_train: TrainSpec
    seed: int = 1234
    notes: str = field(default="", compare=False)

    def shape(self, which: str) -> ModelShape:
        return {"target": self.target, "draft": self.draft}[which]

    def train_spec(self, which: str) -> TrainSpec:
        return {"target": self.target_train, "draft": self.draft_train}[which]

    def with_overrides(self, **spec_overrides) -> "ModelPreset":
        """Copy with the given ``TrainSpec`` fields replaced for both models (None = keep)."""
        kv = {k: v for k, v in spec_overrides.items() if v is not None}
        if not kv:
            return self
        return replace(self, target_train=replace(self.target_train, **kv),
                       draft_train=replace(self.draft_train, **kv))


# Shapes chosen from the CPU step-cost measurements in models/results/text/SHAPES.md.
GPU_TARGET = ModelShape(hidden=320, layers=14, heads=5, kv_heads=5, intermediate=864)
GPU_DRAFT = ModelShape(hidden=256, layers=1, heads=4, kv_heads=4, intermediate=768)
CPU_TARGET = ModelShape(hidden=256, layers=6, heads=4, kv_heads=4, intermediate=704)
CPU_DRAFT = ModelShape(hidden=128, layers=1, heads=2, kv_heads=2, intermediate=384)

PRESETS: dict[str, ModelPreset] = {
    "gpu": ModelPreset(
        name="gpu",
        target=GPU_TARGET,
        draft=GPU_DRAFT,
        target_train=TrainSpec(max_steps=12000, batch_size=64, seq_len=512, lr=1.5e-3,
                               minutes=6.0, warmup_steps=200, eval_every=250,
                               checkpoint_every=1000),
        draft_train=TrainSpec(max_steps=6000, batch_size=64, seq_len=512, lr=3e-3, minutes=1.5,
                              warmup_steps=100, eval_every=250, checkpoint_every=1000, distill=0.8),
        notes="One H100, bf16 autocast: about 7.5 minutes for both models (time-bound); the drafter "
              "is distilled from the trained target.",
    ),
    "cpu": ModelPreset(
        name="cpu",
        target=CPU_TARGET,
        draft=CPU_DRAFT,
        target_train=TrainSpec(max_steps=2000, batch_size=16, seq_len=256, lr=1.5e-3, minutes=70.0,
                               warmup_steps=100, eval_every=200, eval_tokens=32768,
                               checkpoint_every=200),
        draft_train=TrainSpec(max_steps=1500, batch_size=16, seq_len=256, lr=3e-3, minutes=15.0,
                              warmup_steps=50, eval_every=200, eval_tokens=32768,
                              checkpoint_every=200, distill=0.8),
        notes="2 CPU cores, fp32 (~1.5k / ~5.3k tokens/s): under 90 minutes for both models.",
    ),
}


def get_preset(name: str) -> ModelPreset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}") from None
