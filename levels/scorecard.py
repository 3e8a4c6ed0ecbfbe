"""The quality scorecard: listening, density, rhythm, playability, variety, seams and timing."""

from __future__ import annotations

import math
import sys
from collections import Counter
from collections.abc import Iterable
from typing import NamedTuple

import numpy as np

from audio import ONSET_RATE
from data import CHUNK_BEATS
from levels.playability import (
    FOREHAND,
    VISION_CELLS,
    arc_whole,
    bomb_clear,
    chain_whole,
    notes_under,
    repair,
    swings,
    wall_cells,
)
from maps import (
    DOT,
    GRID_CELLS,
    OBJECT_NAMES,
    PPQ,
    Level,
    Note,
    Objects,
    TempoMap,
    slot,
    snap_ticks,
)

TOLERANCE = 0.04  # seconds: a note this close to a reference note or an audio onset hits it
RHYTHM_CLASSES = ("beat", "1/2", "1/4", "1/3 and 1/6", "other")
RANDOM_GRID = PPQ // 4  # random placements for the listening baseline sit on the 1/4-beat grid
PATTERN_BEATS = 4
DENSITY_BEATS = 16  # 4 bars: the span of the density curve
RESET_SECONDS = 1.0  # a hand idle this long may start over on either side
SEAM_BEATS = 2  # notes this close to a multiple of chunk_beats sit at a window seam


def note_seconds(notes: Iterable[Note], tempo: TempoMap) -> np.ndarray:
    """[distinct note times] float seconds, sorted: notes at one tick count once."""
    ticks = np.unique(np.asarray(snap_ticks(n.beat for n in notes), dtype=np.int64))
    return tempo.seconds_at(ticks / PPQ)


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


def listening(times: np.ndarray, onsets: np.ndarray, tempo: TempoMap, tolerance: float = TOLERANCE) -> dict[str, float]:
    """How much more often note times sit on audio onsets than random placements would.

    The baseline is the share that notes placed at random on the 1/4-beat grid between the
    map's first and last note get on average: exactly the share of those grid points near
    an onset. lift = onset share / baseline share; a map that ignores the audio sits near 1.
    """
    if len(times) == 0:
        return {"onset_share": 0.0, "random_onset_share": 0.0, "listening_lift": 0.0}
    step = RANDOM_GRID / PPQ  # beats
    first, last = (round(tempo.beat_at(t) / step) for t in (times[0], times[-1]))
    grid = tempo.seconds_at(np.arange(first, last + 1) * step)  # [points] seconds
    share, random_share = near_share(times, onsets, tolerance), near_share(grid, onsets, tolerance)
    lift = share / random_share if random_share else 0.0
    return {"onset_share": share, "random_onset_share": random_share, "listening_lift": lift}


