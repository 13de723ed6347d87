"""One typed, validated config per decoding method, shared by the Python API, the command lines and
the benchmarks of every modality, so each setting has one name and one default.

A :class:`Method` is a drafter config (None: plain decoding) and an acceptance-rule config. The
configs only hold and check settings: each adapter builds its drafter and rule objects from them
(it knows its models and codebooks); this module builds nothing and knows no modality.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar, Union


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _positive_ints(values, what: str) -> None:
    items = values if isinstance(values, tuple) else (values,)
    _require(len(items) > 0 and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in items),
             f"{what} must be an integer >= 1 or a tuple of them (one per codebook level), got {values!r}")


def _non_negative(values, what: str) -> None:
    items = values if isinstance(values, tuple) else (values,)
    _require(len(items) > 0 and all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0
                                    for v in items),
             f"{what} must be a number >= 0 or a tuple of them (one per codebook level), got {values!r}")


def _draft_length(num: int, maximum: int, minimum: int = 1) -> None:
    _require(all(isinstance(v, int) for v in (num, maximum, minimum)) and 1 <= minimum <= num <= maximum,
             f"draft length needs 1 <= min_draft_tokens <= num_draft_tokens <= max_draft_tokens, "
             f"got {minimum}, {num} and {maximum}")


def _per_level(values) -> str:
    """``4``, ``4/16``, ``0.1/1``: floats as ``:g`` (like the other labels), so 1.0 reads as the 1 typed."""
    return "/".join(format(v, "g") if isinstance(v, float) else str(v)
                    for v in (values if isinstance(values, tuple) else (values,)))


# ---- drafters -------------------------------------------------------------------------------

@dataclass(frozen=True)
class DraftModelConfig:
    """A separate small LM drafts γ tokens (adaptive γ: +2 after a full accept, −1 otherwise)."""

    name: ClassVar[str] = "draft"
    num_draft_tokens: int = 4
    adaptive: bool = True
    max_draft_tokens: int = 16
    confidence_threshold: float = 0.0  # stop a draft after a token with q(x) below this (0: never)

    def __post_init__(self):
        _draft_length(self.num_draft_tokens, self.max_draft_tokens)
        _require(0.0 <= self.confidence_threshold < 1.0,
                 f"confidence_threshold must be in [0, 1), got {self.confidence_threshold}")

    def label(self) -> str:
        parts = [] if self.adaptive else [f"fixed γ={self.num_draft_tokens}"]
        if self.adaptive and self.num_draft_tokens != 4:
            parts.append(f"γ={self.num_draft_tokens}")
        if self.confidence_threshold:
            parts.append(f"stop@{self.confidence_threshold:g}")
        return " ".join(["draft", *parts])


def _tree_shape(branches: int, width: int, max_nodes: int, size_by_timing: bool) -> str:
    """branches×width/max_nodes, with ≤ when the tree is sized by timing (at most max_nodes)."""
    return f"{branches}×{width}/{'≤' if size_by_timing else ''}{max_nodes}"


@dataclass(frozen=True)
class DraftTreeConfig:
    """The draft model grows a dynamic token tree (EAGLE-2 style): at each
    depth the ``width`` best nodes get their ``branches`` likeliest children; ``max_nodes`` are verified,
    or with ``size_by_timing`` as many of them as pays for the target's measured verification cost."""

    name: ClassVar[str] = "draft-tree"
    branches: int = 2
    width: int = 3
    max_nodes: int = 12
    num_draft_tokens: int = 4
    adaptive: bool = True
    max_draft_tokens: int = 8
    size_by_timing: bool = False
    sample_children: bool = False  # under sampling: children drawn from q and verified with q (all kept)

    def __post_init__(self):
        for name in ("branches", "width", "max_nodes"):
            value = getattr(self, name)
            _require(isinstance(value, int) and value >= 1, f"draft-tree {name} must be an integer >= 1, got {value!r}")
        _draft_length(self.num_draft_tokens, self.max_draft_tokens)

    def label(self) -> str:
        shape = _tree_shape(self.branches, self.width, self.max_nodes, self.size_by_timing)
        return f"draft-tree {shape}" + (" sampled" if self.sample_children else "")


