"""The token space and everything that turns levels into token sequences.

The only module that knows token ids. One vocabulary holds beat ticks, note types,
Encodec audio codes and a few specials; every offset below is derived from the
table of (name, size) rows, so changing a size moves everything after it.
Then: the per-song code cache, BeatDataset (beat-aligned chunks -> sequences) and the
collator that masks everything but the notes.
"""

from __future__ import annotations

import functools
import math
import os
import re
import sys
from collections import Counter, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path
from typing import NamedTuple

import msgspec
import numpy as np
import torch
from tqdm import tqdm

from audio import AudioError, load_audio
from levels.playability import MAX_CHAIN_BEATS, MIN_WALL_BEATS, SWING_BEATS, WALL_ROWS, swing_cells, wall_fits
from maps import (
    BEATS_PER_BAR,
    COLORS,
    CUT_STEP,
    DIFFICULTY_RANKS,
    DOT,
    GRID_CELLS,
    GRID_COLUMNS,
    GRID_ROWS,
    PPQ,
    Arc,
    Bomb,
    Chain,
    MapError,
    Note,
    Objects,
    Obstacle,
    TempoMap,
    along_cut,
    atomic_file,
    plain_notes,
    read_level_file,
    snap_ticks,
)

# bump on any change below; checkpoints record it (3: time-token markers in the audio; 4: the notes walk
# the marker grid, every 1/4- and 1/3-beat tick written with or without notes; 5: a song's last window is
# padded with the codec's silence to a whole chunk; 6: bombs, walls, arcs, chains and lengths appended
# after the difficulty row, every id of 5 unchanged, so a version-5 model still maps colour notes)
TOKEN_SPACE_VERSION = 6
NOTES_ONLY_VERSIONS = (5,)  # older token spaces whose ids are a prefix of this one: colour notes only

MAX_CHUNK_BEATS = 256  # the time range covers this many beats after a chunk's start
CHUNK_BEATS = 64  # beats per window, training and mapping alike (16 bars: ~30 s at 128 BPM)
DIRECTION_SLOTS = DOT + 2  # directions 0..8 plus slot 9, reserved and never produced
RESERVED_DIRECTION = DOT + 1
CODEBOOKS = 2  # Encodec 24 kHz at 1.5 kbps
CODEBOOK_SIZE = 1024
SPECIALS = ("BOS", "EOS", "PAD", "AUDIO_START", "AUDIO_END", "NOTES_START")
DIFFICULTIES = tuple(DIFFICULTY_RANKS)  # Easy .. ExpertPlus
# the grammar's default cap on notes in any one-beat span, by difficulty: about the 99th percentile of the
# busiest beats in the human fixture maps (Expert 4-5, ExpertPlus 5-8), so only bursts beyond them are cut
PEAK_NOTES_PER_BEAT = {"Easy": 3, "Normal": 3, "Hard": 4, "Expert": 5, "ExpertPlus": 6}
# the density floor, by difficulty: every span of this many beats in which the music plays holds a note (where
# the model wrote none, the grammar puts one on the span's strongest onset); at 120 BPM one note per 4 s (Easy) to
# one per second (Expert+), far below human maps' usual density, so it only fills what would be a silent gap
FLOOR_BEATS = {"Easy": 8, "Normal": 4, "Hard": 4, "Expert": 2, "ExpertPlus": 2}
BOMBS_AND_WALLS_PER_BEAT = 4  # the grammar's cap on bombs and walls together in any one-beat span
MAX_LENGTH_TICKS = CHUNK_BEATS * PPQ  # a wall or chain lasts at most one window (1 tick resolution)
CHAIN_SLICES = range(2, 9)  # the fixture maps' chains have 3-5 slices


class TokenRange(NamedTuple):
    start: int
    size: int

    @property
    def stop(self) -> int:
        return self.start + self.size

    def __contains__(self, token: object) -> bool:
        return isinstance(token, (int, np.integer)) and self.start <= token < self.stop


class ChunkNote(msgspec.Struct, frozen=True, order=True):
    """A colour note in a chunk: its tick from the chunk's first beat and its type."""

    tick: int
    x: int
    y: int
    color: int
    direction: int

    def placed(self, start: float) -> Note:
        """The level's note for a chunk that starts at beat `start`."""
        return Note(start + self.tick / PPQ, self.x, self.y, self.color, self.direction)


class ChunkBomb(msgspec.Struct, frozen=True, order=True):
    tick: int
    x: int
    y: int


class ChunkWall(msgspec.Struct, frozen=True, order=True):
    """A wall from `tick` for `duration` ticks over columns x..x+width-1, rows y..y+height-1 (rows 3-4 are
    above the note grid)."""

    tick: int
    x: int
    y: int
    width: int
    height: int
    duration: int


class ChunkArc(msgspec.Struct, frozen=True, order=True):
    """An arc into this tick's note of `color` (its tail) from that colour's latest earlier note in the
    chunk (its head): the token refers to notes of its own window, so every decision stays local."""

    tick: int
    color: int


class ChunkChain(msgspec.Struct, frozen=True, order=True):
    """A chain from this tick's arrow note of `color` (its head) to (tail_x, tail_y), `duration` ticks later,
    in `slices` pieces."""

    tick: int
    color: int
    tail_x: int
    tail_y: int
    slices: int
    duration: int


class ObjectKind(NamedTuple):
    """One row of the token table: a kind of level object, the record decoding gives, and the fields its
    type token packs, most significant first (a mixed-radix number over each field's range). A kind with
    a length field writes a length token right after its type token."""

    name: str
    record: type
    fields: tuple[tuple[str, range], ...]  # (record attribute, the values it takes)
    length: str | None = None  # the record attribute a following length token carries (ticks)

    @property
    def size(self) -> int:
        return math.prod(len(values) for _, values in self.fields)

    def offset(self, obj) -> int:
        """The object's place in its row; ValueError when a field is out of range."""
        offset = 0
        for name, values in self.fields:
            value = getattr(obj, name)
            if value not in values:
                raise ValueError(f"{self.name} {obj} is not in the token space ({name}={value})")
            offset = offset * len(values) + values.index(value)
        return offset

    def values(self, offset: int) -> dict[str, int]:
        """{field: value} of the object at this place in its row."""
        values = {}
        for name, field_values in reversed(self.fields):
            offset, index = divmod(offset, len(field_values))
            values[name] = field_values[index]
        return values


