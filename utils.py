"""Note-level helpers: v3 arcs/chains to plain notes and the 48-PPQ beat grid.

Later: level packaging, playability checks and repairs, the synthetic corpus.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import numpy as np

from data import PPQ
from maps import Difficulty, Note, on_grid

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
