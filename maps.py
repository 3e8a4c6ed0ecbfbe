"""Beat Saber map reading and writing: the only module that touches map JSON.

Reads a level from a .zip (path or bytes), a folder, or an in-memory {name: bytes}
mapping, without extracting anything to disk. Info.dat v2/v4; difficulty files v2
(and v1, whose notes share v2's keys), v3 (compact files with default keys omitted)
and v4 (index-based, optionally gzip). Writes Info.dat v2.1.0 and v3.3.0 difficulty
files. As a CLI, prints what it finds in zips and level folders.
"""

from __future__ import annotations

import argparse
import functools
import gzip
import hashlib
import io
import json
import os
import sys
import tempfile
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple, TypeVar

import msgspec
import numpy as np

GRID_COLUMNS = 4  # x 0..3, left to right
GRID_ROWS = 3  # y 0..2, bottom to top
GRID_CELLS = GRID_ROWS * GRID_COLUMNS
BEATS_PER_BAR = 4  # every song here is read and written in 4/4: bars, chunk starts and lightshow phrases
DEFAULT_ENVIRONMENT = "DefaultEnvironment"  # "The First"; Info.dat's environment when it names none
COLORS = 2  # 0 red (left saber), 1 blue (right saber)
DIRECTIONS = 9  # 0 up, 1 down, 2 left, 3 right, 4 up-left, 5 up-right, 6 down-left, 7 down-right, 8 dot
DOT = 8
PPQ = 48  # ticks per beat: the grid every note time is snapped to (the token space's time resolution)
UP, DOWN, LEFT, RIGHT, UP_LEFT, UP_RIGHT, DOWN_LEFT, DOWN_RIGHT = range(DOT)  # cut directions before the dot
# (x right, y up): the cell step of a swing in each cut direction. A chain's tail lies along it from its head;
# the hand that cuts a note goes on through the next cell along it
CUT_STEP = {UP: (0, 1), DOWN: (0, -1), LEFT: (-1, 0), RIGHT: (1, 0)}
CUT_STEP |= {UP_LEFT: (-1, 1), UP_RIGHT: (1, 1), DOWN_LEFT: (-1, -1), DOWN_RIGHT: (1, -1)}
DIFFICULTY_RANKS = {"Easy": 1, "Normal": 3, "Hard": 5, "Expert": 7, "ExpertPlus": 9}
BLOCKING_MODS = ("Noodle Extensions", "Mapping Extensions")
# per-note customData keys that move or fake a note (Noodle Extensions), v2 and v3 spellings
NOODLE_NOTE_KEYS = frozenset(
    "_position _definitePosition _animation _fake _rotation _localRotation "
    "coordinates animation worldRotation localRotation".split()
)
TEMPO_TOLERANCE = 1e-4  # relative; mapping tools round region beats to ~1e-6 of the tempo
MAX_OFF_GRID_SHARE = 0.1  # above this share of unplayable notes the map is a Mapping Extensions map

MAX_MEMBER_BYTES = 512 << 20  # a level zip member unpacking to more is refused (zip bomb)
T = TypeVar("T")
GZIP_MAGIC = b"\x1f\x8b"
NEW_FILE_MODE = 0o666  # before the umask, as open() creates a file
UTF8_BOM = b"\xef\xbb\xbf"


class MapError(Exception):
    """A level or file that cannot be read; the message is one line naming the problem."""


class Note(msgspec.Struct, frozen=True, order=True):
    # immutable, hashable, sorted by beat then x, y, color, direction; a Struct rather
    # than a NamedTuple because big maps build tens of thousands of them
    beat: float
    x: int
    y: int
    color: int
    direction: int


class Arc(NamedTuple):
    # head and tail are where the arc starts and ends, each with its own cut direction;
    # both carry the arc's colour. The multipliers scale the curve's control points; anchor is the
    # mid-anchor mode (0 straight, 1 clockwise, 2 counter-clockwise)
    head: Note
    tail: Note
    head_multiplier: float = 1.0
    tail_multiplier: float = 1.0
    anchor: int = 0


class Chain(NamedTuple):
    # head is a real note; slices - 1 segments follow it towards (tail_beat, tail_x, tail_y)
    head: Note
    tail_beat: float
    tail_x: int
    tail_y: int
    slices: int
    squish: float


class Bomb(NamedTuple):
    beat: float
    x: int  # column 0..3, as a note's
    y: int  # row 0..2


class Obstacle(NamedTuple):
    # a wall: from beat for duration beats, over columns x..x+width-1 and rows y..y+height-1 (the game's
    # rows run to 4 above the note grid: a full-height wall is y 0, height 5; a crouch wall y 2, height 3)
    beat: float
    duration: float
    x: int
    y: int
    width: int
    height: int


V2_WALLS = {0: (0, 5), 1: (2, 3)}  # v2 _type -> (y, height): full height, crouch


class LightEvent(NamedTuple):
    """A v3 basic beatmap event: at `beat`, event type `type` (which lights or which effect) takes
    `value` (a light's colour and effect, a laser speed, ...) at `brightness` (light events' float)."""

    beat: float
    type: int
    value: int
    brightness: float = 1.0


class BoostEvent(NamedTuple):
    """A v3 colour boost event: from `beat` on, the environment uses its boost colour pair (or not)."""

    beat: float
    on: bool


class BpmEvent(NamedTuple):
    beat: float  # from this beat on ...
    bpm: float  # ... the level runs at this tempo


class Lightshow(NamedTuple):
    lights: list[LightEvent]
    boosts: list[BoostEvent]


@dataclass
class Objects:
    """What a player meets in one difficulty, beats from the song's beat 0."""

    notes: list[Note] = field(default_factory=list)
    bombs: list[Bomb] = field(default_factory=list)
    obstacles: list[Obstacle] = field(default_factory=list)
    arcs: list[Arc] = field(default_factory=list)
    chains: list[Chain] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """{kind: how many}: notes, bombs, walls, arcs, chains."""
        return dict(zip(OBJECT_NAMES, map(len, (self.notes, self.bombs, self.obstacles, self.arcs, self.chains))))


OBJECT_NAMES = ("notes", "bombs", "walls", "arcs", "chains")


def along_cut(direction: int, dx: int, dy: int) -> bool:
    """Whether a step of (dx, dy) cells goes the way of this cut direction (never for a dot or no step)."""
    step = CUT_STEP.get(direction)
    return step is not None and (dx, dy) != (0, 0) and (np.sign(dx), np.sign(dy)) == step


