"""Playability: the repair pass for generated notes and the rules it shares with the scorecard."""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Iterable

import msgspec

from maps import (
    DOT,
    DOWN,
    DOWN_LEFT,
    DOWN_RIGHT,
    LEFT,
    PPQ,
    RIGHT,
    UP,
    UP_LEFT,
    UP_RIGHT,
    Note,
    TempoMap,
    slot,
)

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


def repair(
    notes: Iterable[Note], tempo: TempoMap | None = None, max_notes_per_beat: float | None = None
) -> tuple[list[Note], Counter]:
    """Notes -> (notes a player can play, repairs made by kind in REPAIRS).

    In order: with a tempo (generated notes), notes in the first MIN_NOTE_SECONDS of audio are dropped;
    exact duplicates removed; of notes sharing a cell at one tick the first (by colour, direction) stays;
    with max_notes_per_beat, a note that would make any one-beat span hold more than that many
    (rounded down) is dropped, earlier notes first kept (the grammar keeps this inside a window; this
    keeps it across window seams); arrows of one colour at one tick take the first arrow's direction
    (dots stay dots); a hand that would swing forehand (or backhand) twice in a row has its swing
    flipped to the opposite direction (a dot swings either way and keeps the hand alternating).
    The scorecard counts a map's problems with these same definitions (no tempo: nothing dropped early).
    """
    first_beat = tempo.beat_at(MIN_NOTE_SECONDS) if tempo is not None else 0.0
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
