"""Note-level helpers and the synthetic corpus.

v3 arcs/chains to plain notes, the 48-PPQ beat grid, playability repairs for generated
notes, packaging a generated level, writing level zips, and `python utils.py synth
OUT_DIR`: level zips whose songs are synthesized drum patterns at known tempos with
notes exactly on the hits (for tests and the offline demo).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import math
import os
import sys
import zipfile
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

import msgspec
import numpy as np

from audio import ogg_vorbis
from data import PPQ
from maps import DOT, Difficulty, Level, Note, atomic_file, level_files, on_grid

OFF_GRID_TOLERANCE = 0.05  # ticks; 3-decimal beats in map files are within 0.025 of the grid


def _slot(note: Note) -> tuple[int, int, int]:
    # (tick, x, y): two notes in one slot are the same object to a player
    return round(note.beat * PPQ), note.x, note.y


def plain_notes(diff: Difficulty) -> list[Note]:
    """The difficulty's playable colour notes with arcs and chains folded in, by beat.

    A chain's head becomes a note unless a colour note already sits at that beat and
    cell; an arc adds a note at its head and at its tail only where none sits. Notes the
    token space cannot represent (off the grid, odd colours or directions) are dropped.
    """
    notes = [n for n in diff.notes if on_grid(n)]
    taken = {_slot(n) for n in notes}
    extra = [c.head for c in diff.chains] + [end for a in diff.arcs for end in a]
    for note in extra:
        if on_grid(note) and _slot(note) not in taken:
            notes.append(note)
            taken.add(_slot(note))
    return sorted(notes)


def snap_ticks(beats: Iterable[float]) -> list[int]:
    """Beats -> nearest 48-PPQ ticks."""
    return [round(b * PPQ) for b in beats]


class GridFit(NamedTuple):
    mean_ticks: float  # mean distance to the nearest tick, 0..0.5
    max_ticks: float
    off_share: float  # share of beats farther than OFF_GRID_TOLERANCE from a tick


def grid_fit(beats: Iterable[float]) -> GridFit:
    """How far a map's beats sit from the 48-PPQ grid (all zeros for an empty map)."""
    ticks = np.asarray(list(beats), dtype=np.float64) * PPQ
    if ticks.size == 0:
        return GridFit(0.0, 0.0, 0.0)
    distance = np.abs(ticks - np.round(ticks))
    return GridFit(float(distance.mean()), float(distance.max()), float((distance > OFF_GRID_TOLERANCE).mean()))


# ---------------------------------------------------------------- playability

UP, DOWN, LEFT, RIGHT, UP_LEFT, UP_RIGHT, DOWN_LEFT, DOWN_RIGHT = range(8)
OPPOSITE = {UP: DOWN, DOWN: UP, LEFT: RIGHT, RIGHT: LEFT, UP_LEFT: DOWN_RIGHT, DOWN_RIGHT: UP_LEFT}
OPPOSITE |= {UP_RIGHT: DOWN_LEFT, DOWN_LEFT: UP_RIGHT}
# a forehand swing per colour (0 left hand, 1 right hand): downward, or across the body;
# every other arrow is a backhand. A hand alternates forehand and backhand.
FOREHAND = {0: {DOWN, DOWN_LEFT, DOWN_RIGHT, RIGHT}, 1: {DOWN, DOWN_LEFT, DOWN_RIGHT, LEFT}}
MIN_NOTE_SECONDS = 1.5  # no note before this much audio: players need time to get ready
REPAIRS = (
    "early notes dropped",
    "duplicates removed",
    "cell collisions resolved",
    "stack directions unified",
    "parity flips",
)


def swings(notes: Iterable[Note]) -> list[list[Note]]:
    """Notes -> swings in time order: the notes of one colour at one tick, one swing each."""
    by_swing: dict[tuple[int, int], list[Note]] = {}
    for note in sorted(notes):
        by_swing.setdefault((round(note.beat * PPQ), note.color), []).append(note)
    return [by_swing[key] for key in sorted(by_swing)]


