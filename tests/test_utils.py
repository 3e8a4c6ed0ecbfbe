"""utils.py: arcs/chains folded into plain notes, and the 48-PPQ grid."""

import pytest

from maps import Arc, Chain, Difficulty, Note
from utils import grid_fit, plain_notes, snap_ticks


def _difficulty(notes=(), arcs=(), chains=()) -> Difficulty:
    return Difficulty("Standard", "Expert", "x.dat", notes=list(notes), arcs=list(arcs), chains=list(chains))


def test_chain_head_becomes_a_note_unless_one_sits_there():
    note = Note(4, 1, 0, 0, 1)
    on_note = Chain(note, 4.25, 1, 2, 4, 0.5)
    free = Chain(Note(8, 2, 1, 1, 3), 8.5, 3, 1, 3, 1.0)
    assert plain_notes(_difficulty([note], chains=[on_note, free])) == [note, Note(8, 2, 1, 1, 3)]


def test_arc_adds_head_and_tail_only_on_free_cells():
    head, tail = Note(2, 1, 0, 0, 1), Note(3, 2, 2, 0, 0)
    existing_head = Note(2, 1, 0, 0, 1)
    assert plain_notes(_difficulty([existing_head], arcs=[Arc(head, tail)])) == [existing_head, tail]
    # another colour note at the same beat but another cell does not block the arc's head
    other_cell = Note(2, 3, 0, 1, 1)
    assert plain_notes(_difficulty([other_cell], arcs=[Arc(head, tail)])) == [head, other_cell, tail]
    # two arcs sharing an end add it once
    assert plain_notes(_difficulty(arcs=[Arc(head, tail), Arc(head, Note(5, 0, 0, 0, 8))])) == [
        head,
        tail,
        Note(5, 0, 0, 0, 8),
    ]


def test_notes_the_token_space_cannot_hold_are_dropped():
    keep = Note(1, 0, 0, 0, 0)
    dropped = [Note(1, 1000, 0, 0, 0), Note(1, 0, 3, 0, 0), Note(1, 1, 1, 0, 1045), Note(2, 1, 1, 2, 0)]
    assert plain_notes(_difficulty([keep, *dropped], chains=[Chain(Note(3, -1, 0, 0, 1), 4, 0, 0, 3, 1)])) == [keep]


def test_snap_and_grid_fit():
    assert snap_ticks([0, 1, 0.5, 1 / 3, 1 / 48, 2.0104]) == [0, 48, 24, 16, 1, 96]
    assert grid_fit([]) == (0, 0, 0)
    on_grid = grid_fit([0, 0.25, 1 / 3, 1 / 12, 1.333])  # 1.333 is 1 + 1/3 rounded to 3 decimals
    assert on_grid.max_ticks < 0.05 and on_grid.off_share == 0
    half_tick = 1 / 96  # 1/32 beat lands between ticks
    off = grid_fit([0, 3 * half_tick])
    assert off.max_ticks == pytest.approx(0.5) and off.off_share == 0.5 and off.mean_ticks == pytest.approx(0.25)
