"""Where the hands go, and what they dodge: notes for a list of hit beats, and the walls, bombs, arcs and
chains around them, as the corpora (synthetic and real) place them."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

import numpy as np

from levels.playability import bomb_clear
from maps import BEATS_PER_BAR, DOWN, UP, Arc, Bomb, Chain, MapError, Note, Obstacle, load_level

RED_COLUMNS, BLUE_COLUMNS = (0, 1), (2, 3)  # the left hand's columns, the right hand's
# the corpus rules' version, written in each corpus level's Info.dat (_customData[RULES_KEY]); a corpus level
# written by older rules is rewritten (a real song's render kept). 2: bombs, walls, arcs and chains; 3: synthetic
# bombs on cowbells, arcs inside a phrase, a chain on each upward note of a fill; 4: a trial, reverted; 5: the
# LMMS corpus's arcs in Expert only; 6: the LMMS corpus's bombs one per 4-bar phrase (was one per bar); 7: the
# synthetic fills in the middle row, every note of a fill heading a chain (was its upward notes only), and the
# cowbell (the bombs' cue) three times as loud; 8: the LMMS corpus's arcs only under a held melodic note; 9: a
# crash opens every synthetic phrase, so the phrase an arc stays inside is heard in every window
CORPUS_RULES = 9
RULES_KEY = "_corpusRules"


def rules_data() -> dict:
    """Info.dat _customData for a level the corpus rules write now."""
    return {RULES_KEY: CORPUS_RULES}


def rules_of(level_zip: str | os.PathLike) -> int:
    """The corpus rules' version that wrote the level zip: 0 for none, an unreadable zip or an old one."""
    try:
        return int(load_level(level_zip).custom_data.get(RULES_KEY, 0))
    except (MapError, OSError, TypeError, ValueError):
        return 0


def notes_on(beats: list[float], expert: bool, rng: np.random.Generator) -> list[Note]:
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


def rest_walls(bars: Iterable[int]) -> list[Obstacle]:
    """A full-height wall through each bar of rests: over the left lane on the even bars of a run of rest
    bars, over the right lane on the odd ones."""
    walls, run = [], 0
    bars = sorted(bars)
    for i, bar in enumerate(bars):
        run = run + 1 if i and bars[i - 1] == bar - 1 else 0
        walls.append(Obstacle(float(bar * BEATS_PER_BAR), BEATS_PER_BAR, 0 if run % 2 == 0 else 3, 0, 1, 5))
    return walls


def duck_wall(bar: int) -> Obstacle:
    """A wall over the top row (where notes_on never puts a note) for the first half of the bar: the player ducks."""
    return Obstacle(float(bar * BEATS_PER_BAR), BEATS_PER_BAR / 2, 0, 2, 4, 3)


def bombs_on(beats: Iterable[float], notes: list[Note], walls: list[Obstacle]) -> list[Bomb]:
    """A bomb in the top row's middle (the left cell in a bar's first half) on each beat where no hand
    sweeps and no wall stands (playability.bomb_clear)."""
    bombs = [Bomb(b, 1 if b % BEATS_PER_BAR < BEATS_PER_BAR / 2 else 2, 2) for b in beats]
    return [b for b in bombs if bomb_clear(b, notes, walls)]


def arcs_where(notes: list[Note], joins: Callable[[Note, Note], bool]) -> list[Arc]:
    """An arc from each note's colour's previous note to it wherever joins(previous, note)."""
    arcs, previous = [], {}
    for note in sorted(notes):
        head = previous.get(note.color)
        if head is not None and head.beat < note.beat and joins(head, note):
            arcs.append(Arc(head, note))
        previous[note.color] = note
    return arcs


def up_chain(note: Note, beats: float) -> Chain | None:
    """edge_chain for an upward note only: to the top row of its column (None for any other note)."""
    return edge_chain(note, beats) if note.direction == UP else None


def edge_chain(note: Note, beats: float) -> Chain | None:
    """A chain of 3 slices from an up or down arrow to the top or bottom row of its column, along its cut,
    `beats` long (None for any other note, or one already on that row)."""
    row = {UP: 2, DOWN: 0}.get(note.direction)
    return Chain(note, note.beat + beats, note.x, row, 3, 1.0) if row is not None and note.y != row else None
