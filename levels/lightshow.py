"""The lightshow: light events from the song's loudness and the notes."""

from __future__ import annotations

import math
from collections import Counter
from itertools import groupby

import numpy as np

from maps import (
    BEATS_PER_BAR,
    DEFAULT_ENVIRONMENT,
    BoostEvent,
    LightEvent,
    Lightshow,
    Note,
)

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
