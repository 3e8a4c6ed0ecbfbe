"""audio.py: reading songs, the Encodec tokenizer and its random-codebook test mode."""

import io
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from audio import AudioError, create_audio_tokenizer, load_audio, ogg_vorbis, truncation
from conftest import ROOT, SHARED_MAPS, needs_shared


@pytest.fixture(scope="module")
def tokenizer():
    return create_audio_tokenizer(weights="random", device="cpu")


def _tone(seconds: float, rate: int, channels: int = 2) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    left, right = 0.5 * np.sin(2 * np.pi * 440 * t), 0.25 * np.sin(2 * np.pi * 660 * t)
    return np.stack([left, right], axis=1)[:, :channels].squeeze().astype(np.float32)


@pytest.mark.parametrize("fmt", ["WAV", "FLAC", "OGG", "MP3"])
def test_load_audio_formats_downmix_and_resample(fmt, tmp_path):
    stereo = _tone(2.0, 44100)
    path = tmp_path / f"song.{fmt.lower()}"
    sf.write(path, stereo, 44100, format=fmt)
    samples = load_audio(path, 24000)
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert abs(len(samples) - 48000) <= 1200  # mp3 adds encoder padding
    # a downmix: the mean of a 0.5 and a 0.25 amplitude tone peaks near 0.375
    assert 0.3 < np.abs(samples).max() < 0.45


def test_load_audio_from_bytes_matches_path(tmp_path):
    data = ogg_vorbis(_tone(1.0, 44100), 44100)
    (tmp_path / "song.egg").write_bytes(data)
    assert np.array_equal(load_audio(data, 24000), load_audio(tmp_path / "song.egg", 24000))


def test_ogg_vorbis_writes_long_songs(tmp_path):
    # libsndfile 1.2.2 crashes on one big Vorbis write; ogg_vorbis writes in blocks
    song = np.tile(_tone(1.0, 44100, channels=1), 60)
    data, rate = sf.read(io.BytesIO(ogg_vorbis(song, 44100)))
    assert rate == 44100 and len(data) == len(song)


@pytest.mark.parametrize("fmt", ["OGG", "WAV"])
def test_a_file_cut_short_is_told_from_a_whole_one(tmp_path, fmt):
    whole = tmp_path / f"whole.{fmt.lower()}"
    noise = np.random.default_rng(0).normal(0, 0.1, 44100 * 8).astype(np.float32)  # no long-silent pages
    sf.write(whole, noise, 44100, format=fmt)
    cut = tmp_path / f"cut.{fmt.lower()}"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    assert truncation(whole) is None
    assert truncation(cut) is not None and fmt[:3].lower() in truncation(cut).lower()
    assert len(load_audio(cut, 44100)) < 0.6 * len(load_audio(whole, 44100))  # still readable: what it holds


def test_load_audio_errors_name_the_file(tmp_path):
    bad = tmp_path / "broken.egg"
    bad.write_bytes(b"OggS but not really")
    with pytest.raises(AudioError, match="broken.egg: unreadable audio"):
        load_audio(bad, 24000)
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), 44100)
    with pytest.raises(AudioError, match="empty.wav: no audio samples"):
        load_audio(empty, 24000)
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(44100, np.float32), 44100)
    with pytest.raises(AudioError, match="silent.wav: audio is silent"):
        load_audio(silent, 24000)
    zero = tmp_path / "zero.ogg"
    zero.write_bytes(b"")
    with pytest.raises(AudioError, match="zero.ogg: empty file"):
        load_audio(zero, 24000)
    with pytest.raises(AudioError, match="song.egg: unreadable"):
        load_audio(b"\x00" * 100, 24000, name="level.zip:song.egg")


