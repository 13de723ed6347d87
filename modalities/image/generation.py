"""Class label in, image out: the AR image model through the multispec core, with CFG and relaxations.

The image model is a transformers causal LM over [class token] + h·w VQ codes (see
``models/recipes/image/tokens.py`` for the vocabulary). Target and drafter are wrapped in the same
:class:`~multispec.guidance.GuidedLM` (classifier-free guidance against the null class, codes-only
mask), so exact methods reproduce plain guided decoding. A method (:class:`multispec.methods.Method`)
is a drafter (plain, the ``draft`` model, a ``jacobi`` window, ``lookup`` of earlier codes) and an acceptance rule (``exact``,
LANTERN's ``neighborhood`` of the VQ codebook with budget δ, ``group``: GSD's nearest codes).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import torch

import multispec
from multispec import timing
from multispec.acceptance import GroupAcceptance, NeighborhoodRelaxation, neighbor_table
from multispec.drafters import DraftModel, Jacobi, PromptLookup
from multispec.tree_drafters import DraftTree
from models.token_meta import TokenModelMeta
from multispec.guidance import GuidedLM
from multispec.methods import (DraftModelConfig, DraftTreeConfig, ExactConfig, GroupConfig, JacobiConfig, Method,
                               NeighborhoodConfig, PromptLookupConfig, require_supported)

DRAFTERS = (DraftModelConfig, DraftTreeConfig, JacobiConfig, PromptLookupConfig)
# image side -> the bundled (target, drafter); both sizes share the VQ ``image-vq``
BUNDLED = {64: ("image64-target", "image64-draft"), 32: ("image-target", "image-draft")}
DEFAULT_SIZE = 64
LOOKUP_NGRAM = 3  # the lookup drafter's longest match (codes)
ACCEPTANCES = (ExactConfig, NeighborhoodConfig, GroupConfig)


@dataclass(frozen=True, kw_only=True)
class ImageMeta(TokenModelMeta):
    """An image token model's ``multispec.json``: [class token] + an h×w grid of VQ codes."""

    grid_size: tuple[int, int]
    image_size: int
    class_names: tuple[str, ...]
    class_token_offset: int  # the first class token's id (class i is offset + i)
    null_token: int  # the unconditional class of classifier-free guidance
    draft_guidance_distilled: float | None = None  # a drafter distilled towards the guided target at this scale


@dataclass
class ImageModels:
    """The bundled (or user's) image target, optional drafter, VQ tokenizer and vocabulary layout."""

    target: torch.nn.Module
    tokenizer: object  # modalities.image.tokenizer.ImageTokenizer
    meta: ImageMeta  # the target's multispec.json (a dict is checked against ImageMeta)
    draft: torch.nn.Module | None = None
    draft_meta: ImageMeta | None = None  # the drafter's (e.g. draft_guidance_distilled)
    _neighbors: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        if isinstance(self.meta, dict):
            self.meta = ImageMeta.from_dict(self.meta, "the image model's multispec.json")
        if isinstance(self.draft_meta, dict):
            self.draft_meta = ImageMeta.from_dict({**self.meta.to_dict(), **self.draft_meta},
                                                  "the image drafter's multispec.json")

    @classmethod
    def from_folders(cls, target: str | Path, vq: str | Path, draft: str | Path | None = None,
                     dtype: torch.dtype = torch.float32) -> "ImageModels":
        from models.zoo import load_token_lm
        from .tokenizer import ImageTokenizer

        model, meta = load_token_lm(target, dtype, meta_class=ImageMeta)
        draft_model, draft_meta = load_token_lm(draft, dtype, meta_class=ImageMeta) if draft is not None else (None, None)
        # the VQ's convolutions take any multiple of its downsampling: the target's card says which size
        tokenizer = ImageTokenizer.from_pretrained(vq, image_size=meta.image_size)
        if tokenizer.grid_size != tuple(meta.grid_size):
            raise ValueError(f"the VQ tokenises {meta.image_size}x{meta.image_size} images into a "
                             f"{tokenizer.grid_size} grid, but the target's card says {tuple(meta.grid_size)}")
        return cls(model, tokenizer, meta, draft_model, draft_meta)

    @classmethod
    def from_zoo(cls, with_draft: bool = True, size: int = DEFAULT_SIZE) -> "ImageModels":
        """The bundled models for ``size`` x ``size`` images (64: 16x16 tokens; 32: the first 8x8 pair)."""
        from models import zoo  # resolve verifies checksums before loading
        if size not in BUNDLED:
            raise ValueError(f"no bundled image models for size {size}; sizes: {', '.join(map(str, BUNDLED))}")
        target, draft = BUNDLED[size]
        return cls.from_folders(zoo.resolve(target), zoo.resolve("image-vq"),
                                zoo.resolve(draft) if with_draft else None)

    @property
    def class_names(self) -> list[str]:
        return list(self.meta.class_names)

    @property
    def vocab_size(self) -> int:
        return self.meta.vocab_size

    @property
    def codebook_size(self) -> int:
        return self.meta.codebook_size

    @property
    def num_tokens(self) -> int:
        h, w = self.meta.grid_size
        return h * w

    def class_id(self, label: str | int) -> int:
        """A class name (case-insensitive) or index -> its index; unknown labels raise."""
        names = self.class_names
        if isinstance(label, int) and not isinstance(label, bool):
            if 0 <= label < len(names):
                return label
        elif isinstance(label, str):
            lowered = [n.lower() for n in names]
            if label.lower() in lowered:
                return lowered.index(label.lower())
        raise ValueError(f"unknown class {label!r}; known classes: {', '.join(names)}")

    def prompt(self, label: str | int) -> torch.Tensor:
        """[1, 1] the class token."""
        return torch.tensor([[self.meta.class_token_offset + self.class_id(label)]])

    def guided(self, model: torch.nn.Module, guidance_scale: float) -> GuidedLM:
        codes_only = torch.zeros(self.vocab_size, dtype=torch.bool)
        codes_only[: self.codebook_size] = True
        return GuidedLM(model, guidance_scale, torch.tensor(self.meta.unconditional_prefix), codes_only)

    def neighbors(self, k: int) -> torch.Tensor:
        """[V, k] nearest codes of each code by L2 distance in the VQ codebook (cached)."""
        if k not in self._neighbors:
            self._neighbors[k] = neighbor_table([(0, self.tokenizer.codebook)], self.vocab_size, k)
        return self._neighbors[k]


