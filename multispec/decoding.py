"""The decoding loop: draft → verify → accept → roll back, for any modality.

``stream`` runs the loop and yields the accepted tokens step by step; ``generate`` wraps it.
With ``drafter=None`` the same loop is plain autoregressive decoding (the baseline). The target's
cache always holds every token but the newest, so each step feeds [newest token, x_1..x_γ] once and
the accepted prefix is never re-run. A token the verifier forces (``forced_token``: its mask allows
one id there) is appended without a forward and fed with the next step's tokens.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Iterator

import torch

from . import checks, trees
from .acceptance import AcceptanceRule, Greedy, SpeculativeSampling, Verdict
from .drafters import Draft, Feedback
from .feature_drafters import FeatureDrafter
from .lm import FeatureVerifier, TreeVerifier, Verifier, as_verifier
from .sampling import Sampling
from .stats import DecodingStats


_INITIAL_ROOM = 1024  # tokens the output buffer holds before it first grows


@dataclass
class Step:
    tokens: torch.Tensor  # [n] tokens appended this step (accepted drafts + the target's token)
    num_drafted: int
    num_accepted: int
    stats: DecodingStats  # running totals (the same object every step)


@dataclass
class GenerationResult:
    sequences: torch.Tensor  # [B, T + new] prompt followed by the generated tokens (then padding, B > 1)
    stats: DecodingStats  # B > 1: summed over the rows (multispec.batching.total)
    row_stats: list[DecodingStats] | None = None  # B > 1: each row's own


def _as_verifier(target) -> Verifier:
    if isinstance(target, torch.nn.Module) and getattr(target, "training", False):
        warnings.warn("target is in training mode (dropout active); call target.eval() for reproducible decoding",
                      stacklevel=3)
    return as_verifier(target, "target")


def stream(target, input_ids: torch.Tensor, *, drafter=None, acceptance: AcceptanceRule | None = None,
           max_new_tokens: int = 64, temperature: float = 0.0, top_k: int | None = None,
           top_p: float | None = None, eos_token_id=None,
           generator: torch.Generator | None = None) -> Iterator[Step]:
    """Yield a :class:`Step` per target forward; see :func:`generate` for the arguments."""
    checks.check_sampling(max_new_tokens, temperature, top_k, top_p)
    checks.check_generator(generator)
    verifier = _as_verifier(target)
    prompt = checks.check_input_ids(input_ids, verifier.vocab_size)
    eos = checks.check_eos(eos_token_id, verifier.vocab_size)
    checks.check_drafter(drafter, verifier.vocab_size)
    checks.check_context(prompt.shape[0], max_new_tokens, verifier.max_length)
    sampling = Sampling(float(temperature), top_k, top_p)
    rule = acceptance or (Greedy() if sampling.greedy else SpeculativeSampling())
    if not callable(rule):
        raise ValueError(f"acceptance must be an acceptance rule, got {type(rule).__name__}")
    return _loop(verifier, prompt, drafter, rule, sampling, max_new_tokens, eos, generator)


@torch.inference_mode()
def _loop(verifier, prompt, drafter, rule, sampling, max_new_tokens, eos, generator) -> Iterator[Step]:
    stats = DecodingStats()
    start = time.perf_counter()
    device = verifier.device
    # grown on demand: a verifier without a context limit may be asked for more than it ever emits
    tokens = torch.empty(prompt.shape[0] + min(max_new_tokens, _INITIAL_ROOM), dtype=torch.long, device=device)
    tokens[: prompt.shape[0]] = prompt
    length = prompt.shape[0]  # tokens[:length] is the sequence so far

    def reserve(n: int) -> None:
        """Make room for ``n`` more tokens after tokens[:length]."""
        nonlocal tokens
        if length + n > tokens.shape[0]:
            grown = torch.empty(max(length + n, 2 * tokens.shape[0]), dtype=torch.long, device=device)
            grown[:length] = tokens[:length]
            tokens = grown

    # 0. Prefill: cache every prompt token but the last.
    verifier.reset()
    if drafter is not None:
        drafter.reset()
    reads_features = isinstance(drafter, FeatureDrafter)
    if reads_features:
        if not isinstance(verifier, FeatureVerifier):
            raise ValueError(f"drafter {type(drafter).__name__} reads the target's hidden states; the target "
                             f"must be a multispec.lm.FeatureVerifier (capture, features), "
                             f"{type(verifier).__name__} is not one")
        verifier.capture(drafter.feature_layers)
    if length > 1:
        verifier.forward(tokens[: length - 1])
        if reads_features:
            drafter.observe_features(verifier.features)
    cached = length - 1  # tokens[:cached] are in the target's cache
    stats.prefill_s = time.perf_counter() - start
    forced_token = verifier.forced_token

    def append_forced(budget: int) -> int:
        """Append up to ``budget`` tokens the verifier forces after tokens[:length]; returns how many."""
        nonlocal length
        n = 0
        while forced_token is not None and n < budget:
            token = forced_token(length, int(tokens[length - 1]))
            if token is None:
                break
            reserve(1)
            tokens[length] = token
            length, n = length + 1, n + 1
            if token in eos:
                break
        return n

    pending = append_forced(max_new_tokens)  # forced tokens right after the prompt
    stats.forced += pending
    stats.new_tokens += pending
    if pending and (stats.new_tokens >= max_new_tokens or int(tokens[length - 1]) in eos):
        stats.wall_s = time.perf_counter() - start
        yield Step(tokens[length - pending: length], 0, 0, stats)
        return
    while stats.new_tokens < max_new_tokens:
        remaining = max_new_tokens - stats.new_tokens
        # 1. Draft up to remaining − 1 tokens (the target adds one of its own).
        t0 = time.perf_counter()
        if drafter is not None and remaining > 1:
            draft = drafter.propose(tokens[:length], remaining - 1, sampling, generator)
        else:
            draft = Draft(tokens.new_empty(0))
        draft_tokens = draft.tokens.to(device)
        gamma = draft_tokens.shape[0]
        t1 = time.perf_counter()

        # 2. Verify: one target forward over [uncached tokens (the newest and any forced), x_1..x_γ]
        #    -> p [γ+1, V] from the last rows (for a tree: row 0 after the newest token, row i+1 after node i).
        fed = torch.cat([tokens[cached: length], draft_tokens])
        if draft.parents is None:
            p = sampling.probs(verifier.forward(fed)[-(gamma + 1):])
            q = None if draft.probs is None else draft.probs.to(device)
            verdict = rule(draft_tokens, q, p, greedy=sampling.greedy, generator=generator)
            path = None
        else:
            p, path, verdict = _verify_tree(verifier, fed, draft, length - cached, rule, sampling, generator)

        # 3. Accept the verified prefix and the target's own token; stop after eos.
        accepted_drafts = draft_tokens if path is None else draft_tokens[path]
        accepted = accepted_drafts[: verdict.num_accepted].tolist() + [verdict.next_token]
        for i, token in enumerate(accepted):
            if token in eos:
                accepted = accepted[: i + 1]
                break
        n_new = len(accepted)
        reserve(n_new)
        tokens[length: length + n_new] = torch.tensor(accepted, device=device)

        # 4. Roll back: keep the cache for the sequence up to (not including) its newest token.
        if reads_features:  # the features of the fed rows now committed: the uncached ones and the accepted path
            committed = torch.arange(length - cached + verdict.num_accepted, device=device) if path is None else \
                torch.cat([torch.arange(length - cached, device=device),
                           torch.tensor(path[: verdict.num_accepted], dtype=torch.long, device=device)
                           + length - cached])
            drafter.observe_features(verifier.features.index_select(0, committed.to(verifier.features.device)))
        if path is None:
            verifier.rollback(length + verdict.num_accepted)
        else:  # the prefix and the accepted path's nodes, in order
            kept = torch.tensor(path[: verdict.num_accepted], dtype=torch.long, device=device) + length
            verifier.keep(torch.cat([torch.arange(length, device=device), kept]))
        cached = length + verdict.num_accepted
        length += n_new
        n_forced = 0 if accepted[-1] in eos else append_forced(max_new_tokens - stats.new_tokens - n_new)
        if drafter is not None:
            if path is None:
                drafter.observe(Feedback(gamma, verdict.num_accepted, p))
            else:  # a tree's draft length is its depth
                depth = int(trees.depths(draft.parents).max()) if gamma else 0
                drafter.observe(Feedback(depth, verdict.num_accepted))
        t2 = time.perf_counter()

        kept_drafts = min(verdict.num_accepted, n_new)
        stats.steps += 1
        stats.new_tokens += n_new + n_forced
        stats.forced += n_forced
        stats.drafted += gamma
        stats.accepted += kept_drafts
        stats.accepted_per_step.append(kept_drafts)
        stats.moved_mass += verdict.moved_mass
        stats.draft_s += t1 - t0
        stats.verify_s += t2 - t1
        stats.wall_s = time.perf_counter() - start
        yield Step(tokens[length - n_new - n_forced - pending: length], gamma, kept_drafts, stats)
        pending = 0
        if int(tokens[length - 1]) in eos:
            break


def _verify_tree(verifier, fed: torch.Tensor, draft: Draft, uncached: int, rule, sampling, generator):
    """One forward over ``fed`` = [uncached tokens (chained), the draft tree's nodes] -> (p [n + 1, V]
    after the newest token and after each node, the accepted path's node indices, its Verdict)."""
    if not isinstance(verifier, TreeVerifier):
        raise ValueError(f"a token-tree draft needs a multispec.lm.TreeVerifier (forward_tree, keep); "
                         f"{type(verifier).__name__} is not one")
    parents = draft.parents.to(fed.device)
    trees.check_parents(parents)
    fed_parents = torch.cat([torch.arange(-1, uncached - 1, device=fed.device),
                             torch.where(parents < 0, uncached - 1, parents + uncached)])
    logits = verifier.forward_tree(fed, fed_parents)[uncached - 1:]
    p = sampling.probs(logits)
    nodes = fed[uncached:]
    q = None if draft.probs is None else draft.probs.to(fed.device)  # [n, V] each node's draft distribution
    if not isinstance(rule, (Greedy, SpeculativeSampling)):  # a relaxed rule's tolerance, node by node
        if q is not None and not sampling.greedy:
            raise ValueError("relaxed rules over token trees take point-mass drafts (Draft.probs None); "
                             "this tree's nodes were sampled from q")
        if not callable(getattr(rule, "relax", None)):
            raise ValueError(f"token-tree drafts need an acceptance rule with relax() (multispec.acceptance."
                             f"AcceptanceRule); {type(rule).__name__} has none")

        def relax(ids, rows):  # rule.relax for one-token point-mass drafts; None means exact: p̃ = p
            lifted = rule.relax(ids, None, rows, sampling.greedy)
            return rows.gather(1, ids[:, None])[:, 0] if lifted is None else lifted

        path, next_token, moved = trees.relaxed_path(nodes, parents, p, relax, sampling.greedy, generator)
        return p, path, Verdict(len(path), next_token, moved)
    if sampling.greedy:
        predicted = logits.argmax(dim=-1)
        path = trees.greedy_path(nodes, parents, predicted)
        next_token = int(predicted[path[-1] + 1 if path else 0])
    else:
        path, next_token = trees.sample_path(nodes, parents, p, generator) if q is None else \
            trees.sample_path(nodes, parents, p, generator, draft_probs=q)
    return p, path, Verdict(len(path), next_token)


def generate(target, input_ids: torch.Tensor, *, drafter=None, acceptance: AcceptanceRule | None = None,
             max_new_tokens: int = 64, temperature: float = 0.0, top_k: int | None = None,
             top_p: float | None = None, eos_token_id=None, generator: torch.Generator | None = None,
             attention_mask: torch.Tensor | None = None, pad_token_id: int = 0,
             batch_policy=None) -> GenerationResult:
    """Generate up to ``max_new_tokens`` tokens after ``input_ids`` [B, T] with draft-then-verify decoding.

    Args:
        target: a transformers causal LM (forward returns ``.logits``) or a :class:`~multispec.lm.Verifier`.
        drafter: a drafter from :mod:`multispec.drafters`; None decodes plainly through the same loop.
        acceptance: a rule from :mod:`multispec.acceptance`; None picks the exact one (``Greedy`` when
            ``temperature == 0``, ``SpeculativeSampling`` otherwise).
        temperature, top_k, top_p: Hugging Face semantics and order, applied to target and draft alike.
        eos_token_id: int or ids that end generation (included in the output); None never stops early.
        generator: the source of randomness for sampling and acceptance (B > 1: it seeds one per row).
        attention_mask: [B, T] 1 for tokens, 0 for padding (left padding, as Hugging Face batches);
            B > 1 decodes every row with its own acceptance and eos (:mod:`multispec.batching`).
        pad_token_id: fills each row of ``sequences`` after it stopped (B > 1).
        batch_policy: a :class:`~multispec.batch_policy.BatchPolicy` (B > 1): caps every row's draft
            length at what pays at the live batch size (0: plain steps), from measured forward costs.
    Returns:
        GenerationResult with ``sequences`` [B, T + new] and ``stats`` (:class:`DecodingStats`).
    """
    if attention_mask is not None or (isinstance(input_ids, torch.Tensor) and input_ids.ndim == 2
                                      and input_ids.shape[0] > 1):
        from .batching import generate_batch, total

        sequences, row_stats = generate_batch(
            target, input_ids, attention_mask, drafter=drafter, pad_token_id=pad_token_id, generator=generator,
            batch_policy=batch_policy,
            acceptance=acceptance, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
            top_p=top_p, eos_token_id=eos_token_id)
        return GenerationResult(sequences, total(row_stats), row_stats)
    steps = stream(target, input_ids, drafter=drafter, acceptance=acceptance, max_new_tokens=max_new_tokens,
                   temperature=temperature, top_k=top_k, top_p=top_p, eos_token_id=eos_token_id,
                   generator=generator)
    prompt = input_ids[0].long()
    new, stats = collect(steps)
    sequences = torch.cat([prompt.to(new.device), new])[None]
    return GenerationResult(sequences, stats)


def collect(steps: Iterator[Step]) -> tuple[torch.Tensor, DecodingStats]:
    """Run a :func:`stream` to its end -> (every new token [n], the final stats)."""
    pieces, stats = [], DecodingStats()
    for step in steps:
        pieces.append(step.tokens.clone())
        stats = step.stats
    return torch.cat(pieces) if pieces else torch.zeros(0, dtype=torch.long), stats