_CELL = (("y", range(GRID_ROWS)), ("x", range(GRID_COLUMNS)))
# the level objects the notes section writes, one token row each: (y*4 + x)*20 + color*10 + direction for a note
OBJECT_KINDS = (
    ObjectKind("note", ChunkNote, (*_CELL, ("color", range(COLORS)), ("direction", range(DIRECTION_SLOTS)))),
    ObjectKind("bomb", ChunkBomb, _CELL),
    ObjectKind(
        "wall",
        ChunkWall,
        (
            ("x", range(GRID_COLUMNS)),
            ("width", range(1, GRID_COLUMNS + 1)),
            ("y", range(GRID_ROWS)),
            ("height", range(1, WALL_ROWS + 1)),
        ),
        "duration",
    ),
    ObjectKind("arc", ChunkArc, (("color", range(COLORS)),)),
    ObjectKind(
        "chain",
        ChunkChain,
        (
            ("color", range(COLORS)),
            ("tail_y", range(GRID_ROWS)),
            ("tail_x", range(GRID_COLUMNS)),
            ("slices", CHAIN_SLICES),
        ),
        "duration",
    ),
)
KINDS = {kind.record: kind for kind in OBJECT_KINDS}
KIND_NAMES = tuple(kind.name for kind in OBJECT_KINDS)  # note, bomb, wall, arc, chain
_ROWS = (
    ("time", MAX_CHUNK_BEATS * PPQ),  # tick relative to the chunk start
    ("note", OBJECT_KINDS[0].size),
    ("audio", CODEBOOKS * CODEBOOK_SIZE),  # codebook q, value v -> q*1024 + v
    ("special", len(SPECIALS)),
    ("difficulty", len(DIFFICULTIES)),
    # version 6: appended, so that every id above keeps its version-5 meaning
    *((kind.name, kind.size) for kind in OBJECT_KINDS[1:]),
    ("length", MAX_LENGTH_TICKS),  # a wall's or chain's ticks, 1..MAX_LENGTH_TICKS
)
_STARTS = accumulate((size for _, size in _ROWS), initial=0)
TOKEN_RANGES = {name: TokenRange(start, size) for (name, size), start in zip(_ROWS, _STARTS)}
TIME, NOTE, AUDIO, SPECIAL, DIFFICULTY, BOMB, WALL, ARC, CHAIN, LENGTH = TOKEN_RANGES.values()
VOCAB_SIZE = LENGTH.stop  # ids in use; the model keeps its own, larger vocabulary
NOTES_ONLY_VOCAB = DIFFICULTY.stop  # the ids of token space 5
BOS, EOS, PAD, AUDIO_START, AUDIO_END, NOTES_START = range(SPECIAL.start, SPECIAL.stop)
DIFFICULTY_TOKENS = dict(zip(DIFFICULTIES, range(DIFFICULTY.start, DIFFICULTY.stop)))
LEVEL_RANGES = (TIME, *(TOKEN_RANGES[name] for name in KIND_NAMES), LENGTH)  # what the notes section writes
ChunkObject = ChunkNote | ChunkBomb | ChunkWall | ChunkArc | ChunkChain


def kind_of(token: int) -> ObjectKind | None:
    """The object kind whose row holds this type token, or None."""
    return next((kind for kind in OBJECT_KINDS if token in TOKEN_RANGES[kind.name]), None)


def object_token(obj: ChunkObject) -> int:
    """Type token of a chunk object (its tick and length aside); ValueError for anything outside its kind's row."""
    kind = KINDS[type(obj)]
    return TOKEN_RANGES[kind.name].start + kind.offset(obj)


def object_tokens(obj: ChunkObject) -> tuple[int, ...]:
    """The tokens a chunk object writes after its tick's time token: its type, then its length if it has one."""
    kind = KINDS[type(obj)]
    return (object_token(obj),) + ((length_token(getattr(obj, kind.length)),) if kind.length else ())


def token_object(token: int, tick: int, length: int | None = None) -> ChunkObject:
    """The chunk object a type token stands for, at `tick` (with its length in ticks for a kind that has
    one); ValueError for a token of no object kind."""
    kind = kind_of(token)
    if kind is None:
        raise ValueError(f"token {token} is not an object type")
    values = kind.values(token - TOKEN_RANGES[kind.name].start)
    if kind.length:
        values[kind.length] = length
    return kind.record(tick=tick, **values)


def length_token(ticks: int) -> int:
    if not 1 <= ticks <= LENGTH.size:
        raise ValueError(f"length {ticks} is outside 1..{LENGTH.size} ticks")
    return LENGTH.start + ticks - 1


def token_length(token: int) -> int:
    if token not in LENGTH:
        raise ValueError(f"token {token} is not a length token")
    return token - LENGTH.start + 1


def note_token(x: int, y: int, color: int, direction: int) -> int:
    """Token id of a note type; raises ValueError for anything off the 4x3 grid or the reserved direction."""
    if direction == RESERVED_DIRECTION:
        raise ValueError(f"direction {direction} is reserved")
    return object_token(ChunkNote(0, x, y, color, direction))


def note_fields(token: int) -> tuple[int, int, int, int]:
    """(x, y, color, direction) of a note-type token."""
    if token not in NOTE:
        raise ValueError(f"token {token} is not a note type")
    note = token_object(token, 0)
    return note.x, note.y, note.color, note.direction


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


def audio_token_ids() -> np.ndarray:
    """[2, 1024] int: the token id of code v of codebook q at [q, v]."""
    return audio_tokens(np.arange(CODEBOOK_SIZE)[:, None].repeat(CODEBOOKS, 1)).reshape(CODEBOOK_SIZE, CODEBOOKS).T


def _object_name(token: int) -> str:
    obj = token_object(token, 0, 1)
    fields = " ".join(f"{name}{getattr(obj, name)}" for name, _ in KINDS[type(obj)].fields)
    return f"<{KINDS[type(obj)].name} {fields}>"


def token_names() -> list[str]:
    """A readable name for every id of the token space, in id order (for the saved tokenizer)."""
    notes = [f"<n x{x} y{y} c{c} d{d}>" for x, y, c, d in map(note_fields, range(NOTE.start, NOTE.stop))]
    audio = [f"<a{q}:{v}>" for q in range(CODEBOOKS) for v in range(CODEBOOK_SIZE)]
    names = [f"<t{tick}>" for tick in range(TIME.size)] + notes + audio
    names += [f"<{name}>" for name in SPECIALS] + [f"<{name}>" for name in DIFFICULTIES]
    names += [_object_name(token) for token in range(BOMB.start, CHAIN.stop)]
    return names + [f"<len{ticks}>" for ticks in range(1, LENGTH.size + 1)]


