"""Where the hands go: notes for a list of hit beats, as the corpora (synthetic and real) place them."""

from __future__ import annotations

import numpy as np

from maps import BEATS_PER_BAR, DOWN, UP, Note

RED_COLUMNS, BLUE_COLUMNS = (0, 1), (2, 3)  # the left hand's columns, the right hand's


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
