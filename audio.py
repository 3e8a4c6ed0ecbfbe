"""Audio: reading songs, their tempo and first beat, and Encodec tokens (and back).

Encodec 24 kHz through transformers' EncodecModel: at 1.5 kbps it gives 2 codes in
0..1023 per frame, 75 frames per second (hop 320 samples). A test mode builds the same
architecture with seeded random weights and codebooks fitted to its own encoder, so
tests and demos run with no download.
"""

from __future__ import annotations

import functools
import io
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import soundfile as sf
import soxr
import torch

ENCODEC_WEIGHTS = "facebook/encodec_24khz"
RANDOM_WEIGHTS = "random"
SILENCE_PEAK = 1e-4  # about -80 dBFS: quieter than this everywhere is no song
SEGMENT_SECONDS = 30  # long songs are encoded in windows of this much audio ...
CONTEXT_SECONDS = 1  # ... plus this much real audio either side, whose frames are dropped
WRITE_BLOCK = 1 << 16  # frames per libsndfile write


class AudioError(Exception):
    """A song that cannot be used; the message is one line naming the file and the problem."""


def _resampled(samples: np.ndarray, sample_rate: int, target_rate: int) -> np.ndarray:
    return soxr.resample(samples, sample_rate, target_rate) if sample_rate != target_rate else samples


def load_audio(
    source: str | os.PathLike | bytes, sample_rate: int, name: str | None = None, mono: bool = True
) -> np.ndarray:
    """Any soundfile-readable song (.egg/.ogg/.wav/.flac/.mp3) -> samples at sample_rate:
    [n] float32 mono, or [n, channels] as stored when mono is False."""
    raw = isinstance(source, (bytes, bytearray))
    name = name or ("audio" if raw else str(source))
    if not source if raw else os.path.isfile(source) and os.path.getsize(source) == 0:
        raise AudioError(f"{name}: empty file (0 bytes)")
    try:
        data, rate = sf.read(io.BytesIO(source) if raw else source, dtype="float32")
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as e:
        raise AudioError(f"{name}: unreadable audio ({e})") from None
    # data: [n] or [n, channels] float32 in -1..1 at `rate`
    if data.ndim == 2 and mono:
        data = data.mean(axis=1)
    if data.size == 0:
        cut = None if raw else truncation(source)
        raise AudioError(f"{name}: no audio samples" + (f" (truncated: {cut})" if cut else ""))
    if not np.isfinite(data).all() or np.abs(data).max() < SILENCE_PEAK:
        raise AudioError(f"{name}: audio is silent or not finite")
    return np.ascontiguousarray(_resampled(data, rate, sample_rate), dtype=np.float32)


def audio_seconds(path: str | os.PathLike) -> float:
    """The length the file's header declares, in seconds, without decoding it; 0 when it declares none
    (or is no audio: load_audio then says why)."""
    try:
        info = sf.info(path)
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError):
        return 0.0
    return info.frames / info.samplerate if info.samplerate and info.frames > 0 else 0.0


OGG_PAGE_MAX = 65_307  # bytes: the largest Ogg page (27-byte header, 255 segments of 255 bytes)
OGG_END_OF_STREAM = 0x04  # header-type flag of a stream's last page


def truncation(path: str | os.PathLike) -> str | None:
    """Why the file looks cut short (its container promises more than it holds), or None: an Ogg stream
    whose last page is partial or lacks the end-of-stream flag, a WAV whose data chunk runs past the
    file's end. Other formats are not checked (libsndfile fails on a cut FLAC)."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - OGG_PAGE_MAX))
            tail = f.read()
            if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
                return _wav_truncation(f, size)
    except OSError:
        return None
    if head[:4] == b"OggS":
        page = tail.rfind(b"OggS")
        if page < 0 or len(tail) - page < 27:
            return "its last Ogg page is cut off"
        segments = tail[page + 27 : page + 27 + tail[page + 26]]
        if len(tail) - page < 27 + len(segments) + sum(segments):
            return "its last Ogg page is cut off"
        if not tail[page + 5] & OGG_END_OF_STREAM:
            return "its Ogg stream has no end-of-stream page"
    return None


def _wav_truncation(f, size: int) -> str | None:
    """f: an open RIFF/WAVE file of `size` bytes -> why its data chunk is cut short, or None."""
    offset = 12
    while offset + 8 <= size:
        f.seek(offset)
        kind, length = f.read(4), int.from_bytes(f.read(4), "little")
        if kind == b"data":
            promised = offset + 8 + length
            unknown = length in (0, 0xFFFFFFFF)  # streaming writers leave the size open
            return None if unknown or promised <= size else f"its WAV data stops at {size} of {promised} bytes"
        offset += 8 + length + (length & 1)
    return None


def song_tags(path: str | os.PathLike) -> tuple[str, str]:
    """(title, artist) from the file's tags, "" where absent or unreadable."""
    try:
        with sf.SoundFile(path) as song:
            tags = song.copy_metadata()
    except (sf.LibsndfileError, RuntimeError, OSError):
        return "", ""
    return tags.get("title", "").strip(), tags.get("artist", "").strip()


def ogg_vorbis(samples: np.ndarray, sample_rate: int) -> bytes:
    """samples: [n] or [n, channels] float in -1..1 -> Ogg Vorbis file bytes (what Beat Saber plays)."""
    buffer = io.BytesIO()
    channels = 1 if samples.ndim == 1 else samples.shape[1]
    with sf.SoundFile(buffer, "w", sample_rate, channels, format="OGG", subtype="VORBIS") as out:
        # in blocks: libsndfile 1.2.2 crashes on single Vorbis writes of a few million frames
        for start in range(0, len(samples), WRITE_BLOCK):
            out.write(samples[start : start + WRITE_BLOCK])
    return buffer.getvalue()


