"""The real-music corpus from LMMS projects: a tiny generated project read, turned into a level, rendered."""

import shutil
import zlib

import numpy as np
import pytest

from levels.hands import CORPUS_RULES, rules_data, rules_of
from levels.package import write_zip
from levels.realsongs import LMMS_TICKS_PER_BEAT, Project, ProjectError, project_level, read_project, render
from levels.scorecard import object_card, onset_seconds
from maps import Objects, TempoMap, level_files, load_level, read_level_file

NEEDS_LMMS = pytest.mark.skipif(shutil.which("lmms") is None, reason="lmms not installed (apt-get install lmms)")


def _project(tmp_path, compressed: bool = True, bpm: float = 120, signature: str = "4"):
    """A 4-bar project: a kicker track on every beat, a beat/bassline snare half a beat after beats 2 and 4, placed over
    the 4 bars, a muted hat track and an unnamed synth that carry no notes."""
    kicks = "".join(f'<note pos="{48 * b}" len="12" key="57" vol="100"/>' for b in range(16))
    xml = f"""<?xml version="1.0"?>
<lmms-project version="1.0" creator="LMMS" type="song">
  <head timesig_numerator="4" bpm="{bpm}" timesig_denominator="{signature}"/>
  <song><trackcontainer type="song">
    <track muted="0" type="0" name="Kick">
      <instrumenttrack><instrument name="kicker"><kicker/></instrument></instrumenttrack>
      <pattern muted="0" steps="16" pos="0" len="768">{kicks}</pattern>
    </track>
    <track muted="1" type="0" name="HiHat">
      <instrumenttrack><instrument name="tripleoscillator"/></instrumenttrack>
      <pattern muted="0" pos="0" len="768"><note pos="24" len="12" vol="100"/></pattern>
    </track>
    <track muted="0" type="0" name="Lead synth">
      <instrumenttrack><instrument name="tripleoscillator"/></instrumenttrack>
      <pattern muted="0" pos="0" len="768"><note pos="0" len="96" vol="100"/></pattern>
    </track>
    <track muted="0" type="1" name="Beat/Bassline 0">
      <bbtrack><trackcontainer type="bbtrackcontainer">
        <track muted="0" type="0" name="Snare">
          <instrumenttrack><instrument name="kicker"><kicker/></instrument></instrumenttrack>
          <pattern muted="0" steps="16" pos="0" len="192"><note pos="72" len="-192" vol="100"/>
          <note pos="168" len="-192" vol="100"/></pattern>
        </track>
      </trackcontainer></bbtrack>
      <bbtco muted="0" pos="0" len="768"/>
    </track>
  </trackcontainer></song>
</lmms-project>""".encode()
    path = tmp_path / ("tiny.mmpz" if compressed else "tiny.mmp")
    path.write_bytes(len(xml).to_bytes(4, "big") + zlib.compress(xml) if compressed else xml)
    return path


@pytest.mark.parametrize("compressed", [True, False])
def test_a_project_gives_its_tempo_and_drum_onsets(tmp_path, compressed):
    project = read_project(_project(tmp_path, compressed))
    assert project.bpm == 120 and project.beats_per_bar == 4 and project.end_tick == 768
    assert set(project.onsets) == {"kick", "snare"}  # the muted hats and the synth carry no notes
    assert project.onsets["kick"].tolist() == [48 * b for b in range(16)]
    assert project.onsets["snare"].tolist() == [72 + 96 * k for k in range(8)]  # the pattern over all 4 bars
    assert project.held.tolist() == [[0, 96]]  # the synth's note, held 2 beats (the muted hats' note left out)


def test_the_level_follows_the_rules_and_the_real_tempo(tmp_path):
    level = project_level(read_project(_project(tmp_path)))
    normal, expert = ({n.beat for n in d.notes} for d in level.difficulties)
    assert level.bpm == 120
    first = 1.5 * 120 / 60  # no note in the first 1.5 s: beat 3
    kicks = {float(b) for b in range(16) if b >= first}
    snares = {1.5 + 2 * k for k in range(8) if 1.5 + 2 * k >= first}
    assert normal == kicks and expert == kicks | snares  # Normal on the kicks, Expert on every kick and snare
    for diff in level.difficulties:
        colours = [n.color for n in sorted(diff.notes)]
        assert 0 in colours and 1 in colours  # both hands


