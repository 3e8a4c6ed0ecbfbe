"""Real music with exact tempo and every note: the LMMS studio's demo projects, rendered and read.

Debian's lmms-common ships the LMMS demo projects (GPL-2+, Artistic-2, BSD, CC-BY-SA; see
/usr/share/doc/lmms-common/copyright). Each project (.mmpz: a 4-byte length, then zlib-compressed
XML; .mmp: the XML) holds its tempo, time signature and every note of every track, so a rendered
project is a real song whose beat grid and drum hits are known exactly. This module reads a
project's drum onsets and turns them into a level by fixed rules (level_notes); lmms itself
renders the audio (render). Nothing here ships audio: the corpus is built on the user's machine.

LMMS counts 48 ticks per quarter note (192 per 4/4 bar), the same grid as the token space.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from levels.hands import (
    CORPUS_RULES,
    arcs_where,
    bombs_on,
    duck_wall,
    notes_on,
    rest_walls,
    rules_data,
    rules_of,
    up_chain,
)
from levels.package import write_zip
from maps import BEATS_PER_BAR, Level, MapError, Note, Objects, standard_difficulty

LMMS_PROJECTS = Path("/usr/share/lmms/projects")
LMMS_TICKS_PER_BEAT = 48  # a quarter note
BAR_TICKS = 4 * LMMS_TICKS_PER_BEAT  # LMMS's default bar, where beat/bassline patterns sit
INSTRUMENT, BEAT_BASSLINE = "0", "1"  # <track type=...>
# a track's role from its name and sample file; the first match wins
DRUM_KINDS = (
    ("hat", re.compile(r"hat|hh\b|cymbal|crash|ride|shaker|tamb", re.I)),
    ("kick", re.compile(r"kick|bass ?drum|\bbd\b|^bd|bd[\s_\-\d]|808", re.I)),
    ("snare", re.compile(r"snare|clap|rim|\bsd\b|^sd", re.I)),
    ("tom", re.compile(r"tom\b|toms|tom[\s_\-\d]", re.I)),
)
LEAD_DRUMS = ("kick", "snare", "tom")  # the hits that carry notes, as in the synthetic corpus
MIN_LEAD_SPACING = LMMS_TICKS_PER_BEAT // 4  # Expert keeps no two notes closer than 1/4 beat (no rolls)
FIRST_NOTE_SECONDS = 1.5  # as infer.py: no note before this much audio
DENSE_BAR_NOTES = 8  # a bar with at least this many Expert notes runs eighths or faster: a duck wall
ARC_BEATS = (2.0, 4.0)  # a colour's notes this far apart, under one held melodic note, are joined by an arc
HELD_SLACK = LMMS_TICKS_PER_BEAT // 8  # a held note starts this close to an arc's head and lasts to its tail
ROLL_TICKS = LMMS_TICKS_PER_BEAT // 4  # lead hits this close after a note make a roll: it heads a chain
BOMB_PHRASE_BARS = 4  # at most one bomb per 4-bar phrase (human maps hold 0-0.1 bombs a second, most none)


class ProjectError(Exception):
    """A project that cannot become a level; the message names the file and the reason."""


@dataclass
class Project:
    path: Path
    bpm: float
    beats_per_bar: int
    end_tick: int  # the last pattern's end
    onsets: dict[str, np.ndarray] = field(default_factory=dict)  # drum kind -> sorted unique onset ticks
    # held: [notes, 2] int (start tick, end tick) of the melodic (non-drum) tracks' notes, sorted by start
    held: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int64))

    @property
    def name(self) -> str:
        return project_name(self.path)


def project_name(path: Path) -> str:
    """A project's song name: its file name without .mmp/.mmpz."""
    return re.sub(r"\.mmpz?$", "", path.name)


