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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path
from typing import ClassVar, NamedTuple

import msgspec
import numpy as np
import torch
from tqdm import tqdm

from audio import AudioError, load_audio
from maps import (
    BEATS_PER_BAR,
    COLORS,
    DIFFICULTY_RANKS,
    DOT,
    GRID_CELLS,
    GRID_COLUMNS,
    GRID_ROWS,
    PPQ,
    MapError,
    Note,
    TempoMap,
    atomic_file,
    plain_notes,
    read_level_file,
    snap_ticks,
)

# bump on any change below; checkpoints record it (3: time-token markers in the audio; 4: the notes walk
# the marker grid, every 1/4- and 1/3-beat tick written with or without notes; 5: a song's last window is
# padded with the codec's silence to a whole chunk)
TOKEN_SPACE_VERSION = 5

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
    kind: ClassVar[str] = "note"

    def placed(self, start: float) -> Note:
        """The level's note for a chunk that starts at beat `start`."""
        return Note(start + self.tick / PPQ, self.x, self.y, self.color, self.direction)


class ObjectKind(NamedTuple):
    """One row of the token table: a kind of level object, the record decoding gives, and the fields its
    type token packs, most significant first (a mixed-radix number, each field 0..size-1)."""

    name: str
    record: type
    fields: tuple[tuple[str, int], ...]  # (record attribute, its size)

    @property
    def size(self) -> int:
        return math.prod(size for _, size in self.fields)

    def offset(self, obj) -> int:
        """The object's place in its row; ValueError when a field is out of range."""
        offset = 0
        for name, size in self.fields:
            value = getattr(obj, name)
            if not 0 <= value < size:
                raise ValueError(f"{self.name} {obj} is not in the token space ({name}={value})")
            offset = offset * size + value
        return offset

    def values(self, offset: int) -> dict[str, int]:
        """{field: value} of the object at this place in its row."""
        values = {}
        for name, size in reversed(self.fields):
            offset, values[name] = divmod(offset, size)
        return values