def _busy_project(tmp_path) -> Project:
    """8 bars at 120 BPM: kicks on the beats of bars 0-2 and 5-7 (bars 3-4 rest), bar 1 kicks and snares on every
    eighth (a dense bar), off-beat hats throughout, in bar 6 a snare roll: hits 4 and 8 ticks after beat 25, and
    a pad's note held from beat 20 for 4 beats."""
    beat = LMMS_TICKS_PER_BEAT
    kicks = [beat * b for b in range(32) if not 12 <= b < 20]
    snares = [beat * 4 + beat // 2 + beat * b for b in range(4)] + [beat * 25 + 4, beat * 25 + 8]
    hats = [beat * b + beat // 2 for b in range(32)]
    ticks = {"kick": kicks, "snare": snares, "hat": hats}
    onsets = {k: np.array(sorted(v)) for k, v in ticks.items()}
    return Project(tmp_path / "busy.mmpz", 120.0, 4, 32 * beat, onsets, np.array([[20 * beat, 24 * beat]]))


def test_the_level_carries_every_kind_of_object_by_the_rules(tmp_path):
    level = project_level(_busy_project(tmp_path))
    normal, expert = level.difficulties
    assert level.custom_data == rules_data()  # the rules' version, so a later rule change rewrites this level
    rests = [w for w in expert.obstacles if w.height == 5]
    assert sorted((w.beat, w.x) for w in rests) == [(12.0, 0), (16.0, 3)]  # through the rest bars, lane by lane
    assert [w.beat for w in expert.obstacles if w.height < 5] == [4.0]  # a duck wall over the dense bar
    assert [b.beat for b in expert.bombs] == [3.5, 16.5]  # each 4-bar phrase's first clear off-beat hat from beat 3
    assert [c.head.beat for c in expert.chains] == [25.0]  # the roll the notes skip
    # arcs are Expert's, as in the human maps, and only under the held note: from beat 20 to a note 2-4 beats on
    assert expert.arcs and {a.head.beat for a in expert.arcs} == {20.0} and not normal.arcs
    assert not normal.chains  # chains are Expert's
    for diff in level.difficulties:
        objects = Objects(diff.notes, diff.bombs, diff.obstacles, diff.arcs, diff.chains)
        card = object_card(objects, TempoMap.steady(level.bpm), 16.0)
        broken = {k: v for k, v in card.items() if not k.endswith("_per_second") and v}
        assert not broken, broken  # the rules break no rule of play
    assert all(type(b.beat) is float for b in expert.bombs) and all(type(c.tail_beat) is float for c in expert.chains)
    # written and read back
    assert load_level(level_files(level)).difficulties[1].objects.counts() == expert.objects.counts()


def test_a_level_older_rules_wrote_gets_new_level_files_and_keeps_its_render(tmp_path, monkeypatch):
    from levels import realsongs

    projects = tmp_path / "projects" / "demos"
    projects.mkdir(parents=True)
    _project(tmp_path).rename(projects / "Beats.mmpz")
    out = tmp_path / "real"
    out.mkdir()
    old = project_level(read_project(projects / "Beats.mmpz"))
    old.custom_data = {}  # written before the rules had a version: notes only
    for diff in old.difficulties:
        diff.bombs, diff.obstacles, diff.arcs, diff.chains = [], [], [], []
    write_zip(out / "Beats.zip", level_files(old) | {"song.egg": b"the render"})
    monkeypatch.setattr(realsongs, "lmms_command", lambda: "lmms")
    monkeypatch.setattr(realsongs, "render", lambda *a, **k: pytest.fail("a kept render is not rendered again"))
    assert realsongs.write_real_corpus(out, projects_dir=tmp_path / "projects") == (1, 0)
    assert rules_of(out / "Beats.zip") == CORPUS_RULES
    assert read_level_file(out / "Beats.zip", "song.egg") == b"the render"
    new = load_level(out / "Beats.zip")
    assert [d.notes for d in new.difficulties] == [d.notes for d in old.difficulties]
    fresh = project_level(read_project(projects / "Beats.mmpz"))  # what the rules write now
    kinds = ("bombs", "obstacles", "arcs", "chains")
    assert [[getattr(d, k) for k in kinds] for d in new.difficulties] == [
        [getattr(d, k) for k in kinds] for d in fresh.difficulties
    ]
    assert realsongs.write_real_corpus(out, projects_dir=tmp_path / "projects") == (1, 0)  # current now: kept


def test_projects_that_cannot_map_say_why(tmp_path):
    with pytest.raises(ProjectError, match="time signature 4/8"):
        read_project(_project(tmp_path, signature="8"))
    broken = tmp_path / "broken.mmpz"
    broken.write_bytes(b"\x00\x00\x00\x10not zlib")
    with pytest.raises(ProjectError, match="broken.mmpz: not an LMMS project"):
        read_project(broken)


@NEEDS_LMMS
def test_render_gives_the_song_on_its_beat_grid(tmp_path):
    import soundfile as sf

    wav = render(_project(tmp_path), tmp_path / "tiny.wav")
    samples, rate = sf.read(wav, dtype="float32")
    mono = samples.reshape(len(samples), -1).mean(axis=1)
    assert len(samples) / rate >= 8.0  # 16 beats at 120 BPM
    onsets = onset_seconds(mono, rate)
    gaps = [np.min(np.abs(onsets - beat * 0.5)) for beat in range(1, 16)]  # beat 0: no audio before it to rise from
    assert max(gaps) <= 0.04  # a kick sounds on every beat the project says: the render starts at beat 0


@NEEDS_LMMS
def test_the_corpus_command_writes_levels_and_holds_some_out(tmp_path):
    from utils import main as utils_main

    projects = tmp_path / "projects" / "demos"
    projects.mkdir(parents=True)
    for name in ("Beats", "Groove", "Loop"):  # "Groove" is one the fixed split holds out
        _project(tmp_path).rename(projects / f"{name}.mmpz")
    (projects / "Broken.mmpz").write_bytes(b"\x00\x00\x00\x10not zlib")
    out = tmp_path / "real"
    assert utils_main(["realsongs", str(out), "--projects", str(tmp_path / "projects")]) == 0
    trained, spared = (
        sorted(p.stem for p in out.glob("*.zip")),
        sorted(p.stem for p in out.parent.glob("real-held-out/*")),
    )
    assert trained == ["Beats", "Loop"] and spared == ["Groove"]
    level = load_level(out / "Beats.zip")
    assert level.bpm == 120 and [len(d.notes) for d in level.difficulties] == [13, 20]  # kicks from beat 3, + snares
    assert level.song_filename == "song.egg" and level.difficulties[0].notes[0].beat == 3.0


def test_a_recorded_kit_plays_the_synthetic_drums_and_the_notes_stay(tmp_path):
    import io

    import soundfile as sf

    from levels.kits import KitError, kit_sounds
    from levels.synth import synth_level

    kit = tmp_path / "kit"
    kit.mkdir()
    rng = np.random.default_rng(0)
    for name in ("Kick-Med", "Kick-Hard", "Snare-Med", "SnareRimshot-Med", "Tom1-Med", "HatClosed-Med", "HatOpen-Med"):
        sf.write(kit / f"{name}.wav", rng.normal(0, 0.3, 4410).astype(np.float32), 22050)  # another rate on purpose
    sounds = kit_sounds(str(kit), 44100)
    assert set(sounds) == {"kick", "snare", "tom", "hat", "open hat"}
    assert all(len(s) == 8820 and np.abs(s).max() == pytest.approx(1.0) for s in sounds.values())  # resampled
    plain, _ = synth_level(2, hard=True)
    recorded, _ = synth_level(2, hard=True, kit=str(kit))
    assert recorded["ExpertStandard.dat"] == plain["ExpertStandard.dat"]  # the same notes ...
    ours, theirs = (sf.read(io.BytesIO(f["song.egg"]))[0] for f in (recorded, plain))
    assert len(ours) == len(theirs) and not np.allclose(ours, theirs, atol=1e-3)  # ... over other drums
    (kit / "Tom1-Med.wav").unlink()
    with pytest.raises(KitError, match="no tom sample"):
        kit_sounds(str(kit), 44100)
    with pytest.raises(KitError, match="no drum kit at nowhere"):
        kit_sounds("nowhere", 44100)