def build_tokenizer():
    """A transformers tokenizer over the token space: what checkpoints carry so that
    from_pretrained works and ids print readably. Audio and notes never pass through text."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {name: i for i, name in enumerate(token_names())}
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(WordLevel(vocab, unk_token="<PAD>")),
        bos_token="<BOS>",
        eos_token="<EOS>",
        pad_token="<PAD>",
        unk_token="<PAD>",
    )


def note_sequence(
    ticks: np.ndarray, types: np.ndarray, grid: np.ndarray, lengths: np.ndarray | None = None
) -> np.ndarray:
    """A chunk's objects (ticks [n], type tokens [n], length tokens [n] or -1 for a kind without one) on its
    marker grid (ticks [m]) -> the note tokens: every tick of the grid or of an object once, in order, as
    its time token followed by its objects' type tokens (increasing; one object per type and tick: the
    first length kept), each with its length token after it. A grid tick without objects is its time token
    alone."""
    ticks, types, grid = (np.asarray(a, dtype=np.int64).reshape(-1) for a in (ticks, types, grid))
    lengths = np.full_like(ticks, -1) if lengths is None else np.asarray(lengths, dtype=np.int64).reshape(-1)
    pairs, first = np.unique(np.stack([ticks, types], 1).reshape(-1, 2), axis=0, return_index=True)
    lengths = lengths[first]
    times = np.unique(np.concatenate([grid, ticks]))
    # rows: (tick, 0 for the time token / 1 for a type, token id, its length token or -1)
    rows = np.concatenate(
        [
            np.stack([times, np.zeros_like(times), TIME.start + times, np.full_like(times, -1)], 1),
            np.stack([pairs[:, 0], np.ones(len(pairs), dtype=np.int64), pairs[:, 1], lengths], 1),
        ]
    )
    rows = rows[np.lexsort((rows[:, 2], rows[:, 1], rows[:, 0]))]  # by tick, time token first, then type ids
    tokens = rows[:, 2:].reshape(-1)
    return tokens[tokens >= 0]


def encode_notes(objects: Iterable[ChunkObject], grid: Iterable[int] = ()) -> list[int]:
    """Chunk objects on a marker grid of ticks -> note tokens (note_sequence)."""
    rows = [(obj.tick, *object_tokens(obj), -1)[:3] for obj in objects]
    ticks, types, lengths = zip(*rows) if rows else ((), (), ())
    return note_sequence(np.array(ticks), np.array(types), np.array(list(grid)), np.array(lengths)).tolist()


def decode_notes(tokens: Sequence[int]) -> list[ChunkObject]:
    """Note tokens -> chunk objects: each type token at the tick of the time token before it, with the
    length token after it for a kind that has one; ValueError for a type token with no time token before
    it, or a length token missing or out of place."""
    objects, tick, tokens = [], None, list(tokens)
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token in TIME:
            tick = token_tick(token)
        elif tick is None:
            raise ValueError(f"object type {token} before any time token")
        else:
            kind = kind_of(token)
            if kind is None:
                raise ValueError(f"token {token} is neither a time token nor an object type")
            length = None
            if kind.length:
                i += 1
                if i >= len(tokens) or tokens[i] not in LENGTH:
                    raise ValueError(f"{kind.name} type {token} without its length token")
                length = token_length(tokens[i])
            objects.append(token_object(token, tick, length))
        i += 1
    return objects


def note_tokens_error(tokens: Sequence[int], chunk_ticks: int = TIME.size) -> str | None:
    """Why a note-token list breaks the grammar, or None when it is valid.

    Valid: time tokens inside the chunk, strictly increasing, each followed by zero or more object types
    with strictly increasing ids, each of a kind with a length followed by one length token; a type only
    after a time token; never the reserved direction.
    """
    tick, last_type, wants_length = -1, -1, False
    for i, token in enumerate(tokens):
        if wants_length:
            if token not in LENGTH:
                return f"position {i}: {token} where a length token must follow the type before it"
            wants_length = False
        elif token in TIME:
            if token_tick(token) >= chunk_ticks:
                return f"position {i}: tick {token_tick(token)} is past the chunk end ({chunk_ticks})"
            if token_tick(token) <= tick:
                return f"position {i}: tick {token_tick(token)} not after {tick}"
            tick, last_type = token_tick(token), -1
        elif (kind := kind_of(token)) is not None:
            if tick < 0:
                return f"position {i}: object type before any time token"
            if token in NOTE and note_fields(token)[3] == RESERVED_DIRECTION:
                return f"position {i}: reserved direction {RESERVED_DIRECTION}"
            if token <= last_type:
                return f"position {i}: object types out of canonical order or repeated"
            last_type, wants_length = token, kind.length is not None
        else:
            return f"position {i}: {token} is neither a time token nor an object type"
    return "the last type lacks its length token" if wants_length else None


# ---------------------------------------------------------------- chunks (training and inference alike)

FIXED_TOKENS = 6  # BOS, AUDIO_START, AUDIO_END, NOTES_START, DIFF_x, EOS


def chunk_frames(start: int, chunk_beats: int, bpm: float, frame_rate: float) -> tuple[int, int]:
    """[first, end) frames of the audio of chunk [start, start + chunk_beats) beats, beat 0 at 0 s:
    exactly the chunk's seconds (the song's last chunk may run past its end: chunk_codes pads it)."""
    seconds_per_beat = 60 / bpm
    first = round(start * seconds_per_beat * frame_rate)
    return first, round((start + chunk_beats) * seconds_per_beat * frame_rate)


def chunk_codes(codes: np.ndarray, first: int, end: int, silence: np.ndarray) -> np.ndarray:
    """codes: [song frames, 2] -> [end - first, 2]: the chunk's frames, those past the song's end the
    codec's silence frame, so that the song's last window holds a whole chunk of audio and markers
    like every other (its tempo and length then read the same as in training)."""
    window = codes[first:end]
    return np.concatenate([window, np.broadcast_to(silence, (end - first - len(window), len(silence)))])


MARKER_TICKS = (0, PPQ // 4, PPQ // 3, PPQ // 2, 2 * PPQ // 3, 3 * PPQ // 4)  # a beat's 1/4 and 1/3 grid


class Markers(NamedTuple):
    ticks: np.ndarray  # [markers] int: chunk ticks on the 1/4- and 1/3-beat grid, ascending
    frames: np.ndarray  # [markers] int: the frame, counted from the chunk's first, where each begins


def chunk_markers(start: int, chunk_beats: int, bpm: float, frame_rate: float, frames: int) -> Markers:
    """The time markers of chunk [start, start + chunk_beats): every MARKER_TICKS tick of every beat
    and the frame where it begins; those at or past `frames` (the chunk's audio) are left out."""
    ticks = (np.arange(chunk_beats)[:, None] * PPQ + np.array(MARKER_TICKS)).reshape(-1)
    frames_per_tick = 60 / bpm / PPQ * frame_rate
    first = round(start * PPQ * frames_per_tick)
    offsets = np.round((start * PPQ + ticks) * frames_per_tick).astype(np.int64) - first
    keep = offsets < frames
    return Markers(ticks[keep], offsets[keep])


def window_codes(
    codes: np.ndarray, silence: np.ndarray, tempo: TempoMap, start: int, chunk_beats: int, frame_rate: float
) -> tuple[np.ndarray, Markers]:
    """The window [start, start + chunk_beats) beats of a song (codes: [song frames, 2], beat 0 at frame 0),
    laid out as training lays out a chunk -> (codes: [frames, 2], its chunk_markers).

    A steady song's window is exactly its beats' frames (chunk_frames, chunk_codes). Where the tempo
    changes, the frames run at the window's mean tempo, each taken from where its beat falls in the song
    (a frame repeated or skipped where the tempo moves inside the window), silence past the end.
    """
    if tempo.is_steady:
        first, end = chunk_frames(start, chunk_beats, tempo.bpm, frame_rate)
        return chunk_codes(codes, first, end, silence), chunk_markers(
            start, chunk_beats, tempo.bpm, frame_rate, end - first
        )
    first, end = tempo.seconds_at([start, start + chunk_beats])
    bpm = chunk_beats * 60 / (end - first)  # the window's mean tempo
    frames = chunk_frames(0, chunk_beats, bpm, frame_rate)[1]
    beats = start + np.arange(frames) / frame_rate * bpm / 60  # [frames] the beat each model frame shows
    source = np.round(tempo.seconds_at(beats) * frame_rate).astype(np.int64)  # [frames] song frames
    window = np.where((source < len(codes))[:, None], codes[np.minimum(source, len(codes) - 1)], silence)
    return window.astype(codes.dtype), chunk_markers(0, chunk_beats, bpm, frame_rate, frames)


def prompt_tokens(codes: np.ndarray, difficulty: str, markers: Markers) -> np.ndarray:
    """codes: [frames, 2] of one chunk, its chunk_markers -> the prompt [BOS][AUDIO_START] audio with
    the time token of each marker tick before the frame where that tick begins [AUDIO_END][NOTES_START][DIFF_x].

    The markers are the very time tokens the notes use: a note on a hit can copy the marker in
    front of the hit's frames instead of computing its tick from the audio's length."""
    audio = np.insert(audio_tokens(codes), markers.frames * CODEBOOKS, TIME.start + markers.ticks)
    head, tail = [BOS, AUDIO_START], [AUDIO_END, NOTES_START, DIFFICULTY_TOKENS[difficulty]]
    return np.concatenate([head, audio, tail]).astype(np.int64)


def generated_notes(tokens: Sequence[int]) -> list[ChunkObject]:
    """What the model wrote after the prompt -> chunk objects, up to EOS or PAD (time tokens without
    types are the grid's empty ticks)."""
    tokens = list(tokens)
    end = next((i for i, t in enumerate(tokens) if t in (EOS, PAD)), len(tokens))
    return decode_notes(tokens[:end])


def placed_objects(chunk: Iterable[ChunkObject], start: float) -> Objects:
    """A chunk's objects -> the level's, for a chunk that starts at beat `start`. An arc joins its colour's
    latest earlier note to this tick's first note of that colour, a chain starts at this tick's first
    arrow note of its colour; one whose notes are not in the chunk is left out."""
    chunk = sorted(chunk, key=lambda obj: (obj.tick, object_token(obj)))
    out, first_note = Objects(), {}  # first_note: (tick, colour) -> that tick's first Note of the colour
    for obj in chunk:
        beat = start + obj.tick / PPQ
        if isinstance(obj, ChunkNote):
            out.notes.append(note := obj.placed(start))
            first_note.setdefault((obj.tick, obj.color), note)
        elif isinstance(obj, ChunkBomb):
            out.bombs.append(Bomb(beat, obj.x, obj.y))
        elif isinstance(obj, ChunkWall):
            out.obstacles.append(Obstacle(beat, obj.duration / PPQ, obj.x, obj.y, obj.width, obj.height))
        elif isinstance(obj, ChunkArc):
            earlier = [(t, n) for (t, c), n in first_note.items() if c == obj.color and t < obj.tick]
            tail = first_note.get((obj.tick, obj.color))
            if earlier and tail is not None:
                out.arcs.append(Arc(max(earlier)[1], tail))
        else:
            here = [n for n in out.notes if n.beat == beat and n.color == obj.color and n.direction != DOT]
            if here:
                tail_beat = start + (obj.tick + obj.duration) / PPQ
                out.chains.append(Chain(here[0], tail_beat, obj.tail_x, obj.tail_y, obj.slices, 1.0))
    return out


def _arrays(kind_name: str) -> dict[str, np.ndarray]:
    """{field: [row size] int}: each type of a kind's row, field by field."""
    kind = next(k for k in OBJECT_KINDS if k.name == kind_name)
    fields = [kind.values(offset) for offset in range(kind.size)]
    return {name: np.array([f[name] for f in fields]) for name, _ in kind.fields}


def _cells(x0: np.ndarray, x1: np.ndarray, y0: np.ndarray, y1: np.ndarray) -> np.ndarray:
    """[types, 12] bool: the note-grid cells (y*4 + x) inside columns x0..x1-1 and rows y0..y1-1 of each type."""
    x, y = np.arange(GRID_CELLS) % GRID_COLUMNS, np.arange(GRID_CELLS) // GRID_COLUMNS
    return (x >= x0[:, None]) & (x < x1[:, None]) & (y >= y0[:, None]) & (y < y1[:, None])


# every type of each row, field by field: [row size] int arrays
_TYPE = _arrays("note")
_TYPE_CELL = _TYPE["y"] * GRID_COLUMNS + _TYPE["x"]
_BOMB_CELL = (lambda f: f["y"] * GRID_COLUMNS + f["x"])(_arrays("bomb"))
_WALL = _arrays("wall")
_WALL_CELLS = _cells(_WALL["x"], _WALL["x"] + _WALL["width"], _WALL["y"], _WALL["y"] + _WALL["height"])  # [240, 12]
_WALL_OK = np.array(  # [240]: the wall types playability allows (inside the lanes and rows, hiding no note)
    [
        wall_fits(Obstacle(0.0, MIN_WALL_BEATS, int(x), int(y), int(w), int(h)))
        for x, y, w, h in zip(*(_WALL[k] for k in ("x", "y", "width", "height")))
    ]
)
_CHAIN = _arrays("chain")
MIN_WALL_TICKS = math.ceil(MIN_WALL_BEATS * PPQ)
MAX_CHAIN_TICKS = round(MAX_CHAIN_BEATS * PPQ)
SWING_TICKS = round(SWING_BEATS * PPQ)
LAST_CELL = GRID_CELLS - 1


def _swing_mask(x: int, y: int, direction: int) -> np.ndarray:
    """[12] bool: the cells a hand sweeps cutting a note at (x, y) (playability.swing_cells)."""
    mask = np.zeros(GRID_CELLS, dtype=bool)
    for cx, cy in swing_cells(x, y, direction):
        mask[cy * GRID_COLUMNS + cx] = True
    return mask


class _RowState:
    """What the grammar remembers of one row: the tick, what it holds, and what still stands."""

    def __init__(self, beat_cap: float):
        self.beat_cap = beat_cap  # notes in any one-beat span
        self.tick = -1  # of the latest time token, -1 before the first
        self.done = False
        self.types: list[int] = []  # type tokens written at this tick
        self.cells = np.zeros(GRID_CELLS, dtype=bool)  # cells holding a note or bomb at this tick
        self.notes: dict[int, list[tuple[int, int, int]]] = {}  # colour -> (x, y, direction) at this tick
        self.chained: set[int] = set()  # colours whose note here heads a chain
        self.last_note: dict[int, int] = {}  # colour -> tick of its latest note before this tick
        self.recent: deque[int] = deque()  # ticks of its notes in the last beat
        self.recent_others: deque[int] = deque()  # ticks of its bombs and walls in the last beat
        self.walls: list[tuple[int, np.ndarray]] = []  # (end tick, [12] cells) of walls standing
        self.swings: list[tuple[int, np.ndarray]] = []  # (until tick, [12] cells) where hands sweep
        self.pending: int | None = None  # a wall or chain type waiting for its length token
        self.note_tick = -1  # of its latest note, -1 before the first


class NoteGrammar:
    """A transformers LogitsProcessor that keeps every generated chunk valid note tokens on its grid, with
    only the object kinds asked for (`kinds`, of KIND_NAMES) and the rules of play for each.

    The grid is the time-marker ticks of each row's prompt. After DIFF_x the first grid tick; after a
    time token or a type: a type allowed at this tick, or a later time token up to the next grid tick
    (off-grid ticks between are allowed, skipping a grid tick is not), or EOS once the grid is walked.
    At one tick, type ids increase (notes, then bombs, walls, arcs, chains).
    - Notes: no cell used twice, notes of one colour share a direction or are dots, none in a cell a
      wall stands over; with max_notes_per_beat (one cap, or one per row), no span of one beat holds
      more than that many notes (rounded down).
    - Bombs and walls: at most BOMBS_AND_WALLS_PER_BEAT in any one beat. Bombs: not in a cell of this
      tick's notes, under a wall, or where a hand sweeps in the SWING_TICKS after a note (its cell and
      the next along its cut). Walls: the types playability.wall_fits allows, none over this tick's
      notes or bombs, then a length from MIN_WALL_TICKS to the window's end.
    - Arcs: into this tick's note of a colour from its latest earlier note in the window.
    - Chains: from this tick's arrow note of a colour to a cell along its cut, one per colour, then a
      length up to MAX_CHAIN_TICKS inside the window.
    - The density floor (floors: per row, {tick: the first tick of its span}): at such a tick, where the row
      has written no note since its span began, a note comes first (when one is allowed at all).
    Never the reserved direction, never an id outside the token space. One instance serves one
    generate() call over a batch of prompts of one (left-padded) length.
    """

    def __init__(
        self,
        prompt_length: int,
        chunk_ticks: Sequence[int],
        max_notes_per_beat: float | Sequence[float] | None = None,
        kinds: Iterable[str] = ("note",),
        floors: Sequence[Mapping[int, int]] | None = None,
    ):
        self.prompt_length = prompt_length
        self.floors = list(floors) if floors is not None else [{} for _ in chunk_ticks]
        self.chunk_ticks = list(chunk_ticks)  # per row: ticks in its chunk (fewer for a song's last chunk)
        self.kinds = set(kinds)
        if not self.kinds <= set(KIND_NAMES):
            raise ValueError(f"unknown object kinds {sorted(self.kinds - set(KIND_NAMES))}")
        rows = len(self.chunk_ticks)
        caps = max_notes_per_beat if isinstance(max_notes_per_beat, Sequence) else [max_notes_per_beat] * rows
        self.rows = [_RowState(math.inf if cap is None else math.floor(cap)) for cap in caps]
        self.grid: list[np.ndarray] = []  # per row: its prompt's marker ticks, sorted (read at the first call)

    def _advance(self, state: _RowState, token: int) -> None:
        if token in (EOS, PAD):
            state.done = True
        elif token in TIME:
            for color in state.notes:
                state.last_note[color] = state.tick
            state.tick = token_tick(token)
            state.types, state.notes, state.chained = [], {}, set()
            state.cells = np.zeros(GRID_CELLS, dtype=bool)
            state.walls = [(end, cells) for end, cells in state.walls if end > state.tick]
            state.swings = [(until, cells) for until, cells in state.swings if until >= state.tick]
        elif token in LENGTH:
            kind = kind_of(state.pending)
            if kind.name == "wall":
                state.walls.append((state.tick + token_length(token), _WALL_CELLS[state.pending - WALL.start]))
            state.pending = None
        else:
            state.types.append(token)
            if token in NOTE:
                x, y, color, direction = note_fields(token)
                state.notes.setdefault(color, []).append((x, y, direction))
                state.cells[y * GRID_COLUMNS + x] = True
                state.recent.append(state.tick)
                state.note_tick = state.tick
                state.swings.append((state.tick + SWING_TICKS, _swing_mask(x, y, direction)))
            if token in BOMB or token in WALL:
                state.recent_others.append(state.tick)
            if token in BOMB:
                state.cells[_BOMB_CELL[token - BOMB.start]] = True
            elif token in CHAIN:
                state.chained.add(int(_CHAIN["color"][token - CHAIN.start]))
            if kind_of(token).length:
                state.pending = token

    @staticmethod
    def _room(recent: deque[int], tick: int, cap: float) -> bool:
        """Whether the span of one beat that ends at this tick holds fewer objects (recent: their ticks) than cap."""
        while recent and recent[0] <= tick - PPQ:
            recent.popleft()
        return len(recent) < cap

    def _note_types(self, state: _RowState) -> np.ndarray:
        """[240] bool: the note types allowed next at this row's tick."""
        allowed = _TYPE["direction"] != RESERVED_DIRECTION
        last = [t for t in state.types if t in NOTE]
        if last:
            allowed &= _TYPE_CELL > _TYPE_CELL[last[-1] - NOTE.start]  # increasing ids, each cell once
        for color, notes in state.notes.items():
            arrows = [direction for _, _, direction in notes if direction != DOT]
            if arrows:
                same = (_TYPE["direction"] == arrows[0]) | (_TYPE["direction"] == DOT)
                allowed &= (_TYPE["color"] != color) | same
        covered = np.any([cells for _, cells in state.walls], axis=0) if state.walls else np.zeros(GRID_CELLS, bool)
        return allowed & ~covered[_TYPE_CELL]

    def _bomb_types(self, state: _RowState) -> np.ndarray:
        """[12] bool: the bomb cells allowed next."""
        blocked = state.cells.copy()
        for _, cells in state.walls + state.swings:
            blocked |= cells
        return ~blocked[_BOMB_CELL]

    def _chain_types(self, state: _RowState, ticks_left: int) -> np.ndarray:
        """[168] bool: the chains allowed next: from each colour's first arrow note here along its cut."""
        allowed = np.zeros(CHAIN.size, dtype=bool)
        if ticks_left < 2:
            return allowed
        for color, notes in state.notes.items():
            head = next(((x, y, d) for x, y, d in notes if d != DOT), None)
            if head is None or color in state.chained:
                continue
            x, y, direction = head
            step = CUT_STEP[direction]
            dx, dy = _CHAIN["tail_x"] - x, _CHAIN["tail_y"] - y
            along = (np.sign(dx) == step[0]) & (np.sign(dy) == step[1]) & ((dx != 0) | (dy != 0))
            allowed |= (_CHAIN["color"] == color) & along
        return allowed

    def _types(self, state: _RowState, ticks_left: int) -> np.ndarray:
        """[VOCAB_SIZE - NOTE.start] bool over the ids from NOTE.start: the types allowed next at this tick."""
        allowed = np.zeros(VOCAB_SIZE - NOTE.start, dtype=bool)

        def put(row: TokenRange, mask: np.ndarray) -> None:
            allowed[row.start - NOTE.start : row.stop - NOTE.start] = mask

        if "note" in self.kinds and self._room(state.recent, state.tick, state.beat_cap):
            put(NOTE, self._note_types(state))
        others = self._room(state.recent_others, state.tick, BOMBS_AND_WALLS_PER_BEAT)
        if "bomb" in self.kinds and others:
            put(BOMB, self._bomb_types(state))
        if "wall" in self.kinds and others and ticks_left >= MIN_WALL_TICKS:
            put(WALL, _WALL_OK & ~(_WALL_CELLS & state.cells).any(axis=1))
        if "arc" in self.kinds:
            put(ARC, np.array([c in state.notes and c in state.last_note for c in range(COLORS)]))
        if "chain" in self.kinds:
            put(CHAIN, self._chain_types(state, ticks_left))
        if state.types:
            allowed[: state.types[-1] - NOTE.start + 1] = False  # type ids increase at one tick
        return allowed

    def _lengths(self, state: _RowState, ticks_left: int) -> tuple[int, int]:
        """[first, last] ticks the pending wall or chain may last."""
        if state.pending in WALL:
            return MIN_WALL_TICKS, ticks_left
        return 1, min(MAX_CHAIN_TICKS, ticks_left - 1)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        # input_ids: [rows, prompt + generated so far]; scores: [rows, model vocab] logits of the next token
        if not self.grid:
            prompts = input_ids[:, : self.prompt_length].cpu().numpy()
            grids = [np.unique(p[(p >= TIME.start) & (p < TIME.stop)]) - TIME.start for p in prompts]
            self.grid = [grid[grid < ticks] for grid, ticks in zip(grids, self.chunk_ticks)]
        if input_ids.shape[1] > self.prompt_length:
            for state, token in zip(self.rows, input_ids[:, -1].tolist()):
                self._advance(state, token)
        vocab = scores.shape[1]
        allowed = np.zeros((len(self.rows), max(vocab, VOCAB_SIZE)), dtype=bool)  # [rows, ids]
        for row, (state, chunk_ticks) in enumerate(zip(self.rows, self.chunk_ticks)):
            if state.done:
                allowed[row, EOS] = True
                continue
            tick, grid = state.tick, self.grid[row]
            if state.pending is not None:
                first, last = self._lengths(state, chunk_ticks - tick)
                allowed[row, length_token(first) : length_token(last) + 1] = True
                continue
            if tick >= 0:
                allowed[row, NOTE.start : VOCAB_SIZE] = self._types(state, chunk_ticks - tick)
                allowed[row, NOTE.stop : BOMB.start] = False  # audio, specials, difficulties
                span = self.floors[row].get(tick)
                if span is not None and state.note_tick < span and allowed[row, NOTE.start : NOTE.stop].any():
                    allowed[row, NOTE.stop :] = False  # the floor: a note, before anything else at this tick
                    continue
            later = grid[grid > tick]  # grid ticks still to write
            end = min(int(later[0]), chunk_ticks - 1) if len(later) else chunk_ticks - 1
            allowed[row, TIME.start + tick + 1 : TIME.start + end + 1] = True
            allowed[row, EOS] = not len(later)
        mask = torch.from_numpy(allowed[:, :vocab]).to(scores.device)
        return scores.masked_fill(~mask, -math.inf)


# ---------------------------------------------------------------- code cache


class CodesCache:
    """Full-length Encodec codes per song on disk: DIR/codes/<song sha1>-<tokenizer cache id>.npy (the
    codec and, off the CPU, the device that encoded them).

    Files are written to a temp name and renamed, so readers (and a second process
    filling the same cache) only ever see whole files.
    """

    def __init__(self, cache_dir: str | os.PathLike, tokenizer_id: str, n_codebooks: int):
        self.dir = Path(cache_dir) / "codes"
        self.suffix = re.sub(r"[^A-Za-z0-9._@-]", "_", tokenizer_id)
        self.n_codebooks = n_codebooks

    def path(self, song_hash: str) -> Path:
        return self.dir / f"{song_hash}-{self.suffix}.npy"

    def load(self, song_hash: str) -> np.ndarray | None:
        """codes: [frames, n_codebooks] int16 in 0..1023, or None when absent, truncated or corrupt."""
        try:
            codes = np.load(self.path(song_hash), mmap_mode="r")
        except (OSError, ValueError, EOFError):
            return None
        valid_shape = codes.ndim == 2 and codes.shape[0] > 0 and codes.shape[1] == self.n_codebooks
        if not valid_shape or codes.dtype != np.int16 or codes.min() < 0 or codes.max() >= CODEBOOK_SIZE:
            return None
        return codes

    def save(self, song_hash: str, codes: np.ndarray) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        with atomic_file(self.path(song_hash)) as out:
            np.save(out, np.ascontiguousarray(codes, dtype=np.int16))


@functools.lru_cache(maxsize=64)
def _mapped_codes(path: Path) -> np.ndarray:
    # a bounded number of songs stay memory-mapped per process (DataLoader workers included)
    return np.load(path, mmap_mode="r")


# ---------------------------------------------------------------- dataset


@dataclass
class _Item:
    # one trainable difficulty, reduced to what chunking needs
    level_path: str
    song_filename: str
    song_hash: str
    difficulty: str  # Easy .. ExpertPlus
    ticks: np.ndarray  # [objects] int64: absolute 48-PPQ tick of each object, canonical order
    types: np.ndarray  # [objects] int64: its type token
    extra: np.ndarray  # [objects] int64 ticks: a wall's or chain's length, an arc's distance back to its head
    tempo: TempoMap  # the difficulty's tempo regions (one for a song of one tempo)


def _wall_row(wall: Obstacle) -> tuple[int, int, int] | None:
    """(tick, type, length) of a wall inside the lanes and rows, or None (decorative walls outside them)."""
    ticks = round(wall.duration * PPQ)
    record = ChunkWall(round(wall.beat * PPQ), wall.x, wall.y, wall.width, wall.height, ticks)
    if not 1 <= ticks <= MAX_LENGTH_TICKS or wall.x + wall.width > GRID_COLUMNS or wall.y + wall.height > WALL_ROWS:
        return None
    try:
        return record.tick, object_token(record), ticks
    except ValueError:
        return None


def object_rows(diff) -> np.ndarray:
    """A difficulty's objects the token space holds -> [objects, 3] int64 (absolute tick, type token, extra:
    a wall's or chain's length in ticks, an arc's ticks back to its head, else 0), unique, in canonical order.

    Notes are plain_notes (arc ends and chain heads among them). Left out, object by object: bombs in a
    note's cell at its tick or off the grid; walls outside the lanes (decorative ones, common in vanilla
    maps), longer than a window or of no length; arcs whose head is not their colour's latest earlier note
    or whose ends are not notes; chains whose head is not a note, or whose tail is not along its cut or
    lies more than a window on.
    """
    notes = plain_notes(diff)
    note_ticks = snap_ticks(n.beat for n in notes)
    rows = [(t, note_token(n.x, n.y, n.color, n.direction), 0) for t, n in zip(note_ticks, notes)]
    cells = {(t, n.x, n.y) for t, n in zip(note_ticks, notes)}
    first = {}  # (tick, colour) -> the first note of that colour at that tick
    for note in notes:
        first.setdefault((round(note.beat * PPQ), note.color), note)
    for bomb in diff.bombs:
        tick = round(bomb.beat * PPQ)
        if 0 <= bomb.x < GRID_COLUMNS and 0 <= bomb.y < GRID_ROWS and (tick, bomb.x, bomb.y) not in cells:
            rows.append((tick, object_token(ChunkBomb(tick, bomb.x, bomb.y)), 0))
    rows += filter(None, map(_wall_row, diff.obstacles))
    ticks_by_color = {c: sorted(t for t, color in first if color == c) for c in range(COLORS)}
    for arc in diff.arcs:
        head, tail = round(arc.head.beat * PPQ), round(arc.tail.beat * PPQ)
        earlier = [t for t in ticks_by_color.get(arc.head.color, []) if t < tail]
        if earlier and earlier[-1] == head and (tail, arc.head.color) in first:
            rows.append((tail, object_token(ChunkArc(tail, arc.head.color)), tail - head))
    for chain in diff.chains:
        tick, head = round(chain.head.beat * PPQ), chain.head
        ticks = round(chain.tail_beat * PPQ) - tick
        note = first.get((tick, head.color))
        record = ChunkChain(tick, head.color, chain.tail_x, chain.tail_y, chain.slices, ticks)
        if note is None or not along_cut(note.direction, chain.tail_x - note.x, chain.tail_y - note.y):
            continue
        if 1 <= ticks <= MAX_LENGTH_TICKS and 0 <= chain.tail_x < GRID_COLUMNS and 0 <= chain.tail_y < GRID_ROWS:
            if chain.slices in CHAIN_SLICES:
                rows.append((tick, object_token(record), ticks))
    table = np.array(sorted(set(rows)), dtype=np.int64).reshape(-1, 3)
    _, keep = np.unique(table[:, :2], axis=0, return_index=True)  # one object per type and tick
    return table[np.sort(keep)]


def _item(level, characteristic: str, difficulty: str, song_hash: str) -> _Item:
    diff = next(d for d in level.difficulties if (d.characteristic, d.difficulty) == (characteristic, difficulty))
    rows = object_rows(diff)
    tempo = TempoMap.of_difficulty(level, diff)
    return _Item(level.path, level.song_filename, song_hash, difficulty, *rows.T.copy(), tempo)


def chunk_sequence(item: _Item, lo: int, hi: int, start_tick: int, chunk_ticks: int, grid: np.ndarray) -> np.ndarray:
    """The note tokens of an item's objects lo..hi-1 in the chunk that starts at start_tick: walls cut at the
    chunk's end (dropped when that leaves less than MIN_WALL_TICKS), chains and arcs kept only with both
    ends inside it."""
    ticks, types, extra = item.ticks[lo:hi] - start_tick, item.types[lo:hi], item.extra[lo:hi]
    walls, chains, arcs = ((types >= r.start) & (types < r.stop) for r in (WALL, CHAIN, ARC))
    lengths = np.where(walls, np.minimum(extra, chunk_ticks - ticks), extra)  # [objects] ticks
    keep = (
        ~(walls & (lengths < MIN_WALL_TICKS)) & ~(chains & (ticks + extra >= chunk_ticks)) & ~(arcs & (ticks < extra))
    )
    length_tokens = np.where(walls | chains, LENGTH.start + lengths - 1, -1)
    return note_sequence(ticks[keep], types[keep], grid, length_tokens[keep])


@dataclass(frozen=True)
class ChunkRules:
    """How a level becomes training chunks: the defaults train.py's flags start from."""

    chunk_beats: int = CHUNK_BEATS  # beats per chunk, on bar lines
    max_seq_length: int = 32768  # tokens; longer chunks are skipped and counted, never truncated
    max_empty_share: float = 0.1  # chunks with no notes, as a share of the chunks kept
    seed: int = 3407  # with the epoch: each song's whole-bar shift of its chunk grid

    def __post_init__(self):
        if not 0 < self.chunk_beats <= MAX_CHUNK_BEATS:
            raise ValueError(f"chunk_beats must be in 1..{MAX_CHUNK_BEATS}, not {self.chunk_beats}")


class BeatDataset(torch.utils.data.Dataset):
    """Training sequences from a ZippedBeatSaberDataset: one per chunk of rules.chunk_beats beats.

    Chunks start on bar lines; each epoch shifts every song's chunk grid by a seeded
    whole number of bars (set_epoch). A chunk's audio is exactly its beats' seconds of
    the song's codes, its notes' ticks count from its first beat, and the sequence is
    [BOS][AUDIO_START] audio [AUDIO_END][NOTES_START][DIFF_x] notes [EOS]. Chunks over
    rules.max_seq_length tokens are skipped and counted, never truncated; chunks with no
    notes are capped at rules.max_empty_share of the chunks kept. Every song is encoded
    (or read from the cache) up front, so DataLoader workers only read. verbose shows the
    encoding progress bar and names each unreadable song.
    """

    def __init__(
        self,
        base,
        tokenizer,
        rules: ChunkRules = ChunkRules(),
        cache_dir: str | os.PathLike = "cache",
        songs: Iterable[str] | None = None,
        verbose: bool = True,
    ):
        self.rules, self.verbose = rules, verbose
        self.tokenizer = tokenizer
        self.frame_rate = tokenizer.frame_rate
        self.cache = CodesCache(cache_dir, tokenizer.cache_id, tokenizer.n_codebooks)
        self.skipped: Counter[str] = Counter()
        wanted = set(songs) if songs is not None else None
        self.items: list[_Item] = []
        for i, (path, characteristic, difficulty) in enumerate(base.items):
            song_hash = base.song_hashes[path]
            if wanted is not None and song_hash not in wanted:
                continue
            if difficulty not in DIFFICULTY_TOKENS:
                self.skipped["unknown difficulty name"] += 1
                continue
            self.items.append(_item(base[i][0], characteristic, difficulty, song_hash))
        self.encoded = 0  # songs this process encoded (the rest came from the cache)
        self.silence = tokenizer.silence_codes()  # [2]: pads a song's last chunk
        self.frames = precache(self)  # song hash -> frames in the cache
        kept = [item for item in self.items if item.song_hash in self.frames]
        if len(kept) < len(self.items):
            self.skipped["unreadable song"] += len(self.items) - len(kept)
        self.items = kept
        self.set_epoch(0)

    def __getstate__(self) -> dict:
        # DataLoader workers started by spawn get everything but the Encodec model: they only read the cache
        return self.__dict__ | {"tokenizer": None}

    def _span(self, item: _Item, start: int) -> tuple[int, int]:
        bpm, at = item.tempo.steady_start(start)
        return chunk_frames(at, self.rules.chunk_beats, bpm, self.frame_rate)

    def _markers(self, item: _Item, start: int, frames: int) -> Markers:
        bpm, at = item.tempo.steady_start(start)
        return chunk_markers(at, self.rules.chunk_beats, bpm, self.frame_rate, frames)

    def _starts(self, item: _Item, shift: int) -> list[int]:
        """First beats of the item's chunks: every chunk_beats from `shift` beats into each tempo region,
        each chunk inside its region (the song's last may run past the song's end: it is padded)."""
        seconds = self.frames[item.song_hash] / self.frame_rate
        bounds = [*item.tempo.beats[1:], item.tempo.beat_at(seconds)]  # [regions] where each ends
        starts = []
        for i, (first, end) in enumerate(zip(item.tempo.beats, bounds)):
            stop = math.ceil(end) if i == len(bounds) - 1 else math.floor(end) - self.rules.chunk_beats + 1
            starts += range(math.ceil(first) + shift, stop, self.rules.chunk_beats)
        return starts

    def _notes_span(self, item: _Item, start: int) -> tuple[int, int]:
        """[first, end) indices of the item's notes inside chunk [start, start + chunk_beats)."""
        lo, hi = np.searchsorted(item.ticks, [start * PPQ, (start + self.rules.chunk_beats) * PPQ])
        return int(lo), int(hi)

    def _token_bound(self, item: _Item, start: int) -> int:
        """Tokens at most in the sequence of the item's chunk from beat `start`: audio codes, markers, then
        at most one time token per marker and per object, its type and length."""
        first, end = self._span(item, start)
        lo, hi = self._notes_span(item, start)
        markers = len(self._markers(item, start, end - first).ticks)
        return FIXED_TOKENS + 2 * (end - first) + 2 * markers + 3 * (hi - lo)

    def token_bounds(self) -> list[int]:
        """[chunks]: each of this epoch's chunks' _token_bound; the audio's share, set by the song's tempo,
        dominates, so chunks of one tempo come out alike (train.py batches them together)."""
        return [self._token_bound(self.items[index], start) for index, start in self.chunks]

    def set_epoch(self, epoch: int) -> None:
        """Plan this epoch's chunks: self.chunks = [(item index, first beat)]."""
        self.epoch = epoch
        rng = np.random.default_rng([self.rules.seed, epoch])
        bars_per_chunk = max(1, self.rules.chunk_beats // BEATS_PER_BAR)
        with_notes, empty, too_long = [], [], 0
        for index, item in enumerate(self.items):
            song_beats = self.frames[item.song_hash] / self.frame_rate * item.tempo.bpm / 60
            # within the song's whole bars, so that a song shorter than a chunk still gives one
            shift = int(rng.integers(max(1, min(bars_per_chunk, int(song_beats // BEATS_PER_BAR))))) * BEATS_PER_BAR
            for start in self._starts(item, shift):
                lo, hi = self._notes_span(item, start)
                if self._token_bound(item, start) > self.rules.max_seq_length:
                    too_long += 1
                else:
                    (with_notes if hi > lo else empty).append((index, start))
        share = self.rules.max_empty_share
        keep = len(empty) if share >= 1 else min(len(empty), math.floor(share * len(with_notes) / (1 - share)))
        chosen = sorted(rng.choice(len(empty), keep, replace=False)) if keep else []
        self.chunks = with_notes + [empty[i] for i in chosen]
        self.too_long = too_long
        # difficulties whose tempo changes, and the chunks inside one of their tempo regions this epoch
        changing = {index for index, item in enumerate(self.items) if not item.tempo.is_steady}
        self.tempo_changes = (len(changing), sum(index in changing for index, _ in self.chunks))

    def __len__(self) -> int:
        return len(self.chunks)

    def object_counts(self) -> dict[str, int]:
        """{kind: objects of that kind} over the dataset's difficulties (each difficulty once)."""
        types = np.concatenate([item.types for item in self.items]) if self.items else np.zeros(0, np.int64)
        return {
            name: int(np.count_nonzero((types >= TOKEN_RANGES[name].start) & (types < TOKEN_RANGES[name].stop)))
            for name in KIND_NAMES
        }

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        index, start = self.chunks[i]
        item = self.items[index]
        first, end = self._span(item, start)
        lo, hi = self._notes_span(item, start)
        # [frames, 2] int16, past the song's end the codec's silence
        codes = chunk_codes(_mapped_codes(self.cache.path(item.song_hash)), first, end, self.silence)
        markers = self._markers(item, start, end - first)
        # notes: the marker grid walked tick by tick, ticks counted from the chunk's first beat
        notes = chunk_sequence(item, lo, hi, start * PPQ, self.rules.chunk_beats * PPQ, markers.ticks)
        prompt = prompt_tokens(codes, item.difficulty, markers)
        return {"input_ids": np.concatenate([prompt, notes, [EOS]]).astype(np.int64)}


def precache(dataset: BeatDataset) -> dict[str, int]:
    """Encode every song of the dataset not yet in its cache; returns {song hash: frames}.

    Runs in the calling process with a progress bar (on CUDA the tokenizer batches each
    song's segments). A song that cannot be read is reported in one line (verbose) and left
    out; a truncated or corrupt cache file is encoded again. Counts its encodes in
    dataset.encoded.
    """
    songs = {item.song_hash: item for item in dataset.items}
    frames, missing = {}, []
    for song_hash in songs:
        codes = dataset.cache.load(song_hash)
        if codes is None:
            missing.append(song_hash)
        else:
            frames[song_hash] = len(codes)
    for song_hash in tqdm(missing, desc="encoding songs", unit="song", disable=not dataset.verbose or not missing):
        item = songs[song_hash]
        name = f"{item.level_path}:{item.song_filename}"
        try:
            song = read_level_file(item.level_path, item.song_filename)
            samples = load_audio(song, dataset.tokenizer.sample_rate, name)
        except (AudioError, MapError) as e:
            if dataset.verbose:
                print(f"skipped {e}", file=sys.stderr)
            continue
        codes = dataset.tokenizer.encode(samples[None])  # [frames, 2] int16, 75 frames/s
        dataset.cache.save(song_hash, codes)
        dataset.encoded += 1
        frames[song_hash] = len(codes)
    _mapped_codes.cache_clear()  # files may have been replaced
    return frames


# ---------------------------------------------------------------- collator


def audio_masking_collator(batch: list[dict]) -> dict[str, torch.Tensor]:
    """[{input_ids: [n_i]}] -> input_ids, attention_mask, labels: [batch, longest].

    Padding is PAD with attention 0; labels are the input ids on note tokens (time, type
    and length) after NOTES_START and EOS, -100 everywhere else: audio, its time markers,
    specials, difficulty and padding.
    """
    ids = [torch.as_tensor(b["input_ids"], dtype=torch.long) for b in batch]
    input_ids = torch.nn.utils.rnn.pad_sequence(ids, batch_first=True, padding_value=PAD)
    lengths = torch.tensor([len(i) for i in ids])
    attention_mask = (torch.arange(input_ids.shape[1]) < lengths[:, None]).long()
    is_note = torch.zeros_like(input_ids, dtype=torch.bool)  # [batch, longest]: time, type and length tokens
    for row in LEVEL_RANGES:
        is_note |= (input_ids >= row.start) & (input_ids < row.stop)
    in_notes = torch.cumsum(input_ids == NOTES_START, dim=1) > 0  # [batch, longest]: from NOTES_START on
    labels = torch.where((is_note & in_notes | (input_ids == EOS)) & attention_mask.bool(), input_ids, -100)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


if __name__ == "__main__":  # a library: --help (or no argument) says what it holds and which commands use it
    import argparse

    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="A library with no command of its own: train.py (datasets), infer.py (prompts and the decoding"
        " grammar) and utils.py use it.",
    )
    parser.parse_args()
    parser.print_help()
