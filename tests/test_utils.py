"""utils.py: arcs/chains folded into plain notes, the 48-PPQ grid, playability repairs."""

import pytest

from maps import DOT, Arc, Chain, Difficulty, Note
from utils import grid_fit, plain_notes, playable, snap_ticks, synth_level


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


def test_playable_repairs_each_problem_once_and_counts_it():
    bpm = 120.0  # 1.5 s = beat 3
    notes = [
        Note(2.0, 0, 0, 0, 1),  # before 1.5 s: dropped
        Note(4.0, 0, 0, 0, 1),
        Note(4.0, 0, 0, 0, 1),  # duplicate
        Note(4.0, 0, 0, 1, 1),  # blue in the red note's cell at the same time: collision
        Note(4.0, 1, 1, 0, 0),  # red stacked with the red down arrow, pointing up: unified to down
        Note(4.0, 1, 0, 0, DOT),  # a dot in the stack stays a dot
        Note(5.0, 0, 0, 0, 1),  # red down again right after red down: flipped up
        Note(6.0, 3, 0, 1, 1),  # blue's first swing
        Note(6.5, 3, 0, 1, DOT),  # a dot: blue's backhand
        Note(7.0, 3, 0, 1, 1),  # then down again is fine
    ]
    kept, repairs = playable(notes, bpm)
    assert dict(repairs) == {
        "early notes dropped": 1,
        "duplicates removed": 1,
        "cell collisions resolved": 1,
        "stack directions unified": 1,
        "parity flips": 1,
    }
    assert kept == [
        Note(4.0, 0, 0, 0, 1),
        Note(4.0, 1, 0, 0, DOT),
        Note(4.0, 1, 1, 0, 1),
        Note(5.0, 0, 0, 0, 0),
        Note(6.0, 3, 0, 1, 1),
        Note(6.5, 3, 0, 1, DOT),
        Note(7.0, 3, 0, 1, 1),
    ]


def test_playable_leaves_a_clean_map_alone():
    _, level = synth_level(2, bars=8)
    for diff in level.difficulties:
        kept, repairs = playable(diff.notes, level.bpm)
        assert kept == sorted(diff.notes) and sum(repairs.values()) == 0
