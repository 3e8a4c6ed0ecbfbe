"""The synthetic corpus: drum songs at known tempi with notes exactly on the hits."""

from __future__ import annotations

import math
import os
from pathlib import Path

import msgspec
import numpy as np

from audio import ogg_vorbis
from levels.hands import arcs_where, bombs_on, duck_wall, edge_chain, notes_on, rest_walls, rules_data
from levels.kits import kit_sounds
from levels.package import write_zip
from maps import (
    BEATS_PER_BAR,
    BpmEvent,
    Level,
    Note,
    Objects,
    TempoMap,
    level_files,
    standard_difficulty,
)

SYNTH_RATE = 44100
SYNTH_BPMS = (128.5, 87.0, 174.0, 100.0, 140.0, 60.5, 120.0, 95.25)  # slow, fast and non-integer on purpose
LEAD_IN_BARS = 2  # drums but no notes: the first notes come after >= 2.7 s at 174 BPM


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
PHRASE_BARS = 2  # half a section: fills close a phrase, arcs stay inside one (phrases tile every window)
SECTION_STYLES = ("rest", "sparse", "groove", "syncopated", "triplets", "dense")
HARD_BPM_RANGE = (60.0, 200.0)
LEAD = ("kick", "snare", "tom")  # the instruments that carry notes
# the cowbell's peak: the bombs' cue, loud enough that the random test codec tells it from the hats on its
# off-beats (corpus rules 7). Songs with tempo changes, the tempo tests' songs, keep the quieter one of rules
# 3: loud random off-beat accents break the tracker's following of a ramp (docs/tempo.md)
BELL_LEVEL, QUIET_BELL_LEVEL = 1.5, 0.5
# a cymbal opens every phrase (corpus rules 9), at a fixed level: the phrase boundaries that decide where arcs
# may join notes become audible wherever a training window starts. Its hits draw no random level, so every other
# sound, hit, hand and object of a song stays as rules 8 rendered it. Level and partials from a linear probe on
# the random test codec's codes around each downbeat (24 songs fitted, 8 scored: docs/quality.md): a noise crash
# at 0.5 told phrase starts from other downbeats with ROC AUC 0.61, at 1.0 0.74; these partials at 1.0 0.95 when
# ringing at a decay of 3.5/s, 0.91 at 8/s, which keeps the onset detector's share of notes on onsets as it was
# (a longer ring hid the quieter onsets after it: 0.836 -> 0.800 on the tempo-step test song)
CRASH_LEVEL, CRASH_DECAY = 1.0, 8.0  # peak, and 1/s of its exponential decay
CRASH_PARTIALS = (3130.0, 4470.0, 5830.0, 7210.0)  # Hz: square waves at inharmonic ratios, as an 808's cymbal


def _hard_drum_sounds(rng: np.random.Generator, bell: float = BELL_LEVEL) -> dict[str, np.ndarray]:
    """_drum_sounds plus a pitched tom, an open hat, a cowbell (at this peak level), a crash cymbal and a
    plucked bass note (pitch set per hit)."""
    sounds = _drum_sounds(rng)
    t, env = _envelope(0.25, 16)
    sounds["tom"] = 0.8 * np.sin(2 * np.pi * np.cumsum(160 + 60 * np.exp(-t * 20)) / SYNTH_RATE) * env
    t, env = _envelope(0.25, 18)
    sounds["open hat"] = 0.15 * np.diff(rng.standard_normal(t.size + 1)) * env
    t, env = _envelope(0.2, 25)
    sounds["bell"] = bell / 2 * sum(np.sign(np.sin(2 * np.pi * f * t)) for f in (540.0, 800.0)) * env  # an 808 cowbell
    t, env = _envelope(0.6, CRASH_DECAY)  # a splash: under 2% after half a second
    metal = sum(np.sign(np.sin(2 * np.pi * f * t)) for f in CRASH_PARTIALS) / len(CRASH_PARTIALS)
    sounds["crash"] = CRASH_LEVEL * metal * env
    return sounds


def _bar_lead(style: str, rng: np.random.Generator, ends_phrase: bool) -> list[tuple[float, str]]:
    """(beat in the bar, instrument) of one bar's lead hits in a section style; the last bar of each
    PHRASE_BARS ends with a fill (sixteenth snares or toms) now and then."""
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
    if ends_phrase and rng.random() < 0.5:
        kind = "snare" if rng.random() < 0.5 else "tom"
        hits = [h for h in hits if h[0] < 3] + [(3 + i / 4, kind) for i in range(4)]
    return hits