class AudioTokenizer:
    """Encodec at a fixed bandwidth: audio [1, samples] <-> codes [frames, n_codebooks]."""

    def __init__(self, model, bandwidth: float, device: torch.device, model_id: str):
        self.model = model.eval().to(device)
        self.device = device
        self.bandwidth = bandwidth
        config = model.config
        self.sample_rate: int = config.sampling_rate  # 24000
        self.hop_length: int = int(np.prod(config.upsampling_ratios))  # 320 samples per frame
        self.frame_rate: float = self.sample_rate / self.hop_length  # 75.0
        self.n_codebooks: int = model.quantizer.get_num_quantizers_for_bandwidth(bandwidth)  # 2 at 1.5 kbps
        self.id = f"{model_id}@{bandwidth:g}kbps"  # which codes a model was trained on
        # the codes cache's key: CUDA's convolutions (TF32 by default) may give a few other codes than the CPU's,
        # so codes made on another kind of device are cached apart; the CPU keeps the plain id
        self.cache_id = self.id if device.type == "cpu" else f"{self.id}@{device.type}"
        # windows of SEGMENT_SECONDS, both whole numbers of frames
        self.segment = round(SEGMENT_SECONDS * self.frame_rate) * self.hop_length
        self.context = round(CONTEXT_SECONDS * self.frame_rate) * self.hop_length
        self.batch_size = 16 if device.type == "cuda" else 1
        self._silence: np.ndarray | None = None

    @torch.inference_mode()
    def encode(
        self, audio: np.ndarray | torch.Tensor, progress: Callable[[int, int], None] | None = None
    ) -> np.ndarray:
        """audio: [1, samples] (or [samples]) float at 24 kHz -> codes: [ceil(samples / 320), 2] int16 in 0..1023.
        progress: told (segment groups encoded, groups) after each group.

        Memory stays bounded for any length: the song is cut into SEGMENT_SECONDS
        windows, each encoded with CONTEXT_SECONDS of the real neighbouring audio on
        both sides (silence beyond the ends) and the context frames then dropped. The
        convolutions thus see the same audio around every kept frame as in one pass;
        only the encoder's LSTM restarts, one second before the kept frames.
        """
        samples = torch.as_tensor(audio, dtype=torch.float32).reshape(-1)
        n_frames = math.ceil(samples.numel() / self.hop_length)
        # padded: [context | song, rounded up to whole frames | context], silence outside the song
        padded = torch.zeros(n_frames * self.hop_length + 2 * self.context)
        padded[self.context : self.context + samples.numel()] = samples
        span = self.segment + 2 * self.context
        windows = [padded[start : start + span] for start in range(0, n_frames * self.hop_length, self.segment)]
        # every window is `span` long but the last, which is encoded on its own
        groups = [windows[i : i + self.batch_size] for i in range(0, len(windows) - 1, self.batch_size)]
        drop = self.context // self.hop_length
        codes = []
        groups.append(windows[-1:])
        for done, group in enumerate(groups, 1):
            embeddings = self.model.encoder(torch.stack(group).unsqueeze(1).to(self.device))  # [b, 128, frames]
            group_codes = self.model.quantizer.encode(embeddings, self.bandwidth)  # [n_codebooks, b, frames]
            codes.append(group_codes[:, :, drop:-drop].permute(1, 2, 0).reshape(-1, self.n_codebooks))
            if progress:
                progress(done, len(groups))
        return torch.cat(codes)[:n_frames].cpu().numpy().astype(np.int16)

    def silence_codes(self) -> np.ndarray:
        """[n_codebooks] int16: the frame the codec gives digital silence most often (over 2 s of zeros),
        worked out once per tokenizer."""
        if self._silence is None:
            codes = self.encode(np.zeros(2 * self.sample_rate, dtype=np.float32))
            frames, counts = np.unique(codes, axis=0, return_counts=True)
            self._silence = frames[np.argmax(counts)]
        return self._silence

    def codebooks(self) -> torch.Tensor:
        """[n_codebooks, 1024, 128] float32: the vector each code stands for (codebook 1 quantizes the
        residual codebook 0 leaves)."""
        layers = self.model.quantizer.layers[: self.n_codebooks]
        return torch.stack([layer.codebook.embed.detach().float().cpu() for layer in layers])

    @torch.inference_mode()
    def decode(self, codes: np.ndarray | torch.Tensor) -> np.ndarray:
        """codes: [frames, n_codebooks] -> audio: [1, frames * 320] float32 at 24 kHz."""
        codes = torch.as_tensor(np.asarray(codes), dtype=torch.long, device=self.device)
        embeddings = self.model.quantizer.decode(codes.T.unsqueeze(1))  # [1, 128, frames]
        return self.model.decoder(embeddings)[0].cpu().numpy()


def create_audio_tokenizer(
    bandwidth: float = 1.5, device: str | torch.device | None = None, weights: str = ENCODEC_WEIGHTS, seed: int = 0
) -> AudioTokenizer:
    """Encodec 24 kHz from the hub cache or a local directory, or weights="random" for tests.

    The random mode builds the real architecture with seeded random weights and codebooks
    fitted by k-means to its own encoder's output on varied calibration audio, so music
    yields many distinct codes and drum hits get codes of their own (zero or unfitted
    codebooks collapse everything to a few codes). Its id differs from the real one, so
    its tokens never mix with real ones in a cache.
    """
    from transformers import EncodecConfig, EncodecModel

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if weights == RANDOM_WEIGHTS:
        print(
            f"WARNING: Encodec with RANDOM weights (seed {seed}): test mode, its tokens carry no real "
            "audio meaning. Use the pretrained weights for real training and inference.",
            file=sys.stderr,
        )
        model = EncodecModel(EncodecConfig())
        model.load_state_dict(_random_encodec_state(bandwidth, seed))
        return AudioTokenizer(model, bandwidth, device, f"encodec24k-random-kmeans-seed{seed}")
    try:
        model = EncodecModel.from_pretrained(weights)
    except OSError as e:
        raise AudioError(
            f"Encodec weights {weights!r} are not available ({str(e).splitlines()[0]}). Download them once while "
            f"online (python -c \"from transformers import EncodecModel; EncodecModel.from_pretrained('{weights}')\"), "
            "pass a local directory, or use weights='random' for tests."
        ) from None
    name = Path(weights).name if Path(weights).is_dir() else weights
    return AudioTokenizer(model, bandwidth, device, f"encodec24k-{name}")


CALIBRATION_SECONDS = 48  # varied sound the random codebooks are fitted to: ~3,600 frames for 1,024 codes
KMEANS_ITERATIONS = 12


def _calibration_audio(rate: int, rng: np.random.Generator) -> torch.Tensor:
    """[CALIBRATION_SECONDS * rate] float: what music is made of, so that the codes tell its parts apart.

    Chords whose pitches change every 0.25-2 s, under hits of several timbres (pitch-swept
    kicks, noise snares, short bright ticks, tonal toms) at irregular times and loudness,
    with silent gaps; every sound's level varies over about 30 dB.
    """
    n = CALIBRATION_SECONDS * rate
    song = np.zeros(n)
    start = 0
    while start < n:
        length = int(rng.uniform(0.25, 2.0) * rate)
        t = np.arange(min(length, n - start)) / rate
        if rng.random() > 0.15:  # else a silent gap
            for f in 55 * 2 ** rng.uniform(0, 5, rng.integers(1, 4)):
                song[start : start + t.size] += rng.uniform(0.02, 0.3) * np.sin(2 * np.pi * f * t)
        start += length
    for hit in np.sort(rng.uniform(0, CALIBRATION_SECONDS, CALIBRATION_SECONDS * 6)):
        decay, level = rng.uniform(8, 80), 10 ** rng.uniform(-1.5, 0)
        t = np.arange(int(rate * min(0.4, 6 / decay))) / rate
        kind = rng.integers(4)
        if kind == 0:  # kick: a falling sine
            wave = np.sin(2 * np.pi * np.cumsum(40 + rng.uniform(40, 120) * np.exp(-t * 30)) / rate)
        elif kind == 1:  # snare: noise plus a tone
            wave = rng.standard_normal(t.size) + np.sin(2 * np.pi * rng.uniform(150, 300) * t)
        elif kind == 2:  # hat: differentiated noise, bright
            wave = np.diff(rng.standard_normal(t.size + 1))
        else:  # tom or pluck
            wave = np.sin(2 * np.pi * rng.uniform(80, 900) * t)
        first = int(hit * rate)
        piece = (level * wave * np.exp(-t * decay))[: n - first]
        song[first : first + piece.size] += piece
    return torch.from_numpy(0.9 * song / np.abs(song).max()).float()