def playable(notes: Iterable[Note], bpm: float) -> tuple[list[Note], Counter]:
    """Generated notes -> (notes a player can play, repairs made by kind in REPAIRS).

    In order: notes in the first MIN_NOTE_SECONDS of audio are dropped; exact duplicates
    removed; of notes sharing a cell at one tick the first (by colour, direction) stays;
    arrows of one colour at one tick take the first arrow's direction (dots stay dots);
    a hand that would swing forehand (or backhand) twice in a row has its swing flipped
    to the opposite direction (a dot swings either way and keeps the hand alternating).
    """
    repairs: Counter = Counter({kind: 0 for kind in REPAIRS})
    notes = list(notes)
    kept = [n for n in notes if n.beat * 60 / bpm >= MIN_NOTE_SECONDS]
    repairs["early notes dropped"] = len(notes) - len(kept)
    unique = sorted(set(kept))
    repairs["duplicates removed"] = len(kept) - len(unique)
    by_slot: dict[tuple[int, int, int], Note] = {}
    for note in unique:
        by_slot.setdefault(_slot(note), note)
    repairs["cell collisions resolved"] = len(unique) - len(by_slot)
    result, last_forehand = [], {}  # colour -> the hand's previous swing
    for swing in swings(by_slot.values()):
        arrows = [n for n in swing if n.direction != DOT]
        direction = arrows[0].direction if arrows else DOT
        repairs["stack directions unified"] += sum(n.direction != direction for n in arrows)
        color = swing[0].color
        forehand = None if direction == DOT else direction in FOREHAND[color]
        if forehand is not None and last_forehand.get(color) == forehand:
            direction, forehand = OPPOSITE[direction], not forehand
            repairs["parity flips"] += 1
        if forehand is None and color in last_forehand:
            forehand = not last_forehand[color]
        if forehand is not None:
            last_forehand[color] = forehand
        result += [msgspec.structs.replace(n, direction=direction) if n.direction != DOT else n for n in swing]
    return sorted(result), repairs


# ---------------------------------------------------------------- packaging

NJS = {"Easy": 10, "Normal": 10, "Hard": 12, "Expert": 16, "ExpertPlus": 18}  # note jump speed per difficulty
NJS_OFFSET = 0.0
OUTPUT_RATE = 44100  # song.egg: Ogg Vorbis at 44.1 kHz
PREVIEW_SECONDS = 10.0
COVER_SIZE = 512


