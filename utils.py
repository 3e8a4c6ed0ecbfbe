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
from collections import Counter, deque
from collections.abc import Iterable, Sequence
from itertools import groupby
from pathlib import Path
from typing import NamedTuple

import msgspec
import numpy as np

from audio import ogg_vorbis
from levels.hands import notes_on
from levels.kits import KitError, kit_sounds
from levels.realsongs import (
    LMMS_PROJECTS,
    ProjectError,
    corpus_level_files,
    demo_projects,
    held_out,
    lmms_command,
    project_name,
)
from maps import (
    DEFAULT_ENVIRONMENT,
    DOT,
    DOWN,
    DOWN_LEFT,
    DOWN_RIGHT,
    GRID_COLUMNS,
    GRID_ROWS,
    LEFT,
    PPQ,
    RIGHT,
    UP,
    UP_LEFT,
    UP_RIGHT,
    BoostEvent,
    BpmEvent,
    Difficulty,
    HelpFormatter,
    Level,
    LightEvent,
    Lightshow,
    Note,
    atomic_file,
    beat_seconds,
    level_files,
    on_grid,
    plain_notes,
    slot,
    snap_ticks,
    tempo_map,
)

# ---------------------------------------------------------------- playability

OPPOSITE = {UP: DOWN, DOWN: UP, LEFT: RIGHT, RIGHT: LEFT, UP_LEFT: DOWN_RIGHT, DOWN_RIGHT: UP_LEFT}
OPPOSITE |= {UP_RIGHT: DOWN_LEFT, DOWN_LEFT: UP_RIGHT}
# a forehand swing per colour (0 left hand, 1 right hand): downward, or across the body;
# every other arrow is a backhand. A hand alternates forehand and backhand.
FOREHAND = {0: {DOWN, DOWN_LEFT, DOWN_RIGHT, RIGHT}, 1: {DOWN, DOWN_LEFT, DOWN_RIGHT, LEFT}}
BEAT_EPSILON = 1e-6  # beats: map files round beats to a few decimals, far coarser than this
MIN_NOTE_SECONDS = 1.5  # no note before this much audio: players need time to get ready
REPAIRS = (
    "early notes dropped",
    "duplicates removed",
    "cell collisions resolved",
    "dense notes thinned",
    "stack directions unified",
    "parity flips",
)


def thinned(notes: list[Note], max_notes_per_beat: float | None) -> list[Note]:
    """notes, in time order -> those kept when no span of one beat may hold more than max_notes_per_beat
    (rounded down): each note in turn is kept if the beat before it (exclusive) leaves room."""
    if max_notes_per_beat is None:
        return notes
    cap, kept, recent = math.floor(max_notes_per_beat), [], deque()  # recent: beats of kept notes in the last beat
    for note in notes:
        while recent and recent[0] <= note.beat - 1 + BEAT_EPSILON:
            recent.popleft()
        if len(recent) < cap:
            kept.append(note)
            recent.append(note.beat)
    return kept


def swings(notes: Iterable[Note]) -> list[list[Note]]:
    """Notes -> swings in time order: the notes of one colour at one tick, one swing each."""
    by_swing: dict[tuple[int, int], list[Note]] = {}
    for note in sorted(notes):
        by_swing.setdefault((round(note.beat * PPQ), note.color), []).append(note)
    return [by_swing[key] for key in sorted(by_swing)]


def playable(notes: Iterable[Note], bpm: float, max_notes_per_beat: float | None = None) -> tuple[list[Note], Counter]:
    """Generated notes -> (notes a player can play, repairs made by kind in REPAIRS).

    In order: notes in the first MIN_NOTE_SECONDS of audio are dropped; exact duplicates
    removed; of notes sharing a cell at one tick the first (by colour, direction) stays;
    with max_notes_per_beat, a note that would make any one-beat span hold more than that many
    (rounded down) is dropped, earlier notes first kept (the grammar keeps this inside a window; this
    keeps it across window seams);
    arrows of one colour at one tick take the first arrow's direction (dots stay dots);
    a hand that would swing forehand (or backhand) twice in a row has its swing flipped
    to the opposite direction (a dot swings either way and keeps the hand alternating).
    """
    return repaired(notes, MIN_NOTE_SECONDS * bpm / 60, max_notes_per_beat)


