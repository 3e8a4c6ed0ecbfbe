"""The preview picture: a lane chart of a level's notes, bombs, walls, arcs and chains over its song's onsets."""

from __future__ import annotations

import dataclasses
import io
import math
import os
from pathlib import Path

import numpy as np

from audio import ONSET_RATE
from levels.playability import wall_cells
from maps import (
    BEATS_PER_BAR,
    DOT,
    GRID_CELLS,
    GRID_COLUMNS,
    GRID_ROWS,
    Level,
    Note,
    Objects,
    TempoMap,
    on_grid,
    plain_notes,
)

PREVIEW_WIDTH = 1200  # pixels of time axis
LABEL_WIDTH = 90
LANE_HEIGHT = 11  # one lane per grid cell: 12 lanes, top row first, columns left to right in each row
ONSET_HEIGHT = 40
PANEL_GAP = 14
HEADER_HEIGHT = 36
NOTE_RGB = ((235, 60, 70), (60, 130, 245))  # red (left saber), blue (right saber)
BOMB_RGB, BOMB_RIM = (70, 70, 80), (200, 200, 210)
WALL_RGBA = (210, 80, 220, 90)  # translucent: the notes and beats stay visible through a wall
# cut direction -> (dx, dy) in image coordinates (y grows downwards)
ARROW = {0: (0, -1), 1: (0, 1), 2: (-1, 0), 3: (1, 0), 4: (-1, -1), 5: (1, -1), 6: (-1, 1), 7: (1, 1)}


def preview_size(difficulties: int) -> tuple[int, int]:
    """(width, height) in pixels of a preview with this many difficulty panels."""
    panel = GRID_CELLS * LANE_HEIGHT + ONSET_HEIGHT + PANEL_GAP
    return LABEL_WIDTH + PREVIEW_WIDTH, HEADER_HEIGHT + max(1, difficulties) * panel


def _lane_y(top: float, x: int, y: int) -> float:
    """The pixel row of the middle of cell (x, y)'s lane in a panel whose top is `top`."""
    return top + ((GRID_ROWS - 1 - y) * GRID_COLUMNS + x) * LANE_HEIGHT + LANE_HEIGHT / 2


def _draw_note(draw, note: Note, cx: float, cy: float) -> None:
    """An arrow in the cut direction (a dot for dot notes) in the saber's colour, centred at (cx, cy)."""
    color = NOTE_RGB[note.color]
    r = LANE_HEIGHT / 2 - 1
    if note.direction == DOT:
        draw.ellipse((cx - r + 1, cy - r + 1, cx + r - 1, cy + r - 1), fill=color)
        return
    dx, dy = ARROW[note.direction]
    norm = math.hypot(dx, dy)
    ux, uy = dx / norm, dy / norm  # the cut direction; the triangle's tip points along it
    tip = (cx + ux * r, cy + uy * r)
    left = (cx - ux * r - uy * r, cy - uy * r + ux * r)
    right = (cx - ux * r + uy * r, cy - uy * r - ux * r)
    draw.polygon([tip, left, right], fill=color)


def _object_label(objects: Objects) -> str:
    counts = objects.counts()
    # one line per kind: "4 bombs, 40 walls, 2 arcs" overran the label column
    return "\n".join(f"{n} {kind}" for kind, n in counts.items() if kind == "notes" or n)


