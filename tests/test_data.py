"""Training data: the synthetic corpus, the level index, BeatDataset, its cache and the collator."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from audio import create_audio_tokenizer, load_audio
from conftest import ROOT, level_dict, zip_bytes
from data import (
    AUDIO,
    EOS,
    NOTE,
    NOTES_START,
    PAD,
    PPQ,
    TIME,
    BeatDataset,
    ChunkNote,
    ChunkRules,
    CodesCache,
    audio_masking_collator,
    decode_notes,
    note_tokens_error,
)
from levels.package import write_zip
from levels.synth import LEAD_IN_BARS, SYNTH_BPMS, SYNTH_RATE, synth_level, write_synth_corpus
from maps import ZippedBeatSaberDataset, load_level, plain_notes

CHUNK_BEATS = 8  # two bars: several chunks per short synthetic song


@pytest.fixture(scope="module")
def tokenizer():
    return create_audio_tokenizer(weights="random", device="cpu")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    # one short level at every tempo of the synthetic corpus
    return write_synth_corpus(tmp_path_factory.mktemp("synth"), songs=len(SYNTH_BPMS), bars=4)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def base(corpus, cache_dir):
    return ZippedBeatSaberDataset(corpus[0].parent, cache_dir=cache_dir, progress=False)


@pytest.fixture(scope="module")
def dataset(base, tokenizer, cache_dir):
    return BeatDataset(base, tokenizer, ChunkRules(chunk_beats=CHUNK_BEATS, max_empty_share=1.0), cache_dir=cache_dir)


def _note_tokens(input_ids: np.ndarray) -> list[int]:
    # [... NOTES_START, DIFF_x, notes ..., EOS] -> the note tokens
    start = int(np.flatnonzero(input_ids == NOTES_START)[0]) + 2
    assert input_ids[-1] == EOS
    return input_ids[start:-1].tolist()


def _audio_codes(input_ids: np.ndarray) -> np.ndarray:
    audio = input_ids[(input_ids >= AUDIO.start) & (input_ids < AUDIO.stop)]
    return audio.reshape(-1, 2) - AUDIO.start - np.array([0, 1024])


# ---------------------------------------------------------------- synthetic corpus


def test_synth_cli_writes_trainable_levels(tmp_path):
    subprocess.run([sys.executable, "utils.py", "synth", str(tmp_path), "--songs", "4"], cwd=ROOT, check=True)
    result = subprocess.run([sys.executable, "maps.py", str(tmp_path), "--json"], cwd=ROOT, capture_output=True)
    levels = [json.loads(line) for line in result.stdout.splitlines()]
    assert [level["bpm"] for level in levels] == list(SYNTH_BPMS[:4])
    assert all(d["trainable"] for level in levels for d in level["difficulties"])


def test_synth_is_deterministic_for_a_seed():
    first, level = synth_level(2, seed=5, bars=2)
    second, _ = synth_level(2, seed=5, bars=2)
    other, _ = synth_level(2, seed=6, bars=2)
    assert {n: d for n, d in first.items() if n != "song.egg"} == {n: d for n, d in second.items() if n != "song.egg"}
    # the Ogg container gets a random stream serial number; the audio itself is identical
    assert np.array_equal(load_audio(first["song.egg"], SYNTH_RATE), load_audio(second["song.egg"], SYNTH_RATE))
    assert first["ExpertStandard.dat"] != other["ExpertStandard.dat"]
    assert level.bpm == SYNTH_BPMS[2]


def test_synth_notes_sit_on_drum_hits():
    files, level = synth_level(1, bars=4)
    song = load_audio(files["song.egg"], SYNTH_RATE)
    window = int(0.01 * SYNTH_RATE)
    for diff in level.difficulties:
        assert diff.notes and all(n.beat >= LEAD_IN_BARS * 4 for n in diff.notes)
        for note in diff.notes:
            at = round(note.beat * 60 / level.bpm * SYNTH_RATE)
            before, after = np.abs(song[at - window : at]).max(), np.abs(song[at : at + window]).max()
            assert after > 2 * before, (diff.difficulty, note)
        # each hand alternates down and up: no parity breaks
        for color in (0, 1):
            directions = [n.direction for n in diff.notes if n.color == color]
            assert all(a != b for a, b in zip(directions, directions[1:]))


# ---------------------------------------------------------------- chunks


def _chunks(dataset: BeatDataset):
    for i, (index, start) in enumerate(dataset.chunks):
        yield dataset.items[index], start, dataset[i]["input_ids"]


def test_notes_land_on_their_ticks_and_frames(dataset, corpus, tokenizer):
    levels = {str(path): load_level(path) for path in corpus}
    for epoch in range(3):
        dataset.set_epoch(epoch)
        seen = {}
        for item, start, input_ids in _chunks(dataset):
            level = levels[item.level_path]
            diff = next(d for d in level.difficulties if d.difficulty == _difficulty_name(input_ids))
            end = start + CHUNK_BEATS
            inside = [n for n in plain_notes(diff) if start * PPQ <= round(n.beat * PPQ) < end * PPQ]
            expected = sorted(
                {ChunkNote(round((n.beat - start) * PPQ), n.x, n.y, n.color, n.direction) for n in inside}
            )
            tokens = _note_tokens(input_ids)
            assert note_tokens_error(tokens, CHUNK_BEATS * PPQ) is None
            assert sorted(decode_notes(tokens)) == expected
            # the notes walk the prompt's marker grid: every marker tick and every note tick, once each
            prompt = input_ids[: int(np.flatnonzero(input_ids == NOTES_START)[0])]
            grid = {int(t) - TIME.start for t in prompt if TIME.start <= t < TIME.stop}
            assert [t - TIME.start for t in tokens if t in TIME] == sorted(grid | {n.tick for n in expected})
            # the audio is the song's codes from the chunk's first beat on, past the song's end its silence
            spb_frames = 60 / level.bpm * tokenizer.frame_rate  # frames per beat
            first = round(start * spb_frames)
            full, audio = dataset.cache.load(item.song_hash), _audio_codes(input_ids)
            song_part = full[first : first + len(audio)]
            assert np.array_equal(audio[: len(song_part)], song_part)
            assert (audio[len(song_part) :] == dataset.silence).all()
            for note in expected:
                beat = start + note.tick / PPQ
                assert abs(first + note.tick / PPQ * spb_frames - beat * spb_frames) <= 1
                key = (item.level_path, diff.difficulty, note.placed(start))
                seen[key] = seen.get(key, 0) + 1
        # within an epoch no note is in two chunks
        assert seen and max(seen.values()) == 1


def test_time_markers_sit_before_each_grid_ticks_first_frame(dataset, tokenizer):
    from data import AUDIO_END, AUDIO_START, MARKER_TICKS

    for item, start, input_ids in _chunks(dataset):
        audio = input_ids[
            int(np.flatnonzero(input_ids == AUDIO_START)[0]) + 1 : int(np.flatnonzero(input_ids == AUDIO_END)[0])
        ]
        marks = np.flatnonzero((audio >= TIME.start) & (audio < TIME.stop))
        codes_before = marks - np.arange(len(marks))  # audio tokens ahead of each marker
        assert (codes_before % 2 == 0).all()  # never between a frame's two codes
        ticks = [b * PPQ + t for b in range(CHUNK_BEATS) for t in MARKER_TICKS]
        per_tick = 60 / item.tempo.bpm / PPQ * tokenizer.frame_rate
        at = [round((start * PPQ + tick) * per_tick) - round(start * PPQ * per_tick) for tick in ticks]
        # every window, the song's last included, holds the whole grid
        assert list(zip((audio[marks] - TIME.start).tolist(), (codes_before // 2).tolist())) == list(zip(ticks, at))
        # markers are never trained on: only the notes after NOTES_START and EOS carry labels
        labels = audio_masking_collator([{"input_ids": input_ids}])["labels"][0]
        notes_start = int(np.flatnonzero(input_ids == NOTES_START)[0])
        assert (labels[:notes_start] == -100).all()


def _difficulty_name(input_ids: np.ndarray) -> str:
    from data import DIFFICULTY_TOKENS

    token = int(input_ids[int(np.flatnonzero(input_ids == NOTES_START)[0]) + 1])
    return {v: k for k, v in DIFFICULTY_TOKENS.items()}[token]


def test_audio_slice_is_the_chunks_seconds_at_every_bpm(dataset, tokenizer):
    bpms, padded = set(), 0
    for item, start, input_ids in _chunks(dataset):
        frames = len(_audio_codes(input_ids))
        expected = round(CHUNK_BEATS * 60 / item.tempo.bpm * tokenizer.frame_rate)
        assert abs(frames - expected) <= 1, (item.tempo.bpm, start)  # the song's last chunk too: padded
        end_frame = round((start + CHUNK_BEATS) * 60 / item.tempo.bpm * tokenizer.frame_rate)
        padded += end_frame > dataset.frames[item.song_hash]
        bpms.add(item.tempo.bpm)
    assert bpms == set(SYNTH_BPMS) and padded > 0


def test_silence_codes_are_what_the_codec_gives_silence(tokenizer):
    silence = tokenizer.silence_codes()
    codes = tokenizer.encode(np.zeros(3 * tokenizer.sample_rate, dtype=np.float32))
    assert silence.shape == (2,) and (codes == silence).all(axis=1).mean() > 0.5


def test_chunks_start_on_bars_and_shift_per_epoch(dataset, base, tokenizer, cache_dir):
    dataset.set_epoch(0)
    epoch0 = list(dataset.chunks)
    dataset.set_epoch(1)
    assert dataset.chunks != epoch0
    assert all(start % 4 == 0 for _, start in dataset.chunks)
    again = BeatDataset(base, tokenizer, ChunkRules(chunk_beats=CHUNK_BEATS, max_empty_share=1.0), cache_dir=cache_dir)
    assert again.chunks == epoch0  # same seed, same plan
    dataset.set_epoch(0)


def test_songs_shorter_than_a_chunk_give_a_chunk_at_every_epoch(base, tokenizer, cache_dir):
    # 4-bar songs (plus lead-in) against 64-beat chunks: the grid shift must not skip past a song's end
    long = BeatDataset(base, tokenizer, ChunkRules(chunk_beats=64, max_empty_share=1.0), cache_dir=cache_dir)
    for epoch in range(8):
        long.set_epoch(epoch)
        assert sorted(index for index, _ in long.chunks) == list(range(len(long.items)))


def test_long_chunks_are_skipped_and_counted_never_truncated(base, tokenizer, cache_dir):
    limit = 1000
    short = BeatDataset(base, tokenizer, ChunkRules(chunk_beats=CHUNK_BEATS, max_seq_length=limit), cache_dir=cache_dir)
    assert short.too_long > 0 and len(short) > 0
    assert all(len(short[i]["input_ids"]) <= limit for i in range(len(short)))
    assert all(short[i]["input_ids"][-1] == EOS for i in range(len(short)))


@pytest.mark.parametrize("share", [0.0, 0.25, 1.0])
def test_empty_chunk_cap(base, tokenizer, cache_dir, share):
    data = BeatDataset(base, tokenizer, ChunkRules(chunk_beats=4, max_empty_share=share), cache_dir=cache_dir)
    empty = sum(not decode_notes(_note_tokens(data[i]["input_ids"])) for i in range(len(data)))
    assert empty <= share * len(data)
    if share == 1.0:
        assert empty > 0  # the lead-in bars have no notes


def test_a_level_whose_tempo_steps_trains_on_chunks_inside_one_tempo(tokenizer, tmp_path):
    from maps import TempoMap

    files, level = synth_level(2, seed=7, bars=12, hard=True, tempo="step")  # 14 bars, the step on beat 28
    (tmp_path / "data").mkdir()
    write_zip(tmp_path / "data" / "step.zip", files)
    base = ZippedBeatSaberDataset(tmp_path / "data", cache_dir=tmp_path / "cache", progress=False)
    assert len(base.items) == 2  # Normal and Expert: trainable, no longer rejected for their tempo change
    data = BeatDataset(
        base, tokenizer, ChunkRules(chunk_beats=CHUNK_BEATS, max_empty_share=1.0), cache_dir=tmp_path / "cache"
    )
    events = level.difficulties[0].bpm_events
    (step, new_bpm) = events[0]
    assert step == 28 and data.tempo_changes == (2, len(data.chunks))
    after = 0
    for epoch in range(4):
        data.set_epoch(epoch)
        for i, (index, start) in enumerate(data.chunks):
            assert start + CHUNK_BEATS <= step or start >= step, (epoch, start)  # none straddles the step
            item = data.items[index]
            first, end = data._span(item, start)
            bpm = new_bpm if start >= step else level.bpm
            # the chunk's audio is its own beats' seconds, timed through the tempo change
            assert (
                abs(first - TempoMap.from_events(level.bpm, events).seconds_at([start])[0] * tokenizer.frame_rate)
                <= 0.5
            )
            assert abs(end - first - CHUNK_BEATS * 60 / bpm * tokenizer.frame_rate) <= 1
            notes = [o for o in decode_notes(_note_tokens(data[i]["input_ids"])) if isinstance(o, ChunkNote)]
            truth = next(d for d in level.difficulties if d.difficulty == item.difficulty).notes
            expected = sorted(round((n.beat - start) * PPQ) for n in truth if start <= n.beat < start + CHUNK_BEATS)
            assert sorted({n.tick for n in notes}) == sorted(set(expected))
            after += start >= step
    assert after > 0


# ---------------------------------------------------------------- collator


def test_collator_pads_and_masks_everything_but_notes(dataset):
    batch = [dataset[i] for i in range(3)]
    out = audio_masking_collator(batch)
    longest = max(len(b["input_ids"]) for b in batch)
    assert out["input_ids"].shape == out["labels"].shape == out["attention_mask"].shape == (3, longest)
    for row, sample in enumerate(batch):
        ids, n = sample["input_ids"], len(sample["input_ids"])
        assert out["input_ids"][row, :n].tolist() == ids.tolist()
        assert (out["input_ids"][row, n:] == PAD).all()
        assert out["attention_mask"][row].tolist() == [1] * n + [0] * (longest - n)
        labels = out["labels"][row]
        notes_start = int(np.flatnonzero(ids == NOTES_START)[0])  # time tokens before it are audio markers
        trained = [
            (i > notes_start and (t < TIME.stop or NOTE.start <= t < NOTE.stop)) or t == EOS
            for i, t in enumerate(ids.tolist())
        ]
        assert [lab != -100 for lab in labels[:n].tolist()] == trained
        assert (labels[n:] == -100).all()
        kept = labels[labels != -100].tolist()
        assert kept[-1] == EOS and kept[:-1] == _note_tokens(ids)
        assert note_tokens_error(kept[:-1]) is None


# ---------------------------------------------------------------- cache


def test_cache_hit_returns_identical_tokens_without_encoding(base, tokenizer, cache_dir, dataset, monkeypatch):
    def no_encoding(*args):
        raise AssertionError("a warm cache must not encode")

    monkeypatch.setattr(tokenizer, "encode", no_encoding)
    warm = BeatDataset(base, tokenizer, ChunkRules(chunk_beats=CHUNK_BEATS, max_empty_share=1.0), cache_dir=cache_dir)
    assert len(warm) == len(dataset)
    assert all(np.array_equal(warm[i]["input_ids"], dataset[i]["input_ids"]) for i in range(len(warm)))


def test_corrupt_cache_file_is_rebuilt(base, tokenizer, cache_dir, dataset):
    song_hash = dataset.items[0].song_hash
    path = dataset.cache.path(song_hash)
    before = np.load(path).copy()
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # truncated
    assert dataset.cache.load(song_hash) is None
    rebuilt = BeatDataset(
        base, tokenizer, ChunkRules(chunk_beats=CHUNK_BEATS, max_empty_share=1.0), cache_dir=cache_dir
    )
    assert np.array_equal(rebuilt.cache.load(song_hash), before)
    path.write_bytes(b"\x93NUMPY garbage")
    assert dataset.cache.load(song_hash) is None
    BeatDataset(base, tokenizer, ChunkRules(chunk_beats=CHUNK_BEATS), cache_dir=cache_dir)
    assert np.array_equal(dataset.cache.load(song_hash), before)


def test_two_processes_filling_one_cache_leave_valid_files(corpus, tmp_path):
    for path in (corpus[2], corpus[4]):  # the two shortest songs (174 and 140 BPM)
        shutil.copy(path, tmp_path)
    cache = tmp_path / "cache"
    code = (
        "import sys; from maps import ZippedBeatSaberDataset; from audio import create_audio_tokenizer; "
        "from data import BeatDataset; "
        "base = ZippedBeatSaberDataset(sys.argv[1], cache_dir=sys.argv[2], progress=False); "
        "BeatDataset(base, create_audio_tokenizer(weights='random', device='cpu'), cache_dir=sys.argv[2])"
    )
    env = os.environ | {"OMP_NUM_THREADS": "1"}  # two processes on two cores
    args = [sys.executable, "-c", code, str(tmp_path), str(cache)]
    runs = [subprocess.Popen(args, cwd=ROOT, env=env, stderr=subprocess.PIPE) for _ in range(2)]
    assert all(run.wait(timeout=300) == 0 for run in runs), [run.stderr.read().decode()[-500:] for run in runs]
    files = sorted((cache / "codes").iterdir())
    assert len(files) == 2 and not list(cache.rglob("*.tmp"))
    reader = CodesCache(cache, create_audio_tokenizer(weights="random", device="cpu").id, 2)
    assert all(reader.load(f.name.split("-")[0]) is not None for f in files)


def test_cache_keys_separate_tokenizers(dataset):
    real = CodesCache(dataset.cache.dir.parent, "encodec24k-facebook/encodec_24khz@1.5kbps", 2)
    song_hash = dataset.items[0].song_hash
    assert real.path(song_hash) != dataset.cache.path(song_hash) and real.load(song_hash) is None


# ---------------------------------------------------------------- bad input in a corpus


def test_bad_levels_are_skipped_with_reasons_and_the_rest_used(corpus, tokenizer, tmp_path, capsys):
    for path in corpus[:2]:
        shutil.copy(path, tmp_path)
    good = synth_level(3, bars=2)[0]
    (tmp_path / "truncated.zip").write_bytes(zip_bytes(good)[:200])
    (tmp_path / "bad_song.zip").write_bytes(zip_bytes(good | {"song.egg": b"not audio at all"}))
    (tmp_path / "noodle_only.zip").write_bytes(zip_bytes(level_dict("v2") | {"song.egg": good["song.egg"]}))
    base = ZippedBeatSaberDataset(tmp_path, cache_dir=tmp_path / "cache", progress=False)
    data = BeatDataset(base, tokenizer, cache_dir=tmp_path / "cache")  # verbose: one line per bad song
    err = capsys.readouterr().err
    assert "truncated.zip: not a readable zip" in err and "bad_song.zip:song.egg: unreadable audio" in err
    assert base.rejections["unreadable level"] == 1
    assert base.rejections["requires Noodle/Mapping Extensions"] == 1  # its other difficulty trains
    assert data.skipped["unreadable song"] == 2
    used = {item.level_path.rsplit("/", 1)[-1] for item in data.items}
    assert used == {corpus[0].name, corpus[1].name, "noodle_only.zip"} and len(data) > 0


def test_dataset_pickles_without_the_encodec_model(dataset):
    import pickle

    copy = pickle.loads(pickle.dumps(dataset))
    assert copy.tokenizer is None and np.array_equal(copy[0]["input_ids"], dataset[0]["input_ids"])


def test_training_rows_keep_the_objects_the_token_space_holds_and_drop_the_rest():
    from data import ARC, BOMB, CHAIN, LENGTH, WALL, chunk_sequence, decode_notes, object_rows
    from maps import Arc, Bomb, Chain, Difficulty, Note, Obstacle

    red = [Note(1, 0, 0, 0, 1), Note(2, 0, 1, 0, 0), Note(3, 1, 0, 0, 1)]
    diff = Difficulty("Standard", "Expert", "E.dat", notes=red + [Note(2, 3, 0, 1, 1)])
    diff.bombs = [Bomb(1, 0, 0), Bomb(1.5, 3, 2), Bomb(1.5, 7, 0)]  # in a note's cell; kept; off the grid
    diff.obstacles = [Obstacle(0, 2, 3, 0, 1, 5), Obstacle(0, 16, -1, 0, 1, 5), Obstacle(4, 0, 0, 0, 1, 5)]
    diff.arcs = [Arc(red[1], red[2]), Arc(red[0], red[2])]  # the second skips red's note between
    diff.chains = [Chain(red[0], 1.125, 0, 0, 3, 1.0), Chain(red[1], 2.125, 0, 2, 3, 1.0)]  # down from y 0: no room
    rows = object_rows(diff)
    kinds = {
        name: int(np.sum((rows[:, 1] >= r.start) & (rows[:, 1] < r.stop)))
        for name, r in (("bomb", BOMB), ("wall", WALL), ("arc", ARC), ("chain", CHAIN))
    }
    assert kinds == {"bomb": 1, "wall": 1, "arc": 1, "chain": 1}
    assert list(rows[:, 0]) == sorted(rows[:, 0])  # canonical order, as the chunks slice it
    item = type("Item", (), {"ticks": rows[:, 0], "types": rows[:, 1], "extra": rows[:, 2]})
    # a chunk from beat 2: the arc into beat 3 has its head (beat 2) in it; none may reach back before it
    whole = decode_notes(chunk_sequence(item, 0, len(rows), 0, 4 * 48, np.array([0])))
    assert {type(o).__name__ for o in whole} == {"ChunkNote", "ChunkBomb", "ChunkWall", "ChunkArc", "ChunkChain"}
    lo, hi = np.searchsorted(rows[:, 0], [2 * 48, 6 * 48])
    late = decode_notes(chunk_sequence(item, lo, hi, 2 * 48, 4 * 48, np.array([0])))
    assert not any(type(o).__name__ == "ChunkArc" and o.tick < 48 for o in late)  # its head lies before the chunk
    cut = chunk_sequence(item, 0, len(rows), 0, 48, np.array([0]))  # a one-beat chunk: the 2-beat wall is cut
    wall = next(o for o in decode_notes(cut) if type(o).__name__ == "ChunkWall")
    assert wall.duration == 48 and any(t in LENGTH for t in cut)
