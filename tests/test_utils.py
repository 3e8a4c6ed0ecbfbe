"""utils.py: arcs/chains folded into plain notes, the 48-PPQ grid, playability repairs, the scorecard,
the lightshow, the preview picture and a generated level's metadata."""

import json
import subprocess
import sys

import msgspec
import numpy as np
import pytest

from audio import load_audio
from conftest import ROOT, SHARED_MAPS, needs_shared
from levels.lightshow import (
    CENTER_LIGHTS,
    EVENT_TYPES,
    LEFT_LASER_SPEED,
    LIGHT_OFF,
    LIGHT_TYPES,
    MAX_LASER_SPEED,
    MAX_LIGHT_VALUE,
    RIGHT_LASER_SPEED,
    RING_LIGHTS,
    lightshow,
)
from levels.package import GENERATED_BY, OUTPUT_RATE, TOOL, LevelInfo, level_package, write_zip
from levels.playability import repair
from levels.preview import preview_size
from levels.scorecard import (
    Onsets,
    onset_seconds,
    parity_log,
    problems,
    rhythm_profile,
    scorecard,
    seams,
    song_onsets,
    timing_scores,
    variety,
)
from levels.synth import synth_level
from maps import DOT, Arc, Chain, Difficulty, Lightshow, Note, TempoMap, grid_fit, load_level, plain_notes, snap_ticks
from utils import main as utils_main


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


def test_a_density_cap_drops_the_notes_that_overfill_any_beat():
    notes = [Note(4.0, x, 0, x % 2, DOT) for x in range(4)] + [Note(4.75, 0, 1, 0, DOT), Note(5.0, 1, 1, 1, DOT)]
    kept, repairs = repair(notes, TempoMap.steady(120.0), max_notes_per_beat=3.5)
    # 3 at beat 4 fill (3, 4] and [4, 5): the 4th and the one at 4.75 go; beat 5 starts a new span
    assert kept == notes[:3] + [notes[5]] and repairs["dense notes thinned"] == 2
    assert repair(notes, TempoMap.steady(120.0))[0] == notes  # no cap: nothing thinned