def cover_jpeg(title: str) -> bytes:
    """A square cover: two blocks in the sabers' red and blue on a dark gradient whose hue comes from the title."""
    from PIL import Image, ImageDraw

    hue = hashlib.sha1(title.encode()).digest()[0]
    y = np.linspace(0, 1, COVER_SIZE)[:, None, None]
    top, bottom = np.array([hue / 4, 20, 60]), np.array([10, hue / 3, 30])
    image = Image.fromarray((top * (1 - y) + bottom * y).repeat(COVER_SIZE, axis=1).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    block, gap = COVER_SIZE // 4, COVER_SIZE // 16
    for i, color in enumerate(((200, 30, 40), (30, 90, 220))):
        left = COVER_SIZE // 2 - block - gap // 2 + i * (block + gap)
        top_edge = COVER_SIZE // 2 - block // 2
        draw.rounded_rectangle((left, top_edge, left + block, top_edge + block), radius=block // 8, fill=color)
        draw.polygon(
            [
                (left + block // 4, top_edge + block // 4),
                (left + 3 * block // 4, top_edge + block // 4),
                (left + block // 2, top_edge + block // 2),
            ],
            fill=(240, 240, 240),
        )
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


def cover_from_image(path: str | os.PathLike) -> bytes:
    """Any image Pillow reads -> a square JPEG cover (centre crop, COVER_SIZE pixels); OSError when unreadable."""
    from PIL import Image, ImageOps

    with Image.open(path) as image:
        square = ImageOps.fit(image.convert("RGB"), (COVER_SIZE, COVER_SIZE))
    out = io.BytesIO()
    square.save(out, "JPEG", quality=90)
    return out.getvalue()


def level_package(
    notes: dict[str, list[Note]],
    bpm: float,
    song: np.ndarray,
    song_name: str,
    song_author: str,
    cover: bytes | None = None,
    mapper: str = "automapper",
) -> dict[str, bytes]:
    """{file name: bytes} of a level Beat Saber loads as is: Info.dat (v2.1.0), one v3.3.0
    Standard difficulty file per entry of notes ({difficulty name: notes}), song.egg, cover.jpg.

    song: [n] or [n, channels] float at OUTPUT_RATE, beat 0 on its first sample.
    """
    seconds = len(song) / OUTPUT_RATE
    level = Level(
        song_name=song_name,
        song_author=song_author,
        mapper=mapper,
        bpm=bpm,
        song_filename="song.egg",
        cover_filename="cover.jpg",
        preview_start=round(seconds / 3, 3),
        preview_duration=min(PREVIEW_SECONDS, seconds),
        info_version="2.1.0",
        difficulties=[
            Difficulty(
                "Standard", name, f"{name}Standard.dat", "3.3.0", notes[name], njs=NJS[name], njs_offset=NJS_OFFSET
            )
            for name in notes
        ],
    )
    cover = cover if cover is not None else cover_jpeg(song_name)
    return level_files(level) | {"song.egg": ogg_vorbis(song, OUTPUT_RATE), "cover.jpg": cover}


def write_level(path: str | os.PathLike, files: dict[str, bytes]) -> Path:
    """Write a level as a .zip (a path ending in .zip) or into a folder; every file atomically."""
    path = Path(path)
    if path.suffix.lower() == ".zip":
        path.parent.mkdir(parents=True, exist_ok=True)
        write_zip(path, files)
        return path
    path.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        with atomic_file(path / name) as out:
            out.write(data)
    return path


# ---------------------------------------------------------------- level zips

ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def write_zip(path: str | os.PathLike, files: dict[str, bytes]) -> None:
    """Write {name: bytes} as a zip at path, atomically (temp file in the same folder, then rename)."""
    with atomic_file(path) as out, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            # a fixed timestamp: the same files always give the same zip bytes
            archive.writestr(zipfile.ZipInfo(name, date_time=ZIP_EPOCH), data, zipfile.ZIP_DEFLATED)


# ---------------------------------------------------------------- synthetic corpus

SYNTH_RATE = 44100
SYNTH_BPMS = (128.5, 87.0, 174.0, 100.0, 140.0, 60.5, 120.0, 95.25)  # slow, fast and non-integer on purpose
LEAD_IN_BARS = 2  # drums but no notes: the first notes come after >= 2.7 s at 174 BPM
BEATS_PER_BAR = 4
RED_COLUMNS, BLUE_COLUMNS = (0, 1), (2, 3)


def _envelope(seconds: float, decay: float) -> np.ndarray:
    t = np.arange(int(seconds * SYNTH_RATE)) / SYNTH_RATE
    return t, np.exp(-t * decay)


def _drum_sounds(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """{kind: samples}: a pitched-down kick, a noisy snare, a short hi-hat."""
    t, env = _envelope(0.3, 14)
    kick = np.sin(2 * np.pi * np.cumsum(45 + 70 * np.exp(-t * 35)) / SYNTH_RATE) * env
    t, env = _envelope(0.2, 22)
    snare = 0.5 * rng.standard_normal(t.size) * env + 0.3 * np.sin(2 * np.pi * 190 * t) * env
    t, env = _envelope(0.05, 90)
    hat = 0.25 * np.diff(rng.standard_normal(t.size + 1)) * env
    return {"kick": kick, "snare": snare, "hat": hat}


def _drum_hits(rng: np.random.Generator, bars: int) -> list[tuple[float, str]]:
    """(beat, kind) of every hit: kicks on 1 and 3 (sometimes the and of 3), snares on 2
    and 4, hats on every eighth, and now and then a snare pickup on the last sixteenths."""
    hits = []
    for bar in range(bars):
        start = bar * BEATS_PER_BAR
        hits += [(start + b, "kick") for b in (0, 2)] + [(start + b, "snare") for b in (1, 3)]
        hits += [(start + b / 2, "hat") for b in range(2 * BEATS_PER_BAR)]
        if rng.random() < 0.5:
            hits.append((start + 2.5, "kick"))
        if rng.random() < 0.3:
            hits += [(start + 3.5, "snare"), (start + 3.75, "snare")]
    return sorted(hits)


def _render(hits: list[tuple[float, str]], bpm: float, beats: int, rng: np.random.Generator) -> np.ndarray:
    """song: [n] float32 at SYNTH_RATE, each hit starting on the exact sample of its beat, over a quiet pad."""
    sounds = _drum_sounds(rng)
    song = np.zeros(math.ceil((beats * 60 / bpm + 0.5) * SYNTH_RATE))
    t = np.arange(song.size) / SYNTH_RATE
    song += 0.04 * sum(np.sin(2 * np.pi * f * t) for f in rng.choice([110, 130.8, 146.8, 164.8, 196], 3))
    for beat, kind in hits:
        start = round(beat * 60 / bpm * SYNTH_RATE)
        sound = sounds[kind][: song.size - start]
        song[start : start + sound.size] += sound
    return (0.9 * song / np.abs(song).max()).astype(np.float32)


def _synth_notes(hits: list[tuple[float, str]], expert: bool, rng: np.random.Generator) -> list[Note]:
    """Notes on drum hits: every kick and snare (Expert) or the kicks on 1 and 3 (Normal),
    hands alternating, each hand swinging down, up, down...; Expert adds two-hand hits on
    some bar downbeats."""
    beats = sorted({b for b, kind in hits if kind != "hat" and b >= LEAD_IN_BARS * BEATS_PER_BAR})
    if not expert:
        beats = [b for b in beats if b % 2 == 0]
    next_direction = {0: DOWN, 1: DOWN}  # per colour
    notes, hand = [], 0
    for beat in beats:
        hands = (0, 1) if expert and beat % BEATS_PER_BAR == 0 and rng.random() < 0.3 else (hand,)
        for color in hands:
            direction = next_direction[color]
            next_direction[color] = UP if direction == DOWN else DOWN
            x = int(rng.choice(RED_COLUMNS if color == 0 else BLUE_COLUMNS))
            y = 0 if direction == DOWN else int(rng.choice([0, 1]))
            notes.append(Note(float(beat), x, y, color, direction))
        hand = 1 - hands[-1]
    return notes


def synth_level(index: int, seed: int = 0, bars: int = 16) -> tuple[dict[str, bytes], Level]:
    """One synthetic level: ({file name: bytes} of a playable level, its Level).

    The song is bars + LEAD_IN_BARS bars of drums at SYNTH_BPMS[index % 8] with beat 0
    on the first sample; Normal and Expert sit exactly on the drum hits.
    """
    rng = np.random.default_rng([seed, index])
    bpm = SYNTH_BPMS[index % len(SYNTH_BPMS)]
    total_bars = bars + LEAD_IN_BARS
    hits = _drum_hits(rng, total_bars)
    song = _render(hits, bpm, total_bars * BEATS_PER_BAR, rng)
    level = Level(
        song_name=f"Synthetic {index:02d}",
        song_sub_name=f"{bpm:g} BPM",
        song_author="automapper synth",
        mapper="automapper synth",
        bpm=bpm,
        song_filename="song.egg",
        cover_filename="",
        preview_duration=10,
        info_version="2.1.0",
        difficulties=[
            Difficulty("Standard", "Normal", "NormalStandard.dat", "3.3.0", _synth_notes(hits, False, rng), njs=10),
            Difficulty("Standard", "Expert", "ExpertStandard.dat", "3.3.0", _synth_notes(hits, True, rng), njs=16),
        ],
    )
    return level_files(level) | {"song.egg": ogg_vorbis(song, SYNTH_RATE)}, level


def write_synth_corpus(out_dir: str | os.PathLike, songs: int = 8, seed: int = 0, bars: int = 16) -> list[Path]:
    """Write synth_level(0..songs-1) as OUT_DIR/synth_NN.zip; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(songs):
        files, _ = synth_level(index, seed, bars)
        paths.append(out / f"synth_{index:02d}.zip")
        write_zip(paths[-1], files)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Project utilities.")
    commands = parser.add_subparsers(dest="command", required=True)
    synth = commands.add_parser(
        "synth",
        help="write a synthetic corpus of level zips",
        description="Write level zips whose songs are synthesized drum patterns at known BPMs "
        f"({', '.join(f'{b:g}' for b in SYNTH_BPMS)}, in turn) with Normal and Expert notes exactly "
        "on the hits. Deterministic for a seed. For tests and the offline demo.",
    )
    synth.add_argument("out_dir", metavar="OUT_DIR", help="folder to write synth_NN.zip into (created if missing)")
    synth.add_argument("--songs", type=int, default=8, help="number of levels (default 8)")
    synth.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    synth.add_argument("--bars", type=int, default=16, help=f"bars with notes, after {LEAD_IN_BARS} lead-in bars")
    args = parser.parse_args(argv)
    for path in write_synth_corpus(args.out_dir, args.songs, args.seed, args.bars):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
