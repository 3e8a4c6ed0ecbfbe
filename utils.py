"""Note-level helpers and the synthetic corpus.

v3 arcs/chains to plain notes, the 48-PPQ beat grid, playability repairs for generated
notes, packaging a generated level, writing level zips, and `python utils.py synth
OUT_DIR`: level zips whose songs are synthesized drum patterns at known tempos with
notes exactly on the hits (for tests and the offline demo).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from data import CHUNK_BEATS
from levels.kits import KitError
from levels.preview import level_preview, preview_path
from levels.realsongs import (
    LMMS_PROJECTS,
    ProjectError,
    write_real_corpus,
)
from levels.scorecard import RHYTHM_CLASSES, TOLERANCE, scorecard, song_onsets
from levels.synth import HARD_BPM_RANGE, LEAD_IN_BARS, RAMP_BARS, SYNTH_BPMS, TEMPO_CHANGES, write_synth_corpus
from maps import (
    OBJECT_NAMES,
    Difficulty,
    HelpFormatter,
    Level,
    TempoMap,
    atomic_file,
    plain_notes,
)

SCORE_ROWS = (  # (key, label, format) of the readable table; the JSON holds every figure
    ("notes", "notes", "{:d}"),
    ("nps", "notes per second", "{:.2f}"),
    ("listening_lift", "listening lift (x random)", "{:.2f}"),
    ("onset_share", "  notes on an onset", "{:.0%}"),
    ("random_onset_share", "  random grid on an onset", "{:.0%}"),
    ("timing_f1", "timing F1 vs reference", "{:.3f}"),
    ("timing_precision", "  precision", "{:.3f}"),
    ("timing_recall", "  recall", "{:.3f}"),
    ("density_ratio", "density ratio vs reference", "{:.2f}"),
    ("density_correlation", "4-bar density correlation", "{:.2f}"),
    ("rhythm_distance", "rhythm profile distance", "{:.2f}"),
    *((f"rhythm_{name}", f"on {name}" if name != "other" else "elsewhere", "{:.0%}") for name in RHYTHM_CLASSES),
    ("parity_errors_per_swing", "parity errors per swing", "{:.3f}"),
    ("cell_collisions", "cell collisions", "{:d}"),
    ("mixed_stacks", "mixed-direction stack notes", "{:d}"),
    ("note_type_entropy", "note-type entropy (bits)", "{:.2f}"),
    ("top_pattern_share", "top 4-beat pattern share", "{:.0%}"),
    ("grid_coverage", "grid coverage", "{:.0%}"),
    ("red_share", "red share", "{:.0%}"),
    ("seam_parity_errors_per_swing", "parity errors/swing at seams", "{:.3f}"),
    ("other_parity_errors_per_swing", "  elsewhere", "{:.3f}"),
    ("seam_notes_per_beat", "notes per beat at seams", "{:.2f}"),
    ("other_notes_per_beat", "  elsewhere", "{:.2f}"),
    *((f"{kind}_per_second", f"{kind} per second", "{:.2f}") for kind in OBJECT_NAMES[1:]),
    *((f"{kind}_f1", f"  {kind} F1 vs reference", "{:.3f}") for kind in OBJECT_NAMES[1:]),
    ("bombs_in_the_way", "bombs in a hand's way", "{:d}"),
    ("walls_over_notes", "walls over notes", "{:d}"),
    ("walls_in_view", "walls in the centre view", "{:d}"),
    ("arcs_off_notes", "arcs not ending on notes", "{:d}"),
    ("chains_off_notes", "chains not led by a note", "{:d}"),
)


def score_table(cards: dict[str, dict]) -> str:
    """{difficulty: scorecard} -> a readable table: one row per figure, one column per difficulty."""

    def cell(card: dict, key: str, form: str) -> str:
        value = card.get(key)
        return "-" if value is None else form.format(value)

    names = list(cards)
    width = max(len(label) for _, label, _ in SCORE_ROWS)
    lines = [" " * width + "".join(f"{name:>12}" for name in names)]
    for key, label, form in SCORE_ROWS:
        if any(card.get(key) is not None for card in cards.values()):
            lines.append(f"{label:<{width}}" + "".join(f"{cell(cards[n], key, form):>12}" for n in names))
    return "\n".join(lines)


def score_level(args: argparse.Namespace) -> int:
    """utils.py score: print each chosen Standard difficulty's scorecard; 0, or 2 when nothing could be scored."""
    from maps import MapError, load_level

    levels = []
    for path in (args.level, args.reference):
        try:
            levels.append(load_level(path) if path else None)
        except (MapError, OSError) as e:
            print(f"utils.py score: {path}: {e}", file=sys.stderr)
            return 2
    level, reference = levels

    def standard(lvl: Level) -> dict[str, Difficulty]:
        return {d.difficulty: d for d in lvl.difficulties if d.characteristic == "Standard" and d.error is None}

    ours, theirs = standard(level), standard(reference) if reference else {}
    wanted = args.difficulty or [name for name, d in ours.items() if plain_notes(d)]  # default: those with notes
    missing = [name for name in wanted if name not in ours]
    if missing or not wanted:
        what = ", ".join(missing) or "difficulty with notes"
        print(f"utils.py score: {args.level}: no readable Standard {what}", file=sys.stderr)
        return 2
    onsets = song_onsets(level)
    cards = {}
    for name in wanted:
        ref = theirs.get(name)
        if reference is not None and ref is None:
            print(f"{args.reference}: no Standard {name} to compare with", file=sys.stderr)
        cards[name] = scorecard(
            plain_notes(ours[name]),
            TempoMap.of_difficulty(level, ours[name]),
            onsets,
            plain_notes(ref) if ref else None,
            TempoMap.of_difficulty(reference, ref) if ref else None,
            args.tolerance,
            args.chunk_beats,
            ours[name].objects,
            ref.objects if ref else None,
        )
    for name, card in cards.items():
        if args.json:
            print(json.dumps({"level": str(args.level), "difficulty": name} | _rounded(card)))
    if not args.json:
        print(score_table(cards))
    return 0


