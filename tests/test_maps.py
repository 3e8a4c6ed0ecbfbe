"""maps.py: reading v2/v3/v4 levels, the training filter, writing, and the CLI."""

import gzip
import json
import os
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import ROOT, SHARED_MAPS, level_dict, needs_shared, zip_bytes
from maps import (
    Arc,
    Bomb,
    BpmEvent,
    Chain,
    Difficulty,
    Level,
    MapError,
    Note,
    Obstacle,
    TempoMap,
    atomic_file,
    difficulty_json,
    level_files,
    load_level,
    read_difficulty,
    rejection,
)

# ---------------------------------------------------------------- files


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_atomic_file_gets_the_mode_the_users_umask_gives(tmp_path, umask, mode):
    before = os.umask(umask)
    try:
        with atomic_file(tmp_path / "level.zip") as out:
            out.write(b"data")
        with open(tmp_path / "plain", "wb"):
            pass  # what open() gives a new file under this umask
    finally:
        os.umask(before)
    assert (tmp_path / "level.zip").stat().st_mode & 0o777 == mode == (tmp_path / "plain").stat().st_mode & 0o777
    assert os.umask(before) == before  # reading the umask left it as it was
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file left


# ---------------------------------------------------------------- hand-written fixtures


def test_v2_level_fields():
    level = load_level(level_dict("v2"))
    assert (level.song_name, level.song_sub_name, level.song_author, level.mapper) == (
        "Hand Written Two",
        "v2 fixture",
        "Test Artist",
        "Test Mapper",
    )
    assert (level.bpm, level.song_filename, level.song_time_offset, level.info_version) == (120, "song.egg", 0, "2.0.0")
    expert, expert_plus = level.difficulties
    assert (expert.characteristic, expert.difficulty, expert.version) == ("Standard", "Expert", "2.6.0")
    assert expert.notes == [Note(1, 1, 0, 0, 1), Note(1, 2, 0, 1, 1), Note(2.5, 3, 2, 1, 8)]
    assert expert.bombs == [Bomb(3, 0, 1)] and expert.obstacles == []
    assert expert.arcs == [Arc(Note(6, 2, 0, 1, 1), Note(7, 3, 1, 1, 0))]
    assert (expert.njs, expert.njs_offset, expert.suggestions) == (16, 0.5, ["Chroma"])
    assert not expert.bpm_changes  # one _BPMChanges entry equal to the Info BPM, one BPMInfo region at 120
    assert rejection(level, expert) is None
    # "expert+" is normalised; a Noodle requirement and Noodle note data both block training
    assert expert_plus.difficulty == "ExpertPlus"
    assert expert_plus.requirements == ["Noodle Extensions"] and expert_plus.noodle_data
    assert rejection(level, expert_plus) == "requires Noodle/Mapping Extensions"


def test_v3_compact_keys_default_to_zero_and_lowercase_info_is_found():
    level = load_level(level_dict("v3"))  # its Info is named info.dat
    hard, lightshow = level.difficulties
    assert hard.notes == [Note(1, 1, 0, 0, 1), Note(1, 2, 0, 1, 1), Note(2, 0, 2, 1, 8), Note(0, 3, 0, 0, 0)]
    assert hard.bombs == [Bomb(3, 1, 1), Bomb(3.5, 0, 0)]  # compact keys default to 0
    assert hard.arcs == [Arc(Note(4, 2, 0, 1, 1), Note(5, 3, 1, 1, 0))]
    assert hard.chains == [
        Chain(Note(1, 1, 0, 0, 1), 1.25, 1, 2, 4, 0.5),
        Chain(Note(6, 3, 1, 1, 3), 6.5, 3, 2, 3, 1.0),
    ]
    assert not hard.bpm_changes and rejection(level, hard) is None
    assert rejection(level, lightshow) == "not Standard characteristic"