def _kmeans(points: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """points: [n, dim] -> [k, dim] centroids (Lloyd's algorithm from k distinct points; n >= k)."""
    centroids = points[torch.randperm(len(points), generator=generator)[:k]].clone()
    for _ in range(KMEANS_ITERATIONS):
        nearest = torch.cdist(points, centroids).argmin(1)  # [n] centroid index
        counts = torch.bincount(nearest, minlength=k)
        sums = torch.zeros_like(centroids).index_add_(0, nearest, points)
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled, None]
    return centroids


@functools.lru_cache(maxsize=4)
def _random_encodec_state(bandwidth: float, seed: int) -> dict[str, torch.Tensor]:
    """The random test mode's weights, fitted once per process (a few seconds of encoding)."""
    from transformers import EncodecConfig, EncodecModel

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = EncodecModel(EncodecConfig())
    _fit_random_codebooks(model, bandwidth, seed)
    return model.state_dict()


@torch.inference_mode()
def _fit_random_codebooks(model, bandwidth: float, seed: int) -> None:
    """Fit each used codebook by k-means to what it quantizes on varied calibration audio.

    Codebooks drawn at random around the embeddings' mean put most frames of any song on
    a handful of codes, so drum hits and the sound between them often share a code; centroids
    of real embeddings follow what the encoder tells apart.
    """
    generator = torch.Generator().manual_seed(seed)
    audio = _calibration_audio(model.config.sampling_rate, np.random.default_rng(seed))
    residual = model.encoder(audio.view(1, 1, -1))[0].T  # [frames, 128] embeddings, 75 frames/s
    for layer in model.quantizer.layers[: model.quantizer.get_num_quantizers_for_bandwidth(bandwidth)]:
        book = layer.codebook
        book.embed.copy_(_kmeans(residual, book.embed.shape[0], generator))
        residual = residual - book.embed[book.encode(residual[None])[0]]


# ---------------------------------------------------------------- tempo and first beat

TRACKERS = ("essentia", "librosa")
ONSET_RATE = 22050  # onset envelope: librosa spectral flux at this rate ...
ONSET_HOP = 128  # ... one value per 5.8 ms
ENVELOPE_RATE = ONSET_RATE / ONSET_HOP  # onset envelope frames per second
LOCAL_MEAN_FRAMES = 64  # envelope minus its 0.37 s moving mean: onsets stand out of loud passages
PHASE_BINS = 96  # a beat's fold profile resolution (6 ms at 60 BPM)
COARSE_SPAN, COARSE_STEPS = 0.03, 601  # refine within +-3% in steps of 0.01% ...
FINE_SPAN, FINE_STEPS = 0.0003, 201  # ... then within +-0.03% in steps of 0.0003%
ON_GRID_BEATS = 0.1  # a stretch of song whose onsets peak this close to the grid's beat agrees with it
TEMPO_RANGE = (50.0, 320.0)  # BPM: candidates outside are dropped
RELATIVES = (1.0, 2.0, 1 / 2, 3 / 2, 2 / 3, 4 / 3, 3 / 4)  # the metrical relatives of every candidate
AUTOCORRELATION_PEAKS = 4  # candidates from the onset envelope's autocorrelation
SAME_CANDIDATE = 0.005  # refined candidates closer than this (relative) are one
# The prior over the tempi mappers choose: log-normal, fitted to the Info BPMs of the 14 human
# levels of distinct songs in ../shared/fixtures/maps (70-240 BPM): geometric mean 139.5 BPM,
# log standard deviation 0.374. Refit it from a scrape manifest's bpm column with bpm_prior().
PRIOR_BPM, PRIOR_LOG_SD = 139.5, 0.374
# A candidate's score: log fold sharpness + PRIOR_WEIGHT x log prior + TRACKER_BONUS for the tracker's own
# tempo (essentia picks the mapper's metrical level on 6 of the 7 fixture songs, a tempo from elsewhere has
# to fold e^1.5 = 4.5x sharper to beat it). Chosen by a grid search over these 7 songs and 8 synthetic ones
# (bench_tempo.py): few songs, so treat them as a starting point to refit on more.
PRIOR_WEIGHT, TRACKER_BONUS = 0.5, 1.5
SEGMENT_BEATS = 16  # the grid check folds the song this many beats at a time
STEADY_SHARE = 0.8  # below this share of stretches on one grid the tempo is doubtful (or changes)
CLEAR_MARGIN = math.log(2)  # the best candidate this far ahead of the next (in score) is clearly ahead
MIN_SEGMENT_BEATS = 4  # a tempo region of the beat curve spans at least this many beats
CHANGE_SHARE = 0.02  # local tempi this far apart are a tempo change, not tracker jitter
CURVE_GAIN = 1.25  # a changing tempo must make the onsets hit its beats this much more than one tempo does ...
CURVE_HIT = 2.0  # ... and hit them this clearly (fold peak at the beats, in envelope standard deviations)
DP_TIGHTNESS = 100.0  # beat-interval penalty per squared log-ratio to the local period (librosa's default)
CURVE_LEVELS = (1.0, 2.0, 0.5)  # a changing tempo's beats: at the tracker's metrical level, or an octave off
LEVEL_MARGIN = math.log(1.5)  # the best level this far ahead of the next (_level_score) is clearly ahead
REGION_BEATS = 16  # a stretch of beats this long at one tempo is refitted on the onsets as one grid
REGION_RELATIVES = (3 / 2, 2 / 3, 4 / 3, 3 / 4)  # a tracker's region may be off the song's pulse by 3:2 or 4:3 ...
REGION_GAIN = 1.5  # ... when a relative folds this much sharper than the tracker's tempo
REGION_SPAN, REGION_STEPS = 0.01, 41  # a region's tempo refined within +-1% ...
REGION_FINE_SPAN, REGION_FINE_STEPS = 0.001, 21  # ... then within +-0.1%
REGION_PHASE_GAIN = 1.2  # a region grid off the tracker's phase must hit onsets this much stronger there
PHASE_KEPT = 0.25  # beats: inside a long run at one tempo, refinement may move a beat this far, no further
GRID_REACH = 2  # envelope frames (12 ms): a region's grid beat is judged by the onset peak this close


class Candidate(NamedTuple):
    bpm: float
    score: float  # log fold sharpness + weighted log prior + the tracker's bonus: higher is better
    sharpness: float  # fold peak above its mean, in envelope standard deviations
    source: str  # where it came from: "tracker", "autocorrelation", and "x3/2" etc. for relatives