def repaired(
    notes: Iterable[Note], first_beat: float = 0.0, max_notes_per_beat: float | None = None
) -> tuple[list[Note], Counter]:
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
        by_slot.setdefault(slot(note), note)
    repairs["cell collisions resolved"] = len(unique) - len(by_slot)
    spread = thinned(sorted(by_slot.values()), max_notes_per_beat)
    repairs["dense notes thinned"] = len(by_slot) - len(spread)
    result, last_forehand = [], {}  # last_forehand: colour -> the hand's previous swing
    for swing in swings(spread):
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
TOOL = "beat-saber-automapper"
GENERATED_BY = f"{TOOL} (AI-generated)"  # _levelAuthorName of every generated level: BeatSaver asks to declare AI maps


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
    mapper: str = GENERATED_BY,
    lights: str = "full",
    seed: int = 0,
    generator: dict | None = None,
    bpm_events: list[BpmEvent] = (),
) -> dict[str, bytes]:
    """{file name: bytes} of a level Beat Saber loads as is: Info.dat (v2.1.0, DefaultEnvironment, with
    `generator` as its _customData._generator), one v3.3.0 Standard difficulty file per entry of notes
    ({difficulty name: notes}) with its lightshow (`lights`: full, simple or none), song.egg, cover.jpg.

    song: [n] or [n, channels] float at OUTPUT_RATE, beat 0 on its first sample. bpm_events: where the
    tempo changes (each difficulty carries them as v3 bpmEvents); lights and repairs use `bpm` throughout.
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
                "Standard",
                name,
                f"{name}Standard.dat",
                "3.3.0",
                notes[name],
                bpm_events=list(bpm_events),
                njs=NJS[name],
                njs_offset=NJS_OFFSET,
            )
            for name in notes
        ],
        environment=ENVIRONMENT,
        custom_data=generated_custom_data(generator) if generator is not None else {},
    )
    mono = song.reshape(len(song), -1).mean(axis=1)  # [n]
    loudness = bar_loudness(mono, OUTPUT_RATE, bpm)  # [bars] dB
    shows = {name: lightshow(notes[name], bpm, loudness, seconds * bpm / 60, lights, seed) for name in notes}
    cover = cover if cover is not None else cover_jpeg(song_name)
    return level_files(level, shows) | {"song.egg": ogg_vorbis(song, OUTPUT_RATE), "cover.jpg": cover}


def generated_custom_data(generator: dict) -> dict:
    """Info.dat's _customData for a generated level: the editor convention's _editors entry naming the tool,
    and _generator holding what made it (tool, checkpoint, base model, token space, seed, sampling)."""
    tool = {"tool": TOOL, "aiGenerated": True} | generator
    return {"_editors": {"_lastEditedBy": TOOL, TOOL: {"aiGenerated": True}}, "_generator": tool}


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


# ---------------------------------------------------------------- lightshow

ENVIRONMENT = DEFAULT_ENVIRONMENT  # "The First": it documents every event type below (bsmg wiki, basic lighting)
# its basic event types (v3 `et`): five light groups, two triggers (value unused), two laser speeds
BACK_LASERS, RING_LIGHTS, LEFT_LASERS, RIGHT_LASERS, CENTER_LIGHTS = 0, 1, 2, 3, 4
LIGHT_TYPES = (BACK_LASERS, RING_LIGHTS, LEFT_LASERS, RIGHT_LASERS, CENTER_LIGHTS)
RING_SPIN, RING_ZOOM = 8, 9
LEFT_LASER_SPEED, RIGHT_LASER_SPEED = 12, 13  # value 0 (still) .. 20 (very fast)
EVENT_TYPES = (*LIGHT_TYPES, RING_SPIN, RING_ZOOM, LEFT_LASER_SPEED, RIGHT_LASER_SPEED)
# light values: 0 off; then on, flash, fade (to black), transition, in the secondary colour (1-4, blue
# here) and the primary one (5-8, red); 9-12 (white) are left out
LIGHT_OFF = 0
ON, FLASH, FADE, TRANSITION = range(4)
MAX_LIGHT_VALUE = 8
MAX_LASER_SPEED = 8
LIGHT_MODES = ("full", "simple", "none")
PHRASE_BARS = 8  # the colours swap and the rings zoom every 8 bars
LIGHT_GAP_BEATS = 0.25  # a light group fires at most once per 1/4 beat for the notes: never a strobe
QUIET_DB = 12.0  # a bar this far below the song's median loudness is a quiet passage: lights dim or off
LOUD_QUANTILE = 0.8  # bars at least this loud, and LOUD_DB above the median, get the boost colours
LOUD_DB = 3.0
DIM = 0.4  # brightness of the centre lights in quiet passages
AFTER_LAST_NOTE_BEATS = 4  # the stage goes dark this long after the last note


def light_value(effect: int, color: int) -> int:
    """A light event's value: effect ON/FLASH/FADE/TRANSITION in colour 0 (secondary) or 1 (primary)."""
    return 1 + 4 * color + effect


def bar_loudness(mono: np.ndarray, rate: int, bpm: float) -> np.ndarray:
    """mono: [n] float, beat 0 on sample 0 -> [bars] float: each 4-beat bar's RMS level in dB."""
    bar = max(1, round(BEATS_PER_BAR * 60 / bpm * rate))  # samples per bar
    bars = max(1, math.ceil(len(mono) / bar))
    padded = np.zeros(bars * bar)
    padded[: len(mono)] = mono
    return 20 * np.log10(np.sqrt(np.mean(padded.reshape(bars, bar) ** 2, axis=1)) + 1e-6)


