"""Multi-codebook token layouts: how codec frames [T, K] become one flat token stream for an
autoregressive model and back.

Terms. A *frame* holds K codes, one per codebook, each in [0, C). Codebook k's code c has token id
``offset + k * C + c`` (slot offsets, as in Orpheus), so a token's codebook is known from its id.
A *position* counts tokens from the first audio token (the caller subtracts its prompt length);
its *slot* is the codebook it must hold. The layouts emit ``tokens_per_frame`` tokens per step
in slot order, so slot = position % tokens_per_frame.

- ``FlattenedLayout``: frame after frame, codebooks 0..K-1 within a frame; L = T * K.
- ``AlignedLayout``: the flattened layout with two *alignment* tokens leading each frame: the
  index of the input phone the frame belongs to, then that phone; L = T * (K + 2). The model
  itself decides when to move to the next phone (durations are generated, not given), and the
  phone token puts what to say next to the codes.
- ``DelayLayout`` (MusicGen): codebook k is shifted right by k frames and the grid is read row by
  row (one token per codebook per row); the empty corners hold ``pad_id`` = offset + K * C, so
  L = (T + K - 1) * K and the layout needs one vocabulary entry more.

Knows nothing about codecs or models.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


class FlattenedLayout:
    """Frames [T, K] <-> tokens [T * K] in slot order (frame-major)."""

    def __init__(self, num_codebooks: int, codebook_size: int, offset: int = 0):
        if num_codebooks < 1 or codebook_size < 1 or offset < 0:
            raise ValueError(f"need num_codebooks >= 1, codebook_size >= 1, offset >= 0; got "
                             f"{num_codebooks}, {codebook_size}, {offset}")
        self.num_codebooks, self.codebook_size, self.offset = num_codebooks, codebook_size, offset

    @property
    def num_tokens(self) -> int:
        """Vocabulary entries the layout uses, from ``offset`` on."""
        return self.num_codebooks * self.codebook_size

    @property
    def tokens_per_frame(self) -> int:
        return self.num_codebooks

    def num_positions(self, frames: int) -> int:
        """Tokens that ``frames`` complete frames take."""
        return frames * self.tokens_per_frame

    @property
    def vocab_end(self) -> int:
        """One past the largest token id the layout emits."""
        return self.offset + self.num_tokens

    # ---- slots --------------------------------------------------------------------------
    def slot(self, position: int) -> int:
        """Slot of the token at ``position`` (its codebook index; 0 also starts a frame)."""
        if position < 0:
            raise ValueError(f"position must be >= 0, got {position}")
        return position % self.tokens_per_frame

    def slots(self, positions: torch.Tensor) -> torch.Tensor:
        """positions [...] long -> slot [...] long (0 where a frame starts)."""
        return torch.remainder(positions, self.tokens_per_frame)

    def codebook_of(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [...] -> codebook of each token [...], -1 for ids outside the codebook ranges."""
        rel = tokens - self.offset
        inside = (rel >= 0) & (rel < self.num_tokens)
        return torch.where(inside, torch.div(rel, self.codebook_size, rounding_mode="floor"), -1)

    def _slot_table(self, vocab_size: int, always_allowed: Sequence[int]) -> torch.Tensor:
        """Bool [K, V]: row k allows codebook k's ids and ``always_allowed`` (e.g. an EOS id)."""
        if vocab_size < self.vocab_end:
            raise ValueError(f"vocab_size {vocab_size} is smaller than the layout's last id + 1 ({self.vocab_end})")
        table = torch.zeros(self.num_codebooks, vocab_size, dtype=torch.bool)
        for k in range(self.num_codebooks):
            start = self.offset + k * self.codebook_size
            table[k, start:start + self.codebook_size] = True
        table[:, list(always_allowed)] = True
        return table

    def allowed_masks(self, positions: torch.Tensor, vocab_size: int, always_allowed: Sequence[int] = ()) -> torch.Tensor:
        """positions [...] long -> Bool [..., V]: the ids each position may hold."""
        return self._slot_table(vocab_size, always_allowed)[self.slots(positions)]

    def allowed_mask(self, position: int, vocab_size: int, always_allowed: Sequence[int] = ()) -> torch.Tensor:
        """Bool [V]: the ids the token at ``position`` may hold (its codebook's range, plus
        ``always_allowed``)."""
        self.slot(position)
        return self.allowed_masks(torch.tensor(position), vocab_size, always_allowed)

    # ---- conversion ---------------------------------------------------------------------
    def _check_frames(self, frames: torch.Tensor) -> torch.Tensor:
        frames = torch.as_tensor(frames)
        if frames.dim() != 2 or frames.shape[1] != self.num_codebooks:
            raise ValueError(f"expected frames of shape [T, {self.num_codebooks}], got {tuple(frames.shape)}")
        if frames.numel() and (frames.min() < 0 or frames.max() >= self.codebook_size):
            raise ValueError(f"codes must lie in [0, {self.codebook_size}), got range "
                             f"[{int(frames.min())}, {int(frames.max())}]")
        return frames.long()

    def _codes_of_rows(self, grid: torch.Tensor) -> torch.Tensor:
        """grid [R, K] token ids -> codes [R, K]; ValueError for an id outside its column's codebook."""
        codes = grid - self.offset - torch.arange(self.num_codebooks) * self.codebook_size
        bad = (codes < 0) | (codes >= self.codebook_size)
        if bad.any():
            r, k = bad.nonzero()[0].tolist()
            raise ValueError(f"token {int(grid[r, k])} (frame {r}, slot {k}) is not a code of codebook {k} (ids {self.offset + k * self.codebook_size}.."
                             f"{self.offset + (k + 1) * self.codebook_size - 1})")
        return codes

    def _rows(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [L] -> [L // K, K]; a truncated last row (L % K tokens) is dropped."""
        tokens = torch.as_tensor(tokens).long()
        if tokens.dim() != 1:
            raise ValueError(f"expected a 1-D token sequence, got shape {tuple(tokens.shape)}")
        n = tokens.numel() // self.num_codebooks
        return tokens[:n * self.num_codebooks].view(n, self.num_codebooks)

    def to_tokens(self, frames: torch.Tensor) -> torch.Tensor:
        """frames [T, K] codes -> tokens [T * K] ids."""
        frames = self._check_frames(frames)
        return (frames + self.offset + torch.arange(self.num_codebooks) * self.codebook_size).reshape(-1)

    def to_frames(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [L] -> frames [L // K, K]. A truncated last frame (L % K trailing tokens, e.g. a
        generation cut mid-frame) is dropped; a token in the wrong slot raises ValueError."""
        return self._codes_of_rows(self._rows(tokens))


class AlignedLayout(FlattenedLayout):
    """Frames [T, K] with their phones <-> tokens [T * (K + 2)]: each frame is [index token, phone
    token, code_0, ..., code_{K-1}]. Slot 0 holds ``index_offset + i`` (i < ``max_index``), the i-th
    phone of the prompt; slot 1 that phone's id (``phone_offset + p``, p < ``num_phones``); slot
    k + 2 codebook k. Index and phone ids sit below ``offset`` (the codes' first id)."""

    def __init__(self, num_codebooks: int, codebook_size: int, offset: int, index_offset: int, max_index: int,
                 phone_offset: int, num_phones: int):
        super().__init__(num_codebooks, codebook_size, offset)
        ranges = sorted([(index_offset, index_offset + max_index), (phone_offset, phone_offset + num_phones)])
        if min(index_offset, phone_offset) < 0 or max_index < 1 or num_phones < 1 or ranges[0][1] > ranges[1][0] \
                or ranges[1][1] > offset:
            raise ValueError(f"index ids [{index_offset}, {index_offset + max_index}) and phone ids [{phone_offset}, "
                             f"{phone_offset + num_phones}) must not overlap and must lie below the codes (offset {offset})")
        self.index_offset, self.max_index = index_offset, max_index
        self.phone_offset, self.num_phones = phone_offset, num_phones

    @property
    def tokens_per_frame(self) -> int:
        return self.num_codebooks + 2

    @property
    def label_ids(self) -> list[int]:
        """Every index and phone id (the two tokens that lead a frame)."""
        return list(range(self.index_offset, self.index_offset + self.max_index)) + \
            list(range(self.phone_offset, self.phone_offset + self.num_phones))

    def _slot_table(self, vocab_size: int, always_allowed: Sequence[int]) -> torch.Tensor:
        codes = super()._slot_table(vocab_size, always_allowed)
        labels = torch.zeros(2, vocab_size, dtype=torch.bool)
        labels[0, self.index_offset:self.index_offset + self.max_index] = True
        labels[1, self.phone_offset:self.phone_offset + self.num_phones] = True
        labels[:, list(always_allowed)] = True
        return torch.cat([labels, codes])

    def to_tokens(self, frames: torch.Tensor, phone_index: torch.Tensor | None = None,
                  phones: torch.Tensor | None = None) -> torch.Tensor:
        """frames [T, K] codes, phone_index [T] in [0, N), phones [N] in [0, num_phones) (the
        prompt's phones) -> tokens [T * (K + 2)]."""
        codes = super().to_tokens(frames).view(-1, self.num_codebooks)
        if phone_index is None or phones is None:
            raise ValueError("the aligned layout needs each frame's phone index and the prompt's phones")
        phone_index, phones = torch.as_tensor(phone_index).long(), torch.as_tensor(phones).long()
        if phone_index.shape != codes.shape[:1]:
            raise ValueError(f"need one phone index per frame ({codes.shape[0]}), got {tuple(phone_index.shape)}")
        if phone_index.numel() and (phone_index.min() < 0 or phone_index.max() >= min(len(phones), self.max_index)):
            raise ValueError(f"phone indices must lie in [0, {min(len(phones), self.max_index)})")
        if phones.numel() and (phones.min() < 0 or phones.max() >= self.num_phones):
            raise ValueError(f"phones must lie in [0, {self.num_phones})")
        labels = torch.stack([phone_index + self.index_offset, phones[phone_index] + self.phone_offset], 1)
        return torch.cat([labels, codes], 1).reshape(-1)

    def _aligned_rows(self, tokens: torch.Tensor) -> torch.Tensor:
        tokens = torch.as_tensor(tokens).long()
        if tokens.dim() != 1:
            raise ValueError(f"expected a 1-D token sequence, got shape {tuple(tokens.shape)}")
        n = tokens.numel() // self.tokens_per_frame
        rows = tokens[:n * self.tokens_per_frame].view(n, self.tokens_per_frame)
        for slot, (first, count, what) in enumerate(((self.index_offset, self.max_index, "phone-index"),
                                                     (self.phone_offset, self.num_phones, "phone"))):
            bad = (rows[:, slot] < first) | (rows[:, slot] >= first + count)
            if bad.any():
                t = int(bad.nonzero()[0])
                raise ValueError(f"token {int(rows[t, slot])} (frame {t}, slot {slot}) is not a {what} token "
                                 f"(ids {first}..{first + count - 1})")
        return rows

    def to_frames(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [L] -> frames [L // (K + 2), K]; a truncated last frame is dropped."""
        return self._codes_of_rows(self._aligned_rows(tokens)[:, 2:])

    def phone_index(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [L] -> the phone index of each complete frame [L // (K + 2)]."""
        return self._aligned_rows(tokens)[:, 0] - self.index_offset

    def phones(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [L] -> the phone (0-based) each complete frame names [L // (K + 2)]."""
        return self._aligned_rows(tokens)[:, 1] - self.phone_offset


class DelayLayout(FlattenedLayout):
    """MusicGen delay pattern: row r holds codebook k's code of frame r - k, or ``pad_id`` where
    r - k is outside [0, T). Tokens [(T + K - 1) * K], row-major."""

    @property
    def pad_id(self) -> int:
        return self.offset + self.num_codebooks * self.codebook_size

    @property
    def num_tokens(self) -> int:
        return self.num_codebooks * self.codebook_size + 1

    def num_positions(self, frames: int) -> int:
        return (frames + self.num_codebooks - 1) * self.num_codebooks

    def codebook_of(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [...] -> codebook of each token [...], -1 for the pad id and other ids."""
        out = super().codebook_of(tokens)
        return torch.where(tokens == self.pad_id, -1, out)

    def allowed_masks(self, positions: torch.Tensor, vocab_size: int, always_allowed: Sequence[int] = ()) -> torch.Tensor:
        """positions [...] -> Bool [..., V]. Row r < k of slot k (the leading corner) allows only
        the pad id; otherwise slot k allows its codes and the pad id (the trailing corner: a pad
        in slot 0 ends the audio), and every slot ``always_allowed``."""
        table = self._slot_table(vocab_size, always_allowed)
        table[:, self.pad_id] = True
        slot = self.slots(positions)
        masks = table[slot]
        lead = torch.div(positions, self.num_codebooks, rounding_mode="floor") < slot
        pad_only = torch.zeros(vocab_size, dtype=torch.bool)
        pad_only[self.pad_id] = True
        return torch.where(lead.unsqueeze(-1), pad_only, masks)

    def to_tokens(self, frames: torch.Tensor) -> torch.Tensor:
        """frames [T, K] -> tokens [(T + K - 1) * K]."""
        frames = self._check_frames(frames)
        t, k = frames.shape
        grid = torch.full((t + k - 1, k), self.pad_id, dtype=torch.long)
        ids = frames + self.offset + torch.arange(k) * self.codebook_size
        for j in range(k):
            grid[j:j + t, j] = ids[:, j]
        return grid.reshape(-1)

    def to_frames(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [L] -> frames [T, K]. A truncated last row is dropped, and only frames whose K
        codes are all present are returned: frame t needs rows t .. t + K - 1, and the first frame
        with a pad id where a code belongs ends the audio (so a stream cut short, or one that
        pads out early, yields its complete prefix). Pads in the leading corner are required;
        any other misplaced id raises ValueError."""
        rows = self._rows(tokens)
        k = self.num_codebooks
        for j in range(1, k):  # leading corner: row r < j of column j
            if (rows[:j, j] != self.pad_id).any():
                raise ValueError(f"delay layout: the first {j} rows of codebook {j} must be the pad id {self.pad_id}")
        n = max(rows.shape[0] - k + 1, 0)
        grid = torch.stack([rows[j:j + n, j] for j in range(k)], 1) if n else rows.new_zeros(0, k)
        is_pad = (grid == self.pad_id).any(1)
        t = int(is_pad.nonzero()[0]) if is_pad.any() else n
        return self._codes_of_rows(grid[:t])
