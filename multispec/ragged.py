"""One Hugging Face causal LM serving B sequences at once over a shared, ragged KV cache.

Design (batch > 1): the cache is one ``DynamicCache`` of B rows and S physical slots. Each row keeps
``slots[row]``, the slot of each of its logical positions in order; a slot no row position points to
is a hole, masked out. A batched forward appends n slots to every row (n = the most tokens any row
feeds this time; a row feeding fewer, or nothing, fills the rest with masked pads), with per-row
``position_ids`` and a custom 4D mask built from the rows' slots (chains: causal; token trees: each
node sees its ancestors). Rolling a row back or keeping a tree path only edits that row's slot list;
trailing slots no row uses are cropped, and the cache is compacted (gathered left) when holes pile up.

This module knows nothing about drafting, acceptance rules, threads or modalities: it runs what it
is asked to run (:mod:`multispec.batching` schedules the rows).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from . import compat, trees
from .lm import context_length, feature_layers_for, output_vocab_size

_COMPACT_SLACK = 32  # holes tolerated beyond twice the longest row before the cache is compacted


@dataclass
class Request:
    tokens: torch.Tensor  # [n] appended after the row's cached positions
    last_only: bool = False  # return the last row of logits only
    parents: torch.Tensor | None = None  # [N] a token tree (see multispec.trees) whose last n nodes these are
    tree_start: int = 0  # where the tree's nodes start among the row's cached positions


class RaggedLM:
    """``model`` with a cache of ``rows`` independent sequences; see the module docstring."""

    def __init__(self, model: torch.nn.Module, rows: int):
        self.model, self.rows = model, rows
        self.vocab_size = output_vocab_size(model)
        self.max_length = context_length(model)
        self._cache_kwarg = compat.cache_kwarg(model)
        self.feature_layers: tuple[int, ...] | None = None
        self.forwards = self.compactions = 0  # batched forwards run, times the cache was compacted
        self.reset()

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def reset(self) -> None:
        """Empty every row."""
        self.cache = compat.new_cache(self.model)
        self.valid = torch.zeros(self.rows, 0, dtype=torch.bool)  # [B, S] slot holds a row position
        self.slot_positions = torch.zeros(self.rows, 0, dtype=torch.long)  # [B, S] each slot's position id
        self.slots = [torch.zeros(0, dtype=torch.long) for _ in range(self.rows)]

    def length(self, row: int) -> int:
        return self.slots[row].shape[0]

    def capture(self, layers: tuple[int, ...] | None) -> None:
        self.feature_layers = feature_layers_for(self.model, layers)

    def reset_row(self, row: int) -> None:
        self.valid[row] = False
        self.slots[row] = self.slots[row][:0]

    def rollback(self, row: int, length: int) -> None:
        if not 0 <= length <= self.length(row):
            raise ValueError(f"cannot roll back a cache of {self.length(row)} tokens to {length}")
        self.valid[row, self.slots[row][length:]] = False
        self.slots[row] = self.slots[row][:length]

    def keep(self, row: int, positions: torch.Tensor) -> None:
        if positions.ndim != 1 or (positions.numel() and int(positions[-1]) >= self.length(row)):
            raise ValueError(f"cannot keep positions {positions.tolist()} of a {self.length(row)}-token cache")
        kept = self.slots[row][positions.cpu()]
        self.valid[row] = False
        self.valid[row, kept] = True
        self.slots[row] = kept

    def run(self, requests: dict[int, Request]) -> dict[int, tuple[torch.Tensor, torch.Tensor | None]]:
        """One batched forward of every row's request -> {row: (logits [n or 1, V], features [n, F] or None)}."""
        self._tidy()
        size, device = self.valid.shape[1], self.device
        n = max(r.tokens.shape[0] for r in requests.values())
        ids = torch.zeros(self.rows, n, dtype=torch.long)
        query_positions = torch.zeros(self.rows, n, dtype=torch.long)
        allowed = torch.zeros(self.rows, n, size + n, dtype=torch.bool)
        allowed[:, torch.arange(n), size + torch.arange(n)] = True  # pads see themselves only
        for row, request in requests.items():
            k, length = request.tokens.shape[0], self.length(row)
            ids[row, :k] = request.tokens.cpu()
            new_slots = size + torch.arange(k)
            if request.parents is None:
                query_positions[row, :k] = length + torch.arange(k)
                allowed[row, :k, self.slots[row]] = True
                allowed[row, :k, size: size + k] = torch.ones(k, k, dtype=torch.bool).tril()
                continue
            parents, start = request.parents.cpu(), request.tree_start
            if parents.shape[0] != length - start + k:
                raise ValueError(f"a tree of {parents.shape[0]} nodes does not match {length - start} cached "
                                 f"and {k} new ones")
            query_positions[row, :k] = trees.positions(parents, start)[-k:]
            allowed[row, :k, self.slots[row][:start]] = True
            node_slots = torch.cat([self.slots[row][start:], new_slots])
            allowed[row, :k, node_slots] = trees.ancestor_mask(parents)[-k:]
        key_positions = torch.cat([self.slot_positions, query_positions], dim=1)
        dtype = next(self.model.parameters()).dtype
        mask = compat.attention_masks(self.model, allowed.to(device), query_positions.to(device),
                                      key_positions.to(device), dtype)
        capture = self.feature_layers is not None
        out = self.model(input_ids=ids.to(device), position_ids=query_positions.to(device), attention_mask=mask,
                         use_cache=True, output_hidden_states=capture, **{self._cache_kwarg: self.cache})
        self.forwards += 1
        self.valid = torch.cat([self.valid, torch.zeros(self.rows, n, dtype=torch.bool)], dim=1)
        self.slot_positions = torch.cat([self.slot_positions, query_positions], dim=1)
        results = {}
        for row, request in requests.items():
            k = request.tokens.shape[0]
            self.valid[row, size: size + k] = True
            self.slots[row] = torch.cat([self.slots[row], size + torch.arange(k)])
            logits = out.logits[row, k - 1: k] if request.last_only else out.logits[row, :k]
            features = torch.cat([out.hidden_states[i][row, :k] for i in self.feature_layers], dim=-1) \
                if capture else None
            results[row] = (logits, features)
        return results

    def _tidy(self) -> None:
        """Crop the slots after every row's last one; compact when holes outnumber the rows' tokens."""
        size = self.valid.shape[1]
        used = self.valid.any(dim=0).nonzero()
        end = int(used[-1]) + 1 if used.numel() else 0
        if end < size:
            if end == 0:
                self.reset()
                return
            compat.crop_cache(self.cache, size - end)
            self.valid, self.slot_positions = self.valid[:, :end], self.slot_positions[:, :end]
        longest = max(self.length(row) for row in range(self.rows))
        if end <= 2 * longest + _COMPACT_SLACK:
            return
        index = torch.zeros(self.rows, longest, dtype=torch.long)
        for row in range(self.rows):
            index[row, : self.length(row)] = self.slots[row]
        compat.gather_cache_slots(self.cache, index)
        self.compactions += 1
        self.slot_positions = self.slot_positions.gather(1, index)
        self.valid = torch.arange(longest)[None] < torch.tensor([self.length(r) for r in range(self.rows)])[:, None]
        self.slots = [torch.arange(self.length(row)) for row in range(self.rows)]