def lightshow(
    notes: list[Note], bpm: float, loudness: np.ndarray, song_beats: float, mode: str = "full", seed: int = 0
) -> Lightshow:
    """Lights for DefaultEnvironment from a difficulty's notes and the song's loudness per bar
    (`bar_loudness`), every event before `song_beats`; the same inputs and seed give the same show.

    Dark (every light group off) from beat 0 until the first note. Then, bar by bar: the ring
    lights pulse on each bar line, the colours swap every PHRASE_BARS bars; note times flash the
    centre lights (on a whole beat or a cluster) or the laser on the notes' side, at most one
    flash per group per LIGHT_GAP_BEATS. Quiet bars dim to the centre lights alone. "full" adds
    ring spins on bar lines and zooms on phrases, back lasers on accented clusters, laser speed
    following the bar's note density, and the boost colours in the loudest bars. Dark again
    AFTER_LAST_NOTE_BEATS after the last note (or halfway to the song's end, if that comes sooner).
    """
    if mode == "none":
        return Lightshow([], [])
    events: dict[tuple[float, int], tuple[int, float]] = {}  # (beat, type) -> (value, brightness)

    def put(beat: float, kind: int, value: int, brightness: float = 1.0) -> None:
        if beat < song_beats:
            events[(round(beat, 4), kind)] = (value, brightness if kind in LIGHT_TYPES else 0.0)

    for kind in LIGHT_TYPES:
        put(0.0, kind, LIGHT_OFF)
    boosts = [BoostEvent(0.0, False)] if mode == "full" else []
    if notes:
        _bar_lights(notes, loudness, mode, int(np.random.default_rng(seed).integers(2)), put, boosts, song_beats)
    lights = [LightEvent(beat, kind, value, f) for (beat, kind), (value, f) in sorted(events.items())]
    return Lightshow(_without_strobes(lights), [b for b in boosts if b.beat < song_beats])