def test_v4_index_based_notes_arcs_chains():
    level = load_level(level_dict("v4"))
    assert (level.song_name, level.song_sub_name, level.mapper, level.bpm) == (
        "Hand Written Four",
        "sub",
        "Mapper One, Mapper Two",
        90,
    )
    (diff,) = level.difficulties
    assert diff.version == "4.1.0"
    assert diff.notes == [Note(2, 1, 0, 0, 1), Note(2, 2, 0, 1, 1), Note(3.5, 1, 0, 0, 1), Note(5, 0, 2, 1, 8)]
    assert diff.bombs == [Bomb(4, 1, 1)]  # its cell from bombNotesData
    assert diff.arcs == [Arc(Note(5, 0, 2, 1, 8), Note(6, 3, 2, 1, 0))]  # the tail takes the head's colour
    assert diff.chains == [Chain(Note(7, 2, 0, 1, 1), 7.5, 3, 1, 4, 0.5)]
    assert (diff.njs, diff.njs_offset) == (18, -0.5)
    assert not diff.bpm_changes and rejection(level, diff) is None


@pytest.mark.parametrize("name", ["v2", "v3", "v4"])
def test_every_source_kind_reads_the_same_level(name, tmp_path):
    files = level_dict(name)
    archive = tmp_path / "level.zip"
    archive.write_bytes(zip_bytes(files))
    nested = zip_bytes({f"Some Level/{n}": data for n, data in files.items()})
    expected = load_level(files)
    for source in (ROOT / "tests/fixtures/levels" / name, archive, str(archive), archive.read_bytes(), nested):
        assert load_level(source) == expected


def test_gzip_v4_and_utf8_bom_read_like_plain_files():
    files = level_dict("v4")
    expected = load_level(files)
    files["ExpertPlusStandard.dat"] = gzip.compress(files["ExpertPlusStandard.dat"])
    files["Info.dat"] = b"\xef\xbb\xbf" + files["Info.dat"]
    assert load_level(zip_bytes(files)) == expected


def test_v4_arrays_nested_under_content():
    doc = json.loads(level_dict("v4")["ExpertPlusStandard.dat"])
    nested = json.dumps({"version": "4.0.0", "content": doc}).encode()
    assert read_difficulty(nested).notes == read_difficulty(json.dumps(doc).encode()).notes


# ---------------------------------------------------------------- tempo, mods, filter


def _with_v3(**doc_changes) -> tuple[Level, Difficulty]:
    files = level_dict("v3")
    doc = json.loads(files["HardStandard.dat"]) | doc_changes
    files["HardStandard.dat"] = json.dumps(doc).encode()
    level = load_level(files)
    return level, level.difficulties[0]


def test_bpm_events_that_change_tempo_give_tempo_regions():
    level, diff = _with_v3(bpmEvents=[{"b": 0, "m": 150}, {"b": 32, "m": 150}])
    assert not diff.bpm_changes  # one tempo throughout, even in two events
    assert TempoMap.of_difficulty(level, diff).events() == [BpmEvent(0.0, 150.0)]
    level, diff = _with_v3(bpmEvents=[{"b": 0, "m": 150}, {"b": 32, "m": 75}])
    # trainable: training takes the windows inside one tempo region
    assert diff.bpm_changes and rejection(level, diff) is None
    assert TempoMap.of_difficulty(level, diff).events() == [BpmEvent(0.0, 150.0), BpmEvent(32.0, 75.0)]


def test_audio_data_regions_at_another_tempo_are_bpm_changes():
    files = level_dict("v2")
    two_tempos = {
        "_songFrequency": 44100,
        "_regions": [
            {"_startSampleIndex": 0, "_endSampleIndex": 441000, "_startBeat": 0, "_endBeat": 20},
            {"_startSampleIndex": 441000, "_endSampleIndex": 882000, "_startBeat": 20, "_endBeat": 50},
        ],
    }
    files["BPMInfo.dat"] = json.dumps(two_tempos).encode()
    assert all(d.bpm_changes for d in load_level(files).difficulties)

    files = level_dict("v4")
    doc = json.loads(files["AudioData.dat"])
    doc["bpmData"][0]["eb"] = 16  # 16 beats in 10 s = 96 BPM, Info says 90
    files["AudioData.dat"] = json.dumps(doc).encode()
    assert load_level(files).difficulties[0].bpm_changes


