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
import json
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
    return repaired(notes, MIN_NOTE_SECONDS * bpm / 60)


def repaired(notes: Iterable[Note], first_beat: float = 0.0) -> tuple[list[Note], Counter]:
    """playable's repairs from first_beat on: (notes, repairs by kind).

    The scorecard counts a map's problems with the same definitions the repair pass uses.
    """
    repairs: Counter = Counter({kind: 0 for kind in REPAIRS})
    notes = list(notes)
    kept = [n for n in notes if n.beat >= first_beat]
    repairs["early notes dropped"] = len(notes) - len(kept)
    unique = sorted(set(kept))
    repairs["duplicates removed"] = len(kept) - len(unique)
    by_slot: dict[tuple[int, int, int], Note] = {}
    for note in unique:
        by_slot.setdefault(_slot(note), note)
    repairs["cell collisions resolved"] = len(unique) - len(by_slot)
    result, last_forehand = [], {}  # last_forehand: colour -> the hand's previous swing
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


# ---------------------------------------------------------------- quality scorecard

TOLERANCE = 0.04  # seconds: a note this close to a reference note or an audio onset hits it
RHYTHM_CLASSES = ("beat", "1/2", "1/4", "1/3 and 1/6", "other")
RANDOM_GRID = PPQ // 4  # random placements for the listening baseline sit on the 1/4-beat grid
PATTERN_BEATS = 4
DENSITY_BEATS = 16  # 4 bars: the span of the density curve
RESET_SECONDS = 1.0  # a hand idle this long may start over on either side
SEAM_BEATS = 2  # notes this close to a multiple of chunk_beats sit at a window seam
CELLS = 12


def note_seconds(notes: Iterable[Note], bpm: float) -> np.ndarray:
    """[distinct note times] float seconds, sorted: notes at one tick count once."""
    ticks = np.unique(np.asarray(snap_ticks(n.beat for n in notes), dtype=np.int64))
    return ticks / PPQ * 60 / bpm


def matched(estimate: np.ndarray, reference: np.ndarray, tolerance: float) -> int:
    """How many of the sorted times in estimate pair one-to-one with sorted reference times within
    tolerance. Greedy in time order, which is a maximum matching for points on a line."""
    i = j = pairs = 0
    while i < len(estimate) and j < len(reference):
        if abs(estimate[i] - reference[j]) <= tolerance:
            pairs, i, j = pairs + 1, i + 1, j + 1
        elif estimate[i] < reference[j]:
            i += 1
        else:
            j += 1
    return pairs


def timing_scores(estimate: np.ndarray, reference: np.ndarray, tolerance: float = TOLERANCE) -> dict[str, float]:
    """Precision, recall and F1 of distinct note times (seconds) against a reference's."""
    pairs = matched(estimate, reference, tolerance)
    precision = pairs / len(estimate) if len(estimate) else 0.0
    recall = pairs / len(reference) if len(reference) else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"timing_precision": precision, "timing_recall": recall, "timing_f1": f1}