@dataclass
class Difficulty:
    characteristic: str
    difficulty: str
    filename: str
    version: str = ""
    notes: list[Note] = field(default_factory=list)  # colour notes as stored, red + blue
    bombs: list[Bomb] = field(default_factory=list)
    obstacles: list[Obstacle] = field(default_factory=list)
    arcs: list[Arc] = field(default_factory=list)
    chains: list[Chain] = field(default_factory=list)
    bpm_changes: bool = False
    bpm_events: list[BpmEvent] = field(default_factory=list)  # v2 _BPMChanges / v3 bpmEvents, as stored
    noodle_data: bool = False  # notes moved/faked through customData, declared or not
    requirements: list[str] = field(default_factory=list)
    suggestions: list[str] = field(default_factory=list)
    njs: float = 0.0
    njs_offset: float = 0.0
    error: str | None = None  # the file could not be read: why

    @property
    def off_grid(self) -> int:
        return sum(not on_grid(n) for n in self.notes)

    @property
    def objects(self) -> Objects:
        return Objects(self.notes, self.bombs, self.obstacles, self.arcs, self.chains)


def standard_difficulty(
    name: str, objects: Objects, njs: float, bpm_events: list[BpmEvent] | None = None
) -> Difficulty:
    """A Standard difficulty holding these objects, written as NAMEStandard.dat in v3.3.0."""
    o = objects
    events = bpm_events or []
    return Difficulty(
        "Standard",
        name,
        f"{name}Standard.dat",
        "3.3.0",
        o.notes,
        o.bombs,
        o.obstacles,
        o.arcs,
        o.chains,
        njs=njs,
        bpm_events=events,
    )


@dataclass
class Level:
    song_name: str = ""
    song_sub_name: str = ""
    song_author: str = ""
    mapper: str = ""
    bpm: float = 0.0
    song_filename: str = "song.egg"
    cover_filename: str = "cover.jpg"
    song_time_offset: float = 0.0  # seconds
    preview_start: float = 0.0
    preview_duration: float = 0.0
    info_version: str = ""
    difficulties: list[Difficulty] = field(default_factory=list)
    path: str = field(default="", compare=False)
    bpm_regions: list[BpmEvent] = field(default_factory=list)  # BPMInfo.dat / AudioData.dat regions
    environment: str = DEFAULT_ENVIRONMENT  # Info.dat's _environmentName (v4: the first environmentNames)
    custom_data: dict = field(default_factory=dict)  # Info.dat's level-wide _customData (v2) / customData (v4)


def on_grid(note: Note) -> bool:
    """True when the note is a colour note the token space can represent."""
    return (
        0 <= note.x < GRID_COLUMNS
        and 0 <= note.y < GRID_ROWS
        and 0 <= note.color < COLORS
        and 0 <= note.direction < DIRECTIONS
    )


OFF_GRID_TOLERANCE = 0.05  # ticks; 3-decimal beats in map files are within 0.025 of the grid


def slot(note: Note) -> tuple[int, int, int]:
    # (tick, x, y): two notes in one slot are the same object to a player
    return round(note.beat * PPQ), note.x, note.y


def plain_notes(diff: Difficulty) -> list[Note]:
    """The difficulty's playable colour notes with arcs and chains folded in, by beat.

    A chain's head becomes a note unless a colour note already sits at that beat and
    cell; an arc adds a note at its head and at its tail only where none sits. Notes the
    token space cannot represent (off the grid, odd colours or directions) are dropped.
    """
    notes = [n for n in diff.notes if on_grid(n)]
    taken = {slot(n) for n in notes}
    extra = [c.head for c in diff.chains] + [end for a in diff.arcs for end in (a.head, a.tail)]
    for note in extra:
        if on_grid(note) and slot(note) not in taken:
            notes.append(note)
            taken.add(slot(note))
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


# ---------------------------------------------------------------- reading files


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """--help as every entry point writes it: each flag's default once, after its help, unless the help
    already states it or there is none to state."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        unstated = default is None or default is False or default is argparse.SUPPRESS
        if not action.option_strings or "default" in text.lower() or unstated:
            return text
        shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else str(default)
        return f"{text} (default: {shown.replace('%', '%%')})"


def current_umask() -> int:
    """The process's umask (read by setting it and restoring it at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def with_user_modes(folder: str | os.PathLike) -> None:
    """Give the files directly in folder the mode the umask gives a new file, where another writer (such
    as transformers' save_pretrained, through a private temp file) left them stricter."""
    mode = NEW_FILE_MODE & ~current_umask()
    for path in Path(folder).iterdir():
        if path.is_file() and not path.is_symlink() and path.stat().st_mode & 0o777 != mode:
            path.chmod(mode)