def test_song_time_offset_and_missing_bpm_block_training():
    level = load_level(level_dict("v2"))
    assert rejection(replace(level, song_time_offset=0.25), level.difficulties[0]) == "song time offset"
    assert rejection(replace(level, bpm=0), level.difficulties[0]) == "no BPM"


def test_noodle_note_data_blocks_training_even_when_undeclared():
    level, diff = _with_v3(colorNotes=[{"b": 1, "customData": {"coordinates": [-4, 0]}}])
    assert diff.requirements == [] and diff.noodle_data
    assert rejection(level, diff) == "Noodle Extensions note data"
    level, diff = _with_v3(colorNotes=[{"b": 1, "customData": {"color": [1, 0, 0, 1]}}])  # Chroma colour is fine
    assert not diff.noodle_data and rejection(level, diff) is None


# ---------------------------------------------------------------- malformed input


def test_truncated_zip():
    data = zip_bytes(level_dict("v3"))
    with pytest.raises(MapError, match="not a readable zip"):
        load_level(data[: len(data) // 2])


def test_info_that_is_not_json():
    files = level_dict("v3")
    files["info.dat"] = b"{ this is not json"
    with pytest.raises(MapError, match="Info.dat: not valid JSON"):
        load_level(zip_bytes(files))


def test_info_that_is_json_but_not_an_object():
    with pytest.raises(MapError, match="not a JSON object"):
        load_level({"Info.dat": b"[1, 2]"})


def test_missing_difficulty_file_flags_only_that_difficulty():
    files = level_dict("v3")
    del files["HardStandard.dat"]
    level = load_level(zip_bytes(files))
    hard, lightshow = level.difficulties
    assert "HardStandard.dat" in hard.error and "missing" in hard.error
    assert rejection(level, hard) == "unreadable difficulty file"
    assert lightshow.error is None


@pytest.mark.parametrize("bad_name", ["../x", "a/../../x", "/etc/x", "C:/x"])
def test_unsafe_member_names_are_refused(bad_name):
    files = level_dict("v3") | {bad_name: b"gotcha"}
    with pytest.raises(MapError, match="unsafe member name"):
        load_level(zip_bytes(files))


def test_empty_difficulty_files():
    files = level_dict("v3")
    files["HardStandard.dat"] = b""
    assert "not valid JSON" in load_level(files).difficulties[0].error
    level, diff = _with_v3(colorNotes=[], bombNotes=[], sliders=[], burstSliders=[])
    assert diff.error is None and rejection(level, diff) == "no notes"


def test_notes_far_off_the_grid():
    on_grid = [{"b": b, "x": 1, "d": 1} for b in range(19)]
    far = {"b": 30, "x": 1000, "y": 3000, "d": 1}
    level, diff = _with_v3(colorNotes=on_grid + [far])
    assert diff.off_grid == 1 and rejection(level, diff) is None  # a stray note is dropped later
    level, diff = _with_v3(colorNotes=on_grid[:5] + [far] * 5)
    assert rejection(level, diff) == "notes off the 4x3 grid"
    level, diff = _with_v3(colorNotes=[far])
    assert rejection(level, diff) == "no notes"


def test_wrong_types_and_bad_indices_flag_the_difficulty():
    files = level_dict("v3")
    files["HardStandard.dat"] = b'{"version": "3.3.0", "colorNotes": [{"b": 1, "x": "left"}]}'
    error = load_level(files).difficulties[0].error
    assert error.startswith("HardStandard.dat: malformed data") and "$.colorNotes[0].x" in error
    files = level_dict("v4")
    files["ExpertPlusStandard.dat"] = b'{"version": "4.0.0", "colorNotes": [{"b": 1, "i": 7}], "colorNotesData": []}'
    assert "malformed v4.0.0 data (index out of range" in load_level(files).difficulties[0].error


def test_v1_info_is_reported_unsupported():
    with pytest.raises(MapError, match="v1 is not supported"):
        load_level({"Info.dat": b'{"songName": "x", "beatsPerMinute": 120, "difficultyLevels": []}'})


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "maps.py"), *args], capture_output=True, text=True, cwd=ROOT)