def preview_png(
    level: dict[str, Objects],
    tempo: TempoMap,
    samples: np.ndarray,
    rate: int,
    seconds: float = 30.0,
    title: str = "",
) -> bytes:
    """A PNG lane chart of the first `seconds` of a level: per difficulty ({name: objects}), the 12 grid
    cells as lanes (top row first) with each note as an arrow in its cut direction (a dot for dot notes)
    in its saber's colour, bombs as grey balls, walls as translucent spans over the lanes they stand on,
    arcs as thin lines between their notes, chains as a line of links to their tail; the song's onset
    strength under them, bar lines bright, beats faint.
    samples: [n] mono float at `rate`, beat 0 on sample 0 (as the level's song); beats timed by tempo."""
    import librosa
    from PIL import Image, ImageDraw

    width, height = preview_size(len(level))
    image = Image.new("RGB", (width, height), (18, 18, 24))
    draw = ImageDraw.Draw(image, "RGBA")
    draw.text((8, 7), f"{title}  {tempo.bpm:g} BPM  first {seconds:g} s".strip(), fill=(230, 230, 230))
    hop = 512
    strength = librosa.onset.onset_strength(y=samples.astype(np.float32), sr=rate, hop_length=hop)  # [frames]
    # scaled to its 99th percentile, so one loud hit cannot flatten the rest
    strength = np.clip(strength / max(float(np.percentile(strength, 99)), 1e-9), 0, 1)
    frames = strength[: int(seconds * rate / hop) + 1]

    def x_of(second: float) -> float:
        return LABEL_WIDTH + second / seconds * PREVIEW_WIDTH

    beat_times = tempo.seconds_at(np.arange(int(seconds * tempo.bpms.max() / 60) + 1))  # [beats] seconds
    panel = GRID_CELLS * LANE_HEIGHT + ONSET_HEIGHT + PANEL_GAP
    for i, (name, objects) in enumerate(level.items()):
        top = HEADER_HEIGHT + i * panel
        bottom = top + GRID_CELLS * LANE_HEIGHT + ONSET_HEIGHT
        draw.text((8, top + 4), f"{name}", fill=(230, 230, 230))
        draw.text((8, top + 18), _object_label(objects), fill=(150, 150, 160))
        for row in range(GRID_ROWS):  # a darker band per grid row
            y0 = top + row * GRID_COLUMNS * LANE_HEIGHT
            shade = (30, 30, 40) if row % 2 == 0 else (38, 38, 50)
            draw.rectangle((LABEL_WIDTH, y0, width, y0 + GRID_COLUMNS * LANE_HEIGHT - 1), fill=shade)
        for beat, second in enumerate(beat_times[beat_times <= seconds]):
            x = x_of(float(second))
            bar = beat % BEATS_PER_BAR == 0
            draw.line((x, top, x, bottom), fill=(120, 120, 140) if bar else (55, 55, 70), width=1)
        base = bottom  # the onset strength rises from the panel's bottom
        curve = [(x_of(f * hop / rate), base - v * (ONSET_HEIGHT - 4)) for f, v in enumerate(frames)]
        if len(curve) > 1:
            draw.polygon([(curve[0][0], base), *curve, (curve[-1][0], base)], fill=(90, 170, 120))
        half = LANE_HEIGHT / 2
        for wall in objects.obstacles:
            start, end = (float(t) for t in tempo.seconds_at([wall.beat, wall.beat + wall.duration]))
            if start > seconds or end < 0:
                continue
            x0, x1 = x_of(max(start, 0)), x_of(min(end, seconds))
            for cx, cy in wall_cells(wall.x, wall.y, wall.width, wall.height):
                lane_y = _lane_y(top, cx, cy)
                draw.rectangle((x0, lane_y - half, x1, lane_y + half - 1), fill=WALL_RGBA)
        for arc in objects.arcs:
            (t0, t1) = (float(t) for t in tempo.seconds_at([arc.head.beat, arc.tail.beat]))
            if t0 <= seconds:
                ends = [
                    (x_of(t0), _lane_y(top, arc.head.x, arc.head.y)),
                    (x_of(t1), _lane_y(top, arc.tail.x, arc.tail.y)),
                ]
                draw.line(ends, fill=(*NOTE_RGB[arc.head.color], 150), width=2)
        for chain in objects.chains:
            (t0, t1) = (float(t) for t in tempo.seconds_at([chain.head.beat, chain.tail_beat]))
            if t0 <= seconds:
                head = (x_of(t0), _lane_y(top, chain.head.x, chain.head.y))
                tail = (x_of(t1), _lane_y(top, chain.tail_x, chain.tail_y))
                draw.line([head, tail], fill=NOTE_RGB[chain.head.color], width=1)
                for k in range(1, chain.slices):  # the links, evenly from head to tail
                    lx, ly = (
                        head[0] + (tail[0] - head[0]) * k / (chain.slices - 1),
                        head[1] + (tail[1] - head[1]) * k / (chain.slices - 1),
                    )
                    draw.rectangle((lx - 2, ly - 1, lx + 2, ly + 1), fill=NOTE_RGB[chain.head.color])
        for bomb, second in zip(objects.bombs, tempo.seconds_at([b.beat for b in objects.bombs])):
            if 0 <= second <= seconds:
                cx, cy, r = x_of(second), _lane_y(top, bomb.x, bomb.y), half - 1
                draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=BOMB_RGB, outline=BOMB_RIM)
        note_times = tempo.seconds_at([n.beat for n in objects.notes])
        for note, second in zip(objects.notes, note_times):
            if 0 <= second <= seconds and on_grid(note):
                _draw_note(draw, note, x_of(second), _lane_y(top, note.x, note.y))
    for second in range(0, int(seconds) + 1, 5):  # time labels under the header
        draw.text((x_of(second) + 2, HEADER_HEIGHT - 13), f"{second}s", fill=(150, 150, 160))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def level_preview(level: Level, seconds: float = 30.0, difficulties: list[str] | None = None) -> bytes:
    """preview_png of a loaded level (zip or folder): its Standard difficulties (or those named) and its song.
    Raises MapError/AudioError when the song cannot be read, ValueError when no difficulty is left."""
    from audio import load_audio
    from maps import read_level_file

    chosen = {
        d.difficulty: dataclasses.replace(d.objects, notes=plain_notes(d))
        for d in level.difficulties
        if d.characteristic == "Standard"
    }
    chosen = {k: v for k, v in chosen.items() if not difficulties or k in difficulties}
    if not chosen:
        raise ValueError(f"no Standard {' or '.join(difficulties or ['difficulty'])}")
    rate = ONSET_RATE
    samples = load_audio(read_level_file(level.path, level.song_filename), rate, f"{level.path}:{level.song_filename}")
    standard = [d for d in level.difficulties if d.characteristic == "Standard" and d.difficulty in chosen]
    tempo = TempoMap.of_difficulty(level, next((d for d in standard if d.bpm_events), standard[0]))
    return preview_png(chosen, tempo, samples, rate, seconds, level.song_name)


def preview_path(level: str | os.PathLike) -> Path:
    """Where a level's preview goes by default: beside it, LEVEL.png for LEVEL.zip or a folder LEVEL
    (never inside the level, so it is not uploaded with it)."""
    level = Path(level)
    return level.with_name((level.stem if level.suffix.lower() == ".zip" else level.name) + ".png")
