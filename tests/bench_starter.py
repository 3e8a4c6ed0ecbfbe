"""The starter model judged on real songs it never saw.

    python tests/bench_starter.py [--model output/starter] [--held-out data/starter-held-out] [--floor-beats N]
                                  [--temperature T]

Songs: the LMMS demo songs held out of the starter's corpus (utils.py realsongs' fixed split by
name), scored against the notes their own drum tracks give (timing F1); and the human fixture maps
that ship their song and keep one tempo (../shared/fixtures/maps), scored against the densest
Standard difficulty (timing F1) and by listening lift. Each song is mapped by infer.py with its
true BPM and beat 0 at 0 s, Normal and Expert. Baselines in the same run: a note on every beat,
and a note on every onset librosa finds thinned to the model's density (the same count of notes,
the strongest onsets kept). No beat may hold more than the density cap.

Targets: listening lift >= 1.5 on the human fixture songs, timing F1 against the human maps at
least 0.05 above the onset baseline, Normal sparser than Expert. The last line reads
`starter: real-song lift L, F1 vs human F (onset baseline B), held-out corpus F1 C, minutes M`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from bench_learn import map_song  # noqa: E402

from audio import ONSET_RATE, load_audio  # noqa: E402
from data import PEAK_NOTES_PER_BEAT  # noqa: E402
from infer import STARTER_DIR  # noqa: E402
from levels.playability import MIN_NOTE_SECONDS  # noqa: E402
from levels.scorecard import Onsets, onset_seconds, scorecard, song_onsets  # noqa: E402
from maps import OBJECT_NAMES, Note, TempoMap, load_level, plain_notes, read_level_file  # noqa: E402

DIFFICULTIES = ("Normal", "Expert")
FIXTURES = ROOT.parent / "shared" / "fixtures" / "maps"
RATE = ONSET_RATE  # the scorecard's onsets
TOLERANCE = 0.04


def human_songs() -> list[Path]:
    """Fixture levels that ship their song and keep one tempo (notes timed by the Info BPM alone)."""
    found = []
    for folder in sorted(FIXTURES.iterdir()) if FIXTURES.is_dir() else []:
        try:
            level = load_level(folder)
            read_level_file(folder, level.song_filename)
        except Exception:  # noqa: BLE001 - a fixture without its song or that does not load is no candidate
            continue
        standard = [d for d in level.difficulties if d.characteristic == "Standard" and d.notes]
        if standard and all(TempoMap.of_difficulty(level, d).is_steady for d in standard):
            found.append(folder)
    return found


def reference_notes(path: Path) -> dict[str, list[Note]]:
    """{difficulty: notes} to compare with: a corpus level's own Normal and Expert; a human level's densest
    Standard difficulty for both."""
    level = load_level(path)
    standard = {d.difficulty: plain_notes(d) for d in level.difficulties if d.characteristic == "Standard"}
    if set(DIFFICULTIES) <= set(standard):
        return {d: standard[d] for d in DIFFICULTIES}
    densest = max(standard.values(), key=len)
    return dict.fromkeys(DIFFICULTIES, densest)


def baselines(path: Path, counts: dict[str, int]) -> dict[str, dict[str, list[Note]]]:
    """{name: {difficulty: notes}}: a note on every beat; the strongest librosa onsets, as many as the model
    wrote in that difficulty; both from MIN_NOTE_SECONDS on."""
    import librosa

    level = load_level(path)
    samples = load_audio(read_level_file(path, level.song_filename), RATE)
    seconds = len(samples) / RATE
    first = MIN_NOTE_SECONDS * level.bpm / 60
    beats = [float(b) for b in range(int(np.ceil(first)), int(seconds * level.bpm / 60))]
    envelope = librosa.onset.onset_strength(y=samples, sr=RATE)
    times = onset_seconds(samples, RATE)
    strength = envelope[np.minimum(librosa.time_to_frames(times, sr=RATE), len(envelope) - 1)]
    order = [t for _, t in sorted(zip(-strength, times)) if t >= MIN_NOTE_SECONDS]
    onsets = {d: sorted(order[: max(1, counts[d])]) for d in DIFFICULTIES}
    return {
        "every beat": {d: [Note(b, 1, 0, 0, 1) for b in beats] for d in DIFFICULTIES},
        "onsets (same count)": {d: [Note(t * level.bpm / 60, 1, 0, 0, 1) for t in onsets[d]] for d in DIFFICULTIES},
    }


def busiest_beat(notes: list[Note]) -> int:
    """The most notes in any span of one beat."""
    ticks = np.array(sorted(round(n.beat * 48) for n in notes))
    return int(max((np.sum((ticks > t - 48) & (ticks <= t)) for t in ticks), default=0))


def score(notes: dict[str, list[Note]], path: Path, onsets: Onsets) -> dict[str, float]:
    """Timing F1 against the reference and listening lift, averaged over Normal and Expert."""
    level = load_level(path)
    truth = reference_notes(path)
    cards = [
        scorecard(notes[d], TempoMap.steady(level.bpm), reference=truth[d], tolerance=TOLERANCE, onsets=onsets)
        for d in DIFFICULTIES
    ]
    return {
        "f1": float(np.mean([c["timing_f1"] for c in cards])),
        "lift": float(np.mean([c["listening_lift"] for c in cards])),
        **{f"nps {d}": c["nps"] for d, c in zip(DIFFICULTIES, cards)},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=STARTER_DIR, help="the model to judge")
    p.add_argument("--held-out", default="data/starter-held-out", help="the LMMS songs held out of its corpus")
    p.add_argument("--floor-beats", help="passed to infer.py (default: its own, by difficulty; 0: no density floor)")
    p.add_argument("--temperature", help="passed to infer.py (default: its own)")
    args = p.parse_args()
    start = time.perf_counter()
    sets = {"held-out LMMS": sorted(Path(args.held_out).glob("*.zip")), "human fixtures": human_songs()}
    flags = {"--floor-beats": args.floor_beats, "--temperature": args.temperature}
    extra = [part for flag, value in flags.items() if value is not None for part in (flag, value)]  # infer.py's
    if not any(sets.values()):
        raise SystemExit("bench_starter.py: no songs: build the corpus (train.py --starter) and/or ../shared")
    rows: dict[str, dict[str, list[dict]]] = {name: {} for name in sets}
    caps_kept = True
    kinds: dict[tuple[str, str], list[dict[str, float]]] = {}  # (set, difficulty) -> per song {kind: per second}
    with tempfile.TemporaryDirectory() as tmp:
        for set_name, paths in sets.items():
            for path in paths:
                onsets = song_onsets(load_level(path))
                mapped = map_song(Path(args.model), path, Path(tmp) / path.stem, *extra)
                # ours: {difficulty: colour notes}; the other kinds are counted per second of song
                ours = {d: objects.notes for d, objects in mapped.items()}
                for d, objects in mapped.items():
                    kinds.setdefault((set_name, d), []).append(
                        {k: n / onsets.duration for k, n in objects.counts().items() if k != "notes"}
                    )
                caps_kept &= all(busiest_beat(ours[d]) <= PEAK_NOTES_PER_BEAT[d] for d in DIFFICULTIES)
                counts = {d: len(ours[d]) for d in DIFFICULTIES}
                entries = {"starter": ours} | baselines(path, counts)
                for name, notes in entries.items():
                    figures = score(notes, path, onsets)
                    rows[set_name].setdefault(name, []).append(figures)
                    print(
                        f"{set_name:15} {path.stem[:32]:32} {name:20} F1 {figures['f1']:.3f} lift {figures['lift']:.2f}"
                    )
    print(f"\n{'set':16}{'who':22}{'songs':>6}{'timing F1':>11}{'lift':>7}{'nps Normal':>12}{'nps Expert':>12}")
    means: dict[tuple[str, str], dict[str, float]] = {}
    for set_name, by_who in rows.items():
        for who, figures in by_who.items():
            mean = {k: float(np.mean([f[k] for f in figures])) for k in figures[0]}
            means[(set_name, who)] = mean
            print(
                f"{set_name:16}{who:22}{len(figures):>6}{mean['f1']:>11.3f}{mean['lift']:>7.2f}"
                f"{mean['nps Normal']:>12.2f}{mean['nps Expert']:>12.2f}"
            )
    print(f"\n{'starter objects per second':38}" + "".join(f"{k:>8}" for k in OBJECT_NAMES[1:]))
    for (set_name, d), figures in kinds.items():
        per_kind = "".join(f"{np.mean([f[k] for f in figures]):>8.2f}" for k in OBJECT_NAMES[1:])
        print(f"{set_name + ' ' + d:38}{per_kind}")
    human = means.get(("human fixtures", "starter"), {"f1": float("nan"), "lift": float("nan")})
    onset = means.get(("human fixtures", "onsets (same count)"), {"f1": float("nan")})
    corpus = means.get(("held-out LMMS", "starter"), {"f1": float("nan")})
    print(f"density cap kept in every beat: {caps_kept}")
    print(
        f"starter: real-song lift {human['lift']:.2f}, F1 vs human {human['f1']:.3f} (onset baseline "
        f"{onset['f1']:.3f}), held-out corpus F1 {corpus['f1']:.3f}, minutes {(time.perf_counter() - start) / 60:.1f}"
    )


if __name__ == "__main__":
    main()
