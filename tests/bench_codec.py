"""Does the offline codec carry the hits that mappers take? A probe on real songs.

    python tests/bench_codec.py [--corpus data/starter/real] [--held-out data/starter-held-out]

The starter hears songs only through the random-weight test codec (two codes a frame, 75 frames a
second). This asks how much of what a level's notes follow is in those codes, beside two plain
audio features at the same frames: a 64-band log-mel spectrogram and librosa's onset strength.
Each feature, over +-2 frames, feeds a logistic probe that predicts "a note starts in this frame";
the probe's ROC AUC on songs it was not fitted on says how well the feature tells note frames from
the rest (0.5: not at all). Three fits:

- fitted on the LMMS corpus songs, tested on the held-out LMMS songs (truth: their Expert notes,
  which follow the drum tracks): what the starter is taught;
- the same probe tested on the human fixture maps that ship their song (truth: the densest Standard
  difficulty): how far the corpus's rule carries to what mappers chose;
- fitted on the human maps themselves, each song tested by a probe fitted on the others: what the
  feature could give with human maps to learn from.

The last line reads `codec: LMMS -> human AUC codes C, log-mel M, onset O; human leave-one-out codes
Ch, log-mel Mh, onset Oh; LMMS held out codes Cl, log-mel Ml, minutes T`.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

import numpy as np
from scipy import sparse

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from bench_starter import human_songs, reference_notes  # noqa: E402

from audio import create_audio_tokenizer, load_audio  # noqa: E402
from data import CODEBOOK_SIZE, CodesCache  # noqa: E402
from maps import load_level, read_level_file  # noqa: E402

CACHE_DIR = ROOT / "cache"  # train.py's default --cache-dir
CONTEXT = 2  # frames each side that a probe sees
MELS = 64
FEATURES = ("codes", "log-mel", "onset")


def with_context(x: np.ndarray | sparse.csr_matrix) -> np.ndarray | sparse.csr_matrix:
    """[frames, d] -> [frames, d * (2 * CONTEXT + 1)]: each frame beside its neighbours (edges wrap)."""
    frames = x.shape[0]
    shifted = [np.roll(np.arange(frames), -shift) for shift in range(-CONTEXT, CONTEXT + 1)]
    if sparse.issparse(x):
        return sparse.hstack([x[rows] for rows in shifted]).tocsr()
    return np.concatenate([x[rows] for rows in shifted], axis=1)


def one_hot_codes(codes: np.ndarray) -> sparse.csr_matrix:
    """codes: [frames, n_codebooks] -> [frames, n_codebooks * CODEBOOK_SIZE] float32, one 1 per codebook."""
    frames, books = codes.shape
    rows = np.repeat(np.arange(frames), books)
    columns = (codes.astype(np.int64) + np.arange(books) * CODEBOOK_SIZE).ravel()
    return sparse.csr_matrix((np.ones(len(rows), np.float32), (rows, columns)), shape=(frames, books * CODEBOOK_SIZE))


def song_features(path: Path, tokenizer) -> tuple[dict[str, np.ndarray | sparse.csr_matrix], np.ndarray]:
    """A level's song -> ({feature: [frames, d]}, hit: [frames] bool, a reference note starts there)."""
    import librosa

    level = load_level(path)
    rate, hop = tokenizer.sample_rate, tokenizer.hop_length
    song = read_level_file(path, level.song_filename)
    samples = load_audio(song, rate)
    cache = CodesCache(CACHE_DIR, tokenizer.cache_id, tokenizer.n_codebooks)  # train.py's: the corpus is there
    cached = cache.load(hashlib.sha1(song).hexdigest())
    codes = tokenizer.encode(samples[None]) if cached is None else cached  # [frames, 2], 75 frames/s
    frames = len(codes)
    mel = librosa.feature.melspectrogram(y=samples, sr=rate, n_fft=4 * hop, hop_length=hop, n_mels=MELS)
    log_mel = np.log(mel + 1e-6).T[:frames]  # [frames, MELS]
    onset = librosa.onset.onset_strength(y=samples, sr=rate, hop_length=hop)[:frames, None]  # [frames, 1]
    pad = frames - len(log_mel)
    log_mel, onset = (np.pad(a, ((0, max(0, pad)), (0, 0))) for a in (log_mel, onset))
    hit = np.zeros(frames, dtype=bool)
    seconds = [n.beat * 60 / level.bpm for n in reference_notes(path)["Expert"]]
    hit[[f for f in (round(s * tokenizer.frame_rate) for s in seconds) if 0 <= f < frames]] = True
    features = {"codes": one_hot_codes(codes), "log-mel": log_mel.astype(np.float32), "onset": onset.astype(np.float32)}
    return features, hit