def test_repair_repairs_each_problem_once_and_counts_it():
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
    kept, repairs = repair(notes, TempoMap.steady(bpm))
    assert dict(repairs) == {
        "early notes dropped": 1,
        "duplicates removed": 1,
        "cell collisions resolved": 1,
        "dense notes thinned": 0,
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


def test_repair_leaves_a_clean_map_alone():
    _, level = synth_level(2, bars=8)
    for diff in level.difficulties:
        kept, repairs = repair(diff.notes, TempoMap.steady(level.bpm))
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
    assert [error for _, error in parity_log(down_down, TempoMap.steady(bpm))] == [False, True, False, False]
    reset = [Note(0.0, 1, 0, 0, 1), Note(4.0, 1, 0, 0, 1)]  # 2 s apart: a reset, not an error
    assert not any(error for _, error in parity_log(reset, TempoMap.steady(bpm)))
    card = problems(down_down + [Note(3.0, 1, 0, 1, 1), Note(3.0, 1, 1, 0, 0)], TempoMap.steady(bpm))
    assert card["parity_errors"] == 1 and card["cell_collisions"] == 1 and card["mixed_stacks"] == 1


def test_seams_split_figures_at_window_edges():
    notes = _beats(*range(0, 32))  # one note per beat, every swing down: all but the first break parity
    card = seams(notes, TempoMap.steady(120.0), chunk_beats=16, song_beats=32)
    assert card["seam_notes_per_beat"] == pytest.approx(1.0) and card["other_notes_per_beat"] == pytest.approx(1.0)
    assert card["seam_parity_errors_per_swing"] == 1.0


def _fixture_notes(name: str):
    level = load_level(SHARED_MAPS / name)
    diff = next(d for d in level.difficulties if d.characteristic == "Standard" and d.notes)
    return level, plain_notes(diff)


@needs_shared
def test_human_map_timing_against_itself_shifted_and_thinned():
    level, notes = _fixture_notes("vdsap_merry_christmas")  # 98% of its notes on the beat
    assert scorecard(notes, TempoMap.steady(level.bpm), reference=notes)["timing_f1"] == 1.0
    shifted = [msgspec.structs.replace(n, beat=n.beat + 0.5) for n in notes]
    assert scorecard(shifted, TempoMap.steady(level.bpm), reference=notes)["timing_f1"] < 0.05
    times = sorted({n.beat for n in notes})
    thinned = [n for n in notes if times.index(n.beat) % 2 == 0]
    card = scorecard(thinned, TempoMap.steady(level.bpm), reference=notes)
    assert card["timing_recall"] == pytest.approx(0.5, abs=0.01) and card["timing_precision"] == 1.0


@needs_shared
def test_listening_lift_of_a_human_map_and_of_random_notes():
    level, notes = _fixture_notes("vdsap_merry_christmas")
    level.path = str(SHARED_MAPS / "vdsap_merry_christmas")
    onsets = song_onsets(level)
    assert scorecard(notes, TempoMap.steady(level.bpm), onsets)["listening_lift"] > 2
    # as many notes at random 1/4-beat positions of the same song, 8 draws: a lift near 1
    grid = np.arange(0, max(n.beat for n in notes), 0.25)
    draws = [np.sort(np.random.default_rng(seed).choice(grid, len(notes), replace=False)) for seed in range(8)]
    lifts = [scorecard(_beats(*beats), TempoMap.steady(level.bpm), onsets)["listening_lift"] for beats in draws]
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


# ---------------------------------------------------------------- lightshow, preview, metadata


def _show(notes, loudness, beats=64.0, mode="full", seed=0):
    return lightshow(notes, 120.0, np.asarray(loudness, dtype=float), beats, mode, seed)


def _groove(beats: int, step: float = 1.0) -> list[Note]:
    """A red/blue alternation every `step` beats from beat 4 on."""
    return [Note(4 + i * step, 1 + i % 2, 0, i % 2, 1) for i in range(int((beats - 4) / step))]


def test_lightshow_events_are_valid_sorted_dark_before_notes_and_never_strobe():
    files, level = synth_level(3, bars=12, hard=True)
    song_beats = (len(load_audio(files["song.egg"], 22050)) / 22050) * level.bpm / 60
    for diff in level.difficulties:
        notes = diff.notes
        show = lightshow(notes, level.bpm, np.zeros(40) - 20, song_beats, "full", seed=1)
        beats = [e.beat for e in show.lights]
        assert beats == sorted(beats) and [b.beat for b in show.boosts] == sorted(b.beat for b in show.boosts)
        assert max(beats) < song_beats and all(b.beat < song_beats for b in show.boosts)
        first = min(n.beat for n in notes)
        for e in show.lights:
            assert e.type in EVENT_TYPES
            if e.type in LIGHT_TYPES:
                assert 0 <= e.value <= MAX_LIGHT_VALUE and 0 <= e.brightness <= 1
            elif e.type in (LEFT_LASER_SPEED, RIGHT_LASER_SPEED):
                assert 0 <= e.value <= MAX_LASER_SPEED
            if e.beat < first:
                assert e.type not in LIGHT_TYPES or e.value == LIGHT_OFF  # dark before the first note
        assert {(e.beat, e.type) for e in show.lights if e.beat == 0} >= {(0.0, t) for t in LIGHT_TYPES}
        for kind in LIGHT_TYPES:
            times = np.array([e.beat for e in show.lights if e.type == kind])
            assert (np.diff(times) >= 1 / 8).all()  # no strobe faster than 1/8 beat, ever
            assert [e.value for e in show.lights if e.type == kind][-1] == LIGHT_OFF  # dark after the last note
        assert len({e.type for e in show.lights}) == len(EVENT_TYPES)  # every documented type is used


def test_lightshow_follows_density_loudness_and_phrases():
    notes = _groove(64, 1.0)[:12] + _groove(64, 0.25)[60:]  # sparse bars 1-3, then 1/4-beat runs
    loudness = [-20.0] * 16
    loudness[6:8] = [-60.0, -60.0]  # bars 6-7: a quiet passage
    loudness[10:12] = [-8.0, -8.0]  # bars 10-11: the loudest
    show = _show(notes, loudness)
    speed = {int(e.beat // 4): e.value for e in show.lights if e.type == LEFT_LASER_SPEED and e.beat > 0}
    assert speed[1] < speed[5] and speed.get(6, 0) == 0  # faster lasers for denser bars; still when quiet
    quiet = [e for e in show.lights if 24 <= e.beat < 32 and e.type in LIGHT_TYPES]
    assert all(e.value == LIGHT_OFF or (e.type == CENTER_LIGHTS and e.brightness < 1) for e in quiet)
    assert [(b.beat, b.on) for b in show.boosts][1:3] == [(40.0, True), (48.0, False)]
    rings = {e.beat: e.value for e in show.lights if e.type == RING_LIGHTS and e.value != LIGHT_OFF}
    assert (rings[20] - 1) // 4 != (rings[32] - 1) // 4  # the colour swaps at the 8-bar phrase (beat 32)


def test_lightshow_modes_and_seed():
    notes = _groove(64, 0.5)
    loud = [-20.0] * 16
    assert _show(notes, loud, seed=3) == _show(notes, loud, seed=3)
    assert _show(notes, loud, mode="none") == Lightshow([], [])
    simple = _show(notes, loud, mode="simple")
    assert {e.type for e in simple.lights} <= {RING_LIGHTS, CENTER_LIGHTS, *LIGHT_TYPES} and not simple.boosts
    assert {e.type for e in simple.lights if e.value != LIGHT_OFF} == {RING_LIGHTS, CENTER_LIGHTS}
    assert len({tuple(_show(notes, loud, seed=seed).lights) for seed in range(8)}) > 1  # the seed picks colours


def test_generated_level_declares_itself_and_carries_its_lights():
    files, level = synth_level(0, bars=4)
    song = load_audio(files["song.egg"], OUTPUT_RATE)
    notes = {d.difficulty: d.objects for d in level.difficulties}
    generator = {"checkpoint": "run1", "seed": 7, "temperature": 0.8}
    tempo = TempoMap.steady(level.bpm)
    package = level_package(notes, tempo, song, LevelInfo("Song", "Artist", generator=generator, seed=7))
    info = json.loads(package["Info.dat"])
    assert info["_levelAuthorName"] == GENERATED_BY and "AI-generated" in GENERATED_BY
    assert info["_customData"]["_generator"] == {"tool": TOOL, "aiGenerated": True} | generator
    expert = json.loads(package["ExpertStandard.dat"])
    assert expert["basicBeatmapEvents"] and expert["colorBoostBeatmapEvents"][0] == {"b": 0.0, "o": False}
    read = load_level(package)
    assert read.custom_data == info["_customData"] and read.mapper == GENERATED_BY
    dark = level_package(notes, tempo, song, LevelInfo("Song", "Artist", lights="none"))
    assert json.loads(dark["ExpertStandard.dat"])["basicBeatmapEvents"] == []


@needs_shared
def test_preview_of_a_human_map_is_drawn(tmp_path):
    level_dir = SHARED_MAPS / "newember_open_door"
    out = tmp_path / "p.png"
    run = subprocess.run(
        [sys.executable, str(ROOT / "utils.py"), "preview", str(level_dir), "--seconds", "20", "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    from PIL import Image

    with Image.open(out) as image:
        pixels = np.asarray(image.convert("RGB")).astype(int)
        difficulties = [d for d in load_level(level_dir).difficulties if d.characteristic == "Standard"]
        assert image.size == preview_size(len(difficulties))
    red = (pixels[..., 0] > 200) & (pixels[..., 1] < 90)
    blue = (pixels[..., 2] > 200) & (pixels[..., 0] < 90)
    assert red.sum() > 200 and blue.sum() > 200  # notes of both sabers are drawn
    assert pixels.std() > 10  # not blank


def test_preview_of_a_synthetic_level_and_bad_input(tmp_path):
    files, level = synth_level(1, bars=4)
    write_zip(tmp_path / "s.zip", files)
    assert utils_main(["preview", str(tmp_path / "s.zip")]) == 0
    from PIL import Image

    with Image.open(tmp_path / "s.png") as image:
        assert image.size == preview_size(2) and np.asarray(image).std() > 10
    (tmp_path / "bad.zip").write_bytes(b"not a zip")
    run = subprocess.run(
        [sys.executable, str(ROOT / "utils.py"), "preview", str(tmp_path / "bad.zip")], capture_output=True, text=True
    )
    assert run.returncode == 2 and run.stderr.count("\n") == 1 and "bad.zip" in run.stderr


def test_a_tempo_map_converts_beats_and_seconds_both_ways_in_every_form():
    from maps import BpmEvent

    events = [BpmEvent(0.0, 120.0), BpmEvent(8.0, 150.0), BpmEvent(20.0, 90.0)]
    beats = np.array([0.0, 3.5, 8.0, 13.25, 20.0, 31.0])
    tempo = TempoMap.from_events(100.0, events)  # the event at beat 0 replaces the 100 BPM
    seconds = tempo.seconds_at(beats)
    assert seconds[2] == pytest.approx(4.0) and seconds[4] == pytest.approx(4.0 + 12 * 0.4)
    assert tempo.beats_at(seconds) == pytest.approx(beats) and tempo.events() == events
    assert TempoMap.steady(120.0).beat_at(30.0) == pytest.approx(60.0)  # one tempo
    # a tracker's beat times: every beat a knot, the last period past the end
    tracked = TempoMap.from_beat_times(tempo.seconds_at(np.arange(40)))
    assert tracked.seconds_at(beats) == pytest.approx(seconds)
    assert tracked.seconds_at([41.0]) == pytest.approx(tempo.seconds_at([41.0]))
    assert tracked.events(1e-4, decimals=4) == events
    # a window's steady stand-in: the region's tempo, and where it would start at that tempo from 0 s
    assert tempo.steady_start(10.0) == pytest.approx((150.0, (4.0 + 2 * 0.4) * 150 / 60))


def test_scorecard_times_a_changing_map_by_its_tempo_events():
    from maps import read_level_file

    files, level = synth_level(2, seed=7, bars=24, hard=True, tempo="step")
    diff = next(d for d in level.difficulties if d.difficulty == "Expert")
    samples = load_audio(read_level_file(files, "song.egg"), 22050)
    onsets = Onsets(onset_seconds(samples, 22050), samples.size / 22050)
    notes, tempo = plain_notes(diff), TempoMap.of_difficulty(level, diff)
    assert len(tempo.events()) == 2  # the Info BPM from beat 0, then the step
    timed = scorecard(notes, tempo, onsets, notes, tempo)
    one_bpm = scorecard(notes, TempoMap.steady(level.bpm), onsets, notes, tempo)
    assert timed["timing_f1"] == 1.0 and one_bpm["timing_f1"] < 0.7  # after the step, one BPM drifts
    assert timed["onset_share"] > 0.8 and timed["onset_share"] > one_bpm["onset_share"] + 0.2


def test_timing_match_is_a_maximum_matching_on_notes_closer_than_the_tolerance():
    from levels.scorecard import timing_scores

    rng = np.random.default_rng(0)
    reference = np.cumsum(rng.exponential(0.025, 400))  # [400] seconds, most gaps under the 40 ms tolerance
    shifted = timing_scores(reference + 0.02, reference, 0.04)  # every note 20 ms late: each still has its match
    assert shifted["timing_precision"] == shifted["timing_recall"] == 1.0
    thinned = timing_scores(reference[::2], reference, 0.04)  # every other note kept
    assert thinned["timing_precision"] == 1.0 and thinned["timing_recall"] == 0.5


@needs_shared
def test_timing_match_on_a_dense_human_map():
    from levels.scorecard import note_seconds, timing_scores

    level = load_level(SHARED_MAPS / "kivalevan_ex_journey")
    notes = next(d for d in level.difficulties if d.difficulty == "ExpertPlus" and d.characteristic == "Standard").notes
    times = note_seconds(notes, TempoMap.steady(level.bpm))
    assert np.min(np.diff(times)) < 0.04  # notes closer together than the tolerance
    assert timing_scores(times + 0.02, times, 0.04)["timing_precision"] == 1.0
    assert timing_scores(times[::2], times, 0.04)["timing_recall"] == len(times[::2]) / len(times)


def test_repair_keeps_bombs_walls_arcs_and_chains_to_the_rules_of_play():
    from levels.playability import repair_objects
    from maps import Bomb, Objects, Obstacle

    notes = [Note(4, 0, 0, 0, 1), Note(5, 0, 0, 0, 0), Note(5, 3, 1, 1, 0)]
    objects = Objects(
        notes,
        [Bomb(4.25, 0, 0), Bomb(6, 1, 2)],  # swept by the hand that cut beat 4's note; clear
        [Obstacle(4, 2, 3, 0, 1, 5), Obstacle(4.9, 0.05, 3, 0, 1, 1), Obstacle(2, 1, 1, 0, 1, 1)],
        [Arc(notes[0], notes[1]), Arc(notes[1], Note(9, 2, 2, 0, 0))],  # the second's tail is no note
        [Chain(notes[2], 5.125, 3, 2, 3, 1.0), Chain(notes[2], 5.125, 3, 0, 3, 1.0)],  # up: to y 2, not y 0
    )
    kept, repairs = repair_objects(objects)
    assert kept.bombs == [Bomb(6, 1, 2)] and repairs["bombs in a hand's way dropped"] == 1
    assert kept.obstacles == [Obstacle(4, 1, 3, 0, 1, 5)]  # cut at the blue note of beat 5; too short; hides notes
    assert repairs["walls cut short of a note"] == 1 and repairs["walls dropped"] == 2
    assert [a.tail.beat for a in kept.arcs] == [5] and repairs["broken arcs dropped"] == 1
    assert [(c.tail_x, c.tail_y) for c in kept.chains] == [(3, 2)] and repairs["broken chains dropped"] == 1


def test_bombs_and_walls_in_the_first_seconds_are_dropped_as_early_notes_are():
    from levels.playability import repair_objects
    from maps import Bomb, Objects, Obstacle, TempoMap

    # at 120 BPM the first 1.5 s are beats 0-3: the player is not ready for a wall or a bomb there
    objects = Objects(
        [Note(4, 1, 0, 0, 1)], [Bomb(1, 0, 0), Bomb(5, 3, 2)], [Obstacle(0, 2, 0, 0, 1, 5), Obstacle(5, 1, 0, 0, 1, 5)]
    )
    kept, repairs = repair_objects(objects, TempoMap.steady(120))
    assert kept.bombs == [Bomb(5, 3, 2)] and kept.obstacles == [Obstacle(5, 1, 0, 0, 1, 5)]
    assert repairs["early bombs and walls dropped"] == 2


def test_a_chain_whose_head_parity_flips_turns_with_it():
    from levels.playability import repair_objects
    from maps import DOWN, LEFT, RIGHT, UP, Objects

    # the red hand swings down twice (beats 4, 5), then right twice (6, 7): the parity repair turns the second
    # of each pair, both chain heads
    notes = [Note(4, 1, 1, 0, DOWN), Note(5, 1, 1, 0, DOWN), Note(6, 0, 1, 0, RIGHT), Note(7, 0, 1, 0, RIGHT)]
    chains = [Chain(notes[1], 5.125, 1, 0, 3, 1.0), Chain(notes[3], 7.125, 2, 1, 3, 1.0)]
    kept, repairs = repair_objects(Objects(notes, [], [], [], chains))
    heads = {c.head.beat: c for c in kept.chains}
    assert [n.direction for n in kept.notes] == [DOWN, UP, RIGHT, LEFT]  # beats 5 and 7 flipped
    assert (heads[5].head.direction, heads[5].tail_x, heads[5].tail_y) == (UP, 1, 2)  # mirrored: up to the top row
    assert 7 not in heads and repairs["broken chains dropped"] == 1  # its mirror (x -2) leaves the grid


def test_a_hard_songs_fills_are_chains_on_every_note_in_the_middle_row():
    heads = []
    for index in range(4):
        _, level = synth_level(index, seed=0, bars=24, hard=True)
        normal, expert = level.difficulties
        assert not normal.chains  # Normal plays the kicks on whole beats: no fills
        by_beat: dict[int, list[float]] = {}
        for chain in expert.chains:
            head = chain.head
            assert head in expert.notes and head.y == 1 and head.beat % 4 >= 3  # a fill: a bar's last beat
            assert (chain.tail_x, chain.tail_y) == (head.x, 2 if head.direction == 0 else 0)  # along the cut
            assert chain.tail_beat - head.beat == 0.125
            by_beat.setdefault(int(head.beat), []).append(head.beat % 1)
        for beat, offsets in by_beat.items():  # every sixteenth of the fill heads one, up or down alike
            assert sorted(offsets) == [0, 0.25, 0.5, 0.75]
            assert [n.beat for n in expert.notes if beat <= n.beat < beat + 1] == [beat + o for o in sorted(offsets)]
        heads += expert.chains
    assert {c.head.direction for c in heads} == {0, 1}  # the down-up phase no longer decides where they fall


def test_a_hard_song_opens_every_phrase_with_a_crash_and_its_arcs_stay_inside_one():
    from levels.synth import BEATS_PER_BAR, CRASH_PARTIALS, LEAD_IN_BARS, PHRASE_BARS, SYNTH_RATE, phrase_of

    files, level = synth_level(1, seed=0, bars=24, hard=True)
    samples = load_audio(files["song.egg"], SYNTH_RATE)

    def band_energy(bar: int) -> float:  # the crash's band in the 30 ms after the bar's downbeat
        start = round(bar * BEATS_PER_BAR * 60 / level.bpm * SYNTH_RATE)
        spectrum = np.abs(np.fft.rfft(samples[start : start + int(0.03 * SYNTH_RATE)])) ** 2
        freqs = np.fft.rfftfreq(int(0.03 * SYNTH_RATE), 1 / SYNTH_RATE)
        return float(spectrum[(freqs >= min(CRASH_PARTIALS) - 100) & (freqs <= max(CRASH_PARTIALS) + 100)].sum())

    bars = range(LEAD_IN_BARS, LEAD_IN_BARS + 24)
    opening = [band_energy(b) for b in bars if (b - LEAD_IN_BARS) % PHRASE_BARS == 0]
    inside = [band_energy(b) for b in bars if (b - LEAD_IN_BARS) % PHRASE_BARS]
    assert min(opening) > 3 * max(inside)  # every phrase is heard to begin, whatever else plays on the downbeat

    arcs = [arc for d in level.difficulties for arc in d.arcs]
    assert arcs and all(phrase_of(a.head.beat) == phrase_of(a.tail.beat) for a in arcs)