class Tempo(NamedTuple):
    bpm: float  # one tempo; for a changing song, the tempo of its first beats
    first_beat: float  # seconds: the earliest beat of the grid, in [0, 60 / bpm)
    confidence: float  # 0..1: min(margin of the best candidate over the next, share of the song on the grid)
    tracker: str
    candidates: tuple[Candidate, ...] = ()  # best first
    beats: np.ndarray | None = None  # when the tempo changes: [beats] seconds of every beat, first_beat first
    steady_share: float = 1.0  # share of SEGMENT_BEATS stretches whose onsets peak on the grid's beats

    @property
    def doubtful(self) -> bool:
        return self.confidence < 0.5


def bpm_prior(bpms: np.ndarray) -> tuple[float, float]:
    """BPMs of real maps (a scrape manifest's bpm column) -> (PRIOR_BPM, PRIOR_LOG_SD): their
    geometric mean and log standard deviation, ignoring non-positive entries."""
    logs = np.log(np.asarray(bpms, dtype=np.float64)[np.asarray(bpms) > 0])
    return float(np.exp(logs.mean())), float(logs.std(ddof=1))


def _log_prior(bpm: float) -> float:
    return -0.5 * (math.log(bpm / PRIOR_BPM) / PRIOR_LOG_SD) ** 2


def available_tracker() -> str:
    """The best beat tracker installed: essentia (Linux/macOS wheels) picks the mapper's
    metrical level far more often on real maps; librosa runs everywhere."""
    try:
        import essentia  # noqa: F401
    except ImportError:
        return "librosa"
    return "essentia"


def _tracked_beats(samples: np.ndarray, sample_rate: int, onset_audio: np.ndarray, tracker: str) -> np.ndarray:
    """samples: [n] mono, onset_audio: the same at ONSET_RATE -> beat times in seconds: [beats] float."""
    if tracker == "essentia":
        import essentia

        essentia.log.infoActive = essentia.log.warningActive = False
        import essentia.standard as es

        y = np.ascontiguousarray(_resampled(samples, sample_rate, 44100), dtype=np.float32)
        _, beats, *_ = es.RhythmExtractor2013(method="multifeature")(y)
        return np.asarray(beats, dtype=np.float64)
    import librosa

    _, beats = librosa.beat.beat_track(y=onset_audio, sr=ONSET_RATE, units="time")
    return np.asarray(beats, dtype=np.float64)


def _onset_envelope(onset_audio: np.ndarray) -> np.ndarray:
    """onset_audio: [n] mono at ONSET_RATE -> onset strength minus its local mean: [frames] float,
    ENVELOPE_RATE per second."""
    import librosa

    return _minus_local_mean(
        librosa.onset.onset_strength(y=onset_audio, sr=ONSET_RATE, hop_length=ONSET_HOP, n_fft=1024)
    )