@contextmanager
def atomic_file(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[BinaryIO]:
    """A binary file to write that appears at path only when the block completes.

    It is a temp file beside path (same file system), renamed over path at the end and
    removed on any error or interrupt, so readers never see a partial file.
    """
    path = Path(path)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    try:
        os.fchmod(fd, NEW_FILE_MODE & ~current_umask())  # mkstemp's 0600 -> what open() would give (0644)
        with os.fdopen(fd, "wb") as out:
            yield out
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _plain_bytes(data: bytes, name: str) -> bytes:
    """A .dat file's JSON bytes: gzip (detected by magic bytes) and a UTF-8 BOM removed."""
    try:
        if data[:2] == GZIP_MAGIC:
            data = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as e:
        raise MapError(f"{name}: corrupt gzip data ({e})") from None
    return data[len(UTF8_BOM) :] if data.startswith(UTF8_BOM) else data


def _decode(data: bytes, name: str, schema: type[T], what: str = "malformed data") -> T:
    """Decode plain JSON bytes into `schema`; keys the schema does not name are skipped unparsed."""
    try:
        return msgspec.json.decode(data, type=schema, strict=False)
    except msgspec.ValidationError as e:
        raise MapError(f"{name}: {what} ({e})") from None
    except msgspec.DecodeError:
        pass
    try:  # the standard parser also takes NaN/Infinity, which some old editors wrote
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise MapError(f"{name}: not valid JSON ({e})") from None
    try:
        return msgspec.convert(doc, schema, strict=False)
    except msgspec.ValidationError as e:
        raise MapError(f"{name}: {what} ({e})") from None


def read_json(data: bytes, name: str) -> Any:
    """Parse a .dat file's bytes into plain Python objects (gzip and BOM handled)."""
    return _decode(_plain_bytes(data, name), name, Any)


def _unsafe(name: str) -> bool:
    parts = name.replace("\\", "/").split("/")
    return name.startswith(("/", "\\")) or ".." in parts or (len(name) > 1 and name[1] == ":")


def _member_reader(names: Iterable[str], read: Callable[[str], bytes]) -> Callable[[str], bytes | None]:
    """read(name) -> bytes of a level file, matched case-insensitively; None when absent.

    names: every member of the source; the level's root is the folder holding Info.dat
    (the shallowest one, so a zip with a single top folder also loads).
    """
    files = [n for n in names if not n.endswith("/")]
    unsafe = [n for n in files if _unsafe(n)]
    if unsafe:
        raise MapError(f"unsafe member name {unsafe[0]!r} (absolute or '..')")
    infos = [n for n in files if n.replace("\\", "/").rsplit("/", 1)[-1].lower() == "info.dat"]
    if not infos:
        raise MapError("no Info.dat")
    info = min(infos, key=lambda n: n.replace("\\", "/").count("/"))
    root = info[: -len("info.dat")]
    # index: lower-case path under the root -> member name
    index = {n[len(root) :].replace("\\", "/").lower(): n for n in files if n.startswith(root)}

    def read_member(name: str) -> bytes | None:
        member = index.get(name.replace("\\", "/").lower())
        if member is None:
            return None
        try:
            return read(member)
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as e:
            raise MapError(f"{name}: unreadable ({e})") from None

    return read_member


@contextmanager
def _open_level(source: str | os.PathLike | bytes | Mapping[str, bytes]) -> Iterator[Callable[[str], bytes | None]]:
    if isinstance(source, Mapping):
        yield _member_reader(source.keys(), source.__getitem__)
        return
    if isinstance(source, (bytes, bytearray)):
        source = io.BytesIO(source)
    elif Path(source).is_dir():
        root = Path(source)
        yield _member_reader([p.name for p in root.iterdir() if p.is_file()], lambda n: (root / n).read_bytes())
        return
    try:
        archive = zipfile.ZipFile(source)
    except FileNotFoundError:
        raise MapError("no such file or folder") from None
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise MapError(f"not a readable zip ({e})") from None
    with archive:
        huge = [i for i in archive.infolist() if i.file_size > MAX_MEMBER_BYTES]
        if huge:
            raise MapError(f"member {huge[0].filename!r} unpacks to {huge[0].file_size >> 20} MiB (refused)")
        yield _member_reader(archive.namelist(), archive.read)


def load_level(source: str | os.PathLike | bytes | Mapping[str, bytes]) -> Level:
    """Read a level from a .zip path, zip bytes, a folder, or {file name: bytes}.

    Raises MapError for a level that cannot be read at all (bad zip, no or broken
    Info.dat, v1 schema); a difficulty file that is missing or broken sets that
    Difficulty's `error` instead, so the rest of the level stays usable.
    """
    with _open_level(source) as read:
        level = _read_level(read)
    level.path = "" if isinstance(source, (bytes, bytearray, Mapping)) else str(source)
    return level


def read_level_file(source: str | os.PathLike | bytes | Mapping[str, bytes], name: str) -> bytes:
    """The bytes of one file of a level (e.g. its song), found like load_level finds files."""
    with _open_level(source) as read:
        data = read(name)
    if data is None:
        raise MapError(f"{name}: not in the level")
    return data


def _read_level(read: Callable[[str], bytes | None]) -> Level:
    level = _parse_info(read_json(read("Info.dat"), "Info.dat"))
    level.bpm_regions = _bpm_regions(read, level)
    regions_change = any(not _same_tempo(r.bpm, level.bpm) for r in level.bpm_regions)
    for diff in level.difficulties:
        try:
            data = read(diff.filename)
            if data is None:
                raise MapError(f"{diff.filename}: named in Info.dat but missing")
            _parse_difficulty(diff, data, level.bpm)
        except MapError as e:
            diff.error = str(e)
        diff.bpm_changes = diff.bpm_changes or regions_change
    return level


# ---------------------------------------------------------------- Info.dat


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _number(obj: Mapping, key: str, default: float = 0.0) -> float:
    value = obj.get(key, default)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise MapError(f"Info.dat: {key} is not a number: {value!r}") from None


def _canonical_difficulty(name: str) -> str:
    key = name.lower().replace("+", "plus").replace(" ", "")
    return next((d for d in DIFFICULTY_RANKS if d.lower() == key), name)


def _mods(custom: Any, key: str) -> list[str]:
    values = custom.get(key) if isinstance(custom, dict) else None
    return [v for v in values if isinstance(v, str)] if isinstance(values, list) else []


def _custom(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _parse_info(info: Any) -> Level:
    if not isinstance(info, dict):
        raise MapError("Info.dat: not a JSON object")
    try:
        return _info_by_version(info)
    except (AttributeError, TypeError) as e:  # e.g. a list where an object belongs
        raise MapError(f"Info.dat: malformed ({e})") from None


def _info_by_version(info: dict) -> Level:
    version = _text(info.get("version") or info.get("_version"))
    if version.startswith("4"):
        return _info_v4(info, version)
    if version.startswith("2") or "_beatsPerMinute" in info or "_difficultyBeatmapSets" in info:
        return _info_v2(info, version)
    if "difficultyLevels" in info or "beatsPerMinute" in info:
        raise MapError("Info.dat: schema v1 is not supported (re-save the level in a current editor)")
    raise MapError(f"Info.dat: unknown schema (version {version!r})")


def _info_v2(info: dict, version: str) -> Level:
    difficulties = []
    for group in info.get("_difficultyBeatmapSets") or []:
        for entry in group.get("_difficultyBeatmaps") or []:
            custom = entry.get("_customData")
            difficulties.append(
                Difficulty(
                    characteristic=_text(group.get("_beatmapCharacteristicName")),
                    difficulty=_canonical_difficulty(_text(entry.get("_difficulty"))),
                    filename=_text(entry.get("_beatmapFilename")),
                    requirements=_mods(custom, "_requirements"),
                    suggestions=_mods(custom, "_suggestions"),
                    njs=_number(entry, "_noteJumpMovementSpeed"),
                    njs_offset=_number(entry, "_noteJumpStartBeatOffset"),
                )
            )
    return Level(
        song_name=_text(info.get("_songName")),
        song_sub_name=_text(info.get("_songSubName")),
        song_author=_text(info.get("_songAuthorName")),
        mapper=_text(info.get("_levelAuthorName")),
        bpm=_number(info, "_beatsPerMinute"),
        song_filename=_text(info.get("_songFilename")),
        cover_filename=_text(info.get("_coverImageFilename")),
        song_time_offset=_number(info, "_songTimeOffset"),
        preview_start=_number(info, "_previewStartTime"),
        preview_duration=_number(info, "_previewDuration"),
        info_version=version or "2.0.0",
        difficulties=difficulties,
        environment=_text(info.get("_environmentName")) or DEFAULT_ENVIRONMENT,
        custom_data=_custom(info.get("_customData")),
    )


def _info_v4(info: dict, version: str) -> Level:
    song, audio = info.get("song") or {}, info.get("audio") or {}
    difficulties, mappers = [], []
    for entry in info.get("difficultyBeatmaps") or []:
        custom = entry.get("customData")
        difficulties.append(
            Difficulty(
                characteristic=_text(entry.get("characteristic")),
                difficulty=_canonical_difficulty(_text(entry.get("difficulty"))),
                filename=_text(entry.get("beatmapDataFilename")),
                requirements=_mods(custom, "requirements") or _mods(custom, "_requirements"),
                suggestions=_mods(custom, "suggestions") or _mods(custom, "_suggestions"),
                njs=_number(entry, "noteJumpMovementSpeed"),
                njs_offset=_number(entry, "noteJumpStartBeatOffset"),
            )
        )
        for name in (entry.get("beatmapAuthors") or {}).get("mappers") or []:
            if isinstance(name, str) and name not in mappers:
                mappers.append(name)
    return Level(
        song_name=_text(song.get("title")),
        song_sub_name=_text(song.get("subTitle")),
        song_author=_text(song.get("author")),
        mapper=", ".join(mappers),
        bpm=_number(audio, "bpm"),
        song_filename=_text(audio.get("songFilename")),
        cover_filename=_text(info.get("coverImageFilename")),
        preview_start=_number(audio, "previewStartTime"),
        preview_duration=_number(audio, "previewDuration"),
        info_version=version,
        difficulties=difficulties,
        environment=_text(next(iter(info.get("environmentNames") or []), None)) or DEFAULT_ENVIRONMENT,
        custom_data=_custom(info.get("customData")),
    )


def _same_tempo(a: float, b: float) -> bool:
    return abs(a - b) <= TEMPO_TOLERANCE * max(abs(a), abs(b))


def _bpm_regions(read: Callable[[str], bytes | None], level: Level) -> list[BpmEvent]:
    """The tempo regions of the level's audio-data file (v2 BPMInfo.dat, v4 AudioData.dat), each
    as the beat it starts on and its tempo; [] when there is none or it cannot be read."""
    v4 = level.info_version.startswith("4")
    name = "AudioData.dat" if v4 else "BPMInfo.dat"
    try:
        data = read(name)
        if data is None:
            return []
        doc = read_json(data, name)
        if v4:
            rate = _number(doc, "songFrequency")
            regions = [(r["si"], r["ei"], r["sb"], r["eb"]) for r in doc.get("bpmData") or []]
        else:
            rate = _number(doc, "_songFrequency")
            keys = ("_startSampleIndex", "_endSampleIndex", "_startBeat", "_endBeat")
            regions = [tuple(r[k] for k in keys) for r in doc.get("_regions") or []]
        # region tempo = beats per minute of audio = d(beats) * 60 * rate / d(samples)
        return [BpmEvent(float(sb), (eb - sb) * 60 * rate / (ei - si)) for si, ei, sb, eb in regions if ei > si]
    except (MapError, KeyError, TypeError, AttributeError, ZeroDivisionError):
        return []  # editor metadata only; an unreadable one says nothing about tempo


# ---------------------------------------------------------------- map time

BEAT_TEMPO_TOLERANCE = 1e-4  # relative: a detected beat this close to the running tempo starts no new one


class TempoMap:
    """A song's beat axis in seconds: piecewise linear and increasing, one tempo from each knot on.

    Every tempo form here becomes one: a map's bpmEvents (v2 _BPMChanges, v3 bpmEvents), its
    audio-data regions (v2 BPMInfo.dat, v4 AudioData.dat), one BPM, or a tracker's beat times.
    """

    def __init__(self, beats: np.ndarray, seconds: np.ndarray, bpms: np.ndarray) -> None:
        # beats, seconds, bpms: [knots] float: where each tempo starts (beats ascending, the first 0), its
        # seconds there, and the tempo until the next knot; the first tempo holds before beat 0, the last after
        self.beats, self.seconds, self.bpms = (
            np.asarray(a, dtype=np.float64).reshape(-1) for a in (beats, seconds, bpms)
        )

    @classmethod
    def steady(cls, bpm: float) -> TempoMap:
        return cls([0.0], [0.0], [bpm])

    @classmethod
    def from_events(cls, bpm: float, events: Iterable[BpmEvent] = ()) -> TempoMap:
        """bpm until the first event, each event's tempo from its beat on (v3 bpmEvents semantics), beat 0 at 0 s;
        an event at a beat another already holds replaces it."""
        knots = [(0.0, 0.0, bpm)]  # (beat, seconds, bpm)
        for event in sorted(e for e in events if e.bpm > 0):
            beat, seconds, tempo = knots[-1]
            knot = (event.beat, seconds + (event.beat - beat) * 60 / tempo, event.bpm)
            knots[-1 if event.beat == beat else len(knots) :] = [knot]
        return cls(*zip(*knots))

    @classmethod
    def of_difficulty(cls, level: Level, diff: Difficulty) -> TempoMap:
        """The difficulty's tempo: its own tempo events, else the level's audio-data regions, else the Info
        BPM throughout. An event that keeps the running tempo (within TEMPO_TOLERANCE) starts no region."""
        regions = [BpmEvent(0.0, level.bpm)]
        for event in sorted(e for e in (diff.bpm_events or level.bpm_regions) if e.bpm > 0 and e.beat >= 0):
            if event.beat <= regions[-1].beat:
                regions[-1] = BpmEvent(regions[-1].beat, event.bpm)  # at the same beat: it replaces
            elif not _same_tempo(event.bpm, regions[-1].bpm):
                regions.append(event)
        return cls.from_events(regions[0].bpm, regions[1:])

    @classmethod
    def from_beat_times(cls, beat_times: np.ndarray) -> TempoMap:
        """beat_times: [n >= 2] seconds of beats 0..n-1 (a tracker's) -> a knot on every beat: proportional
        between two beats, at the last beat's period past the end."""
        times = np.asarray(beat_times, dtype=np.float64)
        periods = np.diff(times)  # [n - 1] seconds from each beat to the next
        return cls(np.arange(times.size), times, 60 / np.r_[periods, periods[-1]])

    @property
    def bpm(self) -> float:
        """The first tempo (the only one of a steady song)."""
        return float(self.bpms[0])

    @property
    def is_steady(self) -> bool:
        return self.bpms.size == 1

    def _knot(self, axis: np.ndarray, at: np.ndarray) -> np.ndarray:
        return np.clip(np.searchsorted(axis, at, side="right") - 1, 0, axis.size - 1)

    def seconds_at(self, beats: np.ndarray | Iterable[float]) -> np.ndarray:
        """beats: [n] -> [n] seconds."""
        beats = np.asarray(beats, dtype=np.float64)
        k = self._knot(self.beats, beats)
        return self.seconds[k] + (beats - self.beats[k]) * 60 / self.bpms[k]

    def beats_at(self, seconds: np.ndarray | Iterable[float]) -> np.ndarray:
        """seconds: [n] -> [n] beats (seconds_at inverted)."""
        seconds = np.asarray(seconds, dtype=np.float64)
        k = self._knot(self.seconds, seconds)
        return self.beats[k] + (seconds - self.seconds[k]) * self.bpms[k] / 60

    def beat_at(self, seconds: float) -> float:
        return float(self.beats_at(np.array([seconds]))[0])

    def regions(self) -> np.ndarray:
        """[knots, 3] float: (first beat, BPM, seconds at that beat) of each tempo region."""
        return np.stack([self.beats, self.bpms, self.seconds], axis=1)

    def steady_start(self, beat: float) -> tuple[float, float]:
        """(BPM, start) of a window that starts at `beat`: its region's tempo, and the beat it would be at
        if the whole song ran at that tempo from 0 s, so that a steady window there times it exactly."""
        k = int(self._knot(self.beats, np.array([beat]))[0])
        return float(self.bpms[k]), float(self.seconds[k] * self.bpms[k] / 60 + beat - self.beats[k])

    def events(self, tolerance: float = 0.0, decimals: int | None = None) -> list[BpmEvent]:
        """v3 bpmEvents, the first at beat 0: one where the tempo differs from the running one by more than
        tolerance (relative), each tempo rounded to `decimals` where given."""
        events = [BpmEvent(float(self.beats[0]), float(self.bpms[0]))]
        for beat, bpm in zip(self.beats[1:].tolist(), self.bpms[1:].tolist()):
            if abs(bpm / events[-1].bpm - 1) > tolerance:
                events.append(BpmEvent(beat, bpm))
        return events if decimals is None else [BpmEvent(e.beat, round(e.bpm, decimals)) for e in events]


# ---------------------------------------------------------------- difficulty files


def read_difficulty(data: bytes, filename: str = "difficulty.dat", info_bpm: float | None = None) -> Difficulty:
    """One difficulty file's content (characteristic and difficulty left empty).

    bpm_changes compares tempo events with info_bpm, or with the first event when
    no Info BPM is given. Raises MapError when the file cannot be read.
    """
    diff = Difficulty(characteristic="", difficulty="", filename=filename)
    _parse_difficulty(diff, data, info_bpm)
    return diff


def _parse_difficulty(diff: Difficulty, data: bytes, info_bpm: float | None) -> None:
    """Fill diff from a difficulty file's bytes; raises MapError when they cannot be read."""
    doc = _decode(_plain_bytes(data, diff.filename), diff.filename, _DifficultyFile, "malformed data")
    version = doc.version or doc.v2_version or ("3.0.0" if doc.colorNotes is not None else "2.0.0")
    fill = {"4": _fill_v4, "3": _fill_v3}.get(version[0], _fill_v2)
    diff.version = version
    try:
        tempos = fill(diff, doc)
    except IndexError as e:
        raise MapError(f"{diff.filename}: malformed v{version} data (index out of range: {e})") from None
    # customs: each note's customData, None or the Noodle keys it holds (most hold none)
    customs = [n.custom for n in doc.notes or ()] + [n.customData for n in doc.colorNotes or ()]
    plain = customs.count(None) + customs.count(_NO_NOODLE)
    diff.noodle_data = diff.noodle_data or plain < len(customs)
    reference = info_bpm if info_bpm is not None else next(iter(tempos), 0.0)
    diff.bpm_changes = any(not _same_tempo(t, reference) for t in tempos)


# The schema of difficulty files, all versions in one (their key names barely overlap),
# so each file is decoded in a single pass. Only the keys read here are declared:
# everything else (lighting events, often most of a file) is skipped without being
# built. Any key may be absent (compact v3 files omit defaults) and lists may be null.


def _key(name: str, default: Any = 0) -> Any:
    return msgspec.field(name=name, default=default)


# A note's customData: only the Noodle keys are declared (their values left as raw
# JSON), so Chroma colours and the like on every note are skipped, not built.
_NoteCustom = msgspec.defstruct(
    "_NoteCustom",
    [(f"key{i}", msgspec.Raw, _key(name, msgspec.Raw())) for i, name in enumerate(sorted(NOODLE_NOTE_KEYS))],
)
CustomData = _NoteCustom | None
_NO_NOODLE = _NoteCustom()  # a customData without any Noodle key


class _V2Note(msgspec.Struct):
    beat: float = _key("_time")
    x: int = _key("_lineIndex")
    y: int = _key("_lineLayer")
    kind: int = _key("_type")  # 0 red, 1 blue, 3 bomb
    direction: int = _key("_cutDirection")
    custom: CustomData = _key("_customData", None)


class _V2Obstacle(msgspec.Struct):
    beat: float = _key("_time", 0.0)
    duration: float = _key("_duration", 0.0)
    x: int = _key("_lineIndex", 0)
    kind: int = _key("_type", 0)  # 0 full height, 1 crouch, 2 custom (v2.6: _lineLayer, _height)
    width: int = _key("_width", 1)
    y: int = _key("_lineLayer", 0)
    height: int = _key("_height", 5)

    def obstacle(self) -> Obstacle:
        y, height = V2_WALLS.get(self.kind, (self.y, self.height))
        return Obstacle(self.beat, self.duration, self.x, y, self.width, height)


class _Obstacle(msgspec.Struct):
    # a v3 wall (b, d, x, y, w, h), or a v4 one (b, i: index into obstaclesData of d, x, y, w, h)
    b: float = 0
    d: float = 0
    x: int = 0
    y: int = 0
    w: int = 0
    h: int = 0
    i: int = 0


class _V2Arc(msgspec.Struct):
    color: int = _key("_colorType")
    beat: float = _key("_headTime")
    x: int = _key("_headLineIndex")
    y: int = _key("_headLineLayer")
    direction: int = _key("_headCutDirection")
    tail_beat: float = _key("_tailTime")
    tail_x: int = _key("_tailLineIndex")
    tail_y: int = _key("_tailLineLayer")
    tail_direction: int = _key("_tailCutDirection")
    multiplier: float = _key("_headControlPointLengthMultiplier", 1.0)
    tail_multiplier: float = _key("_tailControlPointLengthMultiplier", 1.0)
    anchor: int = _key("_sliderMidAnchorMode", 0)


class _V2Tempo(msgspec.Struct):
    time: float = _key("_time", 0.0)
    bpm: float | None = _key("_BPM", None)
    bpm_lower: float | None = _key("_bpm", None)  # some editors wrote it lower-case


class _V2Custom(msgspec.Struct):
    tempos: list[_V2Tempo] | None = _key("_BPMChanges", None)
    tempos_lower: list[_V2Tempo] | None = _key("_bpmChanges", None)
    fake_notes: list[msgspec.Raw] | None = _key("_fakeNotes", None)


class _Note(msgspec.Struct):
    # a v3 colour note (b, x, y, c, d), or a v4 one (b, i: index into colorNotesData)
    b: float = 0
    x: int = 0
    y: int = 0
    c: int = 0
    d: int = 0
    i: int = 0
    customData: CustomData = None


class _V3Arc(_Note):
    tb: float = 0
    tx: int = 0
    ty: int = 0
    tc: int = 0  # tail cut direction
    mu: float = 1.0  # head and tail control point multipliers
    tmu: float = 1.0
    m: int = 0  # mid-anchor mode


class _V3Chain(_Note):
    tb: float = 0
    tx: int = 0
    ty: int = 0
    sc: int = 0  # slices
    s: float = 0  # squish


class _V3Tempo(msgspec.Struct):
    b: float = 0
    m: float = 0


class _V3Custom(msgspec.Struct):
    fakeColorNotes: list[msgspec.Raw] | None = None


class _V4Arc(msgspec.Struct):
    hb: float = 0
    tb: float = 0
    hi: int = 0  # head and tail: indices into colorNotesData
    ti: int = 0
    ai: int = -1  # index into arcsData


class _V4ArcData(msgspec.Struct):
    m: float = 1.0  # head and tail control point multipliers
    tm: float = 1.0
    a: int = 0  # mid-anchor mode


class _V4Chain(msgspec.Struct):
    hb: float = 0
    tb: float = 0
    i: int = 0  # head: index into colorNotesData
    ci: int = 0  # index into chainsData


class _V4ChainData(msgspec.Struct):
    tx: int = 0
    ty: int = 0
    c: int = 0  # slices
    s: float = 0  # squish


class _V4Content(msgspec.Struct):
    colorNotes: list[_Note] | None = None  # v3 too
    bombNotes: list[_Note] | None = None  # v3 too: a note's keys without colour and direction
    bombNotesData: list[_Note] | None = None
    obstacles: list[_Obstacle] | None = None  # v3 too
    obstaclesData: list[_Obstacle] | None = None
    colorNotesData: list[_Note] | None = None
    arcs: list[_V4Arc] | None = None
    arcsData: list[_V4ArcData] | None = None
    chains: list[_V4Chain] | None = None
    chainsData: list[_V4ChainData] | None = None


class _DifficultyFile(_V4Content):
    version: str = ""  # v3, v4
    content: _V4Content | None = None  # v4 writers that nest the arrays
    # v3
    sliders: list[_V3Arc] | None = None
    burstSliders: list[_V3Chain] | None = None
    bpmEvents: list[_V3Tempo] | None = None
    customData: _V3Custom | None = None
    # v1, v2
    v2_version: str = _key("_version", "")
    notes: list[_V2Note] | None = _key("_notes", None)
    v2_obstacles: list[_V2Obstacle] | None = _key("_obstacles", None)
    v2_arcs: list[_V2Arc] | None = _key("_sliders", None)
    v2_tempos: list[_V2Tempo] | None = _key("_BPMChanges", None)
    v2_custom: _V2Custom | None = _key("_customData", None)


def _fill_v2(diff: Difficulty, doc: _DifficultyFile) -> list[float]:
    """v2 (and v1, same note keys): returns the tempos of its BPM-change events."""
    objects = doc.notes or []
    colour = [n for n in objects if n.kind in (0, 1)]
    diff.notes = [Note(n.beat, n.x, n.y, n.kind, n.direction) for n in colour]
    diff.bombs = [Bomb(n.beat, n.x, n.y) for n in objects if n.kind == 3]
    diff.obstacles = [o.obstacle() for o in doc.v2_obstacles or ()]
    diff.arcs = [
        Arc(
            Note(a.beat, a.x, a.y, a.color, a.direction),
            Note(a.tail_beat, a.tail_x, a.tail_y, a.color, a.tail_direction),
            a.multiplier,
            a.tail_multiplier,
            a.anchor,
        )
        for a in doc.v2_arcs or ()
    ]
    custom = doc.v2_custom or _V2Custom()
    diff.noodle_data = bool(custom.fake_notes)
    changes = (doc.v2_tempos or []) + (custom.tempos or custom.tempos_lower or [])
    diff.bpm_events = [BpmEvent(c.time, c.bpm if c.bpm is not None else c.bpm_lower or 0.0) for c in changes]
    return [e.bpm for e in diff.bpm_events]


def _fill_v3(diff: Difficulty, doc: _DifficultyFile) -> list[float]:
    colour = doc.colorNotes or []
    diff.notes = [Note(n.b, n.x, n.y, n.c, n.d) for n in colour]
    diff.bombs = [Bomb(b.b, b.x, b.y) for b in doc.bombNotes or ()]
    diff.obstacles = [Obstacle(o.b, o.d, o.x, o.y, o.w, o.h) for o in doc.obstacles or ()]
    diff.arcs = [
        Arc(Note(a.b, a.x, a.y, a.c, a.d), Note(a.tb, a.tx, a.ty, a.c, a.tc), a.mu, a.tmu, a.m)
        for a in doc.sliders or ()
    ]
    diff.chains = [Chain(Note(c.b, c.x, c.y, c.c, c.d), c.tb, c.tx, c.ty, c.sc, c.s) for c in doc.burstSliders or ()]
    diff.noodle_data = bool(doc.customData and doc.customData.fakeColorNotes)
    diff.bpm_events = [BpmEvent(e.b, e.m) for e in doc.bpmEvents or ()]
    return [e.bpm for e in diff.bpm_events]


def _fill_v4(diff: Difficulty, doc: _DifficultyFile) -> list[float]:
    """v4: objects hold a beat and an index into shared property arrays; tempo lives in
    the level's AudioData.dat, so there are no tempo events here."""
    content = doc.content or doc
    props, chain_props = content.colorNotesData or [], content.chainsData or []

    def note_at(beat: float, index: int) -> Note:
        p = props[index]
        return Note(beat, p.x, p.y, p.c, p.d)

    diff.notes = [note_at(n.b, n.i) for n in content.colorNotes or ()]
    bomb_props, wall_props = content.bombNotesData or [], content.obstaclesData or []
    diff.bombs = [Bomb(b.b, bomb_props[b.i].x, bomb_props[b.i].y) for b in content.bombNotes or ()]
    diff.obstacles = [Obstacle(o.b, (p := wall_props[o.i]).d, p.x, p.y, p.w, p.h) for o in content.obstacles or ()]
    arc_props = content.arcsData or []
    for a in content.arcs or ():
        head, tail = note_at(a.hb, a.hi), props[a.ti]
        shape = arc_props[a.ai] if 0 <= a.ai < len(arc_props) else _V4ArcData()
        diff.arcs.append(Arc(head, Note(a.tb, tail.x, tail.y, head.color, tail.d), shape.m, shape.tm, shape.a))
    for c in content.chains or ():
        p = chain_props[c.ci]
        diff.chains.append(Chain(note_at(c.hb, c.i), c.tb, p.tx, p.ty, p.c, p.s))
    return []


# ---------------------------------------------------------------- training filter


def rejection(level: Level, diff: Difficulty) -> str | None:
    """Why this difficulty cannot train the model, or None when it can.

    Reasons are short fixed phrases so that summaries can count them. Tempo changes are no reason:
    training takes such a difficulty's windows that lie inside one tempo region (tempo_map).
    """
    if diff.error:
        return "unreadable difficulty file"
    if diff.characteristic != "Standard":
        return "not Standard characteristic"
    if any(mod in diff.requirements for mod in BLOCKING_MODS):
        return "requires Noodle/Mapping Extensions"
    if diff.noodle_data:
        return "Noodle Extensions note data"
    if level.bpm <= 0:
        return "no BPM"
    if level.song_time_offset:
        return "song time offset"
    if not diff.notes or diff.off_grid == len(diff.notes):
        return "no notes"
    if diff.off_grid > MAX_OFF_GRID_SHARE * len(diff.notes):
        return "notes off the 4x3 grid"
    return None


# ---------------------------------------------------------------- writing


def _dumps(doc: dict) -> bytes:
    return msgspec.json.format(msgspec.json.encode(doc), indent=2)


def difficulty_json(
    objects: Objects | Iterable[Note], lights: Lightshow | None = None, bpm_events: Iterable[BpmEvent] = ()
) -> bytes:
    """A v3.3.0 difficulty file holding these objects (or just these colour notes), each kind sorted by beat,
    the lightshow's basic and colour boost events (sorted by beat) if given, the tempo events if any, and
    nothing else. Arcs and chains carry their ends' own cells and directions."""
    objects = objects if isinstance(objects, Objects) else Objects(list(objects))
    color_notes = [
        {"b": n.beat, "x": n.x, "y": n.y, "c": n.color, "d": n.direction, "a": 0} for n in sorted(objects.notes)
    ]
    bombs = [{"b": b.beat, "x": b.x, "y": b.y} for b in sorted(objects.bombs)]
    walls = [
        {"b": o.beat, "d": o.duration, "x": o.x, "y": o.y, "w": o.width, "h": o.height}
        for o in sorted(objects.obstacles)
    ]
    arcs = [
        {
            "c": a.head.color,
            "b": a.head.beat,
            "x": a.head.x,
            "y": a.head.y,
            "d": a.head.direction,
            "mu": a.head_multiplier,
        }
        | {
            "tb": a.tail.beat,
            "tx": a.tail.x,
            "ty": a.tail.y,
            "tc": a.tail.direction,
            "tmu": a.tail_multiplier,
            "m": a.anchor,
        }
        for a in sorted(objects.arcs)
    ]
    chains = [
        {"c": c.head.color, "b": c.head.beat, "x": c.head.x, "y": c.head.y, "d": c.head.direction}
        | {"tb": c.tail_beat, "tx": c.tail_x, "ty": c.tail_y, "sc": c.slices, "s": c.squish}
        for c in sorted(objects.chains)
    ]
    lights = lights or Lightshow([], [])
    basic = [{"b": e.beat, "et": e.type, "i": e.value, "f": e.brightness} for e in sorted(lights.lights)]
    boosts = [{"b": e.beat, "o": e.on} for e in sorted(lights.boosts)]
    empty_lists = (
        "rotationEvents waypoints "
        "lightColorEventBoxGroups lightRotationEventBoxGroups lightTranslationEventBoxGroups vfxEventBoxGroups"
    ).split()
    tempos = [{"b": e.beat, "m": e.bpm} for e in sorted(bpm_events)]
    doc = {"version": "3.3.0", "bpmEvents": tempos, "colorNotes": color_notes, "bombNotes": bombs, "obstacles": walls}
    doc |= {"sliders": arcs, "burstSliders": chains, **{k: [] for k in empty_lists}}
    doc |= {"basicBeatmapEvents": basic, "colorBoostBeatmapEvents": boosts}
    doc |= {
        "_fxEventsCollection": {"_fl": [], "_il": []},
        "basicEventTypesWithKeywords": {"d": []},
        "useNormalEventsAsCompatibleEvents": False,
    }
    return _dumps(doc)


def info_json(level: Level) -> bytes:
    """A v2.1.0 Info.dat for the level; difficulties grouped by characteristic in rank order."""
    groups: dict[str, list[dict]] = {}
    for diff in sorted(level.difficulties, key=lambda d: DIFFICULTY_RANKS.get(d.difficulty, 0)):
        entry = {
            "_difficulty": diff.difficulty,
            "_difficultyRank": DIFFICULTY_RANKS.get(diff.difficulty, 0),
            "_beatmapFilename": diff.filename,
            "_noteJumpMovementSpeed": diff.njs,
            "_noteJumpStartBeatOffset": diff.njs_offset,
        }
        if diff.requirements or diff.suggestions:
            entry["_customData"] = {"_requirements": diff.requirements, "_suggestions": diff.suggestions}
        groups.setdefault(diff.characteristic, []).append(entry)
    return _dumps(
        {
            "_version": "2.1.0",
            "_songName": level.song_name,
            "_songSubName": level.song_sub_name,
            "_songAuthorName": level.song_author,
            "_levelAuthorName": level.mapper,
            "_beatsPerMinute": level.bpm,
            "_shuffle": 0,
            "_shufflePeriod": 0.5,
            "_previewStartTime": level.preview_start,
            "_previewDuration": level.preview_duration,
            "_songFilename": level.song_filename,
            "_coverImageFilename": level.cover_filename,
            "_environmentName": level.environment,
            "_allDirectionsEnvironmentName": "GlassDesertEnvironment",
            "_songTimeOffset": level.song_time_offset,
            "_difficultyBeatmapSets": [
                {"_beatmapCharacteristicName": name, "_difficultyBeatmaps": entries} for name, entries in groups.items()
            ],
        }
        | ({"_customData": level.custom_data} if level.custom_data else {})
    )


def level_files(level: Level, lights: Mapping[str, Lightshow] | None = None) -> dict[str, bytes]:
    """{file name: bytes} of the level's JSON: Info.dat + one v3.3.0 file per difficulty, with that
    difficulty's lightshow where `lights` ({difficulty name: lightshow}) has one."""
    lights = lights or {}
    files = {d.filename: difficulty_json(d.objects, lights.get(d.difficulty), d.bpm_events) for d in level.difficulties}
    return {"Info.dat": info_json(level)} | files


# ---------------------------------------------------------------- training corpus


class LevelReport(msgspec.Struct):
    """What the training filter makes of one level (also the level index's entries)."""

    stamp: tuple[int, int]  # (bytes, newest mtime in ns) of the zip or the folder's files
    error: str | None = None  # why the level could not be read
    song_hash: str = ""  # sha1 of the song file's bytes
    # (characteristic, difficulty, rejection reason or None when trainable)
    difficulties: list[tuple[str, str, str | None]] = []


class _Index(msgspec.Struct):
    directory: str
    entries: dict[str, LevelReport]  # by level path relative to the directory
    version: int = 1


def _stamp(path: Path) -> tuple[int, int]:
    files = [path] if path.is_file() else [p for p in path.iterdir() if p.is_file()]
    stats = [p.stat() for p in files]
    return sum(s.st_size for s in stats), max((s.st_mtime_ns for s in stats), default=0)


def judge_level(path: Path) -> LevelReport:
    """Read one level and judge each difficulty by the training filter (and the song's
    presence); a level that cannot be read at all gets `error` instead."""
    stamp = _stamp(path)
    try:
        with _open_level(path) as read:
            level = _read_level(read)
            song = read(level.song_filename) if level.song_filename else None
    except MapError as e:
        return LevelReport(stamp, error=str(e))
    no_song = "song file missing" if song is None else None
    judged = [(d.characteristic, d.difficulty, rejection(level, d) or no_song) for d in level.difficulties]
    song_hash = hashlib.sha1(song).hexdigest() if song is not None else ""
    return LevelReport(stamp, song_hash=song_hash, difficulties=judged)


class ZippedBeatSaberDataset:
    """The trainable difficulties in a directory of level zips and level folders.

    The directory is indexed once (progress bar): every level read and each difficulty
    judged by rejection(). The index is kept in cache_dir and reused for every level
    whose size and modification time are unchanged. A summary of rejections by reason
    is printed, and one line for each level that cannot be read (verbose; the other
    processes of a multi-process run stay quiet).
    items: [(level path, characteristic, difficulty)]; dataset[i] -> (Level, characteristic, difficulty).
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        cache_dir: str | os.PathLike | None = "cache",
        progress: bool = True,
        verbose: bool = True,
    ):
        from tqdm import tqdm

        self.directory = Path(directory).resolve()
        if not self.directory.is_dir():
            raise MapError(f"{directory}: no such folder")
        key = hashlib.sha1(str(self.directory).encode()).hexdigest()[:12]
        self.index_path = Path(cache_dir) / f"levels-{key}.json" if cache_dir is not None else None
        known = self._load_index()
        entries = {}
        paths = list(find_levels([self.directory]))
        for path in tqdm(paths, desc="indexing levels", unit="level", disable=not progress):
            name = str(path.relative_to(self.directory))
            entry = known.get(name)
            entries[name] = entry if entry is not None and tuple(entry.stamp) == _stamp(path) else judge_level(path)
        if entries != known:
            self._save_index(entries)

        self.items: list[tuple[str, str, str]] = []
        self.song_hashes: dict[str, str] = {}  # level path -> sha1 of its song
        self.rejections: Counter[str] = Counter()
        for name, entry in sorted(entries.items()):
            path = str(self.directory / name)
            if entry.error:
                self.rejections["unreadable level"] += 1
                if verbose:
                    print(f"skipped {path}: {entry.error}", file=sys.stderr)
            for characteristic, difficulty, reason in entry.difficulties:
                if reason:
                    self.rejections[reason] += 1
                else:
                    self.items.append((path, characteristic, difficulty))
                    self.song_hashes[path] = entry.song_hash
        self.levels = len(entries)
        if verbose:
            print(self.summary(), file=sys.stderr)

    def summary(self) -> str:
        lines = [f"{len(self.items)} trainable difficulties in {len(self.song_hashes)} of {self.levels} levels"]
        lines += [f"  rejected {count:6d}  {reason}" for reason, count in self.rejections.most_common()]
        return "\n".join(lines)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[Level, str, str]:
        path, characteristic, difficulty = self.items[i]
        return _cached_level(path), characteristic, difficulty

    def _load_index(self) -> dict[str, LevelReport]:
        if self.index_path is None or not self.index_path.exists():
            return {}
        try:
            index = msgspec.json.decode(self.index_path.read_bytes(), type=_Index)
        except (msgspec.DecodeError, OSError):
            return {}  # unreadable or from another version: rebuilt
        return index.entries if index.directory == str(self.directory) else {}

    def _save_index(self, entries: dict[str, LevelReport]) -> None:
        if self.index_path is None:
            return
        try:
            self.index_path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_file(self.index_path) as out:
                out.write(msgspec.json.encode(_Index(str(self.directory), entries)))
        except OSError as e:
            print(f"note: could not save the level index to {self.index_path} ({e})", file=sys.stderr)


@functools.lru_cache(maxsize=8)
def _cached_level(path: str) -> Level:
    # difficulties of one level are usually visited together
    return load_level(path)


# ---------------------------------------------------------------- CLI


def find_levels(paths: Iterable[str | os.PathLike]) -> Iterator[Path]:
    """Zips and level folders under the given paths, in a stable order.

    A folder holding .dat files but no Info.dat is yielded too, so it is reported
    rather than silently skipped.
    """
    for path in map(Path, paths):
        if path.is_file() and path.name.lower() == "info.dat":
            yield path.parent
        elif not path.is_dir():
            yield path  # a zip, or a missing/odd path reported when loaded
        else:
            for root, dirs, files in os.walk(path):
                dirs.sort()
                if any(f.lower().endswith(".dat") for f in files):
                    yield Path(root)
                    dirs.clear()
                    continue
                yield from (Path(root) / f for f in sorted(files) if f.lower().endswith(".zip"))


def level_summary(level: Level) -> dict:
    """The CLI's --json object for one level."""
    return {
        "path": level.path,
        "song_name": level.song_name,
        "song_author": level.song_author,
        "mapper": level.mapper,
        "bpm": level.bpm,
        "song_filename": level.song_filename,
        "song_time_offset": level.song_time_offset,
        "info_version": level.info_version,
        "difficulties": [
            {
                "characteristic": d.characteristic,
                "difficulty": d.difficulty,
                "filename": d.filename,
                "version": d.version,
                "notes": len(d.notes),
                "bombs": len(d.bombs),
                "obstacles": len(d.obstacles),
                "arcs": len(d.arcs),
                "chains": len(d.chains),
                "off_grid": d.off_grid,
                "bpm_changes": d.bpm_changes,
                "requirements": d.requirements,
                "suggestions": d.suggestions,
                "trainable": (reason := rejection(level, d)) is None,
                **({"reason": reason} if reason else {}),
                **({"error": d.error} if d.error else {}),
            }
            for d in level.difficulties
        ],
    }


def _table_rows(summary: dict) -> list[list[str]]:
    head = [summary["path"], f"{summary['bpm']:g}"]
    rows = [
        head
        + [
            f"{d['characteristic']}/{d['difficulty']}",
            d["version"] or "-",
            str(d["notes"]),
            str(d["bombs"]),
            str(d["obstacles"]),
            str(d["arcs"]),
            str(d["chains"]),
            "yes" if d["trainable"] else f"no: {d.get('error') or d['reason']}",
        ]
        for d in summary["difficulties"]
    ]
    return rows or [head + ["(no difficulties)", "-", "-", "-", "-", "-", "no"]]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Read Beat Saber levels (zips or folders; v2/v3/v4) and report their "
        "difficulties, note counts and whether each can be used for training.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "paths", nargs="+", metavar="PATH", help="a level .zip, a level folder, or a folder searched recursively"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per level per line instead of a table")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    header = ["path", "bpm", "difficulty", "schema", "notes", "bombs", "walls", "arcs", "chains", "trainable"]
    rows, read_any = [], False
    for path in find_levels(args.paths):
        try:
            summary = level_summary(load_level(path))
            read_any = True
        except MapError as e:
            summary = {"path": str(path), "error": str(e)}
        if args.json:
            print(json.dumps(summary, ensure_ascii=False), flush=True)
        elif "error" in summary:
            rows.append([summary["path"], "-", f"ERROR: {summary['error']}"])
        else:
            rows.extend(_table_rows(summary))
    if not args.json:
        # error rows (path, "-", message) do not widen the columns
        widths = [max(len(r[i]) for r in [header, *rows] if len(r) == len(header)) for i in range(len(header))]
        for row in [header, *rows]:
            print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return 0 if read_any else 1


if __name__ == "__main__":
    sys.exit(main())