def phrase_of(beat: float) -> int:
    """The phrase (PHRASE_BARS bars, counted from the first after the lead-in) that holds this beat."""
    return int(beat // BEATS_PER_BAR - LEAD_IN_BARS) // PHRASE_BARS


def _hard_hits(rng: np.random.Generator, bars: int) -> tuple[list[tuple[float, str]], list[str]]:
    """((beat, instrument) of every hit of a hard song, the style of each bar): LEAD_IN_BARS bars of hats
    only, then sections of varied styles under hats (eighths, or sixteenths in busy sections), open
    hats, cowbells and bass notes on off-beats."""
    hits, styles = [], []
    style = "rest"
    for bar in range(bars):
        start = bar * BEATS_PER_BAR
        section_bar = (bar - LEAD_IN_BARS) % SECTION_BARS
        if bar >= LEAD_IN_BARS and section_bar == 0:
            style = str(rng.choice(SECTION_STYLES, p=[0.15, 0.2, 0.15, 0.2, 0.15, 0.15]))
        styles.append(style)
        if bar >= LEAD_IN_BARS:
            ends_phrase = section_bar % PHRASE_BARS == PHRASE_BARS - 1
            hits += [(start + b, kind) for b, kind in _bar_lead(style, rng, ends_phrase)]
            hits += [(float(start), "crash")] if section_bar % PHRASE_BARS == 0 else []
        step = 0.25 if style == "dense" else 0.5
        hits += [(start + i * step, "hat") for i in range(int(BEATS_PER_BAR / step)) if rng.random() < 0.9]
        hits += [(start + b + 0.5, "open hat") for b in range(BEATS_PER_BAR) if rng.random() < 0.2]
        hits += [(start + b + 0.5, "bass") for b in range(BEATS_PER_BAR) if rng.random() < 0.5]
        hits += [(start + b + 0.5, "bell") for b in range(BEATS_PER_BAR) if rng.random() < 0.2]
    return sorted(hits), styles


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
    sounds = _hard_drum_sounds(rng, QUIET_BELL_LEVEL if events else BELL_LEVEL)
    if kit is not None:
        sounds |= {kind: sample * float(np.abs(sounds[kind]).max()) for kind, sample in kit.items()}
    seconds_per_beat = 60 / bpm
    if events:
        # times: [beats + 1] seconds of every beat; a hit between two beats is placed proportionally
        times = TempoMap.from_events(bpm, events).seconds_at(np.arange(beats + 1.0))

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
            sound = sounds[kind] * (1.0 if kind == "crash" else rng.uniform(0.7, 1.0))
        sound = sound[: song.size - start]
        song[start : start + sound.size] += sound
    return (0.9 * song / np.abs(song).max()).astype(np.float32)


def _hard_notes(hits: list[tuple[float, str]], expert: bool, rng: np.random.Generator) -> list[Note]:
    """Notes on lead hits: Expert every one, Normal only the kicks on whole beats; hands alternate,
    each hand swinging down, up, down...; Expert puts both hands on some kicks on a bar's downbeat."""
    beats = sorted({b for b, kind in hits if kind in LEAD and (expert or (kind == "kick" and b == int(b)))})
    return notes_on(beats, expert, rng)


def _hard_objects(
    hits: list[tuple[float, str]], styles: list[str], notes: list[Note], rng: np.random.Generator
) -> Objects:
    """A hard song's notes and the other objects its music calls for:
    - walls through rests and over dense runs: a full-height wall over the left lane through each even
      bar of a rest section and over the right lane through each odd one; a duck wall over the top row
      (where these notes never go) for the first half of each bar of a dense section;
    - bombs on cowbells: one in the top row's middle cells (left one on a bar's first half) on each
      cowbell where no hand sweeps (playability.bomb_clear);
    - arcs in sparse sections: each note there joined to its colour's previous note when that is in the
      same phrase (PHRASE_BARS bars, which every window of whole phrases holds whole);
    - chains on fills: the notes of a phrase's closing run of sixteenths sit in the middle row, and each
      heads a chain along its cut to the top or bottom row, 1/8 beat long, in 3 slices (every note of the
      fill, so where the chains fall follows the music, not the hands' down-up phase)."""
    bars = range(LEAD_IN_BARS, len(styles))
    walls = rest_walls(bar for bar in bars if styles[bar] == "rest")
    walls += [duck_wall(bar) for bar in bars if styles[bar] == "dense"]
    closing = range(LEAD_IN_BARS + PHRASE_BARS - 1, len(styles), PHRASE_BARS)
    fills = [
        (start, start + 1)  # the bar's last beat, when it runs four sixteenths
        for start in (bar * BEATS_PER_BAR + 3 for bar in closing)
        if sum(start <= b < start + 1 and kind in LEAD for b, kind in hits) == 4
    ]

    def in_fill(note: Note) -> bool:
        return any(start <= note.beat < end for start, end in fills)

    notes = [msgspec.structs.replace(n, y=1) if in_fill(n) else n for n in notes]
    bells = [beat for beat, kind in hits if kind == "bell" and beat >= LEAD_IN_BARS * BEATS_PER_BAR]
    bombs = bombs_on(bells, notes, walls)

    def sparse(head: Note, note: Note) -> bool:
        return styles[int(note.beat // BEATS_PER_BAR)] == "sparse" and phrase_of(head.beat) == phrase_of(note.beat)

    arcs = arcs_where(notes, sparse)
    chains = [c for c in (edge_chain(n, 0.125) for n in notes if in_fill(n)) if c is not None]
    return Objects(notes, bombs, walls, arcs, chains)


def _objects(notes: Objects | list[Note]) -> Objects:
    return notes if isinstance(notes, Objects) else Objects(notes)


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
        hits, styles = _hard_hits(rng, total_bars)
        events = synth_tempo_events(bpm, total_bars * BEATS_PER_BAR, tempo, np.random.default_rng([seed, index, 2]))
        sounds = kit_sounds(kit, SYNTH_RATE) if kit else None
        song = _render_hard(hits, bpm, total_bars * BEATS_PER_BAR, rng, events, sounds)
        normal, expert = _hard_notes(hits, False, rng), _hard_notes(hits, True, rng)
        objects_rng = np.random.default_rng([seed, index, 3])  # its own stream: the songs and notes stay as they were
        normal, expert = (_hard_objects(hits, styles, notes, objects_rng) for notes in (normal, expert))
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
            standard_difficulty("Normal", _objects(normal), 10, events),
            standard_difficulty("Expert", _objects(expert), 16, events),
        ],
        custom_data=rules_data(),
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