def test_cli_reports_each_bad_level_in_one_line(tmp_path):
    good = level_dict("v3")
    bad_info = good | {"info.dat": b"nope"}
    unsafe = good | {"../x": b""}
    (tmp_path / "a_truncated.zip").write_bytes(zip_bytes(good)[:100])
    (tmp_path / "b_bad_info.zip").write_bytes(zip_bytes(bad_info))
    (tmp_path / "c_unsafe.zip").write_bytes(zip_bytes(unsafe))
    (tmp_path / "d_no_info").mkdir()
    (tmp_path / "d_no_info" / "Hard.dat").write_text("{}")
    result = _cli(str(tmp_path), "--json")
    assert result.returncode == 1 and "Traceback" not in result.stderr  # nothing readable
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(line["path"].rsplit("/", 1)[-1], line["error"]) for line in lines] == [
        ("a_truncated.zip", lines[0]["error"]),
        ("b_bad_info.zip", lines[1]["error"]),
        ("c_unsafe.zip", "unsafe member name '../x' (absolute or '..')"),
        ("d_no_info", "no Info.dat"),
    ]
    assert "not a readable zip" in lines[0]["error"] and "not valid JSON" in lines[1]["error"]

    (tmp_path / "e_good.zip").write_bytes(zip_bytes(good))
    table = _cli(str(tmp_path))
    assert table.returncode == 0 and "Traceback" not in table.stderr
    assert "ERROR: no Info.dat" in table.stdout and "Standard/Hard" in table.stdout


def test_cli_missing_path():
    result = _cli("/no/such/level.zip", "--json")
    assert result.returncode == 1
    assert json.loads(result.stdout) == {"path": "/no/such/level.zip", "error": "no such file or folder"}


# ---------------------------------------------------------------- writing


def _written_level() -> Level:
    notes = [Note(0.5, 0, 0, 0, 1), Note(0.5, 3, 0, 1, 1), Note(1.0208333333333333, 1, 2, 0, 8)]
    return Level(
        song_name="Generated",
        song_sub_name="",
        song_author="Artist",
        mapper="automapper",
        bpm=128.5,
        song_filename="song.egg",
        cover_filename="cover.jpg",
        preview_start=12,
        preview_duration=10,
        info_version="2.1.0",
        difficulties=[
            Difficulty("Standard", "Expert", "ExpertStandard.dat", "3.3.0", notes, njs=16, njs_offset=0.5),
            Difficulty("Standard", "Easy", "EasyStandard.dat", "3.3.0", notes[:1], njs=10),
        ],
    )


def test_written_level_reads_back_identically():
    level = _written_level()
    files = level_files(level)
    assert set(files) == {"Info.dat", "ExpertStandard.dat", "EasyStandard.dat"}
    back = load_level(zip_bytes(files))
    by_name = {d.difficulty: d for d in back.difficulties}
    assert replace(back, difficulties=[]) == replace(level, difficulties=[])
    assert all(by_name[d.difficulty] == d for d in level.difficulties)
    assert [d.difficulty for d in back.difficulties] == ["Easy", "Expert"]  # Info lists them by rank


note_strategy = st.builds(
    Note,
    st.floats(0, 2000, allow_nan=False, allow_infinity=False),
    st.integers(0, 3),
    st.integers(0, 2),
    st.integers(0, 1),
    st.integers(0, 8),
)


@given(st.lists(note_strategy, max_size=40))
def test_difficulty_json_round_trips_any_notes(notes):
    diff = read_difficulty(difficulty_json(notes))
    assert diff.version == "3.3.0" and diff.notes == sorted(notes)


# ---------------------------------------------------------------- real human-made maps


def _fixture_table() -> list[dict[str, str]]:
    lines = (SHARED_MAPS.parent / "README.md").read_text(encoding="utf-8").splitlines()
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines if line.startswith("| ")]
    header, body = rows[0], [r for r in rows[1:] if not set(r[0]) <= set("- ")]
    return [dict(zip(header, r)) for r in body]


def _per_file(cell: str) -> dict[str, str]:
    return {} if cell == "-" else dict(item.rsplit(":", 1) for item in cell.split(", "))


