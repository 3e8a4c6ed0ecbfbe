"""Packaging a generated level: Info.dat, difficulties, cover, song and the level zip."""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from audio import ogg_vorbis
from levels.lightshow import ENVIRONMENT, bar_loudness, lightshow
from maps import (
    BEAT_TEMPO_TOLERANCE,
    Difficulty,
    Level,
    Objects,
    TempoMap,
    atomic_file,
    level_files,
)

NJS = {"Easy": 10, "Normal": 10, "Hard": 12, "Expert": 16, "ExpertPlus": 18}  # note jump speed per difficulty
NJS_OFFSET = 0.0
OUTPUT_RATE = 44100  # song.egg: Ogg Vorbis at 44.1 kHz
PREVIEW_SECONDS = 10.0
COVER_SIZE = 512
TOOL = "beat-saber-automapper"
GENERATED_BY = f"{TOOL} (AI-generated)"  # _levelAuthorName of every generated level: BeatSaver asks to declare AI maps


def cover_jpeg(title: str) -> bytes:
    """A square cover: two blocks in the sabers' red and blue on a dark gradient whose hue comes from the title."""
    from PIL import Image, ImageDraw

    hue = hashlib.sha1(title.encode()).digest()[0]
    y = np.linspace(0, 1, COVER_SIZE)[:, None, None]
    top, bottom = np.array([hue / 4, 20, 60]), np.array([10, hue / 3, 30])
    image = Image.fromarray((top * (1 - y) + bottom * y).repeat(COVER_SIZE, axis=1).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    block, gap = COVER_SIZE // 4, COVER_SIZE // 16
    for i, color in enumerate(((200, 30, 40), (30, 90, 220))):
        left = COVER_SIZE // 2 - block - gap // 2 + i * (block + gap)
        top_edge = COVER_SIZE // 2 - block // 2
        draw.rounded_rectangle((left, top_edge, left + block, top_edge + block), radius=block // 8, fill=color)
        draw.polygon(
            [
                (left + block // 4, top_edge + block // 4),
                (left + 3 * block // 4, top_edge + block // 4),
                (left + block // 2, top_edge + block // 2),
            ],
            fill=(240, 240, 240),
        )
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


def cover_from_image(path: str | os.PathLike) -> bytes:
    """Any image Pillow reads -> a square JPEG cover (centre crop, COVER_SIZE pixels); OSError when unreadable."""
    from PIL import Image, ImageOps

    with Image.open(path) as image:
        square = ImageOps.fit(image.convert("RGB"), (COVER_SIZE, COVER_SIZE))
    out = io.BytesIO()
    square.save(out, "JPEG", quality=90)
    return out.getvalue()


@dataclass(frozen=True)
class LevelInfo:
    """What a generated level says of itself beside its notes, tempo and song."""

    song_name: str
    song_author: str = ""
    cover: bytes | None = None  # a JPEG; None draws one from the title
    mapper: str = GENERATED_BY
    lights: str = "full"  # LIGHT_MODES
    seed: int = 0  # the lightshow's
    generator: dict | None = None  # Info.dat's _customData._generator: what made the level


def level_package(level: dict[str, Objects], tempo: TempoMap, song: np.ndarray, info: LevelInfo) -> dict[str, bytes]:
    """{file name: bytes} of a level Beat Saber loads as is: Info.dat (v2.1.0, DefaultEnvironment, the
    first tempo as its BPM), one v3.3.0 Standard difficulty file per entry of level ({difficulty name:
    its objects}) with its lightshow and, where the tempo changes, its v3 bpmEvents; song.egg, cover.jpg.

    song: [n] or [n, channels] float at OUTPUT_RATE, beat 0 on its first sample. The lights follow the
    first tempo throughout.
    """
    seconds, bpm = len(song) / OUTPUT_RATE, tempo.bpm
    bpm_events = [] if tempo.is_steady else tempo.events(BEAT_TEMPO_TOLERANCE, decimals=4)
    package = Level(
        song_name=info.song_name,
        song_author=info.song_author,
        mapper=info.mapper,
        bpm=bpm,
        song_filename="song.egg",
        cover_filename="cover.jpg",
        preview_start=round(seconds / 3, 3),
        preview_duration=min(PREVIEW_SECONDS, seconds),
        info_version="2.1.0",
        difficulties=[
            Difficulty(
                "Standard",
                name,
                f"{name}Standard.dat",
                "3.3.0",
                objects.notes,
                objects.bombs,
                objects.obstacles,
                objects.arcs,
                objects.chains,
                bpm_events=bpm_events,
                njs=NJS[name],
                njs_offset=NJS_OFFSET,
            )
            for name, objects in level.items()
        ],
        environment=ENVIRONMENT,
        custom_data=generated_custom_data(info.generator) if info.generator is not None else {},
    )
    mono = song.reshape(len(song), -1).mean(axis=1)  # [n]
    loudness = bar_loudness(mono, OUTPUT_RATE, bpm)  # [bars] dB
    shows = {
        name: lightshow(objects.notes, bpm, loudness, seconds * bpm / 60, info.lights, info.seed)
        for name, objects in level.items()
    }
    cover = info.cover if info.cover is not None else cover_jpeg(info.song_name)
    return level_files(package, shows) | {"song.egg": ogg_vorbis(song, OUTPUT_RATE), "cover.jpg": cover}


def generated_custom_data(generator: dict) -> dict:
    """Info.dat's _customData for a generated level: the editor convention's _editors entry naming the tool,
    and _generator holding what made it (tool, checkpoint, base model, token space, seed, sampling)."""
    tool = {"tool": TOOL, "aiGenerated": True} | generator
    return {"_editors": {"_lastEditedBy": TOOL, TOOL: {"aiGenerated": True}}, "_generator": tool}


def write_level(path: str | os.PathLike, files: dict[str, bytes]) -> Path:
    """Write a level as a .zip (a path ending in .zip) or into a folder; every file atomically."""
    path = Path(path)
    if path.suffix.lower() == ".zip":
        path.parent.mkdir(parents=True, exist_ok=True)
        write_zip(path, files)
        return path
    path.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        with atomic_file(path / name) as out:
            out.write(data)
    return path


ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def write_zip(path: str | os.PathLike, files: dict[str, bytes]) -> None:
    """Write {name: bytes} as a zip at path, atomically (temp file in the same folder, then rename)."""
    with atomic_file(path) as out, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            # a fixed timestamp: the same files always give the same zip bytes
            archive.writestr(zipfile.ZipInfo(name, date_time=ZIP_EPOCH), data, zipfile.ZIP_DEFLATED)
