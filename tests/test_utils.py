"""utils.py: arcs/chains folded into plain notes, the 48-PPQ grid, playability repairs."""

import json
import subprocess
import sys

import msgspec
import numpy as np
import pytest

from conftest import ROOT, SHARED_MAPS, needs_shared
from maps import DOT, Arc, Chain, Difficulty, Note, load_level
from utils import (
    grid_fit,
    parity_log,
    plain_notes,
    playability,
    playable,
    rhythm_profile,
    scorecard,
    seams,
    snap_ticks,
    song_onsets,
    synth_level,
    timing_scores,
    variety,
    write_zip,
)


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


# ---------------------------------------------------------------- scorecard


def _beats(*beats, color=0) -> list[Note]:
    return [Note(float(b), 1, 0, color, 1) for b in beats]


def test_timing_scores_count_one_to_one_matches_within_the_tolerance():
    reference = np.array([1.0, 2.0, 3.0, 4.0])
    assert timing_scores(reference, reference)["timing_f1"] == 1.0
    # 2.03 matches 2.0; 3.05 is 50 ms off; two estimates near 1.0 match it once
    scores = timing_scores(np.array([0.99, 1.01, 2.03, 3.05]), reference, tolerance=0.04)
    assert scores["timing_precision"] == 0.5 and scores["timing_recall"] == 0.5
    assert timing_scores(np.array([]), reference)["timing_f1"] == 0.0


def test_rhythm_profile_and_variety_on_known_notes():
    notes = _beats(0, 1, 1.5, 2.25, 3 + 1 / 3, 4 + 1 / 6, 5 + 1 / 16)
    assert list(rhythm_profile(notes)) == pytest.approx([2 / 7, 1 / 7, 1 / 7, 2 / 7, 1 / 7])
    looped = [Note(bar * 4 + b, 1, 0, 0, 1) for bar in range(8) for b in (0, 2)]
    assert variety(looped)["top_pattern_share"] == 1.0 and variety(looped)["note_type_entropy"] == 0.0
    mixed = [Note(b, x, 0, x // 2, 8) for b, x in ((0, 0), (4, 1), (8, 2), (12, 3))]
    card = variety(mixed)
    assert card["note_type_entropy"] == pytest.approx(2.0) and card["top_pattern_share"] == 0.25
    assert card["grid_coverage"] == pytest.approx(4 / 12) and card["red_share"] == 0.5


def test_parity_counts_each_repeat_once_and_allows_resets():
    bpm = 120.0  # 0.5 s per beat
    down_down = [Note(0.0, 1, 0, 0, 1), Note(1.0, 1, 0, 0, 1), Note(2.0, 1, 0, 0, 0), Note(3.0, 1, 0, 0, 1)]
    assert [error for _, error in parity_log(down_down, bpm)] == [False, True, False, False]
    reset = [Note(0.0, 1, 0, 0, 1), Note(4.0, 1, 0, 0, 1)]  # 2 s apart: a reset, not an error
    assert not any(error for _, error in parity_log(reset, bpm))
    card = playability(down_down + [Note(3.0, 1, 0, 1, 1), Note(3.0, 1, 1, 0, 0)], bpm)
    assert card["parity_errors"] == 1 and card["cell_collisions"] == 1 and card["mixed_stacks"] == 1


def test_seams_split_figures_at_window_edges():
    notes = _beats(*range(0, 32))  # one note per beat, every swing down: all but the first break parity
    card = seams(notes, 120.0, chunk_beats=16, song_beats=32)
    assert card["seam_notes_per_beat"] == pytest.approx(1.0) and card["other_notes_per_beat"] == pytest.approx(1.0)
    assert card["seam_parity_errors_per_swing"] == 1.0


def _fixture_notes(name: str):
    level = load_level(SHARED_MAPS / name)
    diff = next(d for d in level.difficulties if d.characteristic == "Standard" and d.notes)
    return level, plain_notes(diff)


@needs_shared
def test_human_map_timing_against_itself_shifted_and_thinned():
    level, notes = _fixture_notes("vdsap_merry_christmas")  # 98% of its notes on the beat
    assert scorecard(notes, level.bpm, reference=notes)["timing_f1"] == 1.0
    shifted = [msgspec.structs.replace(n, beat=n.beat + 0.5) for n in notes]
    assert scorecard(shifted, level.bpm, reference=notes)["timing_f1"] < 0.05
    times = sorted({n.beat for n in notes})
    thinned = [n for n in notes if times.index(n.beat) % 2 == 0]
    card = scorecard(thinned, level.bpm, reference=notes)
    assert card["timing_recall"] == pytest.approx(0.5, abs=0.01) and card["timing_precision"] == 1.0


@needs_shared
def test_listening_lift_of_a_human_map_and_of_random_notes():
    level, notes = _fixture_notes("vdsap_merry_christmas")
    level.path = str(SHARED_MAPS / "vdsap_merry_christmas")
    onsets = song_onsets(level)
    assert scorecard(notes, level.bpm, onsets)["listening_lift"] > 2
    # as many notes at random 1/4-beat positions of the same song, 8 draws: a lift near 1
    grid = np.arange(0, max(n.beat for n in notes), 0.25)
    draws = [np.sort(np.random.default_rng(seed).choice(grid, len(notes), replace=False)) for seed in range(8)]
    lifts = [scorecard(_beats(*beats), level.bpm, onsets)["listening_lift"] for beats in draws]
    assert 0.85 < np.mean(lifts) < 1.15


def test_score_cli_table_json_and_errors(tmp_path):
    files, level = synth_level(1, bars=4)
    write_zip(tmp_path / "level.zip", files)
    run = [sys.executable, "utils.py", "score", str(tmp_path / "level.zip")]
    table = subprocess.run(run, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "Normal" in table.splitlines()[0] and "listening lift" in table and "parity errors per swing" in table
    result = subprocess.run(
        [*run, "--reference", str(tmp_path / "level.zip"), "--json", "--difficulty", "Expert"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    (card,) = [json.loads(line) for line in result.stdout.splitlines()]
    keys = {"difficulty", "notes", "nps", "listening_lift", "parity_errors_per_swing", "cell_collisions"}
    keys |= {"note_type_entropy", "top_pattern_share", "timing_precision", "timing_recall", "timing_f1"}
    assert keys | {"density_ratio", "density_correlation"} <= set(card)
    expert = next(d for d in level.difficulties if d.difficulty == "Expert")
    assert card["difficulty"] == "Expert" and card["notes"] == len(expert.notes) and card["timing_f1"] == 1.0
    assert card["density_ratio"] == 1.0 and card["listening_lift"] > 1.5
    (tmp_path / "broken.zip").write_bytes(b"not a zip")
    bad = subprocess.run([*run[:3], str(tmp_path / "broken.zip")], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "broken.zip" in bad.stderr
