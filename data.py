"""The token space and everything that turns levels into token sequences.

The only module that knows token ids. One vocabulary holds beat ticks, note types,
Encodec audio codes and a few specials; every offset below is derived from the
table of (name, size) rows, so changing a size moves everything after it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import accumulate
from typing import NamedTuple

import numpy as np

from maps import COLORS, DIFFICULTY_RANKS, DOT, GRID_COLUMNS, GRID_ROWS

TOKEN_SPACE_VERSION = 1  # bump on any change below; checkpoints record it

PPQ = 48  # ticks per beat
MAX_CHUNK_BEATS = 256  # the time range covers this many beats after a chunk's start
DIRECTION_SLOTS = DOT + 2  # directions 0..8 plus slot 9, reserved and never produced
RESERVED_DIRECTION = DOT + 1
CODEBOOKS = 2  # Encodec 24 kHz at 1.5 kbps
CODEBOOK_SIZE = 1024
SPECIALS = ("BOS", "EOS", "PAD", "AUDIO_START", "AUDIO_END", "NOTES_START")
DIFFICULTIES = tuple(DIFFICULTY_RANKS)  # Easy .. ExpertPlus


class TokenRange(NamedTuple):
    start: int
    size: int

    @property
    def stop(self) -> int:
        return self.start + self.size

    def __contains__(self, token: object) -> bool:
        return isinstance(token, (int, np.integer)) and self.start <= token < self.stop


_ROWS = (
    ("time", MAX_CHUNK_BEATS * PPQ),  # tick relative to the chunk start
    ("note", GRID_ROWS * GRID_COLUMNS * COLORS * DIRECTION_SLOTS),  # (y*4 + x)*20 + color*10 + direction
    ("audio", CODEBOOKS * CODEBOOK_SIZE),  # codebook q, value v -> q*1024 + v
    ("special", len(SPECIALS)),
    ("difficulty", len(DIFFICULTIES)),
)
_STARTS = accumulate((size for _, size in _ROWS), initial=0)
TOKEN_RANGES = {name: TokenRange(start, size) for (name, size), start in zip(_ROWS, _STARTS)}
TIME, NOTE, AUDIO, SPECIAL, DIFFICULTY = TOKEN_RANGES.values()
VOCAB_SIZE = DIFFICULTY.stop  # ids in use; the model keeps its own, larger vocabulary
BOS, EOS, PAD, AUDIO_START, AUDIO_END, NOTES_START = range(SPECIAL.start, SPECIAL.stop)
DIFFICULTY_TOKENS = dict(zip(DIFFICULTIES, range(DIFFICULTY.start, DIFFICULTY.stop)))

# a note in a chunk: (tick from the chunk start, x, y, color, direction)
ChunkNote = tuple[int, int, int, int, int]


def note_token(x: int, y: int, color: int, direction: int) -> int:
    """Token id of a note type; raises ValueError for anything off the 4x3 grid."""
    if not (0 <= x < GRID_COLUMNS and 0 <= y < GRID_ROWS and 0 <= color < COLORS and 0 <= direction <= DOT):
        raise ValueError(f"note (x={x}, y={y}, color={color}, direction={direction}) is not in the token space")
    return NOTE.start + ((y * GRID_COLUMNS + x) * COLORS + color) * DIRECTION_SLOTS + direction


def note_fields(token: int) -> tuple[int, int, int, int]:
    """(x, y, color, direction) of a note-type token."""
    if token not in NOTE:
        raise ValueError(f"token {token} is not a note type")
    cell_color, direction = divmod(token - NOTE.start, DIRECTION_SLOTS)
    cell, color = divmod(cell_color, COLORS)
    y, x = divmod(cell, GRID_COLUMNS)
    return x, y, color, direction


def time_token(tick: int) -> int:
    if not 0 <= tick < TIME.size:
        raise ValueError(f"tick {tick} is outside 0..{TIME.size - 1}")
    return TIME.start + tick


def token_tick(token: int) -> int:
    if token not in TIME:
        raise ValueError(f"token {token} is not a time token")
    return token - TIME.start


def audio_tokens(codes: np.ndarray) -> np.ndarray:
    """codes: [frames, 2] int in 0..1023 -> [frames * 2] token ids, c0_f0 c1_f0 c0_f1 c1_f1 ..."""
    codes = np.asarray(codes, dtype=np.int64)
    return (AUDIO.start + np.arange(CODEBOOKS) * CODEBOOK_SIZE + codes).reshape(-1)


def encode_notes(notes: Iterable[ChunkNote]) -> list[int]:
    """Chunk notes -> [time, type, time, type, ...] in canonical order: by tick, then by
    note-type id; exact duplicates collapse to one."""
    pairs = sorted({(time_token(tick), note_token(x, y, c, d)) for tick, x, y, c, d in notes})
    return [token for pair in pairs for token in pair]


def decode_notes(tokens: Sequence[int]) -> list[ChunkNote]:
    """[time, type, ...] -> chunk notes; raises ValueError when the list is not pairs."""
    if len(tokens) % 2:
        raise ValueError(f"odd number of note tokens ({len(tokens)})")
    return [(token_tick(t), *note_fields(n)) for t, n in zip(tokens[::2], tokens[1::2])]


def note_tokens_error(tokens: Sequence[int], chunk_ticks: int = TIME.size) -> str | None:
    """Why a note-token list breaks the grammar, or None when it is valid.

    Valid: time/type pairs; ticks inside the chunk and never decreasing; at one tick,
    type ids strictly increasing; never the reserved direction.
    """
    if len(tokens) % 2:
        return f"odd number of note tokens ({len(tokens)})"
    previous = (-1, -1)
    for i in range(0, len(tokens), 2):
        time, note = tokens[i], tokens[i + 1]
        if time not in TIME:
            return f"position {i}: {time} is not a time token"
        if note not in NOTE:
            return f"position {i + 1}: {note} is not a note type"
        if token_tick(time) >= chunk_ticks:
            return f"position {i}: tick {token_tick(time)} is past the chunk end ({chunk_ticks})"
        if note_fields(note)[3] == RESERVED_DIRECTION:
            return f"position {i + 1}: reserved direction {RESERVED_DIRECTION}"
        if (time, note) <= previous:
            return f"position {i}: note out of canonical order or repeated"
        previous = (time, note)
    return None