def _bar_lights(
    notes: list[Note], loudness: np.ndarray, mode: str, first_color: int, put, boosts: list, song_beats: float
) -> None:
    """The bar-line and note-time events of `lightshow` (through `put`), and the boosts (appended)."""
    full = mode == "full"
    first, last = min(n.beat for n in notes), max(n.beat for n in notes)
    median = float(np.median(loudness))
    quiet = set(np.flatnonzero(loudness < median - QUIET_DB).tolist())  # bars of quiet passages
    loud = set(np.flatnonzero((loudness >= np.quantile(loudness, LOUD_QUANTILE)) & (loudness > median + LOUD_DB)))
    per_bar = Counter(int(n.beat // BEATS_PER_BAR) for n in notes)  # bar -> notes
    speed, boosted = 0, False
    for bar in range(int(first // BEATS_PER_BAR), int(last // BEATS_PER_BAR) + 1):
        start = max(bar * BEATS_PER_BAR, first)
        color = (first_color + bar // PHRASE_BARS) % 2
        phrase = bar % PHRASE_BARS == 0 or start == first
        if bar in quiet:
            for kind in LIGHT_TYPES:
                put(start, kind, LIGHT_OFF)
            put(start, CENTER_LIGHTS, light_value(TRANSITION, color), DIM)
        else:
            put(start, RING_LIGHTS, light_value(FADE, color))
            if full:
                put(start, RING_SPIN, 0)
                if phrase:
                    put(start, RING_ZOOM, 0)
                    put(start, BACK_LASERS, light_value(ON, color))
        if full:
            new_speed = 0 if bar in quiet else min(MAX_LASER_SPEED, 1 + per_bar[bar] // 2)
            if new_speed != speed or phrase:
                put(start, LEFT_LASER_SPEED, new_speed)
                put(start, RIGHT_LASER_SPEED, new_speed)
                speed = new_speed
            is_loud = bar in loud
            if is_loud != boosted:
                boosts.append(BoostEvent(float(start), is_loud))
                boosted = is_loud
    fired: dict[int, float] = {}  # light type -> beat of its last note flash
    for beat, group in groupby(sorted(notes), key=lambda n: n.beat):
        group = list(group)
        bar = int(beat // BEATS_PER_BAR)
        if bar in quiet:
            continue
        color = (first_color + bar // PHRASE_BARS) % 2
        accented = float(beat).is_integer() or len(group) > 1
        flashes = [CENTER_LIGHTS] if accented else []
        if full:
            flashes += [LEFT_LASERS if n.color == 0 else RIGHT_LASERS for n in group if not accented][:1]
            flashes += [BACK_LASERS] if accented and len(group) > 1 else []
        for kind in flashes:
            if beat - fired.get(kind, -math.inf) >= LIGHT_GAP_BEATS:
                put(beat, kind, light_value(FLASH, color))
                fired[kind] = beat
    dark = min(last + AFTER_LAST_NOTE_BEATS, (last + song_beats) / 2)  # before the song ends in any case
    for kind in LIGHT_TYPES:
        put(dark, kind, LIGHT_OFF)
    if boosted:
        boosts.append(BoostEvent(dark, False))


def _without_strobes(lights: list[LightEvent]) -> list[LightEvent]:
    """lights (sorted by beat) less any light event closer than 1/8 beat after the last kept one of its type."""
    kept, last = [], {}
    for event in lights:
        if event.type in LIGHT_TYPES and event.beat - last.get(event.type, -math.inf) < 1 / 8:
            continue
        last[event.type] = event.beat
        kept.append(event)
    return kept


# ---------------------------------------------------------------- preview picture

PREVIEW_WIDTH = 1200  # pixels of time axis
LABEL_WIDTH = 90
LANE_HEIGHT = 11  # one lane per grid cell: 12 lanes, top row first, columns left to right in each row
ONSET_HEIGHT = 40
PANEL_GAP = 14
HEADER_HEIGHT = 36
NOTE_RGB = ((235, 60, 70), (60, 130, 245))  # red (left saber), blue (right saber)
# cut direction -> (dx, dy) in image coordinates (y grows downwards)
ARROW = {0: (0, -1), 1: (0, 1), 2: (-1, 0), 3: (1, 0), 4: (-1, -1), 5: (1, -1), 6: (-1, 1), 7: (1, 1)}


def preview_size(difficulties: int) -> tuple[int, int]:
    """(width, height) in pixels of a preview with this many difficulty panels."""
    panel = CELLS * LANE_HEIGHT + ONSET_HEIGHT + PANEL_GAP
    return LABEL_WIDTH + PREVIEW_WIDTH, HEADER_HEIGHT + max(1, difficulties) * panel


def preview_png(
    notes: dict[str, list[Note]],
    bpm: float,
    samples: np.ndarray,
    rate: int,
    seconds: float = 30.0,
    title: str = "",
    bpm_events: list[BpmEvent] = (),
) -> bytes:
    """A PNG lane chart of the first `seconds` of a level: per difficulty ({name: notes}), the 12 grid
    cells as lanes (top row first) with each note as an arrow in its cut direction (a dot for dot notes)
    in its saber's colour, the song's onset strength under them, bar lines bright, beats faint.
    samples: [n] mono float at `rate`, beat 0 on sample 0 (as the level's song); beats are timed by bpm
    and, where the tempo changes, bpm_events."""
    import librosa
    from PIL import Image, ImageDraw

    width, height = preview_size(len(notes))
    image = Image.new("RGB", (width, height), (18, 18, 24))
    draw = ImageDraw.Draw(image)
    draw.text((8, 7), f"{title}  {bpm:g} BPM  first {seconds:g} s".strip(), fill=(230, 230, 230))
    hop = 512
    strength = librosa.onset.onset_strength(y=samples.astype(np.float32), sr=rate, hop_length=hop)  # [frames]
    # scaled to its 99th percentile, so one loud hit cannot flatten the rest
    strength = np.clip(strength / max(float(np.percentile(strength, 99)), 1e-9), 0, 1)
    frames = strength[: int(seconds * rate / hop) + 1]

    def x_of(second: float) -> float:
        return LABEL_WIDTH + second / seconds * PREVIEW_WIDTH

    fastest = max([bpm, *(e.bpm for e in bpm_events)])
    beat_times = beat_seconds(np.arange(int(seconds * fastest / 60) + 1, dtype=np.float64), bpm, bpm_events)
    panel = CELLS * LANE_HEIGHT + ONSET_HEIGHT + PANEL_GAP
    for i, (name, chosen) in enumerate(notes.items()):
        top = HEADER_HEIGHT + i * panel
        bottom = top + CELLS * LANE_HEIGHT + ONSET_HEIGHT
        draw.text((8, top + 4), f"{name}", fill=(230, 230, 230))
        draw.text((8, top + 18), f"{len(chosen)} notes", fill=(150, 150, 160))
        for row in range(GRID_ROWS):  # a darker band per grid row
            y0 = top + row * GRID_COLUMNS * LANE_HEIGHT
            shade = (30, 30, 40) if row % 2 == 0 else (38, 38, 50)
            draw.rectangle((LABEL_WIDTH, y0, width, y0 + GRID_COLUMNS * LANE_HEIGHT - 1), fill=shade)
        for beat, second in enumerate(beat_times[beat_times <= seconds]):
            x = x_of(float(second))
            bar = beat % BEATS_PER_BAR == 0
            draw.line((x, top, x, bottom), fill=(120, 120, 140) if bar else (55, 55, 70), width=1)
        base = bottom  # the onset strength rises from the panel's bottom
        curve = [(x_of(f * hop / rate), base - v * (ONSET_HEIGHT - 4)) for f, v in enumerate(frames)]
        if len(curve) > 1:
            draw.polygon([(curve[0][0], base), *curve, (curve[-1][0], base)], fill=(90, 170, 120))
        note_times = beat_seconds(np.array([n.beat for n in chosen], dtype=np.float64), bpm, bpm_events)
        for note, second in zip(chosen, note_times):
            if not 0 <= second <= seconds or not on_grid(note):
                continue
            lane = (GRID_ROWS - 1 - note.y) * GRID_COLUMNS + note.x
            cx, cy = x_of(second), top + lane * LANE_HEIGHT + LANE_HEIGHT / 2
            color = NOTE_RGB[note.color]
            r = LANE_HEIGHT / 2 - 1
            if note.direction == DOT:
                draw.ellipse((cx - r + 1, cy - r + 1, cx + r - 1, cy + r - 1), fill=color)
                continue
            dx, dy = ARROW[note.direction]
            norm = math.hypot(dx, dy)
            ux, uy = dx / norm, dy / norm  # the cut direction; the triangle's tip points along it
            tip = (cx + ux * r, cy + uy * r)
            left = (cx - ux * r - uy * r, cy - uy * r + ux * r)
            right = (cx - ux * r + uy * r, cy - uy * r - ux * r)
            draw.polygon([tip, left, right], fill=color)
    for second in range(0, int(seconds) + 1, 5):  # time labels under the header
        draw.text((x_of(second) + 2, HEADER_HEIGHT - 13), f"{second}s", fill=(150, 150, 160))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def level_preview(level: Level, seconds: float = 30.0, difficulties: list[str] | None = None) -> bytes:
    """preview_png of a loaded level (zip or folder): its Standard difficulties (or those named) and its song.
    Raises MapError/AudioError when the song cannot be read, ValueError when no difficulty is left."""
    from audio import load_audio
    from maps import read_level_file

    chosen = {d.difficulty: plain_notes(d) for d in level.difficulties if d.characteristic == "Standard"}
    chosen = {k: v for k, v in chosen.items() if not difficulties or k in difficulties}
    if not chosen:
        raise ValueError(f"no Standard {' or '.join(difficulties or ['difficulty'])}")
    rate = 22050
    samples = load_audio(read_level_file(level.path, level.song_filename), rate, f"{level.path}:{level.song_filename}")
    standard = [d for d in level.difficulties if d.characteristic == "Standard" and d.difficulty in chosen]
    events = tempo_map(level, next((d for d in standard if d.bpm_events), standard[0]))
    return preview_png(chosen, level.bpm, samples, rate, seconds, level.song_name, events)


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


def song_beats_at(seconds: float, bpm: float, events: Sequence[BpmEvent] = ()) -> float:
    """Seconds after beat 0 -> the beat there, under the tempo events (beat_seconds inverted: it is
    piecewise linear and increasing, so its knots and one far point interpolate it exactly)."""
    knots = np.array(sorted({0.0, *(e.beat for e in events if e.beat > 0)}) + [1e9])  # [k] beats
    return float(np.interp(seconds, beat_seconds(knots, bpm, events), knots))


def note_seconds(notes: Iterable[Note], bpm: float, events: Sequence[BpmEvent] = ()) -> np.ndarray:
    """[distinct note times] float seconds, sorted: notes at one tick count once; beats timed at bpm,
    or under the tempo events (v3 bpmEvents) where the map has them."""
    ticks = np.unique(np.asarray(snap_ticks(n.beat for n in notes), dtype=np.int64))
    return beat_seconds(ticks / PPQ, bpm, events)


def matched(estimate: np.ndarray, reference: np.ndarray, tolerance: float) -> int:
    """How many estimate times pair one-to-one with reference times within tolerance (seconds): the size of
    a maximum matching, as the field's evaluation library (mir_eval) computes it for onsets and beats."""
    import mir_eval

    if len(estimate) == 0 or len(reference) == 0:
        return 0
    return len(mir_eval.util.match_events(np.asarray(reference), np.asarray(estimate), tolerance))


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


def listening(
    times: np.ndarray, onsets: np.ndarray, bpm: float, tolerance: float = TOLERANCE, events: Sequence[BpmEvent] = ()
) -> dict[str, float]:
    """How much more often note times sit on audio onsets than random placements would.

    The baseline is the share that notes placed at random on the 1/4-beat grid between the
    map's first and last note get on average: exactly the share of those grid points near
    an onset. lift = onset share / baseline share; a map that ignores the audio sits near 1.
    """
    if len(times) == 0:
        return {"onset_share": 0.0, "random_onset_share": 0.0, "listening_lift": 0.0}
    step = RANDOM_GRID / PPQ  # beats
    first, last = (round(song_beats_at(t, bpm, events) / step) for t in (times[0], times[-1]))
    grid = beat_seconds(np.arange(first, last + 1) * step, bpm, events)  # [points] seconds
    share, random_share = near_share(times, onsets, tolerance), near_share(grid, onsets, tolerance)
    lift = share / random_share if random_share else 0.0
    return {"onset_share": share, "random_onset_share": random_share, "listening_lift": lift}


def density_curve(times: np.ndarray, bin_seconds: float, bins: int) -> np.ndarray:
    """[bins] note counts per bin_seconds span from 0 s."""
    counts = np.bincount((times // bin_seconds).astype(np.int64), minlength=bins)
    return counts[:bins]


def parity_log(notes: Iterable[Note], bpm: float, events: Sequence[BpmEvent] = ()) -> list[tuple[float, bool]]:
    """Per swing (see swings) in time order: (beat, whether it breaks parity).

    The repair pass's rule (a hand alternates forehand and backhand; FOREHAND per colour; a
    dot swings whichever way the hand needs) applied to the notes as written: each repeated
    side counts once, without the cascade a repair would start, and a repeat after
    RESET_SECONDS without that hand is a reset players make, not an error.
    """
    last: dict[int, tuple[bool, float]] = {}  # colour -> (its previous swing was a forehand, its seconds)
    log = []
    every = swings(notes)
    starts = beat_seconds(np.array([swing[0].beat for swing in every]), bpm, events)  # [swings] seconds
    for swing, seconds in zip(every, starts.tolist()):
        color = swing[0].color
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


def playability(notes: Iterable[Note], bpm: float, events: Sequence[BpmEvent] = ()) -> dict[str, float]:
    """The repair pass's problems counted, not fixed: parity errors per swing (parity_log), cell
    collisions and notes whose direction disagrees with their stack."""
    notes = list(notes)
    _, repairs = repaired(notes)
    log = parity_log(notes, bpm, events)
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


def seams(
    notes: list[Note], bpm: float, chunk_beats: int, song_beats: float, events: Sequence[BpmEvent] = ()
) -> dict[str, float]:
    """Parity errors per swing and notes per beat within SEAM_BEATS of every multiple of chunk_beats
    (where independently decoded windows meet) beside the same figures elsewhere."""
    log = parity_log(notes, bpm, events)
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
    events: Sequence[BpmEvent] = (),
    reference_events: Sequence[BpmEvent] = (),
) -> dict:
    """One difficulty's quality figures (see docs/quality.md).

    notes: the difficulty's notes, beats at this bpm, beat 0 at the song's first sample.
    onsets: the song's audio onsets and length (for listening; the length also sets notes
    per second, else the last note's time does). reference: a map of the same song to compare
    with, at reference_bpm (default bpm). events, reference_events: the maps' tempo changes
    (maps.tempo_map), which time their beats where they have them.
    """
    notes = sorted(notes)
    times = note_seconds(notes, bpm, events)
    duration = onsets.duration if onsets else (float(times[-1]) if len(times) else 0.0)
    song_beats = song_beats_at(duration, bpm, events)
    card: dict = {"notes": len(notes), "nps": len(notes) / duration if duration else 0.0}
    profile = rhythm_profile(notes)
    card |= {f"rhythm_{name}": float(share) for name, share in zip(RHYTHM_CLASSES, profile)}
    if onsets is not None:
        card |= listening(times, onsets.seconds, bpm, tolerance, events)
    card |= playability(notes, bpm, events) | variety(notes) | seams(notes, bpm, chunk_beats, song_beats, events)
    if reference is not None:
        reference_bpm = reference_bpm or bpm
        reference_times = note_seconds(reference, reference_bpm, reference_events)
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
    return notes_on(beats, expert, rng)


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


TEMPO_CHANGES = ("steady", "step", "ramp")
TEMPO_RATIO_RANGE = (1.12, 1.3)  # a step or ramp speeds up or slows down by this much
RAMP_BARS = 8  # a ramp changes the tempo beat by beat over this many bars


def synth_tempo_events(bpm: float, beats: int, change: str, rng: np.random.Generator) -> list[BpmEvent]:
    """The tempo events of a synthetic song of `beats` beats starting at bpm: none when steady; a
    step to bpm * r (or bpm / r) on the bar line nearest the middle; or a ramp there that
    reaches it over RAMP_BARS bars, one event per beat."""
    if change == "steady":
        return []
    ratio = float(rng.uniform(*TEMPO_RATIO_RANGE)) ** (1 if rng.random() < 0.5 else -1)
    middle = beats // 2 // BEATS_PER_BAR * BEATS_PER_BAR
    if change == "step":
        return [BpmEvent(float(middle), round(bpm * ratio, 3))]
    ramp = RAMP_BARS * BEATS_PER_BAR
    first = max(BEATS_PER_BAR, middle - ramp // 2)
    return [BpmEvent(float(first + i), round(bpm * ratio ** ((i + 1) / ramp), 3)) for i in range(ramp)]


def _render_hard(
    hits: list[tuple[float, str]],
    bpm: float,
    beats: int,
    rng: np.random.Generator,
    events: list[BpmEvent] = (),
    kit: dict[str, np.ndarray] | None = None,
) -> np.ndarray:
    """song: [n] float32 at SYNTH_RATE: the hits (each on its exact sample, at a varied level) over chords
    that change every bar; bass notes are plucked tones whose pitch follows the chord. With tempo events
    the beats fall where the events put them. kit: recorded samples (levels.kits) for the drums, scaled to
    the synthesized ones' levels."""
    sounds = _hard_drum_sounds(rng)
    if kit is not None:
        sounds |= {kind: sample * float(np.abs(sounds[kind]).max()) for kind, sample in kit.items()}
    seconds_per_beat = 60 / bpm
    if events:
        # times: [beats + 1] seconds of every beat; a hit between two beats is placed proportionally
        times = beat_seconds(np.arange(beats + 1.0), bpm, events)

        def seconds(beat: float) -> float:
            return float(np.interp(beat, np.arange(beats + 1.0), times))
    else:

        def seconds(beat: float) -> float:
            return beat * seconds_per_beat

    song = np.zeros(math.ceil((seconds(beats) + 0.5) * SYNTH_RATE))
    bar_samples = round(BEATS_PER_BAR * seconds_per_beat * SYNTH_RATE)

    def bar_start(bar: int) -> int:
        # steady songs keep whole bars of bar_samples: the learnability corpus stays sample for sample the same
        return round(seconds(bar * BEATS_PER_BAR) * SYNTH_RATE) if events else bar * bar_samples

    roots = rng.choice([98.0, 110.0, 130.8, 146.8, 164.8], beats // BEATS_PER_BAR + 2)
    for bar, root in enumerate(roots):
        start, length = bar_start(bar), bar_start(bar + 1) - bar_start(bar)
        t = np.arange(min(length, max(0, song.size - start))) / SYNTH_RATE
        chord = sum(np.sin(2 * np.pi * root * ratio * t) for ratio in (1, 1.25, 1.5))
        song[start : start + t.size] += 0.03 * chord
    t, env = _envelope(0.3, 10)
    for beat, kind in hits:
        start = round(seconds(beat) * SYNTH_RATE)
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
    return notes_on(beats, expert, rng)


def synth_level(
    index: int, seed: int = 0, bars: int = 16, hard: bool = False, tempo: str = "steady", kit: str | None = None
) -> tuple[dict[str, bytes], Level]:
    """One synthetic level: ({file name: bytes} of a playable level, its Level).

    The song is bars + LEAD_IN_BARS bars with beat 0 on the first sample. Default: a drum
    loop at SYNTH_BPMS[index % 8] with Normal and Expert exactly on the kicks and snares.
    hard: a random tempo in HARD_BPM_RANGE (non-integer now and then), sections of varied
    rhythm (rests, syncopation, triplets, fills, dense runs) and instruments that carry no
    notes (hats, bass, chords); Expert on every lead hit, Normal on the kicks on whole beats.
    tempo (hard only): "step" or "ramp" changes the tempo mid-song (synth_tempo_events); the level
    carries the changes as bpmEvents, its notes stay on their beats. kit (hard only): a recorded drum kit
    (a Hydrogen kit's name or folder, levels.kits) plays the drums; the notes and everything else are the same.
    """
    rng = np.random.default_rng([seed, index, 1] if hard else [seed, index])
    total_bars = bars + LEAD_IN_BARS
    if hard:
        bpm = round(float(rng.uniform(*HARD_BPM_RANGE)), int(rng.choice([0, 1, 2])))
        hits = _hard_hits(rng, total_bars)
        events = synth_tempo_events(bpm, total_bars * BEATS_PER_BAR, tempo, np.random.default_rng([seed, index, 2]))
        sounds = kit_sounds(kit, SYNTH_RATE) if kit else None
        song = _render_hard(hits, bpm, total_bars * BEATS_PER_BAR, rng, events, sounds)
        normal, expert = _hard_notes(hits, False, rng), _hard_notes(hits, True, rng)
    else:
        if tempo != "steady" or kit:
            raise ValueError("tempo changes and recorded kits are for hard songs only")
        bpm, events = SYNTH_BPMS[index % len(SYNTH_BPMS)], []
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
            Difficulty("Standard", "Normal", "NormalStandard.dat", "3.3.0", normal, njs=10, bpm_events=events),
            Difficulty("Standard", "Expert", "ExpertStandard.dat", "3.3.0", expert, njs=16, bpm_events=events),
        ],
    )
    return level_files(level) | {"song.egg": ogg_vorbis(song, SYNTH_RATE)}, level


def write_synth_corpus(
    out_dir: str | os.PathLike,
    songs: int = 8,
    seed: int = 0,
    bars: int = 16,
    hard: bool = False,
    tempo: str = "steady",
    kit: str | None = None,
) -> list[Path]:
    """Write synth_level(0..songs-1) as OUT_DIR/synth_NN.zip; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(songs):
        files, _ = synth_level(index, seed, bars, hard, tempo, kit)
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
            tempo_map(level, ours[name]),
            tempo_map(reference, ref) if ref else (),
        )
    for name, card in cards.items():
        if args.json:
            print(json.dumps({"level": str(args.level), "difficulty": name} | _rounded(card)))
    if not args.json:
        print(score_table(cards))
    return 0


def real_corpus(args: argparse.Namespace) -> int:
    """utils.py realsongs: one level zip per LMMS project; a project that fails gets one line, the rest go on."""
    try:
        written, failed = write_real_corpus(Path(args.out_dir), args.held_out_dir, Path(args.projects), args.jobs)
    except ProjectError as e:
        print(f"utils.py realsongs: {e}", file=sys.stderr)
        return 2
    return 0 if written else 1


def write_real_corpus(
    out: Path, held_out_dir: str | os.PathLike | None = None, projects_dir: Path = LMMS_PROJECTS, jobs: int = 2
) -> tuple[int, int]:
    """Render every LMMS demo project into a level zip: the held-out ones (held_out) into held_out_dir
    (default OUT-held-out), the rest into out; zips already there are kept -> (levels there, skipped).
    Raises ProjectError when lmms or the projects are missing."""
    import tempfile
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    lmms_command()
    projects = demo_projects(projects_dir)
    if not projects:
        raise ProjectError(f"no LMMS projects under {projects_dir} (Debian: apt-get install lmms-common)")
    spare = Path(held_out_dir or f"{out}-held-out")

    def target(project: Path) -> Path:
        name = project_name(project)
        return (spare if held_out(name) else out) / f"{name}.zip"

    todo = [p for p in projects if not target(p).is_file()]
    written, failed = len(projects) - len(todo), 0
    with tempfile.TemporaryDirectory() as work, ThreadPoolExecutor(max(1, jobs)) as pool:
        jobs_by_project = {project: pool.submit(corpus_level_files, project, Path(work)) for project in todo}
        for project, job in tqdm(jobs_by_project.items(), desc="rendering", unit="song", disable=None):
            try:
                files = job.result()
            except (ProjectError, OSError, RuntimeError) as e:
                failed += 1
                tqdm.write(f"skipped {project.name}: {str(e).splitlines()[0]}")
                continue
            target(project).parent.mkdir(parents=True, exist_ok=True)
            write_zip(target(project), files)
            written += 1
    train, spared = len(list(out.glob("*.zip"))), len(list(spare.glob("*.zip")))
    print(f"{written} levels: {train} to train on in {out}, {spared} held out in {spare}; {failed} skipped")
    return written, failed


def preview_path(level: str | os.PathLike) -> Path:
    """Where a level's preview goes by default: beside it, LEVEL.png for LEVEL.zip or a folder LEVEL
    (never inside the level, so it is not uploaded with it)."""
    level = Path(level)
    return level.with_name((level.stem if level.suffix.lower() == ".zip" else level.name) + ".png")


def preview_level(args: argparse.Namespace) -> int:
    """utils.py preview: write the PNG; 0, or 2 with one line when the level or its song cannot be read."""
    from audio import AudioError
    from maps import MapError, load_level

    try:
        png = level_preview(load_level(args.level), args.seconds, args.difficulty)
    except (MapError, AudioError, OSError, ValueError) as e:
        print(f"utils.py preview: {args.level}: {e}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else preview_path(args.level)
    with atomic_file(out) as f:
        f.write(png)
    print(out)
    return 0


def _rounded(card: dict) -> dict:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in card.items()}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Project utilities: synthetic corpora, level scorecards and previews.",
        formatter_class=HelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    synth = commands.add_parser(
        "synth",
        formatter_class=HelpFormatter,
        help="write a synthetic corpus of level zips",
        description="Write level zips whose songs are synthesized drum patterns at known BPMs "
        f"({', '.join(f'{b:g}' for b in SYNTH_BPMS)}, in turn) with Normal and Expert notes exactly "
        "on the hits. Deterministic for a seed. For tests and the offline demo.",
    )
    synth.add_argument("out_dir", metavar="OUT_DIR", help="folder to write synth_NN.zip into (created if missing)")
    synth.add_argument("--songs", type=int, default=8, help="number of levels")
    synth.add_argument("--seed", type=int, default=0, help="random seed")
    synth.add_argument("--bars", type=int, default=16, help=f"bars with notes, after {LEAD_IN_BARS} lead-in bars")
    synth.add_argument(
        "--hard",
        action="store_true",
        help=f"the learnability corpus: random tempi {HARD_BPM_RANGE[0]:g}-{HARD_BPM_RANGE[1]:g} BPM, sections of "
        "rests, syncopation, triplets, fills and dense runs, hats/bass/chords that carry no notes; Normal on "
        "kicks on whole beats only",
    )
    synth.add_argument(
        "--tempo",
        choices=TEMPO_CHANGES,
        default="steady",
        help="with --hard: step changes the tempo by 12-30%% up or down on a bar line mid-song, ramp reaches such "
        f"a change beat by beat over {RAMP_BARS} bars; the levels carry bpmEvents (default steady)",
    )
    real = commands.add_parser(
        "realsongs",
        formatter_class=HelpFormatter,
        help="render the LMMS demo projects into a real-music corpus of level zips",
        description="Render the LMMS studio's demo projects (Debian: apt-get install lmms) and write one level zip "
        "per project whose notes follow its drum tracks: Expert on every kick, snare and tom (no two closer than "
        "1/4 beat), Normal on the kicks on whole beats, none in the first 1.5 s, hands as in the synthetic "
        "corpus; the project's own tempo in Info.dat. About one project in five (fixed by name) is held out "
        "of training: it goes to --held-out-dir, beside OUT_DIR, where a training run's --data OUT_DIR never "
        "finds it. Projects already written are kept.",
    )
    real.add_argument("out_dir", metavar="OUT_DIR", help="folder for the training songs' level zips")
    real.add_argument("--held-out-dir", help="folder for the held-out songs (default: OUT_DIR-held-out)")
    real.add_argument("--projects", default=str(LMMS_PROJECTS), help="folder of LMMS projects (.mmp/.mmpz)")
    real.add_argument("--jobs", type=int, default=2, help="projects rendered at once")
    synth.add_argument(
        "--kit",
        help="with --hard: a recorded drum kit plays the drums, a Hydrogen kit's name (e.g. GMRockKit, from "
        "apt-get install hydrogen-data) or a folder of its samples; default: synthesized hits",
    )
    score = commands.add_parser(
        "score",
        formatter_class=HelpFormatter,
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
        "--tolerance", type=float, default=TOLERANCE, help="seconds within which a note matches a reference note"
    )
    score.add_argument("--chunk-beats", type=int, default=64, help="window length in beats whose seams are checked")
    score.add_argument("--json", action="store_true", help="one JSON object per difficulty per line")
    preview = commands.add_parser(
        "preview",
        formatter_class=HelpFormatter,
        help="draw a level's notes over its song's onsets as a PNG",
        description="A lane chart of a level (zip or folder, human or generated): per Standard difficulty, the "
        "12 grid cells as lanes with each note as an arrow (or dot) in its saber's colour, the song's onset "
        "strength under them and the bar lines marked. Shows at a glance whether the notes follow the music.",
    )
    preview.add_argument("level", metavar="LEVEL", help="level zip or folder")
    preview.add_argument("--seconds", type=float, default=30.0, help="seconds of the song drawn")
    preview.add_argument("--difficulty", nargs="+", help="difficulties to draw (default: every Standard one)")
    preview.add_argument("--out", help="PNG path (default: LEVEL.png beside the level)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "score":
        return score_level(args)
    if args.command == "preview":
        return preview_level(args)
    if args.command == "realsongs":
        return real_corpus(args)
    if (args.tempo != "steady" or args.kit) and not args.hard:
        parser.error("--tempo step/ramp and --kit need --hard")
    try:
        paths = write_synth_corpus(args.out_dir, args.songs, args.seed, args.bars, args.hard, args.tempo, args.kit)
    except KitError as e:
        print(f"utils.py synth: {e}", file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
