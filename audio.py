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
    name = name or (str(source) if not isinstance(source, (bytes, bytearray)) else "audio")
    try:
        data, rate = sf.read(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source, dtype="float32")
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as e:
        raise AudioError(f"{name}: unreadable audio ({e})") from None
    # data: [n] or [n, channels] float32 in -1..1 at `rate`
    if data.ndim == 2 and mono:
        data = data.mean(axis=1)
    if data.size == 0:
        raise AudioError(f"{name}: no audio samples")
    if not np.isfinite(data).all() or np.abs(data).max() < SILENCE_PEAK:
        raise AudioError(f"{name}: audio is silent or not finite")
    return np.ascontiguousarray(_resampled(data, rate, sample_rate), dtype=np.float32)


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
        self.id = f"{model_id}@{bandwidth:g}kbps"
        # windows of SEGMENT_SECONDS, both whole numbers of frames
        self.segment = round(SEGMENT_SECONDS * self.frame_rate) * self.hop_length
        self.context = round(CONTEXT_SECONDS * self.frame_rate) * self.hop_length
        self.batch_size = 16 if device.type == "cuda" else 1
        self._silence: np.ndarray | None = None

    @torch.inference_mode()
    def encode(self, audio: np.ndarray | torch.Tensor) -> np.ndarray:
        """audio: [1, samples] (or [samples]) float at 24 kHz -> codes: [ceil(samples / 320), 2] int16 in 0..1023.

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
        for group in [*groups, windows[-1:]]:
            embeddings = self.model.encoder(torch.stack(group).unsqueeze(1).to(self.device))  # [b, 128, frames]
            group_codes = self.model.quantizer.encode(embeddings, self.bandwidth)  # [n_codebooks, b, frames]
            codes.append(group_codes[:, :, drop:-drop].permute(1, 2, 0).reshape(-1, self.n_codebooks))
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
LOCAL_MEAN_FRAMES = 64  # envelope minus its 0.37 s moving mean: onsets stand out of loud passages
PHASE_BINS = 96  # a beat's fold profile resolution (6 ms at 60 BPM)
COARSE_SPAN, COARSE_STEPS = 0.03, 601  # refine within +-3% in steps of 0.01% ...
FINE_SPAN, FINE_STEPS = 0.0003, 201  # ... then within +-0.03% in steps of 0.0003%
ON_GRID_BEATS = 0.1  # a tracked beat this close to the fitted grid agrees with it


class Tempo(NamedTuple):
    bpm: float
    first_beat: float  # seconds: the earliest beat of the grid, in [0, 60 / bpm)
    confidence: float  # share of the tracker's beats within ON_GRID_BEATS of the grid, 0..1
    tracker: str


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
    ONSET_RATE / ONSET_HOP per second."""
    import librosa

    envelope = librosa.onset.onset_strength(y=onset_audio, sr=ONSET_RATE, hop_length=ONSET_HOP, n_fft=1024)
    return envelope - np.convolve(envelope, np.ones(LOCAL_MEAN_FRAMES) / LOCAL_MEAN_FRAMES, mode="same")


def _fold(envelope: np.ndarray, bpm: float) -> np.ndarray:
    """The envelope folded onto one beat at this tempo: [PHASE_BINS] mean onset strength per phase."""
    frames_per_beat = 60 / bpm * ONSET_RATE / ONSET_HOP
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


def estimate_first_beat(samples: np.ndarray, sample_rate: int, bpm: float) -> float:
    """samples: [n] mono float, its known tempo -> seconds of its first beat, in [0, 60 / bpm)."""
    return _first_beat(_onset_envelope(_resampled(samples, sample_rate, ONSET_RATE)), bpm)


def estimate_tempo(samples: np.ndarray, sample_rate: int, tracker: str | None = None) -> Tempo:
    """samples: [n] mono float -> the song's BPM and the time of its first beat.

    A beat tracker gives the metrical level (its median beat interval); the tempo is
    then refined over the whole song by folding the onset envelope at candidate tempos:
    a 1% error drifts a 64-beat chunk by most of a beat, a fold's peak blurs at any
    error. The first beat is the fold's peak phase.
    """
    tracker = tracker or available_tracker()
    onset_audio = _resampled(samples, sample_rate, ONSET_RATE)  # [n * ONSET_RATE / sample_rate] mono
    beats = _tracked_beats(samples, sample_rate, onset_audio, tracker)
    duration = samples.size / sample_rate
    if beats.size < 2:
        raise AudioError(f"no beat found in {duration:.1f} s of audio: pass --bpm and --offset")
    envelope = _onset_envelope(onset_audio)
    bpm = _best_bpm(envelope, 60 / float(np.median(np.diff(beats))), COARSE_SPAN, COARSE_STEPS)
    bpm = _best_bpm(envelope, bpm, FINE_SPAN, FINE_STEPS)
    first_beat = _first_beat(envelope, bpm)
    period = 60 / bpm
    offsets = (beats - first_beat) / period
    confidence = float(np.mean(np.abs(offsets - np.round(offsets)) < ON_GRID_BEATS))
    return Tempo(bpm, first_beat, confidence, tracker)