def project_xml(path: Path) -> ET.Element:
    data = path.read_bytes()
    try:
        return ET.fromstring(zlib.decompress(data[4:]) if path.suffix == ".mmpz" else data)
    except (zlib.error, ET.ParseError) as e:
        raise ProjectError(f"{path}: not an LMMS project ({e})") from None


def drum_kind(track: ET.Element) -> str | None:
    """'kick', 'snare', 'tom', 'hat' or None (not a drum) from the track's name and sample file."""
    instrument = track.find("instrumenttrack/instrument")
    sample = track.find("instrumenttrack/instrument/audiofileprocessor")
    text = f"{track.get('name', '')} {sample.get('src', '') if sample is not None else ''}"
    named = next((kind for kind, pattern in DRUM_KINDS if pattern.search(text)), None)
    kicker = instrument is not None and instrument.get("name") == "kicker"  # LMMS's kick-drum synth
    return named or ("kick" if kicker else None)


def _audible(pattern: ET.Element) -> list[ET.Element]:
    return [n for n in pattern.findall("note") if float(n.get("vol", 100)) > 0]


def _note_ticks(pattern: ET.Element) -> list[int]:
    """Onset ticks, inside the pattern, of its audible notes."""
    return [int(n.get("pos", 0)) for n in _audible(pattern)]


def _live(element: ET.Element) -> bool:
    return element.get("muted", "0") != "1"