def onset_peaks(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """samples: [n] mono -> [frames] float at ENVELOPE_RATE: the strongest onset (spectral flux above its local
    mean) within GRID_REACH envelope frames of each frame."""
    return _onset_peaks(_onset_envelope(_resampled(samples, sample_rate, ONSET_RATE)), GRID_REACH)


def onset_strengths(peaks: np.ndarray, times: np.ndarray) -> np.ndarray:
    """peaks: [frames] (onset_peaks); times: [k] seconds -> [k] float: the onset peak at each time; 0 past the
    song's end."""
    frames = np.round(np.asarray(times, dtype=np.float64) * ENVELOPE_RATE).astype(np.int64)
    inside = (frames >= 0) & (frames < peaks.size)
    return np.where(inside, peaks[np.clip(frames, 0, peaks.size - 1)], 0.0)


def _minus_local_mean(envelope: np.ndarray) -> np.ndarray:
    """[frames] onset strength minus its LOCAL_MEAN_FRAMES moving mean: onsets stand out of loud passages."""
    return envelope - np.convolve(envelope, np.ones(LOCAL_MEAN_FRAMES) / LOCAL_MEAN_FRAMES, mode="same")


def _fold(envelope: np.ndarray, bpm: float) -> np.ndarray:
    """The envelope folded onto one beat at this tempo: [PHASE_BINS] mean onset strength per phase."""
    frames_per_beat = 60 / bpm * ENVELOPE_RATE
    bins = ((np.arange(envelope.size) / frames_per_beat) % 1 * PHASE_BINS).astype(np.int64)
    counts = np.bincount(bins, minlength=PHASE_BINS)
    return np.bincount(bins, weights=envelope, minlength=PHASE_BINS) / np.maximum(counts, 1)


def _best_bpm(envelope: np.ndarray, bpm: float, span: float, steps: int) -> float:
    """The tempo within bpm * (1 +- span) whose fold has the sharpest peak: the grid the
    song's onsets line up with over its whole length."""
    candidates = bpm * np.linspace(1 - span, 1 + span, steps)
    return float(candidates[np.argmax([_fold(envelope, c).max() for c in candidates])])


def _first_beat(envelope: np.ndarray, bpm: float) -> float:
    """Seconds in [0, 60 / bpm): the phase of the fold's peak, where the onsets cluster."""
    return (int(np.argmax(_fold(envelope, bpm))) + 0.5) / PHASE_BINS * 60 / bpm


LOW_BAND_HZ = 250  # the kick drum's band: its onsets mark the beat where the full band's peak sits off it


def _low_band_envelope(onset_audio: np.ndarray) -> np.ndarray:
    """onset_audio: [n] mono at ONSET_RATE -> the onset strength below LOW_BAND_HZ minus its local mean:
    [frames] float, ENVELOPE_RATE per second (as _onset_envelope)."""
    import librosa

    bands = librosa.feature.melspectrogram(
        y=onset_audio, sr=ONSET_RATE, hop_length=ONSET_HOP, n_fft=1024, fmax=LOW_BAND_HZ, n_mels=16
    )
    return _minus_local_mean(librosa.onset.onset_strength(S=librosa.power_to_db(bands), sr=ONSET_RATE))


def _half_beat_checked(onset_audio: np.ndarray, tracked: np.ndarray, bpm: float, first_beat: float) -> float:
    """first_beat, or half a beat later where both the tracker's beats and the low band's onsets (kicks)
    sit on that other half: on songs whose offbeats (hats, bass) are the loudest onsets the fold peaks
    between the beats. Either witness alone moves a right phase as often as a wrong one."""
    period = 60 / bpm
    other = (first_beat + period / 2) % period
    # offset: [beats] each tracked beat's place after first_beat, in beats 0..1; near 1/2 is the other half
    offset = ((tracked - first_beat) / period) % 1
    by_tracker = np.mean(np.abs(offset - 0.5) < 0.25) > 0.5
    low = _fold(_low_band_envelope(onset_audio), bpm)  # [PHASE_BINS]
    index = [int(phase / period * PHASE_BINS) % PHASE_BINS for phase in (first_beat, other)]
    return other if by_tracker and low[index[1]] > low[index[0]] else first_beat


def estimate_first_beat(samples: np.ndarray, sample_rate: int, bpm: float) -> float:
    """samples: [n] mono float, its known tempo -> seconds of its first beat, in [0, 60 / bpm)."""
    return _first_beat(_onset_envelope(_resampled(samples, sample_rate, ONSET_RATE)), bpm)


def _autocorrelation_bpms(envelope: np.ndarray) -> list[float]:
    """The tempi of the AUTOCORRELATION_PEAKS highest peaks of the envelope's autocorrelation
    within TEMPO_RANGE: the periods the song repeats at, whatever a tracker makes of them."""
    spectrum = np.fft.rfft(envelope, 2 * envelope.size)
    correlation = np.fft.irfft(np.abs(spectrum) ** 2)[: envelope.size]  # [lags]
    lags = np.arange(math.floor(60 * ENVELOPE_RATE / TEMPO_RANGE[1]), math.ceil(60 * ENVELOPE_RATE / TEMPO_RANGE[0]))
    values = correlation[lags]
    peaks = np.flatnonzero((values[1:-1] > values[:-2]) & (values[1:-1] >= values[2:])) + 1
    best = peaks[np.argsort(values[peaks])[::-1][:AUTOCORRELATION_PEAKS]]
    # a peak's lag refined to a fraction of a frame by a parabola through it and its neighbours
    a, b, c = values[best - 1], values[best], values[best + 1]
    shift = 0.5 * (a - c) / np.where(a - 2 * b + c == 0, -1, a - 2 * b + c)
    return [float(60 * ENVELOPE_RATE / (lags[i] + s)) for i, s in zip(best, shift)]


def tempo_candidates(envelope: np.ndarray, tracker_bpm: float | None) -> list[Candidate]:
    """envelope: [frames] onset envelope -> every candidate tempo, best first. Sources: the tracker's
    tempo and the autocorrelation's peaks, each with its metrical relatives (RELATIVES); each is
    refined over the whole song (the sharpest fold within +-3%, then +-0.03%) and scored the same way:
    log fold sharpness + PRIOR_WEIGHT x log prior (the tempi mappers choose) + TRACKER_BONUS for the
    tracker's own tempo."""
    sources = [(tracker_bpm, "tracker")] if tracker_bpm else []
    sources += [(bpm, "autocorrelation") for bpm in _autocorrelation_bpms(envelope)]
    spread = max(float(envelope.std()), 1e-9)
    found: list[Candidate] = []
    for base, source in sources:
        for ratio, name in zip(RELATIVES, ("", "x2", "x1/2", "x3/2", "x2/3", "x4/3", "x3/4")):
            bpm = base * ratio
            if not TEMPO_RANGE[0] <= bpm <= TEMPO_RANGE[1]:
                continue
            if any(abs(c.bpm / bpm - 1) < COARSE_SPAN / 2 for c in found):
                continue  # already refined from a nearby start
            bpm = _best_bpm(envelope, _best_bpm(envelope, bpm, COARSE_SPAN, COARSE_STEPS), FINE_SPAN, FINE_STEPS)
            if any(abs(c.bpm / bpm - 1) < SAME_CANDIDATE for c in found):
                continue
            fold = _fold(envelope, bpm)
            sharpness = max(float(fold.max() - fold.mean()) / spread, 1e-9)
            label = f"{source} {name}".strip()
            score = math.log(sharpness) + PRIOR_WEIGHT * _log_prior(bpm) + TRACKER_BONUS * (label == "tracker")
            found.append(Candidate(bpm, score, sharpness, label))
    return sorted(found, key=lambda c: -c.score)


def _grid_times(bpm: float, first_beat: float, seconds: float) -> np.ndarray:
    """[beats] seconds of every beat of one tempo from first_beat to past `seconds`."""
    return first_beat + 60 / bpm * np.arange(math.ceil((seconds - first_beat) * bpm / 60) + 2)


def _stretch_folds(envelope: np.ndarray, times: np.ndarray, stretch_frames: int) -> np.ndarray:
    """envelope: [frames], times: [beats] seconds of a beat grid -> [stretches, 3]: per stretch of
    stretch_frames frames from the grid's first beat on, its onset activity (mean positive envelope),
    how strongly its onsets hit the grid's beats (the fold's peak within ON_GRID_BEATS of a beat above
    the fold's mean, in envelope standard deviations) and the distance of the fold's peak from a beat."""
    frame_times = np.arange(envelope.size) / ENVELOPE_RATE
    position = np.interp(frame_times, times, np.arange(times.size, dtype=np.float64))  # [frames] beats
    near = np.abs((np.arange(PHASE_BINS) + 0.5) / PHASE_BINS - 0.5) >= 0.5 - ON_GRID_BEATS  # bins by a beat
    spread = max(float(envelope.std()), 1e-9)
    rows = []
    for start in range(int(times[0] * ENVELOPE_RATE), envelope.size - stretch_frames // 2, stretch_frames):
        part = slice(max(start, 0), start + stretch_frames)
        bins = (position[part] % 1 * PHASE_BINS).astype(np.int64)
        fold = np.bincount(bins, envelope[part], PHASE_BINS) / np.maximum(np.bincount(bins, None, PHASE_BINS), 1)
        peak = (int(np.argmax(fold)) + 0.5) / PHASE_BINS
        hit = (float(fold[near].max()) - float(fold.mean())) / spread
        rows.append((float(np.maximum(envelope[part], 0).mean()), hit, min(peak, 1 - peak)))
    return np.array(rows).reshape(-1, 3)


def _stretch_frames(times: np.ndarray) -> int:
    return max(1, round(SEGMENT_BEATS * float(np.median(np.diff(times))) * ENVELOPE_RATE))


def steady_share(envelope: np.ndarray, times: np.ndarray) -> float:
    """envelope: [frames], times: [beats] seconds of a beat grid (one tempo or a curve) -> the share
    of its SEGMENT_BEATS-beat stretches, weighted by their onset activity (quiet ones count little),
    whose onsets peak within ON_GRID_BEATS of the grid's beats. 1 for a song that stays on the grid."""
    folds = _stretch_folds(envelope, times, _stretch_frames(times))
    total = folds[:, 0].sum()
    return float((folds[:, 0] * (folds[:, 2] <= ON_GRID_BEATS)).sum() / total) if total else 0.0


def _hits(envelope: np.ndarray, times: np.ndarray, grid: np.ndarray) -> tuple[float, float]:
    """How strongly the song's onsets hit the beats of `times` and those of `grid`: stretch by stretch over
    the same frames, the fold's peak at the beats in envelope standard deviations, activity-weighted."""
    frames = _stretch_frames(grid)
    a, b = _stretch_folds(envelope, times, frames), _stretch_folds(envelope, grid, frames)
    count = min(len(a), len(b))
    weights = b[:count, 0] if b[:count, 0].sum() > 0 else np.ones(count)
    first, second = (float(np.average(np.maximum(f[:count, 1], 0), weights=weights)) for f in (a, b))
    return first, second


def _segment_fit(x: np.ndarray, y: np.ndarray, penalty: float) -> np.ndarray:
    """Points (x ascending, y) -> [len(x)] y fitted by straight lines over contiguous runs of at least
    MIN_SEGMENT_BEATS points, the runs chosen to minimise squared error + penalty per run (dynamic
    programming over every split; sums of squares from prefix sums)."""
    n = x.size
    p = [np.r_[0.0, np.cumsum(v)] for v in (np.ones(n), x, y, x * x, x * y, y * y)]

    def sse(i: np.ndarray, j: int) -> np.ndarray:
        # squared residuals of the least-squares line through points i..j-1, for every start i
        k, sx, sy, sxx, sxy, syy = (q[j] - q[i] for q in p)
        vx, cxy, vy = sxx - sx * sx / k, sxy - sx * sy / k, syy - sy * sy / k
        return np.maximum(vy - cxy * cxy / np.maximum(vx, 1e-12), 0.0)

    best, cut = np.full(n + 1, np.inf), np.zeros(n + 1, dtype=np.int64)
    best[0] = 0.0
    for j in range(MIN_SEGMENT_BEATS, n + 1):
        starts = np.arange(0, j - MIN_SEGMENT_BEATS + 1)
        starts = starts[(starts == 0) | (starts >= MIN_SEGMENT_BEATS)]
        costs = best[starts] + sse(starts, j) + penalty
        cut[j], best[j] = starts[np.argmin(costs)], costs.min()
    fitted, j = np.empty(n), n
    while j > 0:
        i = int(cut[j])
        slope, intercept = np.polyfit(x[i:j], y[i:j], 1)
        fitted[i:j] = slope * x[i:j] + intercept
        j = i
    return fitted


def beat_curve(beats: np.ndarray) -> np.ndarray:
    """beats: [n] tracked beat times (seconds, ascending, some missed or doubled) -> [m] seconds of
    every beat at the tracker's usual level, fitted by tempo regions: straight lines (one tempo each) joined
    where the tempo steps, and short ones where it ramps. Where the tracker ran at half or double its
    usual tempo for a while (its local period more than sqrt 2 off its median), that stretch is taken at
    the usual level too: a tempo change is one level throughout, as mappers write it."""
    gaps = np.diff(beats)  # [n - 1]
    local = np.array([np.median(gaps[max(0, i - 4) : i + 5]) for i in range(gaps.size)])  # local period
    period = local / 2.0 ** np.round(np.log2(local / np.median(gaps)))  # [n - 1] at the usual level
    kept = [0]  # a double-tempo stretch keeps every other beat; a half-tempo one misses every other
    for k in range(1, beats.size):
        if beats[k] - beats[kept[-1]] >= 0.75 * period[k - 1]:
            kept.append(k)
    beats, period = beats[kept], period[np.array(kept[1:], dtype=np.int64) - 1]
    gaps = np.diff(beats)  # [m - 1]
    index = np.r_[0, np.cumsum(np.maximum(1, np.round(gaps / period)))].astype(np.float64)  # [m] beat numbers
    # tracker jitter from second differences of beat times (std = jitter * sqrt(6) on a steady grid)
    second = np.diff(gaps / np.diff(index))
    jitter = max(1.4826 * float(np.median(np.abs(second - np.median(second)))) / math.sqrt(6), 0.002)
    trend = np.polyval(np.polyfit(index, beats, 1), index)
    fitted = _segment_fit(index, beats - trend, 6 * math.log(max(beats.size, 2)) * jitter**2) + trend
    every = np.arange(index[-1] + 1)
    return np.interp(every, index, fitted)  # beats the tracker missed lie on their region's line


def _extended(times: np.ndarray, seconds: float) -> np.ndarray:
    """[k] beat times -> the same with beats added before and after at the nearest beat's period, so
    that they cover 0..seconds."""
    before = math.ceil(times[0] / (times[1] - times[0])) + 1
    after = math.ceil((seconds - times[-1]) / (times[-1] - times[-2])) + 2
    times = np.r_[times[0] - (times[1] - times[0]) * np.arange(before, 0, -1), times]
    return np.r_[times, times[-1] + (times[-1] - times[-2]) * np.arange(1, max(after, 0) + 1)]


def _from_zero(times: np.ndarray) -> np.ndarray:
    """[k] beat times -> those at or after the song's start (all of them if fewer than two are)."""
    return times[times >= 0] if (times >= 0).sum() > 1 else times


def _envelope_beats(envelope: np.ndarray, guide: np.ndarray) -> np.ndarray:
    """envelope: [frames], guide: [k] seconds of beats whose spacing gives the local tempo -> [n] seconds
    of beats on the song's onsets: dynamic programming over frames (each beat scores its onset strength,
    each interval a penalty growing with its log-ratio to the guide's local period), so a tracker's beat
    that slipped onto the off-beat, or lagged a tempo change, comes back to the onsets."""
    local = np.maximum(envelope, 0) / max(float(envelope.std()), 1e-9)  # [frames]
    frame_times = np.arange(envelope.size) / ENVELOPE_RATE
    period = np.interp(frame_times, guide[:-1], np.diff(guide)) * ENVELOPE_RATE  # [frames] frames per beat
    score, back = local.copy(), np.full(envelope.size, -1)
    for t in range(envelope.size):
        lo, hi = max(0, t - round(2 * period[t])), t - round(period[t] / 2)
        if hi <= lo:
            continue
        gaps = t - np.arange(lo, hi)
        total = score[lo:hi] - DP_TIGHTNESS * np.log(gaps / period[t]) ** 2
        best = int(np.argmax(total))
        score[t] += total[best]
        back[t] = lo + best
    last_period = round(period[-1])
    beat = envelope.size - last_period + int(np.argmax(score[-last_period:]))
    chain = [beat]
    while back[chain[-1]] >= 0:
        chain.append(int(back[chain[-1]]))
    return np.array(chain[::-1], dtype=np.float64) / ENVELOPE_RATE


def _region_phase_kept(times: np.ndarray, refined: np.ndarray) -> np.ndarray:
    """times: [k] beats whose long runs at one tempo were phased by each run's whole fold (_region_beats),
    refined: [n] the same moved onto the onsets (_envelope_beats) -> refined, except that inside each long
    run a beat moved more than PHASE_KEPT of a beat off times' beats gives way to times' own there. A run's
    quiet passages (a lead-in of hats, a rest under an off-beat bass) have their loudest onsets between the
    beats; the run's whole fold, kicks and snares included, decides their phase, not their own onsets."""
    period = np.interp(refined, times[:-1], np.diff(times))  # [n] seconds per beat about each refined beat
    offset = np.abs(refined[:, None] - times[None, :]).min(axis=1) / period  # [n] beats off times' nearest
    inside = np.zeros(refined.size, dtype=bool)
    own = []
    for i, j in _tempo_runs(times):
        if j - i >= REGION_BEATS:
            inside |= (refined >= times[i]) & (refined < times[j])
            own.append(times[i:j])
    moved = inside & (offset > PHASE_KEPT)
    if not moved.any():
        return refined
    kept = refined[~moved]  # [m] refined beats that stayed near the run's phase, or lie outside long runs
    restored = np.concatenate(own) if own else times[:0]
    restored = restored[np.abs(restored[:, None] - kept[None, :]).min(axis=1) > PHASE_KEPT * np.median(np.diff(times))]
    return np.sort(np.concatenate([kept, restored]))


def _tempo_runs(times: np.ndarray) -> list[tuple[int, int]]:
    """times: [k] beat times -> [(i, j)] beat index ranges (beats i..j) of one tempo each: runs whose
    local period (median over +-4 beats, so one odd interval where two fitted lines meet is no change)
    stays within CHANGE_SHARE of the run's first; two REGION_BEATS runs at the same tempo with only
    short ones between (the tracker slipped off the beat and back) are one run."""
    gaps = np.diff(times)  # [k - 1] seconds per beat
    local = np.array([np.median(gaps[max(0, k - 4) : k + 5]) for k in range(gaps.size)])
    runs, start = [], 0
    for k in range(1, gaps.size + 1):
        if k == gaps.size or abs(local[k] / local[start] - 1) > CHANGE_SHARE:
            runs.append((start, k))
            start = k
    merged: list[tuple[int, int]] = []
    for run in runs:
        long = [m for m, (i, j) in enumerate(merged) if j - i >= REGION_BEATS]
        if run[1] - run[0] >= REGION_BEATS and long:
            i, j = merged[long[-1]]
            same = abs(np.median(gaps[run[0] : run[1]]) / np.median(gaps[i:j]) - 1) <= CHANGE_SHARE
            if same and run[0] - j < REGION_BEATS:
                merged[long[-1] :] = [(i, run[1])]
                continue
        merged.append(run)
    return merged


def _region_grid(envelope: np.ndarray, start: float, end: float, bpm: float) -> tuple[float, float]:
    """The onsets from start to end seconds, whose beats run at about bpm -> (tempo, a beat's seconds) of
    the one grid they fold onto best: bpm, or a 3:2 / 4:3 relative (a tracker that locked onto a
    dotted or triplet pulse) that folds REGION_GAIN times sharper, the best of those by sharpness and
    prior as tempo_candidates scores a song; then refined and phased."""
    part = envelope[max(int(start * ENVELOPE_RATE), 0) : int(end * ENVELOPE_RATE)]  # [frames]

    def sharpness(tempo: float) -> float:
        fold = _fold(part, tempo)
        return max(float(fold.max() - fold.mean()), 1e-12)

    tempo = _best_bpm(part, bpm, REGION_SPAN, REGION_STEPS)
    relatives = [_best_bpm(part, tempo * ratio, REGION_SPAN, REGION_STEPS) for ratio in REGION_RELATIVES]
    relatives = [t for t in relatives if TEMPO_RANGE[0] <= t <= TEMPO_RANGE[1]]
    relatives = [t for t in relatives if sharpness(t) >= REGION_GAIN * sharpness(tempo)]
    if relatives:
        tempo = max(relatives, key=lambda t: math.log(sharpness(t)) + PRIOR_WEIGHT * _log_prior(t))
    tempo = _best_bpm(part, tempo, REGION_FINE_SPAN, REGION_FINE_STEPS)
    return tempo, max(start, 0.0) + _first_beat(part, tempo)


def _onset_strength(envelope: np.ndarray, times: np.ndarray) -> float:
    """Mean envelope at the frames of these beats (0 without any in the song)."""
    frames = np.round(times * ENVELOPE_RATE).astype(np.int64)
    frames = frames[(frames >= 0) & (frames < envelope.size)]
    return float(envelope[frames].mean()) if frames.size else 0.0


def _onset_peaks(envelope: np.ndarray, reach: int) -> np.ndarray:
    """[frames] the envelope's strongest value within `reach` frames of each frame."""
    return np.max([np.roll(envelope, shift) for shift in range(-reach, reach + 1)], axis=0)


def _grid_wins(peaks: np.ndarray, grid: np.ndarray, own: np.ndarray) -> bool:
    """peaks: [frames] onset peaks (_onset_peaks), grid: [g] a region's single-grid beats, own: [k] the
    tracker's beats over the same span -> whether the grid replaces them. Where the two keep the same
    phase the one on stronger onsets wins; where they sit more than PHASE_KEPT of a beat apart (one of
    them on the off-beat) the grid must hit REGION_PHASE_GAIN times stronger onsets there: when a
    passage's on- and off-beats are about as loud, the tracker's model of the metre is the better witness."""
    if own.size < 2 or grid.size < 2:
        return _onset_strength(peaks, grid) >= _onset_strength(peaks, own)
    period = float(np.median(np.diff(own)))
    apart = np.abs(own[:, None] - grid[None, :]).min(axis=1) > PHASE_KEPT * period  # [k] own beats off the grid
    if not apart.any():
        return _onset_strength(peaks, grid) >= _onset_strength(peaks, own)
    grid_apart = grid[np.abs(grid[:, None] - own[None, :]).min(axis=1) > PHASE_KEPT * period]
    return _onset_strength(peaks, grid_apart) >= REGION_PHASE_GAIN * _onset_strength(peaks, own[apart])


def _region_beats(envelope: np.ndarray, times: np.ndarray, duration: float) -> np.ndarray:
    """times: [k] beat times following a tracker -> [n] the same with every long stretch at one tempo
    (_tempo_runs) replaced by the single grid its onsets fold onto (_region_grid), where that grid's
    beats hit stronger onsets: a tracker that slipped onto the off-beat, or onto a dotted pulse, for
    part of a region comes back, since the whole region decides. Short runs (ramps, the beats around
    a step) keep the tracker's beats; the first and last grids reach the song's ends."""
    peaks = _onset_peaks(envelope, GRID_REACH)  # [frames]
    pieces = []
    for i, j in _tempo_runs(times):
        own = times[i:j]
        if j - i < REGION_BEATS:
            pieces.append(own)
            continue
        bpm, beat = _region_grid(envelope, times[i], times[j], 60 / float(np.median(np.diff(times[i : j + 1]))))
        period = 60 / bpm
        start = 0.0 if i == 0 else times[i] - period / 2
        end = duration if j == times.size - 1 else times[j] - period / 2
        grid = beat + period * np.arange(math.floor((start - beat) / period), math.ceil((end - beat) / period) + 1)
        grid = grid[(grid >= start) & (grid < end)]
        within = own[(own >= start) & (own < end)]
        pieces.append(grid if _grid_wins(peaks, grid, within) else own)
    beats = np.sort(np.concatenate([*pieces, times[-1:]]))
    # where two pieces meet, a beat closer than half the local period to the one before is the same beat
    period = np.interp(beats, times[:-1], np.diff(times))
    kept = [0]
    for k in range(1, beats.size):
        if beats[k] - beats[kept[-1]] > period[k] / 2:
            kept.append(k)
    return beats[kept]


def _curve_at(curve: np.ndarray, ratio: float, envelope: np.ndarray, seconds: float) -> np.ndarray:
    """curve: [m] seconds of the tracker's beats -> [k] seconds of every beat at `ratio` times its tempo,
    extended at the song's ends by the nearest beat's period and shifted by the fraction of a beat
    (within half one) whose beats sit on the strongest onsets, from its first beat on."""
    position = np.arange(0, (curve.size - 1) * ratio + 1) / ratio  # [k] tracker beats
    times = _extended(np.interp(position, np.arange(curve.size), curve), seconds)
    shifts = np.linspace(-0.5, 0.5, 101)[:-1]
    beat_numbers = np.arange(times.size, dtype=np.float64)

    def onsets(shift: float) -> float:
        at = np.interp(beat_numbers + shift, beat_numbers, times)
        frames = np.round(at * ENVELOPE_RATE).astype(np.int64)
        return float(envelope[frames[(frames >= 0) & (frames < envelope.size)]].sum())

    shift = shifts[np.argmax([onsets(s) for s in shifts])]
    return _from_zero(np.interp(beat_numbers + shift, beat_numbers, times))


def estimate_tempo(samples: np.ndarray, sample_rate: int, tracker: str | None = None) -> Tempo:
    """samples: [n] mono float -> the song's tempo, first beat, how sure that is, and for a song
    whose tempo changes, every beat.

    Candidates come from the beat tracker and the onset envelope's autocorrelation, with their
    metrical relatives; each is refined by folding the whole song's onsets (a 1% error drifts a
    64-beat window by most of a beat, a fold's peak blurs at any error) and scored by its fold's
    sharpness and a prior over the tempi mappers choose. The first beat is the fold's peak phase, or
    half a beat later where the tracker and the kick band both put the beat there (_half_beat_checked).
    When the onsets leave the best single grid (steady_share below STEADY_SHARE), or that grid is
    doubtful, and the tracker's beats, fitted by tempo regions, follow them better, the tempo
    changes: `beats` holds them.
    """
    tracker = tracker or available_tracker()
    onset_audio = _resampled(samples, sample_rate, ONSET_RATE)  # [n * ONSET_RATE / sample_rate] mono
    beats = _tracked_beats(samples, sample_rate, onset_audio, tracker)
    duration = samples.size / sample_rate
    if beats.size < 2:
        raise AudioError(f"no beat found in {duration:.1f} s of audio: pass --bpm and --offset")
    envelope = _onset_envelope(onset_audio)
    candidates = tempo_candidates(envelope, 60 / float(np.median(np.diff(beats))))
    best = candidates[0]
    first_beat = _half_beat_checked(onset_audio, beats, best.bpm, _first_beat(envelope, best.bpm))
    grid = _grid_times(best.bpm, first_beat, duration)  # [beats] seconds of the best single tempo's beats
    share = steady_share(envelope, grid)
    margin = best.score - candidates[1].score if len(candidates) > 1 else CLEAR_MARGIN
    tempo = Tempo(best.bpm, first_beat, min(margin / CLEAR_MARGIN, share, 1.0), tracker, tuple(candidates), None, share)
    change = (
        None
        if (share >= STEADY_SHARE and not tempo.doubtful) or beats.size < 2 * SEGMENT_BEATS
        else _tempo_change(envelope, beats, grid, duration)
    )
    if change is None or change[1] < share:
        return tempo
    times, curve_share, confidence = change
    bpm = float(np.median(60 / np.diff(times[: SEGMENT_BEATS + 1])))
    return Tempo(bpm, float(times[0]), confidence, tracker, tuple(candidates), times, curve_share)


def _level_score(envelope: np.ndarray, times: np.ndarray) -> float:
    """How well beats at one metrical level fit the song: the log of the mean onset strength at them
    (a level too fast adds weak beats, one off the beat misses the strong ones) + PRIOR_WEIGHT x the
    log prior of their median tempo, the scale tempo_candidates scores a single tempo on."""
    strength = max(_onset_strength(envelope, times) / max(float(envelope.std()), 1e-9), 1e-9)
    return math.log(strength) + PRIOR_WEIGHT * _log_prior(60 / float(np.median(np.diff(times))))


def _tempo_change(
    envelope: np.ndarray, beats: np.ndarray, grid: np.ndarray, duration: float
) -> tuple[np.ndarray, float, float] | None:
    """envelope: [frames], beats: [n] the tracker's beat times, grid: [k] the best single tempo's beats,
    duration: the song's seconds -> (seconds of every beat, their steady share, confidence) when the
    song's tempo changes, else None. The tracker's beats are fitted by tempo regions (beat_curve), each
    long region refolded on the onsets (_region_beats) and moved onto them beat by beat where that fits
    better, at the metrical level that scores best (_level_score), its long regions refolded once more
    where that fits better, and accepted only when the onsets
    hit them clearly better than the single grid. Confidence: the level's lead and the steady share
    against STEADY_SHARE."""
    curve = beat_curve(beats)  # [m] at the tracker's level
    levels = []
    for ratio in CURVE_LEVELS:
        times = _region_beats(envelope, _curve_at(curve, ratio, envelope, duration), duration)
        # the tracker's beats moved onto the onsets (phase slips, lag after a change), if that fits them better
        refined = _from_zero(_extended(beat_curve(_envelope_beats(envelope, times)), duration))
        refined = _region_phase_kept(times, refined)
        (hits, grid_hits), (refined_hits, _) = _hits(envelope, times, grid), _hits(envelope, refined, grid)
        if refined_hits >= hits:
            times, hits = refined, refined_hits
        levels.append((_level_score(envelope, times), times, hits, grid_hits))
    levels.sort(key=lambda level: -level[0])
    _, times, hits, grid_hits = levels[0]
    level_margin = levels[0][0] - levels[1][0]
    # the chosen level's long stretches refolded once more, where the refinement left one off the beat
    again = _region_beats(envelope, times, duration)
    again_hits = _hits(envelope, again, grid)[0]
    if again_hits >= hits:
        times, hits = again, again_hits
    curve_share = steady_share(envelope, times)
    tempi = 60 / np.diff(times)  # [beats - 1] BPM of every beat
    changes = np.percentile(tempi, 95) / np.percentile(tempi, 5) > 1 + CHANGE_SHARE
    if not changes or hits < max(CURVE_HIT, CURVE_GAIN * grid_hits):
        return None
    return times, curve_share, min(curve_share / STEADY_SHARE, level_margin / LEVEL_MARGIN, 1.0)


if __name__ == "__main__":  # a library: --help (or no argument) says what it holds and which commands use it
    import argparse

    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="A library with no command of its own: infer.py (tempo, encoding), train.py (encoding the corpus)"
        " and utils.py use it.",
    )
    parser.parse_args()
    parser.print_help()