@dataclass(frozen=True)
class CrossVocabConfig:
    """A draft model with its own tokenizer (multispec.cross_vocab): ``shared`` drafts the tokens both
    vocabularies share (q kept), ``text`` re-encodes the draft's text as target tokens."""

    name: ClassVar[str] = "cross-vocab"
    vocab_mode: str = "shared"
    num_draft_tokens: int = 4
    adaptive: bool = True
    max_draft_tokens: int = 16

    def __post_init__(self):
        _require(self.vocab_mode in ("shared", "text"), f"vocab_mode must be shared or text, got {self.vocab_mode!r}")
        _draft_length(self.num_draft_tokens, self.max_draft_tokens)

    def label(self) -> str:
        return f"cross-vocab {self.vocab_mode}"


@dataclass(frozen=True)
class PromptLookupConfig:
    """Copy the tokens that followed an earlier occurrence of the last n tokens (no model)."""

    name: ClassVar[str] = "lookup"
    max_ngram: int | None = None  # None: the adapter's natural n-gram (text 3, speech one frame)
    min_ngram: int = 1
    num_draft_tokens: int = 10
    adaptive: bool = True
    max_draft_tokens: int = 16
    branches: int = 1  # > 1: a token tree of that many continuations

    def __post_init__(self):
        _require(isinstance(self.branches, int) and self.branches >= 1,
                 f"lookup branches must be an integer >= 1, got {self.branches!r}")
        top = self.min_ngram if self.max_ngram is None else self.max_ngram
        _require(isinstance(self.min_ngram, int) and isinstance(top, int) and 1 <= self.min_ngram <= top,
                 f"lookup needs 1 <= min_ngram <= max_ngram, got {self.min_ngram}, {self.max_ngram}")
        _draft_length(self.num_draft_tokens, self.max_draft_tokens)

    def label(self) -> str:
        return "lookup" if self.branches == 1 else f"lookup tree×{self.branches}"


@dataclass(frozen=True)
class LayerSkipConfig:
    """The target's own first layers draft (self-speculation); None: a quarter of the layers."""

    name: ClassVar[str] = "layerskip"
    num_layers: int | None = None
    num_draft_tokens: int = 4
    adaptive: bool = True
    max_draft_tokens: int = 16

    def __post_init__(self):
        _require(self.num_layers is None or (isinstance(self.num_layers, int) and self.num_layers >= 1),
                 f"layerskip num_layers must be an integer >= 1 or None, got {self.num_layers!r}")
        _draft_length(self.num_draft_tokens, self.max_draft_tokens)

    def label(self) -> str:
        return "layerskip" if self.num_layers is None else f"layerskip L={self.num_layers}"


@dataclass(frozen=True)
class JacobiConfig:
    """Speculative Jacobi decoding: a window drafted from the target's previous predictions."""

    name: ClassVar[str] = "jacobi"
    window: int = 16

    def __post_init__(self):
        _require(isinstance(self.window, int) and self.window >= 1, f"jacobi window must be >= 1, got {self.window!r}")

    def label(self) -> str:
        return "jacobi" if self.window == 16 else f"jacobi w={self.window}"


# ---- acceptance rules -----------------------------------------------------------------------

@dataclass(frozen=True)
class ExactConfig:
    """Lossless: greedy equality, or speculative sampling (the target's distribution exactly)."""

    name: ClassVar[str] = "exact"

    def label(self) -> str:
        return ""


@dataclass(frozen=True)
class TypicalConfig:
    """Medusa's typical acceptance: also accept x when p(x) > min(ε, δ·exp(−H(p)))."""

    name: ClassVar[str] = "typical"
    epsilon: float = 0.3
    delta: float = 0.09

    def __post_init__(self):
        _require(self.epsilon > 0 and self.delta > 0, f"typical needs epsilon, delta > 0, got {self.epsilon}, {self.delta}")

    def label(self) -> str:
        return "typical"


@dataclass(frozen=True)
class TopKConfig:
    """Accept x when it is among the target's k most likely (one k, or one per codebook level),
    and p(x) ≥ min_ratio·max p."""

    name: ClassVar[str] = "topk"
    k: int | tuple[int, ...] = 3
    min_ratio: float = 0.0

    def __post_init__(self):
        _positive_ints(self.k, "topk k")
        _require(0.0 <= self.min_ratio <= 1.0, f"topk min_ratio must lie in [0, 1], got {self.min_ratio}")

    def label(self) -> str:
        return f"topk k={_per_level(self.k)}" + (f" ρ={self.min_ratio:g}" if self.min_ratio else "")