def stack(songs: list[tuple[dict, np.ndarray]], feature: str) -> tuple[np.ndarray | sparse.csr_matrix, np.ndarray]:
    """Songs -> (every frame's feature with its context, every frame's label)."""
    parts = [with_context(f[feature]) for f, _ in songs]
    x = sparse.vstack(parts).tocsr() if feature == "codes" else np.concatenate(parts)
    return x, np.concatenate([hit for _, hit in songs])


def probe_auc(fit: list, test: list, feature: str) -> float:
    """ROC AUC on the test songs of a logistic probe fitted on the fit songs."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = stack(fit, feature)
    x_test, y_test = stack(test, feature)
    if feature == "codes":
        probe = LogisticRegression(max_iter=300, C=0.5)
    else:
        probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=300, C=0.5))
    probe.fit(x, y)
    return float(roc_auc_score(y_test, probe.predict_proba(x_test)[:, 1]))


def leave_one_out_auc(songs: list, feature: str) -> float:
    """Each song scored by a probe fitted on the others; the per-song AUCs' mean."""
    return float(np.mean([probe_auc(songs[:i] + songs[i + 1 :], [song], feature) for i, song in enumerate(songs)]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", default="data/starter/real", help="the LMMS corpus songs the probe is fitted on")
    p.add_argument("--held-out", default="data/starter-held-out", help="the LMMS songs held out of the corpus")
    args = p.parse_args()
    start = time.perf_counter()
    paths = {
        "corpus": sorted(Path(args.corpus).glob("*.zip")),
        "held out": sorted(Path(args.held_out).glob("*.zip")),
        "human": human_songs(),
    }
    if not all(paths.values()):
        missing = ", ".join(name for name, found in paths.items() if not found)
        raise SystemExit(f"bench_codec.py: no {missing} songs: build the corpus (train.py --starter) and/or ../shared")
    tokenizer = create_audio_tokenizer(weights="random", device="cpu")
    songs = {name: [song_features(path, tokenizer) for path in found] for name, found in paths.items()}
    rows = {
        "LMMS corpus -> held-out LMMS": {f: probe_auc(songs["corpus"], songs["held out"], f) for f in FEATURES},
        "LMMS corpus -> human maps": {f: probe_auc(songs["corpus"], songs["human"], f) for f in FEATURES},
        "human maps, leave one out": {f: leave_one_out_auc(songs["human"], f) for f in FEATURES},
    }
    print(f"\n{'probe ROC AUC (songs: ' + str({k: len(v) for k, v in paths.items()}) + ')':<60}")
    print(f"{'fitted -> tested':<32}" + "".join(f"{f:>10}" for f in FEATURES))
    for name, aucs in rows.items():
        print(f"{name:<32}" + "".join(f"{aucs[f]:>10.3f}" for f in FEATURES))
    lmms, human, own = rows.values()
    print(
        f"codec: LMMS -> human AUC codes {human['codes']:.3f}, log-mel {human['log-mel']:.3f}, onset "
        f"{human['onset']:.3f}; human leave-one-out codes {own['codes']:.3f}, log-mel {own['log-mel']:.3f}, onset "
        f"{own['onset']:.3f}; LMMS held out codes {lmms['codes']:.3f}, log-mel {lmms['log-mel']:.3f}, "
        f"minutes {(time.perf_counter() - start) / 60:.1f}"
    )


if __name__ == "__main__":
    main()