@needs_shared
def test_real_maps_match_the_fixture_table():
    table = _fixture_table()
    assert len(table) == len(list(SHARED_MAPS.iterdir()))
    for row in table:
        folder = SHARED_MAPS / row["folder"]
        schemas, counts = _per_file(row["difficulty files (schema)"]), _per_file(row["notes per file"])
        for name, schema in schemas.items():
            diff = read_difficulty((folder / name).read_bytes(), name)
            assert (diff.version, len(diff.notes)) == (schema, int(counts[name])), f"{row['folder']}/{name}"
        if row["Info"] == "-":
            with pytest.raises(MapError, match="no Info.dat"):
                load_level(folder)
            continue
        if row["Info"].startswith("1."):
            with pytest.raises(MapError, match="v1"):
                load_level(folder)
            continue
        level = load_level(folder)
        assert level.info_version == row["Info"] and level.bpm == float(row["BPM"]), row["folder"]
        readable = [d for d in level.difficulties if d.error is None]
        assert {d.filename for d in readable} <= set(schemas), row["folder"]
        assert all(d.bpm_changes == (row["tempo varies"] == "yes") for d in readable), row["folder"]
        # modded maps declare mods or carry Noodle data; unmodded ones at most suggest one
        if row["modded"] == "yes":
            assert any(d.requirements or d.suggestions or d.noodle_data for d in level.difficulties), row["folder"]
        else:
            assert not any(d.requirements or d.noodle_data for d in level.difficulties), row["folder"]


@needs_shared
def test_real_map_edge_cases():
    haven = load_level(SHARED_MAPS / "newember_haven")
    assert "missing" in haven.difficulties[0].error
    journey = load_level(SHARED_MAPS / "kivalevan_ex_journey")
    assert {d.version for d in journey.difficulties} == {"2.6.0", "3.1.0"}  # mixed schemas in one level
    cicadidae = load_level(SHARED_MAPS / "undeceiver_cicadidae")
    assert cicadidae.info_version == "4.0.1" and all(rejection(cicadidae, d) is None for d in cicadidae.difficulties)
    plane = load_level(SHARED_MAPS / "lekrkoekj_the_plane_that_never_lands")
    # the one difficulty with notes trains on its windows inside one tempo region
    assert [rejection(plane, d) for d in plane.difficulties] == ["no notes"] * 4 + [None]
    assert all(d.bpm_changes for d in plane.difficulties)
    regions = TempoMap.of_difficulty(plane, plane.difficulties[0]).events()
    assert len(regions) == 19  # its BPMInfo.dat regions, 176 BPM for 328 beats
    first, second = regions[:2]
    assert first.beat == 0 and abs(first.bpm - 176) < 1e-3
    assert second.beat == 328 and abs(second.bpm - 60 * 44100 / 11275) < 1e-3


@needs_shared
def test_cli_json_prints_one_line_per_fixture_level():
    result = _cli(str(SHARED_MAPS), "--json")
    assert result.returncode == 0 and "Traceback" not in result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert sorted(line["path"].rsplit("/", 1)[-1] for line in lines) == sorted(p.name for p in SHARED_MAPS.iterdir())
    by_name = {line["path"].rsplit("/", 1)[-1]: line for line in lines}
    esperanza = by_name["bullishdrake09_esperanza"]
    assert (esperanza["bpm"], esperanza["song_filename"]) == (148, "song.ogg")
    (diff,) = esperanza["difficulties"]
    assert diff == diff | {"characteristic": "Standard", "difficulty": "ExpertPlus", "version": "3.2.0", "notes": 194}
    assert diff["trainable"] and not diff["bpm_changes"] and diff["requirements"] == []
    drift = {d["difficulty"]: d for d in by_name["darkchaos2_drift"]["difficulties"]}
    assert drift["ExpertPlus"]["reason"] == "requires Noodle/Mapping Extensions"
    assert "error" in by_name["kivalevan_empty_v3"]