@dataclass(frozen=True)
class AdditiveConfig:
    """SSD-style: accept x when u < min(1, p(x)/q(x)) + β (one β, or one per codebook level)."""

    name: ClassVar[str] = "additive"
    beta: float | tuple[float, ...] = 0.1

    def __post_init__(self):
        _non_negative(self.beta, "additive beta")

    def label(self) -> str:
        return f"additive β={_per_level(self.beta)}"


@dataclass(frozen=True)
class NeighborhoodConfig:
    """LANTERN: borrow probability from each code's nearest codes, total budget δ; λ caps the boost
    (LANTERN++). ``neighbors`` None: a quarter of the codebook."""

    name: ClassVar[str] = "neighborhood"
    delta: float = 0.1
    neighbors: int | None = None
    max_ratio: float | None = None

    def __post_init__(self):
        _require(isinstance(self.delta, (int, float)) and 0.0 <= self.delta <= 1.0,
                 f"neighborhood delta must lie in [0, 1], got {self.delta!r}")
        _require(self.neighbors is None or (isinstance(self.neighbors, int) and self.neighbors >= 1),
                 f"neighborhood neighbors must be an integer >= 1 or None, got {self.neighbors!r}")
        _require(self.max_ratio is None or self.max_ratio >= 1.0,
                 f"neighborhood max_ratio (λ) must be >= 1 or None, got {self.max_ratio!r}")

    def label(self) -> str:
        return f"neighborhood δ={self.delta:g}" + (f" λ={self.max_ratio:g}" if self.max_ratio else "")


@dataclass(frozen=True)
class GroupConfig:
    """Grouped speculative decoding: accept x when the group of its nearest codes passes."""

    name: ClassVar[str] = "group"
    group_size: int = 4

    def __post_init__(self):
        _require(isinstance(self.group_size, int) and self.group_size >= 1,
                 f"group group_size must be an integer >= 1 (1: exact), got {self.group_size!r}")

    def label(self) -> str:
        return f"group G={self.group_size}"


@dataclass(frozen=True)
class _HeadConfig:
    """Settings both trained-head drafters take: a chain (``branches`` 1, adaptive γ) or a tree of
    depth γ whose ``width`` best nodes per depth get ``branches`` children, ``max_nodes`` verified (with
    ``size_by_timing``: as many of them as pays for the target's measured verification cost)."""

    name: ClassVar[str] = ""
    num_draft_tokens: int = 5
    adaptive: bool = True
    max_draft_tokens: int = 8
    branches: int = 1
    width: int = 4
    max_nodes: int = 16
    size_by_timing: bool = False

    def __post_init__(self):
        for name in ("branches", "width", "max_nodes"):
            value = getattr(self, name)
            _require(isinstance(value, int) and value >= 1,
                     f"{self.name} {name} must be an integer >= 1, got {value!r}")
        _draft_length(self.num_draft_tokens, self.max_draft_tokens)

    def label(self) -> str:
        if self.branches == 1:
            return self.name
        return f"{self.name}-tree {_tree_shape(self.branches, self.width, self.max_nodes, self.size_by_timing)}"


@dataclass(frozen=True)
class EagleConfig(_HeadConfig):
    """A trained feature head reads the target's hidden states and drafts a chain (``branches`` 1,
    adaptive γ) or a dynamic tree of depth γ (``branches`` > 1)."""

    name: ClassVar[str] = "eagle"


@dataclass(frozen=True)
class MedusaConfig(_HeadConfig):
    """Medusa heads on the target's last hidden state: head k drafts the k-th token (γ ≤ the number
    of heads), as a chain (``branches`` 1, adaptive γ) or a tree of the heads' top candidates
    (``branches`` > 1)."""

    name: ClassVar[str] = "medusa"
    num_draft_tokens: int = 4
    max_draft_tokens: int = 5


DrafterConfig = Union[DraftModelConfig, DraftTreeConfig, CrossVocabConfig, PromptLookupConfig, LayerSkipConfig,
                      JacobiConfig, EagleConfig, MedusaConfig]
AcceptanceConfig = Union[ExactConfig, TypicalConfig, TopKConfig, AdditiveConfig, NeighborhoodConfig, GroupConfig]
DRAFTER_CONFIGS = {c.name: c for c in (DraftModelConfig, DraftTreeConfig, CrossVocabConfig, PromptLookupConfig,
                                       LayerSkipConfig, JacobiConfig, EagleConfig, MedusaConfig)}