def real_corpus(args: argparse.Namespace) -> int:
    """utils.py realsongs: one level zip per LMMS project; a project that fails gets one line, the rest go on."""
    try:
        written, failed = write_real_corpus(Path(args.out_dir), args.held_out_dir, Path(args.projects), args.jobs)
    except ProjectError as e:
        print(f"utils.py realsongs: {e}", file=sys.stderr)
        return 2
    return 0 if written else 1


def preview_level(args: argparse.Namespace) -> int:
    """utils.py preview: write the PNG; 0, or 2 with one line when the level or its song cannot be read."""
    from audio import AudioError
    from maps import MapError, load_level

    try:
        png = level_preview(load_level(args.level), args.seconds, args.difficulty)
    except (MapError, AudioError, OSError, ValueError) as e:
        print(f"utils.py preview: {args.level}: {e}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else preview_path(args.level)
    with atomic_file(out) as f:
        f.write(png)
    print(out)
    return 0


def _rounded(card: dict) -> dict:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in card.items()}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Project utilities: synthetic corpora, level scorecards and previews.",
        formatter_class=HelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    synth = commands.add_parser(
        "synth",
        formatter_class=HelpFormatter,
        help="write a synthetic corpus of level zips",
        description="Write level zips whose songs are synthesized drum patterns at known BPMs "
        f"({', '.join(f'{b:g}' for b in SYNTH_BPMS)}, in turn) with Normal and Expert notes exactly "
        "on the hits. Deterministic for a seed. For tests and the offline demo.",
    )
    synth.add_argument("out_dir", metavar="OUT_DIR", help="folder to write synth_NN.zip into (created if missing)")
    synth.add_argument("--songs", type=int, default=8, help="number of levels")
    synth.add_argument("--seed", type=int, default=0, help="random seed")
    synth.add_argument("--bars", type=int, default=16, help=f"bars with notes, after {LEAD_IN_BARS} lead-in bars")
    synth.add_argument(
        "--hard",
        action="store_true",
        help=f"the learnability corpus: random tempi {HARD_BPM_RANGE[0]:g}-{HARD_BPM_RANGE[1]:g} BPM, sections of "
        "rests, syncopation, triplets, fills and dense runs, hats/bass/chords that carry no notes; Normal on "
        "kicks on whole beats only",
    )
    synth.add_argument(
        "--tempo",
        choices=TEMPO_CHANGES,
        default="steady",
        help="with --hard: step changes the tempo by 12-30%% up or down on a bar line mid-song, ramp reaches such "
        f"a change beat by beat over {RAMP_BARS} bars; the levels carry bpmEvents (default steady)",
    )
    real = commands.add_parser(
        "realsongs",
        formatter_class=HelpFormatter,
        help="render the LMMS demo projects into a real-music corpus of level zips",
        description="Render the LMMS studio's demo projects (Debian: apt-get install lmms) and write one level zip "
        "per project whose notes follow its drum tracks: Expert on every kick, snare and tom (no two closer than "
        "1/4 beat), Normal on the kicks on whole beats, none in the first 1.5 s, hands as in the synthetic "
        "corpus; the project's own tempo in Info.dat. About one project in five (fixed by name) is held out "
        "of training: it goes to --held-out-dir, beside OUT_DIR, where a training run's --data OUT_DIR never "
        "finds it. Projects already written are kept.",
    )
    real.add_argument("out_dir", metavar="OUT_DIR", help="folder for the training songs' level zips")
    real.add_argument("--held-out-dir", help="folder for the held-out songs (default: OUT_DIR-held-out)")
    real.add_argument("--projects", default=str(LMMS_PROJECTS), help="folder of LMMS projects (.mmp/.mmpz)")
    real.add_argument("--jobs", type=int, default=2, help="projects rendered at once")
    synth.add_argument(
        "--kit",
        help="with --hard: a recorded drum kit plays the drums, a Hydrogen kit's name (e.g. GMRockKit, from "
        "apt-get install hydrogen-data) or a folder of its samples; default: synthesized hits",
    )
    score = commands.add_parser(
        "score",
        formatter_class=HelpFormatter,
        help="print a level's quality scorecard",
        description="Score each Standard difficulty of a level (zip or folder), human or generated: listening "
        "(notes on audio onsets vs random grid placements; the audio comes from the level), density, rhythm, "
        "playability (parity, collisions, mixed stacks), variety and window seams; with --reference, timing "
        "precision/recall/F1, density ratio and correlation against the same difficulty of another level.",
    )
    score.add_argument("level", metavar="LEVEL", help="level zip or folder")
    score.add_argument("--reference", metavar="LEVEL", help="a human map of the same song to compare with")
    score.add_argument("--difficulty", nargs="+", help="difficulties to score (default: every Standard one)")
    score.add_argument(
        "--tolerance", type=float, default=TOLERANCE, help="seconds within which a note matches a reference note"
    )
    score.add_argument(
        "--chunk-beats", type=int, default=CHUNK_BEATS, help="window length in beats whose seams are checked"
    )
    score.add_argument("--json", action="store_true", help="one JSON object per difficulty per line")
    preview = commands.add_parser(
        "preview",
        formatter_class=HelpFormatter,
        help="draw a level's notes over its song's onsets as a PNG",
        description="A lane chart of a level (zip or folder, human or generated): per Standard difficulty, the "
        "12 grid cells as lanes with each note as an arrow (or dot) in its saber's colour, the song's onset "
        "strength under them and the bar lines marked. Shows at a glance whether the notes follow the music.",
    )
    preview.add_argument("level", metavar="LEVEL", help="level zip or folder")
    preview.add_argument("--seconds", type=float, default=30.0, help="seconds of the song drawn")
    preview.add_argument("--difficulty", nargs="+", help="difficulties to draw (default: every Standard one)")
    preview.add_argument("--out", help="PNG path (default: LEVEL.png beside the level)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "score":
        return score_level(args)
    if args.command == "preview":
        return preview_level(args)
    if args.command == "realsongs":
        return real_corpus(args)
    if (args.tempo != "steady" or args.kit) and not args.hard:
        parser.error("--tempo step/ramp and --kit need --hard")
    try:
        paths = write_synth_corpus(args.out_dir, args.songs, args.seed, args.bars, args.hard, args.tempo, args.kit)
    except KitError as e:
        print(f"utils.py synth: {e}", file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