@pytest.mark.parametrize(
    "info",
    [
        b'{"_version": "2.0.0", "_beatsPerMinute": 120, "_difficultyBeatmapSets": {"a": 1}}',
        b'{"_version": "2.0.0", "_beatsPerMinute": "fast"}',
        b'{"version": "4.0.0", "song": ["x"], "audio": {"bpm": 100}}',
    ],
)
def test_malformed_info_structure_is_one_clear_error(info):
    with pytest.raises(MapError, match="^Info.dat: "):
        load_level({"Info.dat": info})


def test_broken_audio_data_file_is_ignored():
    files = level_dict("v2") | {"BPMInfo.dat": b'{"_songFrequency": "x", "_regions": [{"_startBeat": 1}]}'}
    assert not load_level(files).difficulties[0].bpm_changes


def test_tempo_events_round_trip_and_time_the_beats():
    events = [BpmEvent(0.0, 120.0), BpmEvent(8.0, 60.0), BpmEvent(10.0, 240.0)]
    diff = read_difficulty(difficulty_json([Note(1.0, 0, 0, 0, 1)], None, events), info_bpm=120)
    assert diff.bpm_events == events and diff.bpm_changes
    seconds = TempoMap.from_events(120.0, diff.bpm_events).seconds_at([0.0, 4.0, 8.0, 9.0, 10.0, 12.0])
    assert np.allclose(seconds, [0, 2, 4, 5, 6, 6.5])
    # v2 keeps each change's beat (_time) too
    v2 = {"_version": "2.0.0", "_notes": [], "_BPMChanges": [{"_time": 16, "_BPM": 90.0}]}
    assert read_difficulty(json.dumps(v2).encode(), info_bpm=120).bpm_events == [BpmEvent(16.0, 90.0)]


def test_bpminfo_regions_become_tempo_regions():
    files = level_dict("v2")  # 120 BPM
    regions = [
        {"_startSampleIndex": 0, "_endSampleIndex": 441000, "_startBeat": 0, "_endBeat": 20},  # 120 BPM
        {"_startSampleIndex": 441000, "_endSampleIndex": 882000, "_startBeat": 20, "_endBeat": 45},  # 150
    ]
    files["BPMInfo.dat"] = json.dumps({"_songFrequency": 44100, "_regions": regions}).encode()
    loaded = load_level(files)
    assert loaded.bpm_regions == [BpmEvent(0.0, 120.0), BpmEvent(20.0, 150.0)]
    assert all(d.bpm_changes for d in loaded.difficulties)


def test_walls_read_from_v2_v3_and_v4():
    v2 = {
        "_version": "2.6.0",
        "_notes": [],
        "_obstacles": [
            {"_time": 4, "_duration": 2, "_lineIndex": 0, "_type": 0, "_width": 1},
            {"_time": 8, "_duration": 1, "_lineIndex": 1, "_type": 1, "_width": 2},
            {"_time": 9, "_duration": 0.5, "_lineIndex": 3, "_type": 2, "_width": 1, "_lineLayer": 1, "_height": 2},
        ],
    }
    v3 = {"version": "3.3.0", "obstacles": [{"b": 4, "d": 2, "x": 0, "y": 0, "w": 1, "h": 5}, {"b": 8, "d": 1, "x": 1}]}
    v4 = {
        "version": "4.0.0",
        "obstacles": [{"b": 4, "i": 0}, {"b": 8, "i": 0}],
        "obstaclesData": [{"d": 2, "x": 3, "y": 2, "w": 1, "h": 3}],
    }
    walls = {}
    for name, doc in (("v2", v2), ("v3", v3), ("v4", v4)):
        files = level_dict(name)
        target = next(n for n in files if n.endswith("Standard.dat"))
        files[target] = json.dumps(doc).encode()
        (diff,) = [d for d in load_level(files).difficulties if d.filename == target]
        walls[name] = diff.obstacles
    assert walls["v2"] == [Obstacle(4, 2, 0, 0, 1, 5), Obstacle(8, 1, 1, 2, 2, 3), Obstacle(9, 0.5, 3, 1, 1, 2)]
    assert walls["v3"] == [Obstacle(4, 2, 0, 0, 1, 5), Obstacle(8, 1, 1, 0, 0, 0)]
    assert walls["v4"] == [Obstacle(4, 2, 3, 2, 1, 3), Obstacle(8, 2, 3, 2, 1, 3)]
