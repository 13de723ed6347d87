"""Text in, speech out: the codec-token model through the multispec core, with slot masks and tolerance.

The speech model is a transformers causal LM over [bos] text [sep] audio tokens [eos] (see
:mod:`modalities.speech.vocab`). Both target and drafter run inside a
:class:`~multispec.guidance.GuidedLM` whose mask lets each audio position hold only its layout
slot's codebook (and eos at frame boundaries), so a draft token outside its slot has p = 0 and is
never accepted, by any rule. A method (:class:`multispec.methods.Method`) is a drafter (plain, the
``draft`` model, a ``jacobi`` window, ``lookup`` of earlier frames) and an acceptance rule
(``exact``; ``topk`` tolerance; ``additive`` β per codebook level; ``neighborhood``: LANTERN over
each codec codebook with budget δ). Tolerance applies to codec codes only: eos and the aligned layout's phone-index (duration) tokens are always decided exactly.
"""
from __future__ import annotations

import math
import dataclasses
from dataclasses import dataclass

import torch

import multispec
from multispec.acceptance import (AdditiveTolerance, ExactOn, NeighborhoodRelaxation,
                                  TopKTolerance)
from multispec.drafters import DraftModel, Jacobi, PromptLookup
from multispec.guidance import GuidedLM
from multispec.methods import (AdditiveConfig, DraftModelConfig, ExactConfig, JacobiConfig, Method, NeighborhoodConfig,
                               PromptLookupConfig, TopKConfig, require_supported)
from multispec.lm import context_length

from .codec import CODEC_MEMBERS, Codec, load_codec
from .layouts import AlignedLayout, DelayLayout, FlattenedLayout
from .vocab import EOS, INDEX_OFFSET, MAX_PHONES, PHONE_OFFSET, PHONES, SpeechMeta, encode

DRAFTERS = (DraftModelConfig, JacobiConfig, PromptLookupConfig)
ACCEPTANCES = (ExactConfig, TopKConfig, AdditiveConfig, NeighborhoodConfig)


LAYOUTS = ("flattened", "delay", "aligned")


def make_layout(meta: SpeechMeta | dict):
    """The token layout a speech model's card names (codes from ``code_offset``); a dict needs only
    the layout's keys (a recipe asks for the layout before it knows the vocabulary size)."""
    if isinstance(meta, dict):
        meta = SpeechMeta.from_dict({"vocab_size": 0, **meta}, "the speech layout")
    K, C, offset = meta.num_codebooks, meta.codebook_size, meta.code_offset
    if meta.layout == "aligned":
        return AlignedLayout(K, C, offset, INDEX_OFFSET, MAX_PHONES, PHONE_OFFSET, len(PHONES))
    if meta.layout not in LAYOUTS:
        raise ValueError(f"unknown layout {meta.layout!r}; expected one of {', '.join(LAYOUTS)}")
    return {"flattened": FlattenedLayout, "delay": DelayLayout}[meta.layout](K, C, offset)


def check_codec_matches(codec: Codec, meta: SpeechMeta) -> None:
    """ValueError unless ``codec`` is a :class:`~modalities.speech.codec.Codec` whose K, C, sample
    rate and frame rate are those the speech model's card names (an unrecorded sample rate is skipped)."""
    if not isinstance(codec, Codec):
        missing = [name for name in CODEC_MEMBERS if not hasattr(codec, name)]
        raise ValueError(f"{type(codec).__name__} is not a speech codec: it lacks {', '.join(missing)} "
                         "(see modalities.speech.codec.Codec)")
    found = {"num_codebooks": codec.num_codebooks, "codebook_size": codec.codebook_size,
             "sample_rate": codec.sample_rate, "frame_rate": codec.frame_rate}
    wrong = [f"{key} {getattr(meta, key)} (codec: {value})" for key, value in found.items()
             if getattr(meta, key) is not None and not math.isclose(float(getattr(meta, key)), float(value))]
    if wrong:
        raise ValueError(f"the codec ({type(codec).__name__}) is not the one the speech model was made with; "
                         f"the model's multispec.json has {', '.join(wrong)}")


