"""Recorded drum kits for the synthetic corpus: Hydrogen's kits (Debian: hydrogen-data), real timbres
and rooms in place of the synthesized hits."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

HYDROGEN_KITS = Path("/usr/share/hydrogen/data/drumkits")
# the sample of each kind the synthetic songs play, by file name; the medium velocity layer where a kit has one
KIT_SOUNDS = {
    "kick": re.compile(r"kick|\bbd", re.I),
    "snare": re.compile(r"^(?!.*rim).*snare", re.I),
    "tom": re.compile(r"tom", re.I),
    "hat": re.compile(r"hat.?closed|closed.?hat", re.I),
    "open hat": re.compile(r"hat.?open|open.?hat", re.I),
}
AUDIO_SUFFIXES = (".wav", ".flac")


class KitError(Exception):
    """A kit that cannot be used; the message names the folder and what is missing."""


def kit_folder(name_or_path: str) -> Path:
    """A kit by folder path or by the name of one of Hydrogen's installed kits (e.g. GMRockKit)."""
    path = Path(name_or_path)
    folder = path if path.is_dir() else HYDROGEN_KITS / name_or_path
    if not folder.is_dir():
        installed = sorted(p.name for p in HYDROGEN_KITS.iterdir()) if HYDROGEN_KITS.is_dir() else []
        hint = (
            f"installed: {', '.join(installed)}"
            if installed
            else "install Hydrogen's kits: apt-get install hydrogen-data"
        )
        raise KitError(f"no drum kit at {name_or_path} ({hint})")
    return folder


def kit_sounds(name_or_path: str, rate: int) -> dict[str, np.ndarray]:
    """{kind: [n] float mono at rate, peak 1}: the kit's kick, snare, tom, closed and open hat."""
    import soundfile as sf
    import soxr

    folder = kit_folder(name_or_path)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES)
    sounds = {}
    for kind, pattern in KIT_SOUNDS.items():
        matches = [p for p in files if pattern.search(p.stem)]
        if not matches:
            raise KitError(f"{folder}: no {kind} sample among its {len(files)} sound files")
        chosen = next((p for p in matches if "med" in p.stem.lower()), matches[0])
        samples, source_rate = sf.read(chosen, dtype="float32", always_2d=True)  # [n, channels]
        mono = soxr.resample(samples.mean(axis=1), source_rate, rate) if source_rate != rate else samples.mean(axis=1)
        sounds[kind] = mono / max(float(np.abs(mono).max()), 1e-6)
    return sounds
