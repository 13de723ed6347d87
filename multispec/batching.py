"""Batch > 1 with ragged acceptance: each row runs the ordinary loop, their forwards are merged.

Every row of ``input_ids`` [B, T] runs :func:`multispec.decoding.stream` unchanged, in its own
thread, with its own drafter (a copy sharing the weights) and its own generator, so it accepts its
own number of tokens per step and stops at its own eos; every drafter, rule and token tree works as
it does for one sequence. What the rows share is the model: each row sees a :class:`RowLM`, a view
of one :class:`~multispec.ragged.RaggedLM`, and a forward asked of a view waits until every running
row waits on some model; then the rows waiting on one model run as one batched forward (draft
models before the target, so the rows meet at the target). Rows that asked nothing feed masked pads.

Knows nothing about acceptance rules, drafting methods or modalities.
"""
from __future__ import annotations

import copy
import threading

import torch

from . import checks
from .batch_policy import BatchPolicy, Capped
from .lm import CachedLM, output_vocab_size
from .ragged import RaggedLM, Request
from .stats import DecodingStats


class Batcher:
    """Merges the rows' forwards: once every live row waits on a model, :meth:`serve` (the calling
    thread, the only one that runs forwards, so one OpenMP team does all the heavy work) runs one
    model's waiting requests as a batch and wakes those rows alone."""

    def __init__(self, rows: int):
        self._lock = threading.Condition()  # the serving thread waits on it; each row on its own event
        self._turn = threading.Lock()  # held by the one row doing its own work: no GIL thrash between rows
        self.rows = self._live = rows
        self._waiting: dict[tuple[int, int], tuple[RaggedLM, Request, threading.Event]] = {}  # (model id, row)
        self._done: dict[tuple[int, int], tuple] = {}
        self._error: BaseException | None = None
        self.target: RaggedLM | None = None  # runs last: the rows wait for each other there

    def call(self, lm: RaggedLM, row: int, request: Request):
        key, ready = (id(lm), row), threading.Event()
        with self._lock:
            if self._error is not None:
                raise RuntimeError("another row's batched forward failed") from self._error
            self._waiting[key] = (lm, request, ready)
            if len(self._waiting) >= self._live:
                self._lock.notify()
        self._turn.release()
        ready.wait()
        self._turn.acquire()
        if self._error is not None:
            raise RuntimeError("another row's batched forward failed") from self._error
        return self._done.pop(key)

    @property
    def error(self) -> BaseException | None:
        return self._error

    def live(self) -> int:
        """Rows still decoding."""
        return self._live

    def enter(self) -> None:
        """A row starts its own work (it holds the turn until it waits on a forward or leaves)."""
        self._turn.acquire()

    def leave(self) -> None:
        """A row finished (or failed): the others no longer wait for it."""
        with self._lock:
            self._live -= 1
            self._lock.notify()
        self._turn.release()

    @torch.inference_mode()
    def serve(self) -> None:
        """Run batches until every row has left (call from the thread that started the rows)."""
        while True:
            with self._lock:
                while self._live and len(self._waiting) < self._live:
                    self._lock.wait()
                if not self._live:
                    return
                groups: dict[int, list] = {}
                for (model_id, row), (lm, request, ready) in self._waiting.items():
                    groups.setdefault(model_id, []).append((row, lm, request, ready))
            group = min(groups.values(), key=lambda g: (g[0][1] is self.target, -len(g)))
            lm = group[0][1]
            try:  # every live row waits, so nothing else touches the caches
                results = lm.run({row: request for row, _, request, _ in group})
            except BaseException as error:  # every waiting row fails with it; later calls too
                with self._lock:
                    self._error = error
                    for _, _, ready in self._waiting.values():
                        ready.set()
                    self._waiting.clear()
                    self._live = 0
                return
            with self._lock:
                for row, _, _, ready in group:
                    del self._waiting[(id(lm), row)]
                    self._done[(id(lm), row)] = results[row]
                    ready.set()


