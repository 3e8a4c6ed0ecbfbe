"""Benchmark: tempo and first-beat estimation on the fixture songs whose mapper BPM is known.

    python tests/bench_tempo.py [--tracker essentia librosa]

For each song: the estimate, its ratio class against the mapper's BPM (within 2%, an
octave error x2/x1/2, another metrical error x3/2, x2/3 ..., or wrong) and the phase
error of the first beat on the mapper's grid, in beats. Then a summary per tracker.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audio import TRACKERS, estimate_tempo, load_audio  # noqa: E402
from maps import MapError, load_level  # noqa: E402

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "maps"
RATIOS = {"ok": 1, "x2": 2, "x1/2": 1 / 2, "x3/2": 3 / 2, "x2/3": 2 / 3, "x3": 3, "x1/3": 1 / 3, "x4/3": 4 / 3}


def songs() -> list[tuple[str, float, Path]]:
    """(folder name, mapper BPM, song path) of every fixture level with its song."""
    found = []
    for folder in sorted(p for p in FIXTURES.iterdir() if p.is_dir()):
        try:
            level = load_level(folder)
        except MapError:
            continue
        if level.bpm and (folder / level.song_filename).is_file():
            found.append((folder.name, level.bpm, folder / level.song_filename))
    return found


def ratio_class(estimate: float, reference: float) -> str:
    return next((name for name, m in RATIOS.items() if abs(estimate / reference / m - 1) <= 0.02), "wrong")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracker", nargs="+", default=list(TRACKERS), choices=TRACKERS)
    args = parser.parse_args()
    if not FIXTURES.is_dir():
        sys.exit(f"no fixtures at {FIXTURES}")
    summary = []
    for tracker in args.tracker:
        classes, phases = [], []
        for name, bpm, path in songs():
            start = time.perf_counter()
            estimate = estimate_tempo(load_audio(path, 44100), 44100, tracker)
            beats = estimate.first_beat * bpm / 60
            classes.append(ratio_class(estimate.bpm, bpm))
            phases.append(abs(beats - round(beats)))
            print(
                f"{tracker:9s} {name:40s} mapper {bpm:7.2f}  estimate {estimate.bpm:8.3f} {classes[-1]:6s} "
                f"phase {phases[-1]:.3f}  confidence {estimate.confidence:.2f}  {time.perf_counter() - start:.0f} s"
            )
        octave = sum(c in ("x2", "x1/2") for c in classes)
        other = sum(c not in ("ok", "x2", "x1/2") for c in classes)
        summary.append((tracker, classes.count("ok"), len(classes), octave, other, float(np.median(phases))))
    print(f"\n{'tracker':9s} {'within 2%':>10s} {'octave':>7s} {'other':>6s} {'median phase (beats)':>21s}")
    for tracker, ok, total, octave, other, phase in summary:
        print(f"{tracker:9s} {f'{ok}/{total}':>10s} {octave:7d} {other:6d} {phase:21.3f}")


if __name__ == "__main__":
    main()