def rhythm_profile(notes: Iterable[Note]) -> np.ndarray:
    """[len(RHYTHM_CLASSES)] shares of distinct note ticks on the beat, on 1/2, 1/4, 1/3 or 1/6, elsewhere."""
    ticks = np.unique(np.asarray(snap_ticks(n.beat for n in notes), dtype=np.int64)) % PPQ
    classes = np.select(
        [ticks == 0, ticks % (PPQ // 2) == 0, ticks % (PPQ // 4) == 0, ticks % (PPQ // 6) == 0], [0, 1, 2, 3], 4
    )
    counts = np.bincount(classes, minlength=len(RHYTHM_CLASSES))
    return counts / max(1, counts.sum())


def onset_seconds(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """samples: [n] mono float -> [onsets] float seconds, sorted (librosa's spectral-flux peak picker)."""
    import librosa

    return librosa.onset.onset_detect(y=samples.astype(np.float32), sr=sample_rate, units="time", backtrack=False)


def near_share(times: np.ndarray, onsets: np.ndarray, tolerance: float) -> float:
    """Share of times within tolerance of some onset (0 for no times)."""
    if len(times) == 0 or len(onsets) == 0:
        return 0.0
    right = np.clip(np.searchsorted(onsets, times), 1, len(onsets) - 1)
    gap = np.minimum(np.abs(times - onsets[right - 1]), np.abs(times - onsets[right]))
    return float(np.mean(gap <= tolerance))


def listening(times: np.ndarray, onsets: np.ndarray, bpm: float, tolerance: float = TOLERANCE) -> dict[str, float]:
    """How much more often note times sit on audio onsets than random placements would.

    The baseline is the share that notes placed at random on the 1/4-beat grid between the
    map's first and last note get on average: exactly the share of those grid points near
    an onset. lift = onset share / baseline share; a map that ignores the audio sits near 1.
    """
    if len(times) == 0:
        return {"onset_share": 0.0, "random_onset_share": 0.0, "listening_lift": 0.0}
    step = RANDOM_GRID / PPQ * 60 / bpm
    grid = np.arange(round(times[0] / step), round(times[-1] / step) + 1) * step
    share, random_share = near_share(times, onsets, tolerance), near_share(grid, onsets, tolerance)
    lift = share / random_share if random_share else 0.0
    return {"onset_share": share, "random_onset_share": random_share, "listening_lift": lift}


def density_curve(times: np.ndarray, bin_seconds: float, bins: int) -> np.ndarray:
    """[bins] note counts per bin_seconds span from 0 s."""
    counts = np.bincount((times // bin_seconds).astype(np.int64), minlength=bins)
    return counts[:bins]


def parity_log(notes: Iterable[Note], bpm: float) -> list[tuple[float, bool]]:
    """Per swing (see swings) in time order: (beat, whether it breaks parity).

    The repair pass's rule (a hand alternates forehand and backhand; FOREHAND per colour; a
    dot swings whichever way the hand needs) applied to the notes as written: each repeated
    side counts once, without the cascade a repair would start, and a repeat after
    RESET_SECONDS without that hand is a reset players make, not an error.
    """
    last: dict[int, tuple[bool, float]] = {}  # colour -> (its previous swing was a forehand, its seconds)
    log = []
    for swing in swings(notes):
        color, seconds = swing[0].color, swing[0].beat * 60 / bpm
        arrows = [n.direction for n in swing if n.direction != DOT]
        forehand = arrows[0] in FOREHAND[color] if arrows else None
        previous = last.get(color)
        error = forehand is not None and previous is not None and previous[0] == forehand
        error = error and seconds - previous[1] < RESET_SECONDS
        if forehand is None:
            forehand = not previous[0] if previous else True
        last[color] = (forehand, seconds)
        log.append((swing[0].beat, error))
    return log


def playability(notes: Iterable[Note], bpm: float) -> dict[str, float]:
    """The repair pass's problems counted, not fixed: parity errors per swing (parity_log), cell
    collisions and notes whose direction disagrees with their stack."""
    notes = list(notes)
    _, repairs = repaired(notes)
    log = parity_log(notes, bpm)
    errors = sum(error for _, error in log)
    return {
        "swings": len(log),
        "parity_errors": errors,
        "parity_errors_per_swing": errors / len(log) if log else 0.0,
        "cell_collisions": repairs["cell collisions resolved"],
        "mixed_stacks": repairs["stack directions unified"],
    }


def variety(notes: list[Note]) -> dict[str, float]:
    """Note-type entropy (bits), the share of non-empty 4-beat windows taken by the most frequent
    one (mode collapse shows here), the share of the 12 cells used, and the red share of notes."""
    if not notes:
        return {"note_type_entropy": 0.0, "top_pattern_share": 0.0, "grid_coverage": 0.0, "red_share": 0.0}
    types = np.array(list(Counter((n.x, n.y, n.color, n.direction) for n in notes).values()), dtype=np.float64)
    shares = types / types.sum()
    window = PATTERN_BEATS * PPQ
    patterns: dict[int, list] = {}
    for tick, n in zip(snap_ticks(n.beat for n in notes), notes):
        patterns.setdefault(tick // window, []).append((tick % window, n.x, n.y, n.color, n.direction))
    counts = Counter(tuple(sorted(p)) for p in patterns.values())
    return {
        "note_type_entropy": float(-(shares * np.log2(shares)).sum()),
        "top_pattern_share": max(counts.values()) / len(patterns),
        "grid_coverage": len({(n.x, n.y) for n in notes}) / CELLS,
        "red_share": sum(n.color == 0 for n in notes) / len(notes),
    }


def seams(notes: list[Note], bpm: float, chunk_beats: int, song_beats: float) -> dict[str, float]:
    """Parity errors per swing and notes per beat within SEAM_BEATS of every multiple of chunk_beats
    (where independently decoded windows meet) beside the same figures elsewhere."""
    log = parity_log(notes, bpm)
    starts = np.arange(chunk_beats, song_beats, chunk_beats)

    def at_seam(beat: float) -> bool:  # within [seam - SEAM_BEATS, seam + SEAM_BEATS) of some seam
        return bool(np.any((beat - starts >= -SEAM_BEATS) & (beat - starts < SEAM_BEATS)))

    seam_beats = min(song_beats, 2 * SEAM_BEATS * len(starts))
    near = [flipped for beat, flipped in log if at_seam(beat)]
    far = [flipped for beat, flipped in log if not at_seam(beat)]
    near_notes = sum(at_seam(n.beat) for n in notes)
    return {
        "seam_parity_errors_per_swing": float(np.mean(near)) if near else 0.0,
        "other_parity_errors_per_swing": float(np.mean(far)) if far else 0.0,
        "seam_notes_per_beat": near_notes / seam_beats if seam_beats else 0.0,
        "other_notes_per_beat": (len(notes) - near_notes) / max(song_beats - seam_beats, 1e-9),
    }


class Onsets(NamedTuple):
    seconds: np.ndarray  # [onsets] float, sorted
    duration: float  # the song's seconds


def scorecard(
    notes: list[Note],
    bpm: float,
    onsets: Onsets | None = None,
    reference: list[Note] | None = None,
    reference_bpm: float | None = None,
    tolerance: float = TOLERANCE,
    chunk_beats: int = 64,
) -> dict:
    """One difficulty's quality figures (see the README's Quality section).

    notes: the difficulty's notes, beats at this bpm, beat 0 at the song's first sample.
    onsets: the song's audio onsets and length (for listening; the length also sets notes
    per second, else the last note's time does). reference: a map of the same song to compare
    with, at reference_bpm (default bpm).
    """
    notes = sorted(notes)
    times = note_seconds(notes, bpm)
    duration = onsets.duration if onsets else (float(times[-1]) if len(times) else 0.0)
    song_beats = duration * bpm / 60
    card: dict = {"notes": len(notes), "nps": len(notes) / duration if duration else 0.0}
    profile = rhythm_profile(notes)
    card |= {f"rhythm_{name}": float(share) for name, share in zip(RHYTHM_CLASSES, profile)}
    if onsets is not None:
        card |= listening(times, onsets.seconds, bpm, tolerance)
    card |= playability(notes, bpm) | variety(notes) | seams(notes, bpm, chunk_beats, song_beats)
    if reference is not None:
        reference_bpm = reference_bpm or bpm
        reference_times = note_seconds(reference, reference_bpm)
        card |= timing_scores(times, reference_times, tolerance)
        card["density_ratio"] = len(notes) / len(reference) if reference else 0.0
        profile_gap = np.abs(profile - rhythm_profile(reference)).sum() / 2
        card["rhythm_distance"] = float(profile_gap)  # total variation distance, 0 same .. 1 disjoint
        span = DENSITY_BEATS * 60 / reference_bpm
        bins = max(1, math.ceil(max(duration, float(reference_times[-1]) if len(reference_times) else 0) / span))
        ours, theirs = density_curve(times, span, bins), density_curve(reference_times, span, bins)
        both_vary = bins > 2 and ours.std() > 0 and theirs.std() > 0
        card["density_correlation"] = float(np.corrcoef(ours, theirs)[0, 1]) if both_vary else None
    return card


def song_onsets(level: Level) -> Onsets | None:
    """The level's song -> its onsets and length, or None when the level has no readable song."""
    from audio import AudioError, load_audio
    from maps import MapError, read_level_file

    rate = 22050
    try:
        samples = load_audio(
            read_level_file(level.path, level.song_filename), rate, f"{level.path}:{level.song_filename}"
        )
    except (AudioError, MapError) as e:
        print(f"no listening figures: {e}", file=sys.stderr)
        return None
    return Onsets(onset_seconds(samples, rate), len(samples) / rate)


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
    return _notes_on(beats, expert, rng)


def _notes_on(beats: list[float], expert: bool, rng: np.random.Generator) -> list[Note]:
    """A note on each beat: hands alternating, each hand swinging down, up, down... (red in the left
    columns, blue in the right); with expert, both hands on some bar downbeats."""
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


# The hard corpus (--hard): a song is sections of SECTION_BARS bars, each drawn from these
# styles; only the "lead" drums (kick, snare, toms) carry notes, while hats, a bass line and
# chords play throughout and carry none, so counting beats cannot stand in for listening.
SECTION_BARS = 4
SECTION_STYLES = ("rest", "sparse", "groove", "syncopated", "triplets", "dense")
HARD_BPM_RANGE = (60.0, 200.0)
LEAD = ("kick", "snare", "tom")  # the instruments that carry notes


def _hard_drum_sounds(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """_drum_sounds plus a pitched tom, an open hat and a plucked bass note (pitch set per hit)."""
    sounds = _drum_sounds(rng)
    t, env = _envelope(0.25, 16)
    sounds["tom"] = 0.8 * np.sin(2 * np.pi * np.cumsum(160 + 60 * np.exp(-t * 20)) / SYNTH_RATE) * env
    t, env = _envelope(0.25, 18)
    sounds["open hat"] = 0.15 * np.diff(rng.standard_normal(t.size + 1)) * env
    return sounds


def _bar_lead(style: str, rng: np.random.Generator, last_of_section: bool) -> list[tuple[float, str]]:
    """(beat in the bar, instrument) of one bar's lead hits in a section style; the last bar of a
    section ends with a fill (sixteenth snares or toms) now and then."""
    if style == "rest":
        return []
    if style == "sparse":
        hits = [(0.0, "kick")] + ([(2.0, "snare")] if rng.random() < 0.6 else [])
    elif style == "groove":
        hits = [(0.0, "kick"), (1.0, "snare"), (2.0, "kick"), (3.0, "snare")]
        hits += [(2.5, "kick")] if rng.random() < 0.5 else []
    elif style == "syncopated":
        kicks = [0.0, 0.75, 1.5] if rng.random() < 0.5 else [0.0, 1.5, 2.5]
        hits = [(b, "kick") for b in kicks] + [(1.0, "snare"), (3.0, "snare"), (3.5, "kick")]
    elif style == "triplets":
        hits = [(0.0, "kick"), (2.0, "snare")] + [(1 + i / 3, "tom") for i in range(3)]
        hits += [(3 + i / 3, "tom") for i in range(3)] if rng.random() < 0.5 else [(3.0, "snare")]
    else:  # dense
        hits = [(b / 2, "kick" if b % 4 == 0 else "snare" if b % 4 == 2 else "tom") for b in range(8)]
    if last_of_section and rng.random() < 0.5:
        kind = "snare" if rng.random() < 0.5 else "tom"
        hits = [h for h in hits if h[0] < 3] + [(3 + i / 4, kind) for i in range(4)]
    return hits


def _hard_hits(rng: np.random.Generator, bars: int) -> list[tuple[float, str]]:
    """(beat, instrument) of every hit of a hard song: LEAD_IN_BARS bars of hats only, then
    sections of varied styles under hats (eighths, or sixteenths in busy sections), an open hat
    and bass notes on off-beats."""
    hits = []
    style = "rest"
    for bar in range(bars):
        start = bar * BEATS_PER_BAR
        section_bar = (bar - LEAD_IN_BARS) % SECTION_BARS
        if bar >= LEAD_IN_BARS and section_bar == 0:
            style = str(rng.choice(SECTION_STYLES, p=[0.15, 0.2, 0.15, 0.2, 0.15, 0.15]))
        if bar >= LEAD_IN_BARS:
            hits += [(start + b, kind) for b, kind in _bar_lead(style, rng, section_bar == SECTION_BARS - 1)]
        step = 0.25 if style == "dense" else 0.5
        hits += [(start + i * step, "hat") for i in range(int(BEATS_PER_BAR / step)) if rng.random() < 0.9]
        hits += [(start + b + 0.5, "open hat") for b in range(BEATS_PER_BAR) if rng.random() < 0.2]
        hits += [(start + b + 0.5, "bass") for b in range(BEATS_PER_BAR) if rng.random() < 0.5]
    return sorted(hits)


def _render_hard(hits: list[tuple[float, str]], bpm: float, beats: int, rng: np.random.Generator) -> np.ndarray:
    """song: [n] float32 at SYNTH_RATE: the hits (each on its exact sample, at a varied level) over chords
    that change every bar; bass notes are plucked tones whose pitch follows the chord."""
    sounds = _hard_drum_sounds(rng)
    seconds_per_beat = 60 / bpm
    song = np.zeros(math.ceil((beats * seconds_per_beat + 0.5) * SYNTH_RATE))
    bar_samples = round(BEATS_PER_BAR * seconds_per_beat * SYNTH_RATE)
    roots = rng.choice([98.0, 110.0, 130.8, 146.8, 164.8], beats // BEATS_PER_BAR + 2)
    for bar, root in enumerate(roots):
        t = np.arange(min(bar_samples, max(0, song.size - bar * bar_samples))) / SYNTH_RATE
        chord = sum(np.sin(2 * np.pi * root * ratio * t) for ratio in (1, 1.25, 1.5))
        song[bar * bar_samples : bar * bar_samples + t.size] += 0.03 * chord
    t, env = _envelope(0.3, 10)
    for beat, kind in hits:
        start = round(beat * seconds_per_beat * SYNTH_RATE)
        if kind == "bass":
            sound = 0.35 * np.sin(2 * np.pi * roots[int(beat // BEATS_PER_BAR)] / 2 * t) * env
        else:
            sound = sounds[kind] * rng.uniform(0.7, 1.0)
        sound = sound[: song.size - start]
        song[start : start + sound.size] += sound
    return (0.9 * song / np.abs(song).max()).astype(np.float32)


def _hard_notes(hits: list[tuple[float, str]], expert: bool, rng: np.random.Generator) -> list[Note]:
    """Notes on lead hits: Expert every one, Normal only the kicks on whole beats; hands alternate,
    each hand swinging down, up, down...; Expert puts both hands on some kicks on a bar's downbeat."""
    beats = sorted({b for b, kind in hits if kind in LEAD and (expert or (kind == "kick" and b == int(b)))})
    return _notes_on(beats, expert, rng)


def synth_level(index: int, seed: int = 0, bars: int = 16, hard: bool = False) -> tuple[dict[str, bytes], Level]:
    """One synthetic level: ({file name: bytes} of a playable level, its Level).

    The song is bars + LEAD_IN_BARS bars with beat 0 on the first sample. Default: a drum
    loop at SYNTH_BPMS[index % 8] with Normal and Expert exactly on the kicks and snares.
    hard: a random tempo in HARD_BPM_RANGE (non-integer now and then), sections of varied
    rhythm (rests, syncopation, triplets, fills, dense runs) and instruments that carry no
    notes (hats, bass, chords); Expert on every lead hit, Normal on the kicks on whole beats.
    """
    rng = np.random.default_rng([seed, index, 1] if hard else [seed, index])
    total_bars = bars + LEAD_IN_BARS
    if hard:
        bpm = round(float(rng.uniform(*HARD_BPM_RANGE)), int(rng.choice([0, 1, 2])))
        hits = _hard_hits(rng, total_bars)
        song = _render_hard(hits, bpm, total_bars * BEATS_PER_BAR, rng)
        normal, expert = _hard_notes(hits, False, rng), _hard_notes(hits, True, rng)
    else:
        bpm = SYNTH_BPMS[index % len(SYNTH_BPMS)]
        hits = _drum_hits(rng, total_bars)
        song = _render(hits, bpm, total_bars * BEATS_PER_BAR, rng)
        normal, expert = _synth_notes(hits, False, rng), _synth_notes(hits, True, rng)
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
            Difficulty("Standard", "Normal", "NormalStandard.dat", "3.3.0", normal, njs=10),
            Difficulty("Standard", "Expert", "ExpertStandard.dat", "3.3.0", expert, njs=16),
        ],
    )
    return level_files(level) | {"song.egg": ogg_vorbis(song, SYNTH_RATE)}, level


def write_synth_corpus(
    out_dir: str | os.PathLike, songs: int = 8, seed: int = 0, bars: int = 16, hard: bool = False
) -> list[Path]:
    """Write synth_level(0..songs-1) as OUT_DIR/synth_NN.zip; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(songs):
        files, _ = synth_level(index, seed, bars, hard)
        paths.append(out / f"synth_{index:02d}.zip")
        write_zip(paths[-1], files)
    return paths


SCORE_ROWS = (  # (key, label, format) of the readable table; the JSON holds every figure
    ("notes", "notes", "{:d}"),
    ("nps", "notes per second", "{:.2f}"),
    ("listening_lift", "listening lift (x random)", "{:.2f}"),
    ("onset_share", "  notes on an onset", "{:.0%}"),
    ("random_onset_share", "  random grid on an onset", "{:.0%}"),
    ("timing_f1", "timing F1 vs reference", "{:.3f}"),
    ("timing_precision", "  precision", "{:.3f}"),
    ("timing_recall", "  recall", "{:.3f}"),
    ("density_ratio", "density ratio vs reference", "{:.2f}"),
    ("density_correlation", "4-bar density correlation", "{:.2f}"),
    ("rhythm_distance", "rhythm profile distance", "{:.2f}"),
    *((f"rhythm_{name}", f"on {name}" if name != "other" else "elsewhere", "{:.0%}") for name in RHYTHM_CLASSES),
    ("parity_errors_per_swing", "parity errors per swing", "{:.3f}"),
    ("cell_collisions", "cell collisions", "{:d}"),
    ("mixed_stacks", "mixed-direction stack notes", "{:d}"),
    ("note_type_entropy", "note-type entropy (bits)", "{:.2f}"),
    ("top_pattern_share", "top 4-beat pattern share", "{:.0%}"),
    ("grid_coverage", "grid coverage", "{:.0%}"),
    ("red_share", "red share", "{:.0%}"),
    ("seam_parity_errors_per_swing", "parity errors/swing at seams", "{:.3f}"),
    ("other_parity_errors_per_swing", "  elsewhere", "{:.3f}"),
    ("seam_notes_per_beat", "notes per beat at seams", "{:.2f}"),
    ("other_notes_per_beat", "  elsewhere", "{:.2f}"),
)


def score_table(cards: dict[str, dict]) -> str:
    """{difficulty: scorecard} -> a readable table: one row per figure, one column per difficulty."""

    def cell(card: dict, key: str, form: str) -> str:
        value = card.get(key)
        return "-" if value is None else form.format(value)

    names = list(cards)
    width = max(len(label) for _, label, _ in SCORE_ROWS)
    lines = [" " * width + "".join(f"{name:>12}" for name in names)]
    for key, label, form in SCORE_ROWS:
        if any(card.get(key) is not None for card in cards.values()):
            lines.append(f"{label:<{width}}" + "".join(f"{cell(cards[n], key, form):>12}" for n in names))
    return "\n".join(lines)


def score_level(args: argparse.Namespace) -> int:
    """utils.py score: print each chosen Standard difficulty's scorecard; 0, or 2 when nothing could be scored."""
    from maps import MapError, load_level

    levels = []
    for path in (args.level, args.reference):
        try:
            levels.append(load_level(path) if path else None)
        except (MapError, OSError) as e:
            print(f"utils.py score: {path}: {e}", file=sys.stderr)
            return 2
    level, reference = levels

    def standard(lvl: Level) -> dict[str, Difficulty]:
        return {d.difficulty: d for d in lvl.difficulties if d.characteristic == "Standard" and d.error is None}

    ours, theirs = standard(level), standard(reference) if reference else {}
    wanted = args.difficulty or [name for name, d in ours.items() if plain_notes(d)]  # default: those with notes
    missing = [name for name in wanted if name not in ours]
    if missing or not wanted:
        what = ", ".join(missing) or "difficulty with notes"
        print(f"utils.py score: {args.level}: no readable Standard {what}", file=sys.stderr)
        return 2
    onsets = song_onsets(level)
    cards = {}
    for name in wanted:
        ref = theirs.get(name)
        if reference is not None and ref is None:
            print(f"{args.reference}: no Standard {name} to compare with", file=sys.stderr)
        cards[name] = scorecard(
            plain_notes(ours[name]),
            level.bpm,
            onsets,
            plain_notes(ref) if ref else None,
            reference.bpm if reference else None,
            args.tolerance,
            args.chunk_beats,
        )
    for name, card in cards.items():
        if args.json:
            print(json.dumps({"level": str(args.level), "difficulty": name} | _rounded(card)))
    if not args.json:
        print(score_table(cards))
    return 0


def _rounded(card: dict) -> dict:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in card.items()}


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
    synth.add_argument(
        "--hard",
        action="store_true",
        help=f"the learnability corpus: random tempi {HARD_BPM_RANGE[0]:g}-{HARD_BPM_RANGE[1]:g} BPM, sections of "
        "rests, syncopation, triplets, fills and dense runs, hats/bass/chords that carry no notes; Normal on "
        "kicks on whole beats only",
    )
    score = commands.add_parser(
        "score",
        help="print a level's quality scorecard",
        description="Score each Standard difficulty of a level (zip or folder), human or generated: listening "
        "(notes on audio onsets vs random grid placements; the audio comes from the level), density, rhythm, "
        "playability (parity, collisions, mixed stacks), variety and window seams; with --reference, timing "
        "precision/recall/F1, density ratio and correlation against the same difficulty of another level.",
    )
    score.add_argument("level", metavar="LEVEL", help="level zip or folder")
    score.add_argument("--reference", metavar="LEVEL", help="a human map of the same song to compare with")
    score.add_argument("--difficulty", nargs="+", help="difficulties to score (default: every Standard one)")
    score.add_argument(
        "--tolerance", type=float, default=TOLERANCE, help=f"seconds for a timing match (default {TOLERANCE:g})"
    )
    score.add_argument("--chunk-beats", type=int, default=64, help="window length whose seams are checked")
    score.add_argument("--json", action="store_true", help="one JSON object per difficulty per line")
    args = parser.parse_args(argv)
    if args.command == "score":
        return score_level(args)
    for path in write_synth_corpus(args.out_dir, args.songs, args.seed, args.bars, args.hard):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