def make_drafter(models: ImageModels, config: DraftModelConfig | DraftTreeConfig | JacobiConfig | None,
                 guidance_scale: float):
    """The drafter a method config asks for (None: plain decoding); a draft tree is scored by the
    guided, masked target in one forward (``GuidedLM.forward_tree``)."""
    if config is None:
        return None
    require_supported(config, DRAFTERS, "the image adapter")
    if isinstance(config, (DraftModelConfig, DraftTreeConfig)):
        if models.draft is None:
            raise ValueError(f"drafter {config.name!r} needs a draft model")
        # A drafter distilled towards the guided target drafts guided tokens in one unguided row.
        distilled = models.draft_meta is not None and models.draft_meta.draft_guidance_distilled
        scale = 1.0 if distilled else guidance_scale
        settings = dataclasses.asdict(config)
        if settings.pop("size_by_timing", False):
            settings["cost"] = timing.verify_costs(models.guided(models.target, guidance_scale))
        drafter = DraftModel if isinstance(config, DraftModelConfig) else DraftTree
        return drafter(models.guided(models.draft, scale), **settings)
    if isinstance(config, PromptLookupConfig):  # earlier code n-grams (emoji repeat few: τ 1.04 at 64x64)
        return PromptLookup(**{**dataclasses.asdict(config), "max_ngram": config.max_ngram or LOOKUP_NGRAM})
    return Jacobi(models.vocab_size, window=config.window, init_tokens=torch.arange(models.codebook_size))


def make_acceptance(models: ImageModels, config: ExactConfig | NeighborhoodConfig | GroupConfig):
    """None for exact (the core picks Greedy / SpeculativeSampling); else the relaxed rule over the
    VQ codebook's nearest codes (LANTERN's default: a quarter of the codebook)."""
    require_supported(config, ACCEPTANCES, "the image adapter")
    if isinstance(config, ExactConfig):
        return None
    if isinstance(config, NeighborhoodConfig):
        k = min(config.neighbors or models.codebook_size // 4, models.codebook_size - 1)
        return NeighborhoodRelaxation(k=k, delta=config.delta, max_ratio=config.max_ratio, neighbors=models.neighbors(k))
    return GroupAcceptance(group_size=config.group_size, neighbors=models.neighbors(max(1, config.group_size - 1)))


@dataclass
class ImageSample:
    tokens: torch.Tensor  # [h, w] VQ codes
    stats: multispec.DecodingStats


def generate_tokens(models: ImageModels, label: str | int, method: Method = Method(), *,
                    guidance_scale: float = 3.0, temperature: float = 1.0, top_k: int | None = None,
                    top_p: float | None = None, generator: torch.Generator | None = None) -> ImageSample:
    """One image's token grid for a class through the core loop (``Method()``: plain decoding)."""
    prompt = models.prompt(label)
    out = multispec.generate(models.guided(models.target, guidance_scale), prompt,
                             drafter=make_drafter(models, method.drafter, guidance_scale),
                             acceptance=make_acceptance(models, method.acceptance),
                             max_new_tokens=models.num_tokens, temperature=temperature, top_k=top_k,
                             top_p=top_p, generator=generator)
    h, w = models.meta.grid_size
    return ImageSample(out.sequences[0, 1:].view(h, w), out.stats)


def generate_image(models: ImageModels, label: str | int, **kwargs):
    """(PIL image, DecodingStats) for one class; kwargs as :func:`generate_tokens`."""
    sample = generate_tokens(models, label, **kwargs)
    return models.tokenizer.decode(sample.tokens[None])[0], sample.stats