ACCEPTANCE_CONFIGS = {c.name: c for c in (ExactConfig, TypicalConfig, TopKConfig, AdditiveConfig,
                                          NeighborhoodConfig, GroupConfig)}


@dataclass(frozen=True)
class Method:
    """A decoding method: ``drafter`` (None: plain decoding) and ``acceptance``; ``name`` is the
    label shown in tables (default: built from the two configs, e.g. ``draft+topk k=4/16``)."""

    drafter: DrafterConfig | None = None
    acceptance: AcceptanceConfig = field(default_factory=ExactConfig)
    name: str = ""

    def __post_init__(self):
        _require(self.drafter is None or isinstance(self.drafter, tuple(DRAFTER_CONFIGS.values())),
                 f"drafter must be None or one of {', '.join(c.__name__ for c in DRAFTER_CONFIGS.values())}, "
                 f"got {self.drafter!r}")
        _require(isinstance(self.acceptance, tuple(ACCEPTANCE_CONFIGS.values())),
                 f"acceptance must be one of {', '.join(c.__name__ for c in ACCEPTANCE_CONFIGS.values())}, "
                 f"got {self.acceptance!r}")
        _require(self.drafter is not None or isinstance(self.acceptance, ExactConfig),
                 f"plain decoding drafts nothing, so it takes no relaxed acceptance (got {self.acceptance.name})")
        if not self.name:
            object.__setattr__(self, "name", self.default_name())

    def default_name(self) -> str:
        drafter = "plain" if self.drafter is None else self.drafter.label()
        rule = self.acceptance.label()
        return f"{drafter}+{rule}" if rule else drafter

    @property
    def lossless(self) -> bool:
        return isinstance(self.acceptance, ExactConfig)

    def columns(self) -> dict:
        """Flat settings for a result row: drafter and rule names, then every non-default field."""
        row = {"drafter": "plain" if self.drafter is None else self.drafter.name, "rule": self.acceptance.name}
        for config in (self.drafter, self.acceptance):
            if config is not None:
                defaults = type(config)()
                row.update({f.name: getattr(config, f.name) for f in dataclasses.fields(config)
                            if getattr(config, f.name) != getattr(defaults, f.name)})
        return row


def method_from_names(drafter: str = "plain", acceptance: str = "exact", name: str = "", **settings) -> Method:
    """A :class:`Method` from a drafter name, a rule name and settings (``None`` values are left at
    the config's default); a setting that neither config takes raises ValueError naming it."""
    if drafter != "plain" and drafter not in DRAFTER_CONFIGS:
        raise ValueError(f"unknown drafter {drafter!r}; choose one of plain, {', '.join(DRAFTER_CONFIGS)}")
    if acceptance not in ACCEPTANCE_CONFIGS:
        raise ValueError(f"unknown acceptance {acceptance!r}; choose one of {', '.join(ACCEPTANCE_CONFIGS)}")
    settings = {k: v for k, v in settings.items() if v is not None}
    classes = [ACCEPTANCE_CONFIGS[acceptance]] + ([] if drafter == "plain" else [DRAFTER_CONFIGS[drafter]])
    chosen = {cls: {f.name: settings.pop(f.name) for f in dataclasses.fields(cls) if f.name in settings}
              for cls in classes}
    if settings:
        raise ValueError(f"settings {sorted(settings)} do not apply to drafter {drafter!r} with acceptance "
                         f"{acceptance!r}")
    rule = ACCEPTANCE_CONFIGS[acceptance](**chosen[ACCEPTANCE_CONFIGS[acceptance]])
    drafter_config = None if drafter == "plain" else DRAFTER_CONFIGS[drafter](**chosen[DRAFTER_CONFIGS[drafter]])
    return Method(drafter_config, rule, name)


def require_supported(config, supported: tuple, where: str) -> None:
    """Refuse a drafter or rule config that ``where`` (an adapter) does not build, naming what it does."""
    if config is None or isinstance(config, supported):
        return
    kind = "drafter" if type(config) in DRAFTER_CONFIGS.values() else "acceptance"
    choices = (["plain"] if kind == "drafter" else []) + [c.name for c in supported]
    raise ValueError(f"{where} has no {config.name!r} {kind}; it supports {', '.join(choices)}")