def density_curve(times: np.ndarray, bin_seconds: float, bins: int) -> np.ndarray:
    """[bins] note counts per bin_seconds span from 0 s."""
    counts = np.bincount((times // bin_seconds).astype(np.int64), minlength=bins)
    return counts[:bins]


def parity_log(notes: Iterable[Note], tempo: TempoMap) -> list[tuple[float, bool]]:
    """Per swing (see swings) in time order: (beat, whether it breaks parity).

    The repair pass's rule (a hand alternates forehand and backhand; FOREHAND per colour; a
    dot swings whichever way the hand needs) applied to the notes as written: each repeated
    side counts once, without the cascade a repair would start, and a repeat after
    RESET_SECONDS without that hand is a reset players make, not an error.
    """
    last: dict[int, tuple[bool, float]] = {}  # colour -> (its previous swing was a forehand, its seconds)
    log = []
    every = swings(notes)
    starts = tempo.seconds_at([swing[0].beat for swing in every])  # [swings] seconds
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


def problems(notes: Iterable[Note], tempo: TempoMap) -> dict[str, float]:
    """The repair pass's problems counted, not fixed: parity errors per swing (parity_log), cell
    collisions and notes whose direction disagrees with their stack."""
    notes = list(notes)
    _, repairs = repair(notes)
    log = parity_log(notes, tempo)
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
        "grid_coverage": len({(n.x, n.y) for n in notes}) / GRID_CELLS,
        "red_share": sum(n.color == 0 for n in notes) / len(notes),
    }


def seams(notes: list[Note], tempo: TempoMap, chunk_beats: int, song_beats: float) -> dict[str, float]:
    """Parity errors per swing and notes per beat within SEAM_BEATS of every multiple of chunk_beats
    (where independently decoded windows meet) beside the same figures elsewhere."""
    log = parity_log(notes, tempo)
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


def object_times(objects: Objects, tempo: TempoMap) -> dict[str, np.ndarray]:
    """{kind: [distinct times] seconds} where each kind beside notes is placed: a bomb's or wall's start, an
    arc's tail (where it lands), a chain's head."""
    beats = {
        "bombs": [b.beat for b in objects.bombs],
        "walls": [w.beat for w in objects.obstacles],
        "arcs": [a.tail.beat for a in objects.arcs],
        "chains": [c.head.beat for c in objects.chains],
    }
    return {kind: np.unique(tempo.seconds_at(np.round(np.asarray(b, float) * PPQ) / PPQ)) for kind, b in beats.items()}


def object_card(
    objects: Objects,
    tempo: TempoMap,
    duration: float,
    reference: Objects | None = None,
    reference_tempo: TempoMap | None = None,
    tolerance: float = TOLERANCE,
) -> dict:
    """Bombs, walls, arcs and chains: each kind per second, how often they break the rules generated
    levels keep (as written, not repaired: bombs where a hand sweeps or under a wall, walls over notes or in
    the centre view, arcs not ending on notes of their colour, chains not led by a note; human maps break
    some on purpose: free-standing arcs, wall art), and with a reference, each kind's count ratio and placement
    precision/recall/F1 (timing_scores of object_times)."""
    notes, walls = objects.notes, objects.obstacles
    by_slot = {(*slot(n), n.color): n for n in notes}
    card = {
        f"{kind}_per_second": n / duration if duration else 0.0
        for kind, n in objects.counts().items()
        if kind != "notes"
    }
    card |= {
        "bombs_in_the_way": sum(not bomb_clear(b, notes, walls) for b in objects.bombs),
        "walls_over_notes": sum(bool(notes_under(w, notes)) for w in walls),
        "walls_in_view": sum(bool(wall_cells(w.x, w.y, w.width, w.height) & VISION_CELLS) for w in walls),
        "arcs_off_notes": sum(not arc_whole(a, by_slot) for a in objects.arcs),
        "chains_off_notes": sum(not chain_whole(c, by_slot) for c in objects.chains),
    }
    if reference is not None:
        ours, theirs = object_times(objects, tempo), object_times(reference, reference_tempo or tempo)
        counts, reference_counts = objects.counts(), reference.counts()
        for kind in OBJECT_NAMES[1:]:
            card[f"{kind}_ratio"] = counts[kind] / reference_counts[kind] if reference_counts[kind] else None
            scores = timing_scores(ours[kind], theirs[kind], tolerance)
            card |= {f"{kind}_{name.split('_')[1]}": value for name, value in scores.items()}
    return card


class Onsets(NamedTuple):
    seconds: np.ndarray  # [onsets] float, sorted
    duration: float  # the song's seconds


def scorecard(
    notes: list[Note],
    tempo: TempoMap,
    onsets: Onsets | None = None,
    reference: list[Note] | None = None,
    reference_tempo: TempoMap | None = None,
    tolerance: float = TOLERANCE,
    chunk_beats: int = CHUNK_BEATS,
    objects: Objects | None = None,
    reference_objects: Objects | None = None,
) -> dict:
    """One difficulty's quality figures (see docs/quality.md).

    notes: the difficulty's notes, timed by tempo, beat 0 at the song's first sample.
    onsets: the song's audio onsets and length (for listening; the length also sets notes
    per second, else the last note's time does). reference: a map of the same song to compare
    with, timed by reference_tempo (default tempo). objects (and reference_objects): the
    difficulty's bombs, walls, arcs and chains too, scored by object_card.
    """
    notes = sorted(notes)
    times = note_seconds(notes, tempo)
    duration = onsets.duration if onsets else (float(times[-1]) if len(times) else 0.0)
    song_beats = tempo.beat_at(duration)
    card: dict = {"notes": len(notes), "nps": len(notes) / duration if duration else 0.0}
    profile = rhythm_profile(notes)
    card |= {f"rhythm_{name}": float(share) for name, share in zip(RHYTHM_CLASSES, profile)}
    if onsets is not None:
        card |= listening(times, onsets.seconds, tempo, tolerance)
    card |= problems(notes, tempo) | variety(notes) | seams(notes, tempo, chunk_beats, song_beats)
    if reference is not None:
        reference_tempo = reference_tempo or tempo
        reference_times = note_seconds(reference, reference_tempo)
        card |= timing_scores(times, reference_times, tolerance)
        card["density_ratio"] = len(notes) / len(reference) if reference else 0.0
        profile_gap = np.abs(profile - rhythm_profile(reference)).sum() / 2
        card["rhythm_distance"] = float(profile_gap)  # total variation distance, 0 same .. 1 disjoint
        span = DENSITY_BEATS * 60 / reference_tempo.bpm
        bins = max(1, math.ceil(max(duration, float(reference_times[-1]) if len(reference_times) else 0) / span))
        ours, theirs = density_curve(times, span, bins), density_curve(reference_times, span, bins)
        both_vary = bins > 2 and ours.std() > 0 and theirs.std() > 0
        card["density_correlation"] = float(np.corrcoef(ours, theirs)[0, 1]) if both_vary else None
    if objects is not None:
        card |= object_card(objects, tempo, duration, reference_objects, reference_tempo, tolerance)
    return card


def song_onsets(level: Level) -> Onsets | None:
    """The level's song -> its onsets and length, or None when the level has no readable song."""
    from audio import AudioError, load_audio
    from maps import MapError, read_level_file

    rate = ONSET_RATE
    try:
        samples = load_audio(
            read_level_file(level.path, level.song_filename), rate, f"{level.path}:{level.song_filename}"
        )
    except (AudioError, MapError) as e:
        print(f"no listening figures: {e}", file=sys.stderr)
        return None
    return Onsets(onset_seconds(samples, rate), len(samples) / rate)
