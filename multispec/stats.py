"""What a decoding run measured: steps, accepted tokens, moved mass and where the time went.

τ (``mean_accepted``) is new tokens per target forward after prefill, counting the target's own
token each step; plain decoding has τ = 1. ``accepted_per_step`` lists the drafted tokens accepted at
each step (so τ = mean(accepted_per_step) + 1 up to an eos or length cut).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class DecodingStats:
    steps: int = 0  # target forwards after prefill
    new_tokens: int = 0
    drafted: int = 0  # drafted tokens submitted for verification
    accepted: int = 0  # drafted tokens accepted (and kept)
    accepted_per_step: list[int] = field(default_factory=list)
    moved_mass: float = 0.0  # Σ p̃(x) − p(x) moved by a relaxed rule (0 for exact rules)
    forced: int = 0  # tokens appended without a forward: the verifier's mask allowed only one
    prefill_s: float = 0.0
    draft_s: float = 0.0
    verify_s: float = 0.0
    wall_s: float = 0.0

    @property
    def mean_accepted(self) -> float:
        """τ: new tokens per target forward (1.0 for plain decoding)."""
        return self.new_tokens / self.steps if self.steps else 0.0

    @property
    def acceptance_rate(self) -> float:
        """Accepted drafted tokens / drafted tokens (0.0 when nothing was drafted)."""
        return self.accepted / self.drafted if self.drafted else 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / self.wall_s if self.wall_s else 0.0

    def __getitem__(self, key: str):
        return getattr(self, key)

    def to_dict(self) -> dict:
        out = asdict(self)
        out.update(mean_accepted=self.mean_accepted, acceptance_rate=self.acceptance_rate,
                   tokens_per_second=self.tokens_per_second)
        return out

    def summary(self) -> str:
        return (f"τ={self.mean_accepted:.2f} acceptance={self.acceptance_rate:.1%} "
                f"steps={self.steps} new_tokens={self.new_tokens} {self.tokens_per_second:.1f} tok/s")
