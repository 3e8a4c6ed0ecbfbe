"""The real-music corpus from LMMS projects: a tiny generated project read, turned into a level, rendered."""

import shutil
import zlib

import numpy as np
import pytest

from levels.realsongs import ProjectError, project_level, read_project, render
from levels.scorecard import onset_seconds
from maps import load_level

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