# the level objects the notes section writes, one token row each: (y*4 + x)*20 + color*10 + direction for a note
OBJECT_KINDS = (
    ObjectKind(
        "note", ChunkNote, (("y", GRID_ROWS), ("x", GRID_COLUMNS), ("color", COLORS), ("direction", DIRECTION_SLOTS))
    ),
)
KINDS = {kind.record: kind for kind in OBJECT_KINDS}
_ROWS = (
    ("time", MAX_CHUNK_BEATS * PPQ),  # tick relative to the chunk start
    *((kind.name, kind.size) for kind in OBJECT_KINDS),
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


def object_token(obj: ChunkNote) -> int:
    """Type token of a chunk object (its tick aside); ValueError for anything outside its kind's row."""
    kind = KINDS[type(obj)]
    return TOKEN_RANGES[kind.name].start + kind.offset(obj)


def token_object(token: int, tick: int) -> ChunkNote:
    """The chunk object a type token stands for, at `tick`; ValueError for a token of no object kind."""
    for kind in OBJECT_KINDS:
        if token in TOKEN_RANGES[kind.name]:
            return kind.record(tick=tick, **kind.values(token - TOKEN_RANGES[kind.name].start))
    raise ValueError(f"token {token} is not an object type")


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


def token_names() -> list[str]:
    """A readable name for every id of the token space, in id order (for the saved tokenizer)."""
    notes = [f"<n x{x} y{y} c{c} d{d}>" for x, y, c, d in map(note_fields, range(NOTE.start, NOTE.stop))]
    audio = [f"<a{q}:{v}>" for q in range(CODEBOOKS) for v in range(CODEBOOK_SIZE)]
    names = [f"<t{tick}>" for tick in range(TIME.size)] + notes + audio
    return names + [f"<{name}>" for name in SPECIALS] + [f"<{name}>" for name in DIFFICULTIES]


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


def note_sequence(ticks: np.ndarray, types: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """A chunk's notes (ticks [n], type tokens [n]) on its marker grid (ticks [m]) -> the note tokens:
    every tick of the grid or of a note once, in order, as its time token followed by the type tokens of
    its notes (increasing; exact duplicates once). A grid tick without notes is its time token alone."""
    ticks, types, grid = (np.asarray(a, dtype=np.int64).reshape(-1) for a in (ticks, types, grid))
    # rows: (tick, 0 for the time token / 1 for a type, token id)
    times = np.unique(np.concatenate([grid, ticks]))
    rows = np.concatenate(
        [
            np.stack([times, np.zeros_like(times), TIME.start + times], 1),
            np.stack([ticks, np.ones_like(ticks), types], 1),
        ]
    )
    return np.unique(rows, axis=0)[:, 2]  # sorted by tick, time token first, then type ids


def encode_notes(notes: Iterable[ChunkNote], grid: Iterable[int] = ()) -> list[int]:
    """Chunk objects on a marker grid of ticks -> note tokens (note_sequence)."""
    pairs = [(obj.tick, object_token(obj)) for obj in notes]
    ticks, types = zip(*pairs) if pairs else ((), ())
    return note_sequence(np.array(ticks), np.array(types), np.array(list(grid))).tolist()


def decode_notes(tokens: Sequence[int]) -> list[ChunkNote]:
    """Note tokens -> chunk notes: each type token at the tick of the time token before it; raises
    ValueError for a type token with no time token before it."""
    notes, tick = [], None
    for token in tokens:
        if token in TIME:
            tick = token_tick(token)
        elif tick is None:
            raise ValueError(f"note type {token} before any time token")
        else:
            notes.append(token_object(token, tick))
    return notes


def note_tokens_error(tokens: Sequence[int], chunk_ticks: int = TIME.size) -> str | None:
    """Why a note-token list breaks the grammar, or None when it is valid.

    Valid: time tokens inside the chunk, strictly increasing, each followed by zero or more note types
    with strictly increasing ids; a note type only after a time token; never the reserved direction.
    """
    tick, last_type = -1, -1
    for i, token in enumerate(tokens):
        if token in TIME:
            if token_tick(token) >= chunk_ticks:
                return f"position {i}: tick {token_tick(token)} is past the chunk end ({chunk_ticks})"
            if token_tick(token) <= tick:
                return f"position {i}: tick {token_tick(token)} not after {tick}"
            tick, last_type = token_tick(token), -1
        elif token in NOTE:
            if tick < 0:
                return f"position {i}: note type before any time token"
            if note_fields(token)[3] == RESERVED_DIRECTION:
                return f"position {i}: reserved direction {RESERVED_DIRECTION}"
            if token <= last_type:
                return f"position {i}: note types out of canonical order or repeated"
            last_type = token
        else:
            return f"position {i}: {token} is neither a time token nor a note type"
    return None


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


def generated_notes(tokens: Sequence[int]) -> list[ChunkNote]:
    """What the model wrote after the prompt -> chunk notes, up to EOS or PAD (time tokens without
    note types are the grid's empty ticks)."""
    tokens = list(tokens)
    end = next((i for i, t in enumerate(tokens) if t in (EOS, PAD)), len(tokens))
    return decode_notes(tokens[:end])


# note-type fields by offset in the note range: [240] int each
_TYPE_X, _TYPE_Y, _TYPE_COLOR, _TYPE_DIRECTION = map(np.array, zip(*map(note_fields, range(NOTE.start, NOTE.stop))))
_TYPE_CELL = _TYPE_Y * GRID_COLUMNS + _TYPE_X
LAST_CELL = GRID_CELLS - 1


class NoteGrammar:
    """A transformers LogitsProcessor that keeps every generated chunk valid note tokens on its grid.

    The grid is the time-marker ticks of each row's prompt. After DIFF_x the first grid tick; after a
    time token or a note type: a note type allowed at this tick, or a later time token up to the next
    grid tick (off-grid ticks between are allowed, skipping a grid tick is not), or EOS once the grid is
    walked. At one tick, note types increase, no cell is used twice, and notes of one colour share a
    direction or are dots. With max_notes_per_beat (one cap, or one per row), no span of one beat holds
    more than that many notes (rounded down): at a tick t, a row whose notes in (t - PPQ, t] already
    number the cap writes no note there, so no burst can spend a window's notes. Never the reserved
    direction, never an id outside the token space. One instance serves one generate() call over a
    batch of prompts of one (left-padded) length.
    """

    def __init__(
        self,
        prompt_length: int,
        chunk_ticks: Sequence[int],
        max_notes_per_beat: float | Sequence[float] | None = None,
    ):
        self.prompt_length = prompt_length
        self.chunk_ticks = list(chunk_ticks)  # per row: ticks in its chunk (fewer for a song's last chunk)
        rows = len(self.chunk_ticks)
        caps = max_notes_per_beat if isinstance(max_notes_per_beat, Sequence) else [max_notes_per_beat] * rows
        self.beat_cap = [math.inf if cap is None else math.floor(cap) for cap in caps]  # per row: notes per beat
        self.recent: list[deque[int]] = [deque() for _ in range(rows)]  # per row: ticks of its notes in the last beat
        self.grid: list[np.ndarray] = []  # per row: its prompt's marker ticks, sorted (read at the first call)
        self.tick = [-1] * rows  # per row: tick of the latest time token, -1 before the first
        self.stack: list[list[int]] = [[] for _ in range(rows)]  # per row: note offsets written at that tick
        self.done = [False] * rows

    def _advance(self, row: int, token: int) -> None:
        if token in (EOS, PAD):
            self.done[row] = True
        elif token in TIME:
            self.stack[row] = []
            self.tick[row] = token_tick(token)
        elif token in NOTE:
            self.stack[row].append(token - NOTE.start)
            self.recent[row].append(self.tick[row])

    def _room(self, row: int) -> bool:
        """Whether the span of one beat that ends at this row's tick holds fewer notes than its cap."""
        recent, tick = self.recent[row], self.tick[row]
        while recent and recent[0] <= tick - PPQ:
            recent.popleft()
        return len(recent) < self.beat_cap[row]

    def _note_types(self, row: int) -> np.ndarray:
        """[240] bool: the note types allowed next at this row's tick."""
        allowed = _TYPE_DIRECTION != RESERVED_DIRECTION
        stack = self.stack[row]
        if stack:
            allowed &= _TYPE_CELL > _TYPE_CELL[stack[-1]]  # increasing ids, each cell once
        for color in range(COLORS):
            arrows = [int(_TYPE_DIRECTION[t]) for t in stack if _TYPE_COLOR[t] == color and _TYPE_DIRECTION[t] != DOT]
            if arrows:
                same = (_TYPE_DIRECTION == arrows[0]) | (_TYPE_DIRECTION == DOT)
                allowed &= (_TYPE_COLOR != color) | same
        return allowed

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        # input_ids: [rows, prompt + generated so far]; scores: [rows, model vocab] logits of the next token
        if not self.grid:
            prompts = input_ids[:, : self.prompt_length].cpu().numpy()
            grids = [np.unique(p[(p >= TIME.start) & (p < TIME.stop)]) - TIME.start for p in prompts]
            self.grid = [grid[grid < ticks] for grid, ticks in zip(grids, self.chunk_ticks)]
        if input_ids.shape[1] > self.prompt_length:
            for row, token in enumerate(input_ids[:, -1].tolist()):
                self._advance(row, token)
        allowed = np.zeros((len(self.chunk_ticks), scores.shape[1]), dtype=bool)  # [rows, model vocab]
        for row, chunk_ticks in enumerate(self.chunk_ticks):
            if self.done[row]:
                allowed[row, EOS] = True
                continue
            tick, grid = self.tick[row], self.grid[row]
            if tick >= 0 and self._room(row):
                allowed[row, NOTE.start : NOTE.stop] = self._note_types(row)
            later = grid[grid > tick]  # grid ticks still to write
            last = min(int(later[0]), chunk_ticks - 1) if len(later) else chunk_ticks - 1
            allowed[row, TIME.start + tick + 1 : TIME.start + last + 1] = True
            allowed[row, EOS] = not len(later)
        return scores.masked_fill(~torch.from_numpy(allowed).to(scores.device), -math.inf)


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
    ticks: np.ndarray  # [notes] int64: absolute 48-PPQ tick of each note, canonical order
    types: np.ndarray  # [notes] int64: its note-type token
    tempo: TempoMap  # the difficulty's tempo regions (one for a song of one tempo)


def _item(level, characteristic: str, difficulty: str, song_hash: str) -> _Item:
    diff = next(d for d in level.difficulties if (d.characteristic, d.difficulty) == (characteristic, difficulty))
    notes = plain_notes(diff)
    # pairs: [notes, 2] (absolute tick, type token), unique and sorted: the canonical order
    pairs = np.array(
        [(t, note_token(n.x, n.y, n.color, n.direction)) for t, n in zip(snap_ticks(n.beat for n in notes), notes)],
        dtype=np.int64,
    ).reshape(-1, 2)
    pairs = np.unique(pairs, axis=0)
    return _Item(level.path, level.song_filename, song_hash, difficulty, *pairs.T, TempoMap.of_difficulty(level, diff))


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

    def set_epoch(self, epoch: int) -> None:
        """Plan this epoch's chunks: self.chunks = [(item index, first beat)]."""
        rng = np.random.default_rng([self.rules.seed, epoch])
        bars_per_chunk = max(1, self.rules.chunk_beats // BEATS_PER_BAR)
        with_notes, empty, too_long = [], [], 0
        for index, item in enumerate(self.items):
            song_beats = self.frames[item.song_hash] / self.frame_rate * item.tempo.bpm / 60
            # within the song's whole bars, so that a song shorter than a chunk still gives one
            shift = int(rng.integers(max(1, min(bars_per_chunk, int(song_beats // BEATS_PER_BAR))))) * BEATS_PER_BAR
            for start in self._starts(item, shift):
                first, end = self._span(item, start)
                lo, hi = self._notes_span(item, start)
                markers = len(self._markers(item, start, end - first).ticks)
                # audio codes, markers, then at most one time token per marker and per note, and the types
                if FIXED_TOKENS + 2 * (end - first) + 2 * markers + 2 * (hi - lo) > self.rules.max_seq_length:
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

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        index, start = self.chunks[i]
        item = self.items[index]
        first, end = self._span(item, start)
        lo, hi = self._notes_span(item, start)
        # [frames, 2] int16, past the song's end the codec's silence
        codes = chunk_codes(_mapped_codes(self.cache.path(item.song_hash)), first, end, self.silence)
        markers = self._markers(item, start, end - first)
        # notes: the marker grid walked tick by tick, ticks counted from the chunk's first beat
        notes = note_sequence(item.ticks[lo:hi] - start * PPQ, item.types[lo:hi], markers.ticks)
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

    Padding is PAD with attention 0; labels are the input ids on note tokens (time and
    type) after NOTES_START and EOS, -100 everywhere else: audio, its time markers,
    specials, difficulty and padding.
    """
    ids = [torch.as_tensor(b["input_ids"], dtype=torch.long) for b in batch]
    input_ids = torch.nn.utils.rnn.pad_sequence(ids, batch_first=True, padding_value=PAD)
    lengths = torch.tensor([len(i) for i in ids])
    attention_mask = (torch.arange(input_ids.shape[1]) < lengths[:, None]).long()
    is_note = (input_ids >= TIME.start) & (input_ids < TIME.stop) | (input_ids >= NOTE.start) & (input_ids < NOTE.stop)
    in_notes = torch.cumsum(input_ids == NOTES_START, dim=1) > 0  # [batch, longest]: from NOTES_START on
    labels = torch.where((is_note & in_notes | (input_ids == EOS)) & attention_mask.bool(), input_ids, -100)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