def test_tokenizer_shape_facts(tokenizer):
    assert (tokenizer.sample_rate, tokenizer.frame_rate, tokenizer.n_codebooks) == (24000, 75.0, 2)
    assert tokenizer.id == "encodec24k-random-kmeans-seed0@1.5kbps"
    for samples in (1, 319, 320, 321, 24000, 24001):
        codes = tokenizer.encode(np.full((1, samples), 0.1, np.float32))
        assert codes.shape == (-(-samples // 320), 2), samples
    codes = tokenizer.encode(_tone(1.0, 24000, channels=1)[None])
    assert codes.dtype == np.int16 and codes.min() >= 0 and codes.max() < 1024
    assert tokenizer.decode(codes).shape == (1, len(codes) * 320)


def test_random_mode_is_deterministic_and_seeded(tokenizer):
    song = _tone(2.0, 24000, channels=1)[None]
    again = create_audio_tokenizer(weights="random", device="cpu")
    other = create_audio_tokenizer(weights="random", device="cpu", seed=1)
    assert np.array_equal(tokenizer.encode(song), again.encode(song))
    assert not np.array_equal(tokenizer.encode(song), other.encode(song))
    assert other.id != tokenizer.id


def test_codes_made_on_another_kind_of_device_are_cached_apart(tokenizer):
    import copy

    from audio import AudioTokenizer

    assert tokenizer.cache_id == tokenizer.id  # the CPU's codes keep the plain key
    elsewhere = AudioTokenizer(copy.deepcopy(tokenizer.model), 1.5, torch.device("meta"), "encodec24k-random")
    assert elsewhere.id == "encodec24k-random@1.5kbps" and elsewhere.cache_id == "encodec24k-random@1.5kbps@meta"


def test_segmented_encoding_matches_one_pass(tokenizer):
    # shrink the windows so a short signal crosses several seams
    song = np.random.default_rng(0).standard_normal((1, 24000 * 4)).astype(np.float32) * 0.1
    whole = tokenizer.encode(song)
    small = create_audio_tokenizer(weights="random", device="cpu")
    small.segment, small.context = 320 * 75, 320 * 25  # 1 s windows, 1/3 s context
    segmented = small.encode(song)
    assert segmented.shape == whole.shape == (300, 2)
    assert (segmented == whole).mean() > 0.9


def _distinct_codes(tokenizer, samples: np.ndarray) -> list[int]:
    codes = tokenizer.encode(samples[None, : 24000 * 30])
    return [len(np.unique(codes[:, q])) for q in range(2)]


def test_random_codebooks_spread_on_a_synthetic_song(tokenizer):
    from levels.synth import synth_level

    files, _ = synth_level(0, bars=4)
    # a drum loop repeats far more than music, but must not collapse onto a few codes
    assert min(_distinct_codes(tokenizer, load_audio(files["song.egg"], 24000))) >= 20


@needs_shared
def test_random_codebooks_spread_on_a_fixture_song(tokenizer):
    song = load_audio(SHARED_MAPS / "bullishdrake09_esperanza" / "song.ogg", 24000)
    assert min(_distinct_codes(tokenizer, song)) >= 50


def test_missing_pretrained_weights_say_how_to_fix():
    code = "from audio import create_audio_tokenizer; create_audio_tokenizer()"
    env = os.environ | {"HF_HUB_OFFLINE": "1", "HF_HOME": str(ROOT / "cache" / "no-hub-here")}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode != 0
    assert "AudioError: Encodec weights 'facebook/encodec_24khz' are not available" in result.stderr
    assert "from_pretrained('facebook/encodec_24khz')" in result.stderr and "weights='random'" in result.stderr


def test_random_codes_tell_drum_hits_from_the_sound_between_them(tokenizer):
    from levels.synth import synth_level

    files, level = synth_level(0, bars=8)
    codes = tokenizer.encode(load_audio(files["song.egg"], 24000)[None])  # [frames, 2]
    per_beat = 60 / level.bpm * tokenizer.frame_rate
    hits = {round(n.beat * per_beat) for d in level.difficulties for n in d.notes}  # kick and snare frames
    # between the hits: frames at least 3 frames from any eighth note (where hats, kicks, snares sit)
    eighths = np.round(np.arange(0, len(codes) / per_beat, 0.5) * per_beat).astype(int)
    quiet = [f for f in range(len(codes)) if np.abs(eighths - f).min() >= 3]
    between = {tuple(c) for c in codes[quiet].tolist()}
    on_hits = [tuple(codes[f]) for f in sorted(hits) if f < len(codes)]
    # the code pair at a drum hit is rarely one the sound between hits uses: 0.86-0.91 on the first
    # three synthetic songs; codebooks drawn at random around the encoder's mean gave 0.05-0.14
    assert np.mean([c not in between for c in on_hits]) > 0.7


# ---------------------------------------------------------------- tempo


def _beat_share(truth: np.ndarray, estimate: np.ndarray) -> float:
    """Share of the true beats within 1/8 of their beat from an estimated beat."""
    periods = np.diff(truth, append=2 * truth[-1] - truth[-2])
    nearest = np.abs(estimate[None, :] - truth[:, None]).min(axis=1)
    return float(np.mean(nearest / periods <= 1 / 8))


def test_beat_curve_follows_a_step_and_a_ramp_through_jitter_and_missed_beats():
    from audio import beat_curve

    rng = np.random.default_rng(0)
    # truth: 80 beats at 120 BPM, a step to 150, 60 beats, then a ramp back to 120 over 32 beats, 40 more
    periods = np.r_[np.full(80, 0.5), np.full(60, 0.4), np.linspace(0.4, 0.5, 32), np.full(40, 0.5)]
    truth = 1.0 + np.r_[0, np.cumsum(periods)]  # [213] seconds
    tracked = truth + rng.normal(0, 0.008, truth.size)
    tracked = np.delete(tracked, [20, 95, 150, 151])  # the tracker missed some
    curve = beat_curve(tracked)
    assert curve.size == truth.size
    assert np.abs(curve - truth).max() < 0.03 and np.median(np.abs(curve - truth)) < 0.008


def test_beat_curve_keeps_one_metrical_level_where_the_tracker_switches_octave():
    from audio import beat_curve

    rng = np.random.default_rng(1)
    # truth: 100 beats at 160 BPM, a step to 130 BPM, 140 beats
    truth = 0.5 + np.r_[0, np.cumsum(np.r_[np.full(100, 60 / 160), np.full(140, 60 / 130)])]  # [241] seconds
    # the tracker: every other beat (half tempo) before the step, every beat after it, but every beat and
    # off-beat (double tempo) over 30 beats near the end
    doubled = truth[200:231]
    doubled = np.sort(np.r_[doubled, (doubled[:-1] + doubled[1:]) / 2])
    tracked = np.r_[truth[:100:2], truth[100:200], doubled, truth[231:]]
    curve = beat_curve(tracked + rng.normal(0, 0.006, tracked.size))
    assert curve.size == truth.size
    assert np.abs(curve - truth).max() < 0.03


def test_region_beats_bring_a_stretch_off_the_beat_back_to_the_grid_of_onsets_that_wander():
    from audio import ENVELOPE_RATE, _region_beats

    rng = np.random.default_rng(2)
    period = 0.5 * ENVELOPE_RATE  # 120 BPM, in envelope frames
    beats = 40 + period * np.arange(100)  # [100] frames of the true beats
    onsets = np.round(beats).astype(int) + rng.integers(0, 2, beats.size)  # some played a frame (6 ms) late
    envelope = np.zeros(round(beats[-1] + 2 * period))
    for frames, peak in ((np.round(beats[:-1] + period / 2).astype(int), 6.0), (onsets, 10.0)):  # off-beat bass, weaker
        for shift, height in ((-1, peak / 2), (1, peak / 2), (0, peak)):  # onset peaks 3 frames wide
            envelope[frames + shift] = height
    # a tracker on the off-beat for 20 beats, then on the onsets themselves
    tracked = np.r_[beats[:20] + period / 2, onsets[21:]] / ENVELOPE_RATE
    times = _region_beats(envelope, tracked, envelope.size / ENVELOPE_RATE)
    error = (times[:, None] - beats[None, :] / ENVELOPE_RATE) / 0.5  # [estimated, true] in beats
    nearest = np.abs(error).min(axis=0)  # [100] each true beat's distance to the nearest estimated one
    assert (nearest <= 1 / 8).all(), np.flatnonzero(nearest > 1 / 8)


def test_tempo_candidates_hold_metrical_relatives_and_the_best_is_the_tempo():
    from audio import ONSET_RATE, TEMPO_RANGE, _onset_envelope, tempo_candidates
    from levels.synth import synth_level

    files, level = synth_level(2, seed=3, bars=12, hard=True)
    samples = load_audio(files["song.egg"], ONSET_RATE)
    candidates = tempo_candidates(_onset_envelope(samples), level.bpm * 1.5)  # a tracker at a wrong level
    assert abs(candidates[0].bpm / level.bpm - 1) < 0.002, candidates[:3]  # it folds far less sharply
    for ratio in (2, 1 / 2, 3 / 2):
        if TEMPO_RANGE[0] <= level.bpm * ratio <= TEMPO_RANGE[1]:
            assert any(abs(c.bpm / (level.bpm * ratio) - 1) < 0.002 for c in candidates), ratio
    assert [c.score for c in candidates] == sorted((c.score for c in candidates), reverse=True)


def test_bpm_prior_is_the_geometric_mean_and_log_spread():
    from audio import bpm_prior

    bpm, spread = bpm_prior(np.array([70.0, 140.0, 280.0, 0.0]))  # 0: a manifest row without a BPM
    assert abs(bpm - 140) < 1e-9 and abs(spread - np.log(2)) < 1e-9


@pytest.mark.parametrize("change", ["steady", "step", "ramp"])
def test_estimate_tempo_finds_and_follows_tempo_changes(change):
    from audio import estimate_tempo
    from levels.synth import synth_level
    from maps import TempoMap

    files, level = synth_level(2 if change == "step" else 1, seed=7, bars=40, hard=True, tempo=change)
    samples = load_audio(files["song.egg"], 44100)
    events = level.difficulties[0].bpm_events
    truth = TempoMap.from_events(level.bpm, events).seconds_at(np.arange(int(samples.size / 44100 * level.bpm / 30)))
    truth = truth[truth < samples.size / 44100]
    tempo = estimate_tempo(samples, 44100)
    if change == "steady":
        assert tempo.beats is None and not tempo.doubtful and abs(tempo.bpm / level.bpm - 1) < 0.002
        estimate = tempo.first_beat + 60 / tempo.bpm * np.arange(truth.size + 2)
    else:
        assert tempo.beats is not None, tempo[:3]
        assert abs(tempo.bpm / level.bpm - 1) < 0.02
        estimate = tempo.beats
    assert _beat_share(truth, estimate) >= 0.95


def _envelope_of(beats: np.ndarray, off_beats: np.ndarray, seconds: float) -> np.ndarray:
    """[frames] an onset envelope at ENVELOPE_RATE: strong onsets on the beats, weaker ones between."""
    from audio import ENVELOPE_RATE

    envelope = np.zeros(int(seconds * ENVELOPE_RATE))
    for times, height in ((beats, 1.0), (off_beats, 0.4)):
        frames = np.round(times * ENVELOPE_RATE).astype(np.int64)
        envelope[frames[frames < envelope.size]] += height
    return np.convolve(envelope, [0.25, 0.5, 1.0, 0.5, 0.25], mode="same") - 0.02


@pytest.mark.parametrize("fault", ["off-beat slip", "dotted pulse"])
def test_region_beats_bring_a_tracker_that_left_the_beat_back_onto_it(fault):
    from audio import _region_beats

    # truth: 64 beats at 120 BPM, then a step to 150 BPM for 96 beats, weaker onsets between the beats
    truth = 0.3 + np.r_[0, np.cumsum(np.r_[np.full(64, 0.5), np.full(96, 0.4)])]  # [161] seconds
    seconds = truth[-1] + 0.5
    envelope = _envelope_of(truth, (truth[1:] + truth[:-1]) / 2, seconds)
    if fault == "off-beat slip":  # the tracker sits half a beat late for 30 beats after the step
        tracked = truth + np.where((np.arange(truth.size) > 66) & (np.arange(truth.size) < 96), 0.2, 0.0)
    else:  # after the step the tracker locks onto a pulse 4/3 as fast (every dotted eighth)
        tracked = np.r_[truth[:65], truth[64] + 0.3 * np.arange(1, 129)]
    assert _beat_share(truth, tracked) < 0.85
    assert _beat_share(truth, _region_beats(envelope, tracked, seconds)) >= 0.98


def test_codec_probe_finds_the_drum_notes_in_the_spectrogram_and_not_in_shuffled_labels(tokenizer, tmp_path):
    """bench_codec's features line up with the notes: a log-mel probe fitted on two synthetic songs tells
    a third song's note frames from the rest (AUC 0.99 here); scored against labels moved off the hits, it
    falls to chance (0.42)."""
    import bench_codec

    from levels.synth import write_synth_corpus

    songs = [bench_codec.song_features(p, tokenizer) for p in write_synth_corpus(tmp_path, 3, seed=5, bars=4)]
    features, hit = songs[2]
    assert features["codes"].shape[0] == features["log-mel"].shape[0] == features["onset"].shape[0] == len(hit)
    assert hit.sum() > 10
    moved = np.roll(hit, round(tokenizer.frame_rate / 4))  # labels a quarter second late, between the hits
    aligned = bench_codec.probe_auc(songs[:2], [songs[2]], "log-mel")
    shifted = bench_codec.probe_auc(songs[:2], [(features, moved)], "log-mel")
    assert aligned > 0.8 and aligned > shifted + 0.1