class RowLM:
    """One row of a :class:`RaggedLM` as a :class:`~multispec.lm.Verifier` (and Tree-, FeatureVerifier)."""

    forced_token = None

    def __init__(self, lm: RaggedLM, row: int, batcher: Batcher):
        self.lm, self.row, self.batcher = lm, row, batcher
        self.vocab_size, self.max_length = lm.vocab_size, lm.max_length
        self.features: torch.Tensor | None = None

    @property
    def device(self) -> torch.device:
        return self.lm.device

    @property
    def length(self) -> int:
        return self.lm.length(self.row)

    @property
    def feature_layers(self):
        return self.lm.feature_layers

    def capture(self, layers) -> None:
        self.lm.capture(layers)

    def reset(self) -> None:
        self.lm.reset_row(self.row)

    def rollback(self, length: int) -> None:
        self.lm.rollback(self.row, length)

    def keep(self, positions: torch.Tensor) -> None:
        self.lm.keep(self.row, positions)

    def _call(self, request: Request) -> torch.Tensor:
        logits, self.features = self.batcher.call(self.lm, self.row, request)
        return logits

    def forward(self, tokens: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        return self._call(Request(tokens, last_only))

    def forward_tree(self, tokens: torch.Tensor, parents: torch.Tensor, tree_start: int | None = None) -> torch.Tensor:
        return self._call(Request(tokens, parents=parents, tree_start=self.length if tree_start is None else tree_start))


def left_pad(prompts: list[torch.Tensor], pad_token_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts [T_b] or [1, T_b] -> (input_ids [B, T], attention_mask [B, T]) padded on the left."""
    rows = [p.reshape(-1) for p in prompts]
    width = max(r.shape[0] for r in rows)
    ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, width - r.shape[0]:], mask[i, width - r.shape[0]:] = r, 1
    return ids, mask


def _row_drafter(drafter, row: int, batcher: Batcher, shared: dict):
    """A copy of ``drafter`` for one row: its modules (weights) shared, its draft model's cache a row
    of one RaggedLM shared by all rows, every other state its own."""
    memo = {}
    for value in vars(drafter).values():
        if isinstance(value, torch.nn.Module):
            memo[id(value)] = value
    lm = getattr(drafter, "lm", None)
    if lm is not None:
        if type(lm) is not CachedLM:  # a GuidedLM adds guidance and masks a RaggedLM does not run
            raise ValueError(f"batch > 1 runs draft models given as transformers causal LMs; "
                             f"{type(drafter).__name__} drafts with a {type(lm).__name__}; decode rows one at a time")
        if id(lm) not in shared:
            shared[id(lm)] = RaggedLM(lm.model, batcher.rows)
        memo[id(lm)] = RowLM(shared[id(lm)], row, batcher)
    return copy.deepcopy(drafter, memo)


def generate_batch(target, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, *, drafter,
                   pad_token_id: int, generator: torch.Generator | None, batch_policy: BatchPolicy | None = None,
                   **loop_kwargs):
    """:func:`multispec.generate` for a batch; see its docstring. Returns (sequences [B, T + new]:
    each input row as given, then its new tokens, then ``pad_token_id``; per-row stats).
    ``batch_policy`` caps every row's draft length at what pays at the live batch size."""
    from .decoding import collect, stream

    if not isinstance(target, torch.nn.Module):
        raise ValueError(f"batch > 1 needs a transformers causal LM as target (its rows share one batched "
                         f"cache); got {type(target).__name__}: decode its rows one at a time")
    checks.check_generator(generator)
    prompts = checks.check_batch(input_ids, attention_mask, output_vocab_size(target))
    checks.check_pad(pad_token_id)
    rows = len(prompts)
    if batch_policy is not None and not isinstance(batch_policy, BatchPolicy):
        raise ValueError(f"batch_policy must be a multispec.batch_policy.BatchPolicy, got {type(batch_policy).__name__}")
    outputs: list = [None] * rows
    errors: list = [None] * rows
    if rows == 1:  # one row: the ordinary loop on the model itself, no thread, no ragged cache
        single = drafter if batch_policy is None or drafter is None else Capped(drafter, batch_policy, lambda: 1)
        outputs[0] = collect(stream(target, prompts[0][None], drafter=single, generator=generator, **loop_kwargs))
    else:
        batcher = Batcher(rows)
        batcher.target = RaggedLM(target, rows)
        shared: dict = {}
        drafters = [None] * rows
        if drafter is not None:
            drafters = [_row_drafter(drafter, row, batcher, shared) for row in range(rows)]
            if batch_policy is not None:
                drafters = [Capped(d, batch_policy, batcher.live) for d in drafters]
        seeds = torch.randint(2 ** 62, (rows,), generator=generator).tolist() if generator is not None else None

        def decode(row: int) -> None:
            batcher.enter()
            try:
                row_generator = None if seeds is None else torch.Generator(generator.device).manual_seed(seeds[row])
                outputs[row] = collect(stream(RowLM(batcher.target, row, batcher), prompts[row][None],
                                              drafter=drafters[row], generator=row_generator, **loop_kwargs))
            except BaseException as error:
                errors[row] = error
            finally:
                batcher.leave()

        threads = [threading.Thread(target=decode, args=(row,), daemon=True) for row in range(rows)]
        for thread in threads:
            thread.start()
        batcher.serve()
        for thread in threads:
            thread.join()
        if batcher.error is not None:  # a batched forward failed: its own error, not the rows' echoes
            raise batcher.error
    for error in errors:  # the row's own error first, not the "another row failed" it caused
        if error is not None and not isinstance(error, RuntimeError):
            raise error
    for error in errors:
        if error is not None:
            raise error
    width = max(out[0].shape[0] for out in outputs)
    sequences = input_ids.new_full((rows, input_ids.shape[1] + width), pad_token_id)
    sequences[:, : input_ids.shape[1]] = input_ids
    for row, (new, _) in enumerate(outputs):
        sequences[row, input_ids.shape[1]: input_ids.shape[1] + new.shape[0]] = new.to(sequences.device)
    return sequences, [out[1] for out in outputs]


def total(stats: list[DecodingStats]) -> DecodingStats:
    """The rows' stats summed (τ: new tokens per row-step); times are the longest row's."""
    out = DecodingStats()
    for s in stats:
        for name in ("steps", "new_tokens", "drafted", "accepted", "forced", "moved_mass"):
            setattr(out, name, getattr(out, name) + getattr(s, name))
        out.accepted_per_step += s.accepted_per_step
        for name in ("prefill_s", "draft_s", "verify_s", "wall_s"):
            setattr(out, name, max(getattr(out, name), getattr(s, name)))
    return out