@dataclass
class SpeechModels:
    """The speech target, optional drafter, codec and vocabulary layout (``meta``: the target's
    ``multispec.json``; a dict is checked against :class:`SpeechMeta`)."""

    target: torch.nn.Module
    codec: Codec | None  # MelRVQCodec or HFCodec, checked against meta; None: tokens and masks only, no audio
    meta: SpeechMeta
    draft: torch.nn.Module | None = None

    def __post_init__(self):
        if not isinstance(self.meta, SpeechMeta):
            self.meta = SpeechMeta.from_dict(self.meta, "the speech model's multispec.json")
        if self.codec is not None:
            check_codec_matches(self.codec, self.meta)
        self.layout = make_layout(self.meta)

    @classmethod
    def from_folders(cls, target, codec, draft=None, dtype: torch.dtype = torch.float32) -> "SpeechModels":
        """Target and draft token-LM folders (safetensors + multispec.json) and a codec folder
        (MelRVQ or Hugging Face EnCodec/DAC/Mimi, see :func:`~modalities.speech.codec.load_codec`;
        a Hugging Face codec uses the model's ``num_codebooks`` quantisers)."""
        from models.zoo import load_token_lm

        model, meta = load_token_lm(target, dtype, meta_class=SpeechMeta)
        draft_model = load_token_lm(draft, dtype, meta_class=SpeechMeta)[0] if draft is not None else None
        return cls(model, load_codec(codec, meta.num_codebooks), meta, draft_model)

    @classmethod
    def from_zoo(cls, with_draft: bool = True) -> "SpeechModels":
        from models import zoo  # resolve verifies checksums before loading
        draft = zoo.resolve("speech-draft") if with_draft else None
        return cls.from_folders(zoo.resolve("speech-target"), zoo.resolve("speech-codec"), draft)

    @property
    def vocab_size(self) -> int:
        return self.meta.vocab_size

    @property
    def default_temperature(self) -> float:
        """The temperature the model is meant to be sampled at (its card's; 0 = greedy)."""
        return self.meta.default_temperature

    @property
    def text_units(self) -> str:
        return self.meta.text_units

    def encode(self, text: str) -> torch.Tensor:
        """The model's prompt [1, n] for ``text``."""
        return encode(text, self.text_units)

    @property
    def exact_ids(self) -> list[int]:
        """Tokens every tolerant rule decides exactly: eos, and the aligned layout's phone-index
        (duration) and phone tokens."""
        return [EOS] + (self.layout.label_ids if isinstance(self.layout, AlignedLayout) else [])

    def allowed(self, prompt: torch.Tensor):
        """(positions [n], previous tokens [n]) -> [n, V]: the slot's ids, plus eos where a new
        frame/row would start. In the aligned layout the index slot only names phones the prompt
        [1, P] has, and the phone slot holds exactly the phone the index just before it names (the
        prompt lookup is done by the mask, so that token is forced)."""
        prompt_length = prompt.shape[-1]
        table = self.layout.allowed_masks(torch.arange(self.layout.tokens_per_frame), self.vocab_size)
        table[:, EOS] = torch.arange(self.layout.tokens_per_frame) == 0
        phone_of_index = self._phone_of_index(prompt)
        if phone_of_index is not None:
            layout, num_phones = self.layout, (prompt.shape[-1] - 2) // 2  # [bos] (index phone)×n [sep]
            table[0, layout.index_offset + num_phones:layout.index_offset + layout.max_index] = False
        delay = isinstance(self.layout, DelayLayout)

        def allowed_tokens(positions: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
            rel = (positions - prompt_length).clamp_min(0).cpu()
            if delay:  # the leading corner depends on the row, not only the slot
                mask = self.layout.allowed_masks(rel, self.vocab_size)
                mask[:, EOS] = self.layout.slots(rel) == 0
                return mask
            slots = self.layout.slots(rel)
            mask = table[slots]
            if phone_of_index is not None:
                at_phone = slots == 1
                if at_phone.any():
                    mask[at_phone] = False
                    rows = at_phone.nonzero()[:, 0]
                    mask[rows, phone_of_index[previous.cpu()[rows]]] = True
            return mask
        return allowed_tokens

    def _phone_of_index(self, prompt: torch.Tensor) -> torch.Tensor | None:
        """Aligned layout: [V] the phone each index token names in ``prompt`` [1, P] (the pause phone
        for every other id); None for the other layouts."""
        if not isinstance(self.layout, AlignedLayout):
            return None
        layout = self.layout
        phones = prompt[0, 2:-1:2].cpu()  # [bos] (index phone)... [sep]
        phone_of_index = torch.full((self.vocab_size,), layout.phone_offset, dtype=torch.long)
        phone_of_index[layout.index_offset:layout.index_offset + len(phones)] = phones
        return phone_of_index

    def forced(self, prompt: torch.Tensor):
        """(position, previous token) -> the token :meth:`allowed` forces there, or None: in the
        aligned layout the phone after each index token (plain ints, no mask built); None (derive it
        from the mask) for the other layouts."""
        phone_of_index = self._phone_of_index(prompt)
        if phone_of_index is None:
            return None
        prompt_length, per_frame, phone_of = prompt.shape[-1], self.layout.tokens_per_frame, phone_of_index.tolist()

        def forced_tokens(position: int, previous: int) -> int | None:
            if position < prompt_length or (position - prompt_length) % per_frame != 1:
                return None
            return phone_of[previous]
        return forced_tokens

    def guided(self, model, prompt: torch.Tensor) -> GuidedLM:
        return GuidedLM(model, allowed_tokens=self.allowed(prompt), forced_tokens=self.forced(prompt))

    def level_tables(self) -> list[tuple[int, torch.Tensor]]:
        """(first token id, codebook [C, D]) per codec level, for neighbour search."""
        C = self.meta.codebook_size
        return [(self.layout.offset + k * C, book) for k, book in enumerate(self.codec.codebooks)]

    def max_new_tokens(self, seconds: float, prompt_length: int = 0) -> int:
        """Tokens for ``seconds`` of audio and eos, capped by what the target's context leaves after
        a ``prompt_length``-token prompt."""
        wanted = self.layout.num_positions(int(seconds * self.meta.frame_rate)) + 1
        context = context_length(self.target)
        return wanted if context is None else max(1, min(wanted, context - prompt_length))


def make_drafter(models: SpeechModels, config, prompt: torch.Tensor):
    """The drafter a method config asks for (None: plain decoding); ``lookup`` matches one frame's
    tokens by default: earlier frames that continued them are free drafts of steady sounds."""
    if config is None:
        return None
    require_supported(config, DRAFTERS, "the speech adapter")
    if isinstance(config, DraftModelConfig):
        if models.draft is None:
            raise ValueError("drafter 'draft' needs a draft model")
        return DraftModel(models.guided(models.draft, prompt), **dataclasses.asdict(config))
    if isinstance(config, JacobiConfig):
        codes = torch.arange(models.layout.offset, models.layout.vocab_end)
        return Jacobi(models.vocab_size, window=config.window, init_tokens=codes)
    settings = dataclasses.asdict(config)
    settings["max_ngram"] = config.max_ngram or models.layout.tokens_per_frame
    return PromptLookup(**settings)


def make_acceptance(models: SpeechModels, config):
    """None for exact; ``topk`` k and ``additive`` β are one number or one per codebook level (e.g. a
    loose k on the residual level only); ``neighborhood`` is LANTERN with budget δ over each codec
    codebook. Where eos is drafted or is the target's most likely token, every tolerant rule
    decides exactly."""
    require_supported(config, ACCEPTANCES, "the speech adapter")
    if isinstance(config, ExactConfig):
        return None
    return ExactOn(_tolerant_rule(models, config), models.exact_ids)


def _tolerant_rule(models: SpeechModels, config):
    if isinstance(config, TopKConfig):
        k = config.k if isinstance(config.k, int) else per_level(models, config.k, "top-k", "k", 1).long()
        return TopKTolerance(k, config.min_ratio)
    if isinstance(config, AdditiveConfig):
        return AdditiveTolerance(per_level(models, config.beta, "additive", "β", 0.0))
    neighbors = config.neighbors or models.meta.codebook_size // 4
    return NeighborhoodRelaxation.from_codebooks(models.level_tables(), models.vocab_size, k=neighbors,
                                                 delta=float(config.delta), max_ratio=config.max_ratio)


def per_level(models: SpeechModels, values, rule: str, symbol: str, elsewhere: float) -> torch.Tensor:
    """[V]: one number per codec codebook level (or one for all), spread over each level's token ids;
    ``elsewhere`` for the other ids (the rules see those exactly anyway, see :func:`make_acceptance`)."""
    levels = models.layout.num_codebooks
    values = [float(values)] * levels if isinstance(values, (int, float)) else [float(v) for v in values]
    if len(values) != levels:
        raise ValueError(f"{rule} tolerance needs one {symbol} per codebook level ({levels}), got {len(values)}")
    table = torch.full((models.vocab_size,), float(elsewhere))
    C, offset = models.meta.codebook_size, models.layout.offset
    for level, value in enumerate(values):
        table[offset + level * C: offset + (level + 1) * C] = value
    return table


@dataclass
class SpeechSample:
    tokens: torch.Tensor  # [L] generated audio tokens (eos dropped)
    frames: torch.Tensor  # [T, K] codec codes
    stats: multispec.DecodingStats


def generate_codes(models: SpeechModels, text: str, method: Method = Method(), *,
                   temperature: float | None = None, top_k: int | None = None, top_p: float | None = None,
                   max_seconds: float = 6.0, generator: torch.Generator | None = None) -> SpeechSample:
    """Codec frames for ``text`` through the core loop (``Method()``: plain decoding).
    ``temperature`` None uses the model's ``default_temperature`` (0 = greedy unless its card says)."""
    temperature = models.default_temperature if temperature is None else temperature
    prompt = models.encode(text)
    n = prompt.shape[1]
    out = multispec.generate(models.guided(models.target, prompt), prompt,
                             drafter=make_drafter(models, method.drafter, prompt),
                             acceptance=make_acceptance(models, method.acceptance),
                             max_new_tokens=models.max_new_tokens(max_seconds, n), temperature=temperature,
                             top_k=top_k, top_p=top_p, eos_token_id=EOS, generator=generator)
    tokens = out.sequences[0, n:]
    if tokens.numel() and int(tokens[-1]) == EOS:
        tokens = tokens[:-1]
    return SpeechSample(tokens, models.layout.to_frames(tokens), out.stats)


def generate_speech(models: SpeechModels, text: str, **kwargs):
    """(waveform [n] at the codec's sample rate, DecodingStats); kwargs as :func:`generate_codes`."""
    if models.codec is None:
        raise ValueError("these SpeechModels have no codec, so they make tokens but no audio: pass one")
    sample = generate_codes(models, text, **kwargs)
    if sample.frames.shape[0] == 0:
        return torch.zeros(0), sample.stats
    return models.codec.decode(sample.frames), sample.stats