def read_project(path: str | Path) -> Project:
    """The project's tempo, bar length, its drum tracks' onset ticks (muted tracks and patterns left out;
    beat/bassline patterns repeated over each of their placements on the song line) and the spans of its
    melodic tracks' notes (the song line's instrument tracks that are not drums)."""
    path = Path(path)
    root = project_xml(path)
    head, song = root.find("head"), root.find("song/trackcontainer")
    if head is None or song is None:
        raise ProjectError(f"{path}: no song in the project")
    if head.find("bpm") is not None and root.find(".//automationpattern/object") is not None:
        tempo_id = head.find("bpm").get("id")
        if any(o.get("id") == tempo_id for o in root.iter("object")):
            raise ProjectError(f"{path}: its tempo is automated (changes during the song)")
    bpm = float(head.get("bpm") or head.find("bpm").get("value"))
    numerator, denominator = int(head.get("timesig_numerator", 4)), int(head.get("timesig_denominator", 4))
    if denominator != 4:
        raise ProjectError(f"{path}: time signature {numerator}/{denominator} (only quarter-note beats map)")
    hits: dict[str, list[int]] = {}
    end = 0
    tracks = [t for t in song.findall("track") if _live(t)]
    for track in tracks:
        for pattern in track.findall("pattern"):
            end = max(end, int(pattern.get("pos", 0)) + int(pattern.get("len", 0)))
    # beat/bassline tracks: the n-th one's placements (<bbtco>) play pattern n of every track inside
    bb_tracks = [t for t in song.findall("track") if t.get("type") == BEAT_BASSLINE]
    inner = bb_tracks[0].findall("bbtrack/trackcontainer/track") if bb_tracks else []
    for index, bb in enumerate(bb_tracks):
        placements = [c for c in bb.findall("bbtco") if _live(c)] if _live(bb) else []
        for placement in placements:
            end = max(end, int(placement.get("pos", 0)) + int(placement.get("len", 0)))
        for track in (t for t in inner if _live(t)):
            kind = drum_kind(track)
            patterns = [p for p in track.findall("pattern") if int(p.get("pos", 0)) // BAR_TICKS == index]
            if kind is None or not patterns or not _live(patterns[0]):
                continue
            length = max(int(patterns[0].get("len", BAR_TICKS)), BAR_TICKS)
            ticks = _note_ticks(patterns[0])
            for placement in placements:
                start, stop = int(placement.get("pos", 0)), int(placement.get("pos", 0)) + int(placement.get("len", 0))
                for repeat in range(start, stop, length):
                    hits.setdefault(kind, []).extend(repeat + t for t in ticks if repeat + t < stop)
    held = []
    for track in (t for t in tracks if t.get("type") == INSTRUMENT):
        kind = drum_kind(track)
        for pattern in (p for p in track.findall("pattern") if _live(p)):
            start = int(pattern.get("pos", 0))
            if kind:
                hits.setdefault(kind, []).extend(start + t for t in _note_ticks(pattern))
            else:
                spans = ((start + int(n.get("pos", 0)), int(n.get("len", 0))) for n in _audible(pattern))
                held.extend((tick, tick + length) for tick, length in spans if length > 0)
    onsets = {kind: np.unique(np.array(ticks, dtype=np.int64)) for kind, ticks in hits.items()}
    return Project(path, bpm, numerator, end, onsets, np.array(sorted(held), np.int64).reshape(-1, 2))


def held_through(project: Project, head: Note, tail: Note) -> bool:
    """Whether a melodic note starts within HELD_SLACK of head and sounds until tail (HELD_SLACK early)."""
    start, end = (round(n.beat * LMMS_TICKS_PER_BEAT) for n in (head, tail))
    near = project.held[np.abs(project.held[:, 0] - start) <= HELD_SLACK]
    return bool(np.any(near[:, 1] >= end - HELD_SLACK))


def lead_beats(project: Project, expert: bool) -> list[float]:
    """The beats that carry notes: Expert every kick, snare and tom onset, no two closer than 1/4 beat;
    Normal the kicks on whole beats (the lead hits on whole beats where the song has no kick). None in
    the first FIRST_NOTE_SECONDS."""
    first = FIRST_NOTE_SECONDS * project.bpm / 60 * LMMS_TICKS_PER_BEAT
    lead = np.unique(np.concatenate([project.onsets.get(k, np.zeros(0, np.int64)) for k in LEAD_DRUMS]))
    if expert:
        ticks, last = [], -MIN_LEAD_SPACING
        for tick in lead:
            if tick - last >= MIN_LEAD_SPACING:
                ticks.append(int(tick))
                last = tick
    else:
        kicks = project.onsets.get("kick", np.zeros(0, np.int64))
        source = kicks if len(kicks) else lead
        ticks = [int(t) for t in source if t % LMMS_TICKS_PER_BEAT == 0]
    return [t / LMMS_TICKS_PER_BEAT for t in ticks if t >= first]


def project_objects(project: Project, notes: list[Note], expert_notes: list[Note], expert: bool) -> Objects:
    """A difficulty's notes and the other objects the project's drums call for (levels.hands):
    - walls: through each bar without a lead hit between the first and last note (rest_walls), and a duck
      wall over each bar where the Expert notes run DENSE_BAR_NOTES or more;
    - bombs: on the first hat of each BOMB_PHRASE_BARS-bar phrase that falls on an off-beat half with no lead
      hit on it, after the first note and where no hand sweeps (a bomb a bar, the rule until corpus rules 6,
      taught the starter a steady bomb a bar on every song);
    - arcs (Expert): a colour's notes ARC_BEATS apart joined where a melodic note starts with the first and
      is still held at the second (held_through): the arc follows a sustained sound. In the human fixture
      maps only Expert and ExpertPlus hold arcs (most none; 0.2-1.7 a second where used); joining every
      such pair without the held note (rules 5-7) gave 0.2-1.9 arcs a second, and in Normal nearly every
      note would join;
    - chains (Expert): an upward note followed by two or more lead hits within ROLL_TICKS (a roll the
      notes skip) heads a chain through the roll."""
    lead = np.unique(np.concatenate([project.onsets.get(k, np.zeros(0, np.int64)) for k in LEAD_DRUMS]))
    objects = Objects(notes)
    if not notes:
        return objects
    bar_ticks = BEATS_PER_BAR * LMMS_TICKS_PER_BEAT
    busy = set((lead // bar_ticks).tolist())
    first, last = (int(n.beat // BEATS_PER_BAR) for n in (min(notes), max(notes)))
    objects.obstacles = rest_walls(bar for bar in range(first, last) if bar not in busy)
    per_bar = np.bincount([int(n.beat // BEATS_PER_BAR) for n in expert_notes])
    objects.obstacles += [duck_wall(int(bar)) for bar in np.flatnonzero(per_bar >= DENSE_BAR_NOTES)]
    hats = project.onsets.get("hat", np.zeros(0, np.int64))
    offbeat = hats[(hats % LMMS_TICKS_PER_BEAT == LMMS_TICKS_PER_BEAT // 2) & ~np.isin(hats, lead)]
    beats = [t / LMMS_TICKS_PER_BEAT for t in offbeat.tolist() if t / LMMS_TICKS_PER_BEAT >= notes[0].beat]
    # clear: a bomb on each of those off-beat hats where no hand sweeps; each phrase's first one stays
    clear = bombs_on(beats, notes, objects.obstacles)
    phrase_firsts = {int(b.beat // (BOMB_PHRASE_BARS * BEATS_PER_BAR)): b for b in reversed(clear)}
    objects.bombs = sorted(phrase_firsts.values())
    if expert:
        objects.arcs = arcs_where(
            notes,
            lambda head, tail: (
                ARC_BEATS[0] <= tail.beat - head.beat <= ARC_BEATS[1] and held_through(project, head, tail)
            ),
        )
        for note in notes:
            tick = round(note.beat * LMMS_TICKS_PER_BEAT)
            roll = lead[(lead > tick) & (lead <= tick + ROLL_TICKS)]
            chain = up_chain(note, (int(roll[-1]) - tick) / LMMS_TICKS_PER_BEAT) if len(roll) >= 2 else None
            objects.chains += [chain] if chain else []
    return objects


def project_level(project: Project, seed: int = 0) -> Level:
    """A level of the project's song by fixed rules: notes on its lead drum hits (lead_beats), the hands
    placed as in the synthetic corpus (levels.hands.notes_on), the other objects by project_objects; its
    real tempo in Info.dat, the rules' version (CORPUS_RULES) in its _customData."""
    rng = np.random.default_rng([seed, sum(project.name.encode())])
    normal_notes, expert_notes = (notes_on(lead_beats(project, e), e, rng) for e in (False, True))
    if len(expert_notes) < 16:
        raise ProjectError(f"{project.path}: only {len(expert_notes)} drum hits on kicks, snares or toms")
    normal = project_objects(project, normal_notes, expert_notes, False)
    expert = project_objects(project, expert_notes, expert_notes, True)
    return Level(
        song_name=project.name,
        song_author="LMMS demo project",
        mapper="automapper realsongs (rules on the project's drum notes)",
        bpm=project.bpm,
        song_filename="song.egg",
        cover_filename="",
        preview_duration=10,
        info_version="2.1.0",
        difficulties=[
            standard_difficulty("Normal", normal, 10),
            standard_difficulty("Expert", expert, 16),
        ],
        custom_data=rules_data(),
    )


def lmms_command() -> str:
    """The lmms executable, or a ProjectError that says how to install it."""
    found = shutil.which("lmms")
    if not found:
        raise ProjectError(
            "lmms not found: install it to render the real-music corpus (Debian/Ubuntu: sudo apt-get install lmms)"
        )
    return found


def render(project: Path, wav: Path, timeout: float = 600) -> Path:
    """Render the project headless to a 44.1 kHz WAV (lmms --allowroot render)."""
    command = [lmms_command(), "--allowroot", "render", str(project), "--format", "wav", "--output", str(wav)]
    env = {"QT_QPA_PLATFORM": "offscreen", "PATH": "/usr/bin:/bin", "HOME": str(wav.parent)}
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    except subprocess.TimeoutExpired:
        raise ProjectError(f"{project}: lmms took over {timeout:.0f} s to render") from None
    if done.returncode != 0 or not wav.is_file() or wav.stat().st_size == 0:
        last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise ProjectError(f"{project}: lmms could not render it ({last[0]})")
    return wav


def demo_projects(folder: Path = LMMS_PROJECTS) -> list[Path]:
    """The demo and short projects lmms-common ships (tutorials and templates left out), by name."""
    found = [p for kind in ("demos", "shorties") for p in (folder / kind).rglob("*.mmp*")]
    return sorted(found, key=lambda p: p.name.lower())


def held_out(name: str) -> bool:
    """The fixed split by song: about one project in five, by a hash of its name, never trains."""
    return zlib.crc32(name.encode()) % 5 == 0


def corpus_level_files(project_path: Path, work: Path, seed: int = 0, kept: Path | None = None) -> dict[str, bytes]:
    """{file name: bytes} of the project's level: Info.dat, Normal and Expert, song.egg (its render, or the
    song.egg of the level zip kept: a level written by older corpus rules keeps its render)."""
    import soundfile as sf

    from audio import ogg_vorbis
    from maps import level_files, read_level_file

    level = project_level(read_project(project_path), seed)  # before rendering: a project without drums costs nothing
    if kept is not None:
        return level_files(level) | {"song.egg": read_level_file(kept, "song.egg")}
    wav = render(project_path, work / f"{level.song_name}.wav")
    try:
        samples, rate = sf.read(wav, dtype="float32")  # [n, channels] at 44.1 kHz
    finally:
        wav.unlink(missing_ok=True)
    return level_files(level) | {"song.egg": ogg_vorbis(samples, rate)}


def write_real_corpus(
    out: Path, held_out_dir: str | os.PathLike | None = None, projects_dir: Path = LMMS_PROJECTS, jobs: int = 2
) -> tuple[int, int]:
    """Render every LMMS demo project into a level zip: the held-out ones (held_out) into held_out_dir
    (default OUT-held-out), the rest into out; zips already there are kept, those older corpus rules wrote
    get new level files (their render kept) -> (levels there, skipped).
    Raises ProjectError when lmms or the projects are missing."""
    import tempfile
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    lmms_command()
    projects = demo_projects(projects_dir)
    if not projects:
        raise ProjectError(f"no LMMS projects under {projects_dir} (Debian: apt-get install lmms-common)")
    spare = Path(held_out_dir or f"{out}-held-out")

    def target(project: Path) -> Path:
        name = project_name(project)
        return (spare if held_out(name) else out) / f"{name}.zip"

    # a zip already there is kept; one written by older corpus rules (rules_of) is rewritten, its render kept
    stale = {p for p in projects if target(p).is_file() and rules_of(target(p)) < CORPUS_RULES}
    todo = [p for p in projects if not target(p).is_file() or p in stale]
    written, failed = len(projects) - len(todo), 0
    with tempfile.TemporaryDirectory() as work, ThreadPoolExecutor(max(1, jobs)) as pool:
        kept = {project: target(project) if project in stale else None for project in todo}
        jobs_by_project = {p: pool.submit(corpus_level_files, p, Path(work), 0, kept[p]) for p in todo}
        for project, job in tqdm(jobs_by_project.items(), desc="rendering", unit="song", disable=None):
            try:
                files = job.result()
            except (ProjectError, MapError, OSError, RuntimeError) as e:
                failed += 1
                tqdm.write(f"skipped {project.name}: {str(e).splitlines()[0]}")
                continue
            target(project).parent.mkdir(parents=True, exist_ok=True)
            write_zip(target(project), files)
            written += 1
    train, spared = len(list(out.glob("*.zip"))), len(list(spare.glob("*.zip")))
    print(f"{written} levels: {train} to train on in {out}, {spared} held out in {spare}; {failed} skipped")
    return written, failed
