"""Drafters: small objects that propose the next γ tokens, and learn how many were accepted.

Interface (:class:`Drafter`; every drafting method and every modality implements it):
- ``reset()`` before a new sequence;
- ``propose(tokens, max_tokens, sampling, generator) -> Draft``: up to ``max_tokens`` tokens that
  follow ``tokens`` [T], with their draft distribution q [γ, V] when the drafter has one;
- ``observe(feedback)``: how many of the last draft were accepted (drives the adaptive length).

Draft length γ: fixed, or adaptive (the default): start at ``num_draft_tokens``; after a fully
accepted draft γ += 2, after any rejection γ −= 1, kept within [min_draft_tokens, max_draft_tokens].
This is the rule Hugging Face's assisted generation uses; it grows γ while the drafter is right.
Model-free drafters draft for free, so ``PromptLookup`` keeps a higher floor (4).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

from .lm import as_verifier, output_vocab_size
from .sampling import Sampling


@dataclass
class Draft:
    tokens: torch.Tensor  # [γ] int64
    probs: torch.Tensor | None = None  # [γ, V] q; None = deterministic (a point mass on each token)
    parents: torch.Tensor | None = None  # [γ] a token tree: the node each token follows, −1 = the newest token;
    # None = a chain (see multispec.trees)


@dataclass
class Feedback:
    num_drafted: int
    num_accepted: int
    target_probs: torch.Tensor | None = None  # [γ+1, V] p at the verified positions


class DraftLength:
    """γ policy: fixed, or adaptive (+2 after a full accept, −1 after a rejection)."""

    def __init__(self, initial: int = 4, adaptive: bool = True, maximum: int = 16, minimum: int = 1):
        if not 1 <= minimum <= initial <= maximum:
            raise ValueError(f"draft length needs 1 <= min_draft_tokens <= num_draft_tokens <= max_draft_tokens, "
                             f"got {minimum}, {initial} and {maximum}")
        self.initial, self.adaptive, self.maximum, self.minimum = initial, adaptive, maximum, minimum
        self.current = initial

    def reset(self) -> None:
        self.current = self.initial

    def update(self, feedback: Feedback) -> None:
        if not self.adaptive or feedback.num_drafted == 0:
            return
        if feedback.num_accepted == feedback.num_drafted:
            self.current = min(self.maximum, self.current + 2)
        else:
            self.current = max(self.minimum, self.current - 1)


@runtime_checkable
class Drafter(Protocol):
    """Everything the decoding loop uses of a drafter; any object with these members can be one."""

    vocab_size: int | None  # the drafter's vocabulary (must equal the target's); None for model-free drafters

    def reset(self) -> None: ...  # before a new sequence

    def propose(self, tokens: torch.Tensor, max_tokens: int, sampling: Sampling,
                generator: torch.Generator | None) -> Draft:
        """Up to ``max_tokens`` tokens to follow ``tokens`` [T] (the whole sequence so far), with their
        draft distribution q [γ, V] when the drafter has one; randomness only from ``generator``."""
        ...

    def observe(self, feedback: Feedback) -> None: ...  # how many of the last draft were accepted


class ScheduledDrafter:
    """Base class of the bundled drafters: holds the draft-length policy (:class:`DraftLength`).
    ``vocab_size`` is None for model-free drafters."""

    vocab_size: int | None = None

    def __init__(self, num_draft_tokens: int = 4, adaptive: bool = True, max_draft_tokens: int = 16,
                 min_draft_tokens: int = 1):
        self.length = DraftLength(num_draft_tokens, adaptive, max_draft_tokens, min_draft_tokens)

    def reset(self) -> None:
        self.length.reset()

    def propose(self, tokens: torch.Tensor, max_tokens: int, sampling: Sampling,
                generator: torch.Generator | None) -> Draft:
        raise NotImplementedError

    def observe(self, feedback: Feedback) -> None:
        self.length.update(feedback)


def _empty(device) -> Draft:
    return Draft(torch.empty(0, dtype=torch.long, device=device))


def tree_draft(tokens: list[int], parents: list[int], device) -> Draft:
    """A point-mass token tree (an empty draft when it has no node, e.g. sized to nothing)."""
    if not tokens:
        return _empty(device)
    return Draft(torch.tensor(tokens, device=device), parents=torch.tensor(parents, dtype=torch.long, device=device))


class DraftModel(ScheduledDrafter):
    """An independent smaller causal LM with the target's vocabulary; keeps and rolls back its own cache.

    ``model`` is a transformers causal LM or a :class:`~multispec.lm.Verifier` (e.g. a guided LM, so
    the draft logits get the same classifier-free guidance and token masks as the target's).
    ``confidence_threshold`` (Hugging Face's ``assistant_confidence_threshold``): stop a draft after
    a token the drafter gave q(x) below it, so no forwards go to drafts the target is likely to cut;
    0 drafts the full γ. The stop depends on the draft alone, so exact rules stay exact.
    """

    def __init__(self, model, num_draft_tokens: int = 4, adaptive: bool = True,
                 max_draft_tokens: int = 16, confidence_threshold: float = 0.0):
        super().__init__(num_draft_tokens, adaptive, max_draft_tokens)
        if not 0.0 <= confidence_threshold < 1.0:
            raise ValueError(f"confidence_threshold must be in [0, 1), got {confidence_threshold}")
        self.confidence_threshold = float(confidence_threshold)
        self.lm = as_verifier(model, "the draft model")
        self.vocab_size = self.lm.vocab_size
        self._cached = torch.empty(0, dtype=torch.long)  # token ids behind the draft cache

    def reset(self) -> None:
        super().reset()
        self.lm.reset()
        self._cached = torch.empty(0, dtype=torch.long, device=self.lm.device)

    def _sync(self, tokens: torch.Tensor) -> torch.Tensor:
        """Roll the cache back to the longest prefix it shares with ``tokens``; return the last logits."""
        n = min(self._cached.shape[0], tokens.shape[0] - 1)
        if n:
            differs = (self._cached[:n] != tokens[:n]).nonzero()
            if differs.numel():
                n = int(differs[0, 0])
        self.lm.rollback(n)
        return self.lm.forward(tokens[n:], last_only=True)[-1]

    def propose(self, tokens, max_tokens, sampling, generator) -> Draft:
        """Sample γ tokens one forward at a time. A token the drafter's mask forces (``forced_token``
        of a guided LM) is drafted with q = a point mass and fed together with the token before it,
        so it costs no forward of its own."""
        gamma = min(self.length.current, max_tokens)
        if gamma <= 0:
            return _empty(tokens.device)
        tokens = tokens.to(self._cached.device)
        logits = self._sync(tokens)
        forced_token = self.lm.forced_token
        drafted, probs, fed = [], [], 0  # drafted[:fed] are in the draft cache
        while len(drafted) < gamma:
            q = sampling.probs(logits[None])  # [1, V]
            drafted.append(sampling.pick(q, generator))  # [1]
            probs.append(q)
            unsure = self.confidence_threshold > 0 and float(q[0, drafted[-1]]) < self.confidence_threshold
            while forced_token is not None and len(drafted) < gamma:
                token = forced_token(tokens.shape[0] + len(drafted), int(drafted[-1]))
                if token is None:
                    break
                drafted.append(drafted[-1].new_tensor([token]))
                probs.append(torch.zeros_like(q).index_fill_(1, drafted[-1], 1.0))
            if unsure:
                break
            if len(drafted) < gamma:
                logits = self.lm.forward(torch.cat(drafted[fed:]), last_only=True)[-1]
                fed = len(drafted)
        draft = torch.cat(drafted)
        self._cached = torch.cat([tokens, draft[:fed]])
        return Draft(draft, torch.cat(probs))


class PromptLookup(ScheduledDrafter):
    """N-gram match over prompt + generated tokens (prompt lookup decoding); no model, q is a point mass.

    Finds an earlier occurrence of the last n tokens (n = max_ngram down to min_ngram) and proposes
    the tokens that followed it: the most recent occurrence followed by γ tokens, else the earliest
    (the longest continuation). With ``branches`` > 1 the draft is a token tree of the continuations
    of up to that many matches (longest n-grams first, most recent first; shared prefixes merged),
    so several guesses are verified in one target forward (greedy or sampled; relaxed rules judge each node).
    """

    def __init__(self, max_ngram: int = 3, min_ngram: int = 1, num_draft_tokens: int = 10,
                 adaptive: bool = True, max_draft_tokens: int = 16, min_draft_tokens: int = 4, branches: int = 1):
        if not 1 <= min_ngram <= max_ngram:
            raise ValueError(f"PromptLookup needs 1 <= min_ngram <= max_ngram, got {min_ngram}, {max_ngram}")
        if not isinstance(branches, int) or branches < 1:
            raise ValueError(f"PromptLookup branches must be an integer >= 1, got {branches!r}")
        super().__init__(num_draft_tokens, adaptive, max_draft_tokens, min(min_draft_tokens, num_draft_tokens))
        self.max_ngram, self.min_ngram, self.branches = max_ngram, min_ngram, branches

    def _matches(self, tokens: torch.Tensor, n: int) -> torch.Tensor:
        """[h] where the continuation of each earlier occurrence of the last n tokens starts."""
        windows = tokens[:-1].unfold(0, n, 1)  # [total - n, n]: every earlier n-gram
        return (windows == tokens[-n:]).all(dim=-1).nonzero()[:, 0] + n

    def propose(self, tokens, max_tokens, sampling, generator) -> Draft:
        gamma = min(self.length.current, max_tokens)
        total = tokens.shape[0]
        if self.branches > 1:
            return self._propose_tree(tokens, gamma)
        for n in range(min(self.max_ngram, total - 1), self.min_ngram - 1, -1):
            if gamma <= 0:
                break
            hits = self._matches(tokens, n)
            if hits.numel():
                full = hits[hits + gamma <= total]  # continuations with all γ tokens
                start = int(full[-1]) if full.numel() else int(hits[0])
                return Draft(tokens[start:start + gamma].clone())
        return _empty(tokens.device)

    def _propose_tree(self, tokens: torch.Tensor, gamma: int) -> Draft:
        total, continuations = tokens.shape[0], []
        for n in range(min(self.max_ngram, total - 1), self.min_ngram - 1, -1):
            if gamma <= 0:
                break
            for start in reversed(self._matches(tokens, n).tolist()):  # most recent first
                branch = tuple(tokens[start:start + gamma].tolist())
                if branch and branch not in continuations:
                    continuations.append(branch)
                if len(continuations) == self.branches:
                    break
            if len(continuations) == self.branches:
                break
        if not continuations:
            return _empty(tokens.device)
        node_of, draft_tokens, parents = {}, [], []  # a trie: (parent node, token) -> node
        for branch in continuations:
            parent = -1
            for token in branch:
                if (parent, token) not in node_of:
                    node_of[parent, token] = len(draft_tokens)
                    draft_tokens.append(token)
                    parents.append(parent)
                parent = node_of[parent, token]
        return Draft(torch.tensor(draft_tokens, device=tokens.device),
                     parents=torch.tensor(parents, dtype=torch.long, device=tokens.device))


class Jacobi(ScheduledDrafter):
    """Speculative Jacobi decoding (SJD): a window drafted from the target's own previous predictions.

    Training-free and model-free. After each verification the target's distributions at the
    positions past the accepted prefix (computed from the now-stale rest of the window) become the
    next draft: x_j ~ p_j^{(t)} with q_j = p_j^{(t)} (argmax under greedy), less the rows whose
    positions the loop has filled since (forced tokens); the window is topped up to ``window``
    tokens drawn uniformly from ``init_tokens`` (q uniform over them). The exact rules
    keep this lossless, since every drafted token is drawn from the q it is judged against.
    """

    def __init__(self, vocab_size: int, window: int = 16, init_tokens: torch.Tensor | None = None):
        if window < 1:
            raise ValueError(f"Jacobi: window must be >= 1, got {window}")
        super().__init__(window, adaptive=False, max_draft_tokens=window)
        self.vocab_size = vocab_size
        self.window = window
        init = torch.arange(vocab_size) if init_tokens is None else torch.as_tensor(init_tokens).long()
        if init.ndim != 1 or init.numel() == 0 or int(init.min()) < 0 or int(init.max()) >= vocab_size:
            raise ValueError(f"Jacobi: init_tokens must be a non-empty list of ids in [0, {vocab_size})")
        self.init_tokens = init  # [M]
        self.init_probs = torch.zeros(vocab_size).index_fill_(0, init, 1.0 / init.numel())  # [V]
        self._stale = None  # [m, V] predictions for positions _start, _start + 1, ...
        self._start = self._proposed_at = None  # _start None: the rows start right after the newest token

    def reset(self) -> None:
        super().reset()
        self._stale = self._start = self._proposed_at = None

    def propose(self, tokens, max_tokens, sampling, generator) -> Draft:
        gamma = min(self.window, max_tokens)
        self._proposed_at = tokens.shape[0]
        if gamma <= 0:
            return _empty(tokens.device)
        # tokens the loop appended after the last verdict (forced ones) fill the first rows' positions
        skip = 0 if self._start is None else max(0, tokens.shape[0] - self._start)
        stale = self._stale[skip:skip + gamma] if self._stale is not None else \
            tokens.new_empty(0, self.vocab_size).float()
        drafted = sampling.pick(stale, generator) if stale.shape[0] else tokens.new_empty(0)
        fresh = gamma - stale.shape[0]
        if fresh:
            pick = torch.randint(self.init_tokens.numel(), (fresh,), generator=generator)
            drafted = torch.cat([drafted.to(tokens.device), self.init_tokens[pick].to(tokens.device)])
            uniform = self.init_probs.to(stale.device).expand(fresh, -1)
            stale = torch.cat([stale, uniform])
        return Draft(drafted, stale)

    def observe(self, feedback: Feedback) -> None:
        super().observe(feedback)
        p = feedback.target_probs  # [γ+1, V]: rows past the recovered/bonus token are still guesses
        self._stale = None if p is None else p[feedback.num_accepted + 1:]
        self._start = None if self._proposed_at is None else self._proposed_at + feedback.num_accepted + 1
        self._proposed_at = None  # a verdict without a proposal of its own tells no position


def _truncated_view(target: torch.nn.Module, num_layers: int) -> torch.nn.Module:
    """A model object sharing the target's parameters that runs only its first ``num_layers`` layers."""
    if hasattr(target, "model") and hasattr(target.model, "layers") and hasattr(target.model, "norm"):
        body_name, layers_name = "model", "layers"  # Llama family: Llama, Mistral, Qwen2, Phi-3, Gemma...
    elif hasattr(target, "transformer") and hasattr(target.transformer, "h") and hasattr(target.transformer, "ln_f"):
        body_name, layers_name = "transformer", "h"  # GPT-2
    else:
        raise ValueError(
            f"LayerSkip supports the Llama family (model.layers + model.norm) and GPT-2 "
            f"(transformer.h + transformer.ln_f); {type(target).__name__} is neither"
        )
    body = getattr(target, body_name)
    total = len(getattr(body, layers_name))
    if not 1 <= num_layers < total:
        raise ValueError(f"LayerSkip: num_layers must be in [1, {total - 1}] for a {total}-layer target, "
                         f"got {num_layers}")
    config = copy.deepcopy(target.config)
    config.num_hidden_layers = num_layers
    if getattr(config, "layer_types", None) is not None:
        config.layer_types = list(config.layer_types[:num_layers])
    view_body = _shallow_module_copy(body)
    view_body._modules[layers_name] = torch.nn.ModuleList(list(getattr(body, layers_name))[:num_layers])
    view_body.config = config
    view = _shallow_module_copy(target)
    view._modules[body_name] = view_body
    view.config = config
    return view


def _shallow_module_copy(module: torch.nn.Module) -> torch.nn.Module:
    """A new module object sharing submodules and parameters, with its own registries and hook tables."""
    clone = copy.copy(module)
    for name, value in vars(module).items():
        if isinstance(value, dict):
            clone.__dict__[name] = type(value)(value)
    return clone


class LayerSkip(DraftModel):
    """Self-speculation: the target's first ``num_layers`` layers with its own final norm and LM head.

    Shares the target's weights (no copy); keeps its own cache for those layers.
    """

    def __init__(self, target: torch.nn.Module, num_layers: int, num_draft_tokens: int = 4,
                 adaptive: bool = True, max_draft_tokens: int = 16):
        super().__init__(_truncated_view(target, num_layers), num_draft_tokens, adaptive, max_draft_tokens)
        self.vocab_size = output_vocab_size(target)
