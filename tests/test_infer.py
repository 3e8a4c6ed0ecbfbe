"""infer.py on CPU: grammar, overfit end to end, playable zips bsmap loads, tempo, clear errors."""

import io
import json
import math
import shutil
import zipfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import infer
import train
from audio import create_audio_tokenizer, estimate_tempo, load_audio, ogg_vorbis
from conftest import SHARED_MAPS, needs_shared
from data import (
    EOS,
    NOTE,
    NOTES_START,
    PAD,
    PEAK_NOTES_PER_BEAT,
    TIME,
    TOKEN_SPACE_VERSION,
    VOCAB_SIZE,
    NoteGrammar,
    generated_notes,
    note_tokens_error,
)
from levels.lightshow import ENVIRONMENT
from levels.package import GENERATED_BY, TOOL, write_zip
from levels.synth import synth_level
from maps import MapError, load_level

CHUNK_BEATS = 8


def _synth_song(tmp_path, index: int, bars: int, lead_silence: float = 0.0):
    """(path of a synthetic song as .ogg, its Level); lead_silence seconds of silence before it."""
    files, level = synth_level(index, bars=bars)
    samples, rate = sf.read(io.BytesIO(files["song.egg"]), dtype="float32")
    samples = np.concatenate([np.zeros(round(lead_silence * rate), np.float32), samples])
    path = tmp_path / f"synth_{index}.ogg"
    path.write_bytes(ogg_vorbis(samples, rate))
    return path, level


def _save_checkpoint(args, model, codec_info: dict, data: dict):
    model.save_pretrained(args.output_dir)
    train.save_inference_files(args.output_dir, train.checkpoint_info(args, codec_info, data))


def _args(tmp_path, *extra: str):
    data, out = tmp_path / "data", tmp_path / "out"
    data.mkdir(exist_ok=True)
    args = train.parse_args(
        ["--data", str(data), "--tiny", "--codec-weights", "random", "--output-dir", str(out), "--val-share", "0"]
        + ["--cache-dir", str(tmp_path / "cache"), "--report-to", "none", "--save-steps", "100000"]
        + ["--chunk-beats", str(CHUNK_BEATS), *extra]
    )
    args.data, args.output_dir = data, out
    return args


@pytest.fixture(scope="module")
def untrained(tmp_path_factory):
    """A tiny checkpoint with random weights: automapper.json as train.py writes it."""
    tmp = tmp_path_factory.mktemp("untrained")
    args = _args(tmp)
    model, _ = train.load_model(args)
    _save_checkpoint(args, model, create_audio_tokenizer(weights="random"), {"levels": 0})
    return args.output_dir


def _cells_and_stacks(notes) -> tuple[int, int]:
    """(two notes in one cell at one time, same-colour stacks with two arrow directions)."""
    cells, directions = defaultdict(int), defaultdict(set)
    for n in notes:
        cells[(round(n.beat * 48), n.x, n.y)] += 1
        if n.direction != 8:
            directions[(round(n.beat * 48), n.color)].add(n.direction)
    return sum(c > 1 for c in cells.values()), sum(len(d) > 1 for d in directions.values())


def _parity_errors(notes) -> tuple[int, int]:
    """(swings, swings going the same way as the hand's previous swing).

    A swing is one colour's notes at one tick. Its way: up-ish arrows +1, down-ish -1;
    sideways, swinging away from the body +1, across it -1 (left hand: left is away);
    a dot goes whichever way the hand needs. Each hand must alternate."""
    ways = {0: 1, 4: 1, 5: 1, 1: -1, 6: -1, 7: -1}
    sideways = {0: {2: 1, 3: -1}, 1: {3: 1, 2: -1}}
    by_swing = {}
    for n in sorted(notes):
        by_swing.setdefault((round(n.beat * 48), n.color), n.direction)
    last, errors = {}, 0
    for (_, color), direction in sorted(by_swing.items()):
        way = ways.get(direction, sideways[color].get(direction))
        if way is None:  # a dot
            way = -last.get(color, 1)
        errors += last.get(color) == way
        last[color] = way
    return len(by_swing), errors


# ---------------------------------------------------------------- grammar


@pytest.mark.parametrize("seed", range(5))
def test_grammar_keeps_sampling_from_random_logits_valid_and_on_the_grid(seed):
    generator = torch.Generator().manual_seed(seed)
    chunk_ticks = [384, 40, 7]
    # prompts: their marker time tokens, left-padded: the grid each row must walk
    grids = [list(range(0, ticks, 16)) + [ticks + 4] for ticks in chunk_ticks]  # a marker past the end is ignored
    length = max(map(len, grids)) + 1
    ids = torch.full((len(chunk_ticks), length), PAD, dtype=torch.long)
    for r, grid in enumerate(grids):
        ids[r, length - len(grid) - 1 :] = torch.tensor([*(TIME.start + t for t in grid), NOTES_START])
    grammar = NoteGrammar(length, chunk_ticks)
    for _ in range(700):
        scores = torch.randn(len(chunk_ticks), 15_000, generator=generator) * 3
        scores[:, EOS] -= 4  # long chunks, so stacks and same-tick notes get exercised
        ids = torch.cat([ids, torch.multinomial(grammar(ids, scores).softmax(-1), 1, generator=generator)], 1)
    stacks = 0
    for row, ticks, grid in zip(ids[:, length:].tolist(), chunk_ticks, grids):
        assert EOS in row  # the grid was walked to its end
        end = row.index(EOS)
        assert note_tokens_error(row[:end], ticks) is None
        assert all(t == EOS for t in row[end:])
        written = [t - TIME.start for t in row[:end] if t in TIME]
        assert set(written) >= {t for t in grid if t < ticks}  # no grid tick skipped
        notes = generated_notes(row)
        assert _cells_and_stacks(infer_notes(notes)) == (0, 0)
        stacks += len(notes) - len({n.tick for n in notes})
    assert stacks > 0  # several notes at one tick did occur


def _objects_walk(kinds, seed: int, steps: int = 900):
    """Sampling from random logits that favour every object row, under the grammar with these kinds ->
    (each row's tokens after the prompt, chunk ticks)."""
    from data import BOMB, CHAIN, LENGTH, VOCAB_SIZE, WALL

    generator = torch.Generator().manual_seed(seed)
    ticks = 16 * 48
    grid = torch.tensor([TIME.start + t for t in range(0, ticks, 12)])
    ids = torch.cat([grid, torch.tensor([NOTES_START])]).repeat(2, 1)
    grammar = NoteGrammar(ids.shape[1], [ticks] * 2, 4, kinds)
    for _ in range(steps):
        scores = torch.randn(2, VOCAB_SIZE + 7, generator=generator) * 2
        scores[:, NOTE.start : NOTE.stop] += 3
        scores[:, BOMB.start : CHAIN.stop] += 6  # weights that would write every kind everywhere
        scores[:, LENGTH.start : LENGTH.start + 48] += 4  # short walls too, not only the longest
        scores[:, WALL.start : WALL.stop] -= 2
        ids = torch.cat([ids, torch.multinomial(grammar(ids, scores).softmax(-1), 1, generator=generator)], 1)
    return [row[len(grid) + 1 :] for row in ids.tolist()], ticks


@pytest.mark.parametrize("seed", range(3))
def test_grammar_keeps_every_object_kind_to_the_rules_of_play(seed):
    from data import placed_objects
    from levels.scorecard import object_card
    from maps import Objects, TempoMap

    rows, ticks = _objects_walk(("note", "bomb", "wall", "arc", "chain"), seed)
    seen = Objects()
    for row in rows:
        assert EOS in row
        tokens = row[: row.index(EOS)]
        assert note_tokens_error(tokens, ticks) is None
        objects = placed_objects(generated_notes(row), 0)
        card = object_card(objects, TempoMap.steady(120), 8.0)
        broken = ("bombs_in_the_way", "walls_over_notes", "walls_in_view", "arcs_off_notes", "chains_off_notes")
        assert {k: card[k] for k in broken} == dict.fromkeys(broken, 0)
        assert all(w.beat + w.duration <= ticks / 48 and w.duration >= 1 / 8 for w in objects.obstacles)
        assert all(c.tail_beat <= c.head.beat + 1 for c in objects.chains)
        for kind in ("notes", "bombs", "obstacles", "arcs", "chains"):
            getattr(seen, kind).extend(getattr(objects, kind))
    assert all(count > 0 for count in seen.counts().values()), seen.counts()  # every kind was written


def test_a_kind_switched_off_is_never_written():
    from data import placed_objects

    rows, _ = _objects_walk(("note", "bomb"), 0, 500)
    counts = [placed_objects(generated_notes(row), 0).counts() for row in rows]
    assert all(c["walls"] == c["arcs"] == c["chains"] == 0 for c in counts) and sum(c["bombs"] for c in counts) > 0


def test_max_notes_per_beat_caps_every_beat_and_spreads_the_notes():
    generator = torch.Generator().manual_seed(0)
    ticks = 8 * 48  # 8 beats
    grid = torch.tensor([TIME.start + t for t in range(0, ticks, 12)])
    ids = torch.cat([grid, torch.tensor([NOTES_START])]).repeat(3, 1)
    grammar = NoteGrammar(ids.shape[1], [ticks] * 3, max_notes_per_beat=[2, 2.9, 1])
    for _ in range(400):
        scores = torch.randn(3, 15_000, generator=generator)
        scores[:, NOTE.start : NOTE.stop] += 6  # random weights that would write notes everywhere
        ids = torch.cat([ids, torch.multinomial(grammar(ids, scores).softmax(-1), 1, generator=generator)], 1)
    for row, cap in zip(ids[:, len(grid) + 1 :].tolist(), [2, 2, 1]):
        assert EOS in row  # the grid walked to its end
        beats = np.array([note.tick / 48 for note in generated_notes(row)])
        busiest = max(np.sum((beats > b - 1) & (beats <= b)) for b in beats)  # any one-beat span (b - 1, b]
        assert busiest == cap
        assert np.bincount(beats.astype(int), minlength=8).min() >= 1  # spread: every beat of the window has notes
        assert len(beats) >= 8 * cap - 2  # not one burst: about the cap in every beat


def test_the_density_floor_puts_a_note_in_every_empty_span_and_nowhere_else():
    generator = torch.Generator().manual_seed(0)
    ticks = 8 * 48  # 8 beats, a floor span of 2 beats: its note on the second half beat of each span
    grid = torch.tensor([TIME.start + t for t in range(0, ticks, 12)])
    ids = torch.cat([grid, torch.tensor([NOTES_START])]).repeat(2, 1)
    floor = {first + 72: first for first in range(0, ticks, 96)}
    grammar = NoteGrammar(ids.shape[1], [ticks] * 2, 4, floors=[floor, {}])
    for _ in range(200):
        scores = torch.randn(2, 15_000, generator=generator)
        scores[:, NOTE.start : NOTE.stop] -= 30  # a model that would write no note at all
        ids = torch.cat([ids, torch.multinomial(grammar(ids, scores).softmax(-1), 1, generator=generator)], 1)
    floored, free = (ids[r, len(grid) + 1 :].tolist() for r in range(2))
    assert EOS in floored and EOS in free
    assert [n.tick for n in generated_notes(floored)] == sorted(floor)  # one note per span, at its chosen tick
    assert generated_notes(free) == []


def test_the_density_floor_leaves_a_span_the_model_filled_and_rests_alone():
    from levels.package import OUTPUT_RATE
    from maps import TempoMap

    # 12 s at 120 BPM: a click on every beat, one loud hit on beat 13.5, and 4 s of silence from 8 s (beats 16-23)
    mono = np.zeros(12 * OUTPUT_RATE, np.float32)
    for beat in [*range(16), 13.5]:
        at = round(beat / 2 * OUTPUT_RATE)
        mono[at : at + 400] += (0.9 if beat == 13.5 else 0.2) * np.hanning(400)
    mono[round(10 * OUTPUT_RATE) :] += 0.05 * np.sin(np.arange(2 * OUTPUT_RATE) * 0.3)  # a tone after the rest
    beats = TempoMap.steady(120)
    floor = infer.floor_beats(mono, beats, 4, 24)
    starts = [first for first, _ in floor]
    assert starts == [0, 4, 8, 12, 20]  # beats 16-19 are silent: no floor note in a rest
    assert all(first <= beat < first + 4 for first, beat in floor)
    assert dict(floor)[12] == 13.5  # the span's strongest onset, a half beat
    assert all(beat >= 3 for _, beat in floor)  # none in the first MIN_NOTE_SECONDS (1.5 s = 3 beats)
    assert infer.window_floor(floor, 8, 8) == {round((dict(floor)[8] - 8) * 48): 0, 5 * 48 + 24: 4 * 48}
    assert infer.floor_beats(mono, beats, 0, 24) == []


def test_lm_head_is_cut_to_the_token_space_exactly(untrained):
    from transformers import AutoModelForCausalLM

    model, _ = infer.load_checkpoint(str(untrained), torch.device("cpu"), "float32")
    full = AutoModelForCausalLM.from_pretrained(untrained).eval()
    assert model.get_output_embeddings().weight.shape[0] == VOCAB_SIZE < full.config.vocab_size
    ids = torch.randint(0, VOCAB_SIZE, (2, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, full(ids).logits[..., :VOCAB_SIZE], atol=1e-5)


def test_progress_breaks_no_graph_when_the_decode_step_is_compiled(untrained):
    model, _ = infer.load_checkpoint(str(untrained), torch.device("cpu"), "float32")
    progress = infer.Progress(model, 10, 4).batch(10, 4)
    layer = model.get_decoder().layers[-1]
    try:
        # the hook inside a decode step (one position) that dynamo must trace whole: any graph break raises
        step = torch.compile(
            lambda h: progress._layer_done(layer, (h,), {}, h) or h * 2, fullgraph=True, backend="eager"
        )
        assert torch.equal(step(torch.ones(1, 1, 4)), torch.full((1, 1, 4), 2.0))
        scores = torch.zeros(1, 5)
        assert progress(torch.zeros(1, 3, dtype=torch.long), scores) is scores and progress.taken == 1
    finally:
        progress.close()
    assert infer.sampling_options()["disable_compile"] is True  # compiling is asked for (--compile), never implied
    assert infer.sampling_options(0.0, compile_decode=True)["disable_compile"] is False


def test_batches_keep_order_cap_rows_and_fit_memory():
    lengths = [10, 20, 30, 40, 50, 60]
    plan = infer.batches(lengths, 4, lambda rows, longest: rows * longest <= 100)
    assert [list(part) for part in plan] == [[0, 1, 2], [3, 4], [5]]  # 3 x 30, 2 x 50, then 60 alone
    assert [list(part) for part in infer.batches(lengths, 4, lambda rows, longest: True)] == [[0, 1, 2, 3], [4, 5]]
    assert [list(p) for p in infer.batches(lengths, 4, lambda rows, longest: False)] == [[i] for i in range(6)]
    assert infer.batches([], 4, lambda rows, longest: True) == []


def test_free_memory_is_capped_by_the_containers_cgroup(tmp_path):
    import psutil

    cpu = torch.device("cpu")
    assert infer.free_bytes(cpu, tmp_path / "none") > 0  # no cgroup files: the machine's available RAM
    (tmp_path / "memory.max").write_text("max\n")
    (tmp_path / "memory.current").write_text("1000\n")
    assert infer.free_bytes(cpu, tmp_path) == pytest.approx(psutil.virtual_memory().available, rel=0.05)
    (tmp_path / "memory.max").write_text(f"{2**30 + 1000}\n")
    assert infer.free_bytes(cpu, tmp_path) == 2**30  # the limit minus what the container already uses


def test_window_bytes_is_the_kv_cache_and_one_layers_activations():
    from transformers import AutoModelForCausalLM, Qwen3Config

    model = AutoModelForCausalLM.from_config(Qwen3Config(**train.QWEN3_06B | dict(num_hidden_layers=1)))
    # Qwen3-0.6B: 8 KV heads x 128 per K and per V, fp32; q 16 x 128; MLP 3 x 3072; 2 x hidden 1024
    per_token = 2 * 8 * 128 * 4 + (16 * 128 + 2 * 8 * 128 + 3 * 3072 + 2 * 1024) * 4
    assert infer.window_bytes(model, 1000) == 1000 * per_token
    model.config.num_hidden_layers = 28
    assert infer.window_bytes(model, 6000) / 2**30 == pytest.approx(1.6, abs=0.1)  # a 64-beat window at 120 BPM


@pytest.mark.parametrize("cache", ["dynamic", "static"])
def test_grouped_decode_attention_matches_sdpa_with_left_padding(untrained, cache):
    from transformers import AutoModelForCausalLM

    ours, _ = infer.load_checkpoint(str(untrained), torch.device("cpu"), "float32")
    sdpa = infer.token_space_head(AutoModelForCausalLM.from_pretrained(untrained, attn_implementation="sdpa").eval())
    assert ours.config._attn_implementation == infer.DECODE_ATTENTION
    assert ours.config.num_key_value_heads < ours.config.num_attention_heads  # grouped-query attention
    ids = torch.randint(0, VOCAB_SIZE, (3, 50), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[0, :7], mask[2, :20] = 0, 0  # left padding of different lengths
    options = {"max_new_tokens": 12, "min_new_tokens": 12, "do_sample": False, "pad_token_id": PAD}
    options |= {"output_scores": True, "return_dict_in_generate": True, "cache_implementation": cache}
    with torch.no_grad():
        a = ours.generate(input_ids=ids, attention_mask=mask, **options)
        b = sdpa.generate(input_ids=ids, attention_mask=mask, **options)
    assert torch.equal(a.sequences, b.sequences)
    assert all(torch.allclose(x, y, atol=1e-4) for x, y in zip(a.scores, b.scores))


def test_prefill_computes_logits_for_the_last_position_only(untrained):
    model, info = infer.load_checkpoint(str(untrained), torch.device("cpu"), "float32")
    positions = []  # positions the LM head saw per forward
    model.get_output_embeddings().register_forward_hook(lambda m, args, out: positions.append(args[0].shape[1]))
    prompt = torch.cat([torch.tensor([TIME.start + t for t in range(0, 8 * 48, 12)]), torch.tensor([NOTES_START])])
    rows = [infer.Window("Expert", 0, 8 * 48, np.concatenate([np.zeros(300, np.int64) + 5, prompt.numpy()]))]
    infer.decode(model, rows, CHUNK_BEATS, info, infer.sampling_options())
    assert len(positions) > 10 and set(positions) == {1}


def infer_notes(chunk_notes):
    return [note.placed(0) for note in chunk_notes]


# ---------------------------------------------------------------- end to end


def test_overfit_model_reproduces_the_song_greedily(tmp_path):
    index, bars = 6, 2  # 120 BPM; 4 bars: chunks [0, 8) and [8, 16) beats, then the song's last half second
    song, level = _synth_song(tmp_path, index, bars)
    args = _args(tmp_path, "--max-empty-share", "1")
    write_zip(args.data / "song.zip", synth_level(index, bars=bars)[0])
    args.max_steps, args.grad_accum, args.learning_rate, args.warmup_steps = 300, 1, 3e-3, 0
    dataset, _, info = train.build_datasets(args)
    expert = next(i for i, item in enumerate(dataset.items) if item.difficulty == "Expert")
    dataset.chunks = [(expert, start) for start in (0, 8, 16)]  # the windows infer.py cuts, kept every epoch
    dataset.set_epoch = lambda epoch: None
    model, _ = train.load_model(args)
    train.build_trainer(args, model, dataset, None).train()
    _save_checkpoint(args, model, info["codec"], info["data"])

    out = tmp_path / "level.zip"
    common = ["--model", str(args.output_dir), "--bpm", "120", "--offset", "0", "--temperature", "0"]
    common += ["--floor-beats", "0"]  # the model alone: the floor would fill the song's empty lead-in bars
    assert infer.main([str(song), *common, "--difficulty", "Expert", "--output", str(out)]) == 0
    generated = next(d for d in load_level(out).difficulties if d.difficulty == "Expert")
    wanted = next(d for d in level.difficulties if d.difficulty == "Expert")
    assert len(wanted.notes) >= 8 and generated.notes == sorted(wanted.notes)


def test_untrained_model_gives_a_playable_level_bsmap_loads(tmp_path, untrained, capsys):
    from bsmap.mapper import BeatSaberMapper

    song, level = _synth_song(tmp_path, 4, bars=8, lead_silence=0.3)  # tempo estimated; silence gets padded
    out = tmp_path / "level.zip"
    args = ["--model", str(untrained), "--temperature", "1.0", "--difficulty", "Normal", "Expert", "ExpertPlus"]
    assert infer.main([str(song), *args, "--output", str(out), "--song-author", "Someone", "--preview"]) == 0
    assert "parity flips" in capsys.readouterr().out
    assert (tmp_path / "level.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    result = load_level(out)
    assert abs(result.bpm / level.bpm - 1) < 0.002 and result.song_author == "Someone"
    assert [d.difficulty for d in result.difficulties] == ["Normal", "Expert", "ExpertPlus"]
    notes = 0
    for diff in result.difficulties:
        assert diff.version == "3.3.0" and diff.off_grid == 0 and diff.njs > 0
        assert _cells_and_stacks(diff.notes) == (0, 0)
        swings, errors = _parity_errors(diff.notes)
        assert errors <= 0.05 * swings
        assert all(n.beat * 60 / result.bpm >= 1.5 for n in diff.notes)
        ticks = np.array([round(n.beat * 48) for n in diff.notes])  # the files round beats to a few decimals
        busiest = max(np.sum((ticks > t - 48) & (ticks <= t)) for t in ticks)  # notes in any one-beat span
        assert busiest <= PEAK_NOTES_PER_BEAT[diff.difficulty]  # random weights cannot write a wall of notes
        notes += len(diff.notes)
    assert notes > 20  # an untrained model at temperature 1 writes plenty of notes

    with zipfile.ZipFile(out) as archive:
        names = set(archive.namelist())
        assert names == {"Info.dat", "NormalStandard.dat", "ExpertStandard.dat", "ExpertPlusStandard.dat"} | {
            "song.egg",
            "cover.jpg",
        }
        info = sf.info(io.BytesIO(archive.read("song.egg")))
        assert (info.format, info.subtype, info.samplerate) == ("OGG", "VORBIS", 44100)
        assert archive.read("cover.jpg")[:2] == b"\xff\xd8"  # JPEG
        archive.extractall(tmp_path / "folder")
    # the song now starts with silence up to the next beat after 0.3 s: beat 1 of the grid
    padded = load_audio(tmp_path / "folder" / "song.egg", 44100)
    assert abs((len(padded) - 44100 * (sf.info(song).duration)) / 44100 - (60 / level.bpm - 0.3)) < 0.02
    # bsmap's own load_map_folder breaks on any folder with a difficulty file (bsmap 1.1.4): load file by file
    folder = tmp_path / "folder"
    info = BeatSaberMapper.load_info_dat(str(folder / "Info.dat"))
    files = [b.beatmapFilename for s in info.difficultyBeatmapSets for b in s.difficultyBeatmaps]
    beatmaps = {name: BeatSaberMapper.load_beatmap(str(folder / name)) for name in files}
    assert sorted(files) == sorted(n for n in names if n.endswith("Standard.dat"))
    assert sum(len(b.colorNotes) for b in beatmaps.values()) == notes
    assert all(len(b.basicBeatmapEvents) > 10 for b in beatmaps.values())  # a lightshow per difficulty
    assert BeatSaberMapper.validate_map(info, beatmaps) == {}
    # honest metadata: the author line says generated; _customData says by what and how
    raw = json.loads((folder / "Info.dat").read_bytes())
    assert raw["_levelAuthorName"] == GENERATED_BY and raw["_environmentName"] == ENVIRONMENT
    generator = raw["_customData"]["_generator"]
    assert set(generator) == {"tool", "aiGenerated", "checkpoint", "model", "baseModel", "tokenSpaceVersion"} | {
        "codec",
        "seed",
        "temperature",
        "topP",
        "tempo",
        "lights",
        "objects",
        "floorBeats",
    }
    assert generator["objects"] == ["note"]  # its training maps held colour notes only
    assert generator["floorBeats"] == {"Normal": 4, "Expert": 2, "ExpertPlus": 2}  # the density floor's defaults
    assert generator["aiGenerated"] is True and generator["tokenSpaceVersion"] == TOKEN_SPACE_VERSION
    assert generator["model"] == "trained"  # a starter model's levels say "starter (...)"
    assert (generator["seed"], generator["temperature"], generator["lights"]) == (0, 1.0, "full")
    assert generator["checkpoint"] == untrained.name and raw["_customData"]["_editors"]["_lastEditedBy"] == TOOL


def _claiming(untrained: Path, folder: Path, info: dict) -> Path:
    """A copy of the untrained model whose automapper.json is updated with info."""
    shutil.copytree(untrained, folder)
    saved = json.loads((folder / "automapper.json").read_text())
    (folder / "automapper.json").write_text(json.dumps(saved | info))
    return folder


def test_every_object_kind_reaches_a_level_bsmap_loads(tmp_path, untrained, capsys):
    from bsmap.mapper import BeatSaberMapper

    counts = {"note": 10, "bomb": 5, "wall": 5, "arc": 5, "chain": 5}
    model = _claiming(untrained, tmp_path / "model", {"data": {"objects": counts}})
    song, _ = _synth_song(tmp_path, 2, bars=12)
    out = tmp_path / "level"
    args = ["--model", str(model), "--temperature", "1.0", "--difficulty", "Expert", "--bpm", "120", "--offset", "0"]
    assert infer.main([str(song), *args, "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    expert = load_level(out).difficulties[0]
    counts = expert.objects.counts()
    assert all(counts[kind] > 0 for kind in ("notes", "bombs", "walls", "arcs", "chains")), counts
    assert f"{counts['bombs']} bombs" in printed
    beatmap = BeatSaberMapper.load_beatmap(str(out / "ExpertStandard.dat"))
    assert (len(beatmap.bombNotes), len(beatmap.obstacles), len(beatmap.sliders), len(beatmap.burstSliders)) == (
        counts["bombs"],
        counts["walls"],
        counts["arcs"],
        counts["chains"],
    )
    info = BeatSaberMapper.load_info_dat(str(out / "Info.dat"))
    assert BeatSaberMapper.validate_map(info, {"ExpertStandard.dat": beatmap}) == {}
    from levels.scorecard import object_card
    from maps import TempoMap

    card = object_card(expert.objects, TempoMap.steady(120), 30.0)
    assert [card[k] for k in ("bombs_in_the_way", "walls_over_notes", "walls_in_view")] == [0, 0, 0]
    assert [card[k] for k in ("arcs_off_notes", "chains_off_notes")] == [0, 0]
    # each switch turns its kind off in the grammar
    assert (
        infer.main([str(song), *args, "--output", str(tmp_path / "off"), "--no-bombs", "--no-walls", "--no-arcs"]) == 0
    )
    off = load_level(tmp_path / "off").difficulties[0].objects.counts()
    assert off["bombs"] == off["walls"] == off["arcs"] == 0 and off["chains"] > 0


def test_switches_follow_what_the_model_learned(tmp_path, untrained, capsys):
    song, _ = _synth_song(tmp_path, 2, bars=4)
    base = ["--bpm", "120", "--offset", "0", "--output", str(tmp_path / "x.zip")]
    assert infer.main([str(song), "--model", str(untrained), "--walls", *base]) == infer.EXIT_USAGE
    assert "never saw walls" in capsys.readouterr().err
    older = _claiming(untrained, tmp_path / "v5", {"token_space_version": 5})  # ids a prefix of today's
    args = infer.parse_args([str(song), "--model", str(older)])
    assert infer.chosen_kinds(args, infer.model_info(str(older))) == ["note"]


# ---------------------------------------------------------------- tempo


def test_analyze_prints_the_synthetic_tempo_without_a_model(tmp_path, capsys):
    song, level = _synth_song(tmp_path, 0, bars=8, lead_silence=0.25)  # 128.5 BPM
    assert infer.main([str(song), "--analyze", "--json", "--model", str(tmp_path / "none")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert abs(report["bpm"] / level.bpm - 1) < 0.001 and report["confidence"] > 0.5 and not report["doubtful"]
    tempi = [c["bpm"] for c in report["candidates"]]  # best first, with the metrical relatives to pick from
    assert tempi[0] == report["bpm"] and any(
        abs(t / level.bpm - 2) < 0.01 or abs(t / level.bpm - 0.5) < 0.01 for t in tempi
    )
    assert infer.main([str(song), "--analyze", "--model", str(tmp_path / "none")]) == 0
    assert "candidate BPM" in capsys.readouterr().out
    period = 60 / level.bpm
    assert abs((report["first_beat"] - 0.25 + period / 2) % period - period / 2) < 0.02

    assert infer.main([str(song), "--analyze", "--json", "--bpm", str(level.bpm)]) == 0  # the first beat alone
    report = json.loads(capsys.readouterr().out)
    assert report["bpm"] == level.bpm and abs((report["first_beat"] - 0.25 + period / 2) % period - period / 2) < 0.02


def test_a_doubtful_tempo_says_why_and_what_to_do():
    from audio import Candidate, Tempo

    close = (Candidate(100.0, 1.0, 2.0, "tracker"), Candidate(200.0, 0.95, 1.9, "tracker x2"))
    line = infer.tempo_line(Tempo(100.0, 0.1, 0.3, "essentia", close, None, 0.6))
    assert "doubtful" in line and "200.00 BPM scores almost as well" in line and "60%" in line and "--bpm" in line
    sure = (Candidate(100.0, 3.0, 4.0, "tracker"), Candidate(200.0, 1.0, 1.9, "tracker x2"))
    assert "doubtful" not in infer.tempo_line(Tempo(100.0, 0.1, 1.0, "essentia", sure, None, 1.0))


def test_warped_window_at_one_tempo_is_the_plain_window():
    from data import chunk_codes, chunk_frames, chunk_markers, window_codes
    from maps import TempoMap

    codes = np.random.default_rng(0).integers(0, 1024, (700, 2)).astype(np.int16)  # [frames, 2], 75 frames/s
    silence = np.array([5, 7], dtype=np.int16)
    bpm, beat_times = 120.0, np.arange(40) * 0.5  # [beats] seconds: 37.5 frames per beat
    for start in (0, 8, 16):  # the last window runs past the song's end into silence
        first, end = chunk_frames(start, CHUNK_BEATS, bpm, 75)
        window, markers = window_codes(codes, silence, TempoMap.from_beat_times(beat_times), start, CHUNK_BEATS, 75)
        assert np.array_equal(window, chunk_codes(codes, first, end, silence))
        plain = chunk_markers(start, CHUNK_BEATS, bpm, 75, end - first)
        assert np.array_equal(markers.ticks, plain.ticks) and np.array_equal(markers.frames, plain.frames)


def test_tempo_events_keep_every_beat_on_its_time():
    from maps import BEAT_TEMPO_TOLERANCE, TempoMap

    periods = np.r_[np.full(30, 0.5), np.full(20, 0.4), np.linspace(0.4, 0.45, 16), np.full(10, 0.45)]
    beat_times = np.r_[0, np.cumsum(periods)]  # [77] seconds: a step and a ramp
    events = TempoMap.from_beat_times(beat_times).events(BEAT_TEMPO_TOLERANCE, decimals=4)
    assert events[0] == (0.0, 120.0) and (30.0, 150.0) in events and len(events) < 30
    level_times = TempoMap.from_events(events[0].bpm, events).seconds_at(np.arange(beat_times.size))
    assert np.abs(level_times - beat_times).max() < 1e-3


def test_a_song_whose_tempo_steps_gets_bpm_events_and_notes_on_its_beats(tmp_path, untrained, capsys):
    from bsmap.mapper import BeatSaberMapper

    from maps import TempoMap

    files, level = synth_level(2, seed=7, bars=40, hard=True, tempo="step")
    song = tmp_path / "step.ogg"
    song.write_bytes(files["song.egg"])
    out = tmp_path / "level"
    argv = [str(song), "--model", str(untrained), "--difficulty", "Expert", "--output", str(out), "--preview"]
    assert infer.main(argv) == 0
    assert "the tempo changes" in capsys.readouterr().out
    assert (tmp_path / "level.png").read_bytes()[:4] == b"\x89PNG"  # drawn on the level's own beats
    result = load_level(out)
    expert = result.difficulties[0]
    assert len(expert.bpm_events) >= 2 and expert.notes
    # the level's beats, timed through its bpmEvents, land on the song's: the true beat times of the synth,
    # shifted by the silence infer.py put before the song
    seconds = len(load_audio(out / "song.egg", 44100)) / 44100
    pad = seconds - len(load_audio(song, 44100)) / 44100
    beats = np.arange(int(seconds * 4))
    level_times = TempoMap.from_events(result.bpm, expert.bpm_events).seconds_at(beats)
    truth = TempoMap.from_events(level.bpm, level.difficulties[0].bpm_events).seconds_at(beats) + pad
    on = [np.abs(level_times - t).min() <= 60 / level.bpm / 8 for t in truth if pad < t < seconds]
    assert np.mean(on) >= 0.95
    note_times = TempoMap.from_events(result.bpm, expert.bpm_events).seconds_at([n.beat for n in expert.notes])
    assert note_times.max() < seconds
    info = BeatSaberMapper.load_info_dat(str(out / "Info.dat"))
    beatmap = BeatSaberMapper.load_beatmap(str(out / "ExpertStandard.dat"))
    assert len(beatmap.bpmEvents) == len(expert.bpm_events)
    assert BeatSaberMapper.validate_map(info, {"ExpertStandard.dat": beatmap}) == {}


@needs_shared
def test_tempo_on_real_songs_meets_the_targets():
    within, phases = [], []
    for folder in sorted(p for p in SHARED_MAPS.iterdir() if p.is_dir()):
        try:
            level = load_level(folder)
        except MapError:
            continue
        if not level.bpm or not (folder / level.song_filename).is_file():
            continue
        estimate = estimate_tempo(load_audio(folder / level.song_filename, 44100), 44100)
        ratio = estimate.bpm / level.bpm
        within.append(any(abs(ratio / m - 1) <= 0.02 for m in (1, 2, 0.5)))
        beats = estimate.first_beat * level.bpm / 60  # on the mapper's grid
        phases.append(abs(beats - round(beats)))
    assert len(within) >= 5, "fewer fixture songs than expected"
    assert np.mean(within) >= 0.8 and np.median(phases) <= 0.1, (within, phases)


# ---------------------------------------------------------------- errors


def test_tight_memory_decodes_window_by_window_and_reports_the_time(tmp_path, untrained, capsys, monkeypatch):
    song, _ = _synth_song(tmp_path, 2, bars=6)
    sizes = []
    decode = infer.decode
    monkeypatch.setattr(infer, "decode", lambda model, batch, *a: sizes.append(len(batch)) or decode(model, batch, *a))
    common = [str(song), "--model", str(untrained), "--bpm", "120", "--offset", "0", "--temperature", "1"]
    assert infer.main([*common, "--output", str(tmp_path / "a.zip"), "--difficulty", "Normal", "Expert"]) == 0
    rows = 2 * math.ceil(sf.info(song).duration * 120 / 60 / CHUNK_BEATS)  # windows x difficulties
    assert sizes == [rows]  # they fit in one batch of at most 16
    out = capsys.readouterr().out
    times = dict(part.rsplit(" ", 2)[:2] for part in out.split("time: ")[1].splitlines()[0].split(", "))
    assert {"prefill", "decode", "encodec", "total"} <= set(times) and float(times["decode"]) > 0

    sizes.clear()
    monkeypatch.setattr(infer, "free_bytes", lambda device: 1)  # room for no batch: one window at a time
    assert infer.main([*common, "--output", str(tmp_path / "b.zip"), "--difficulty", "Normal", "Expert"]) == 0
    assert sizes == [1] * rows
    assert sum(len(d.notes) for d in load_level(tmp_path / "b.zip").difficulties) > 0


def test_quantize_int8_maps_on_cpu_and_is_refused_on_cuda(tmp_path, untrained, capsys):
    song, _ = _synth_song(tmp_path, 2, bars=6)
    common = [str(song), "--model", str(untrained), "--bpm", "120", "--offset", "0", "--temperature", "1"]
    assert infer.main([*common, "--quantize", "int8", "--output", str(tmp_path / "q.zip")]) == 0
    assert len(load_level(tmp_path / "q.zip").difficulties[0].notes) > 0
    model, _ = infer.load_checkpoint(str(untrained), torch.device("cpu"), "float32")
    linear = {type(m) for m in infer.quantized(model).modules() if type(m).__name__ == "Linear"}
    assert linear == {torch.ao.nn.quantized.dynamic.Linear}  # every projection and the LM head
    capsys.readouterr()
    assert infer.main([*common, "--quantize", "int8", "--device", "cuda"]) == 2
    assert "--quantize int8 is for CPU" in capsys.readouterr().err


def test_bad_inputs_exit_2_with_one_line(tmp_path, untrained, capsys, monkeypatch):
    def error(*argv: str) -> str:
        assert infer.main(list(argv)) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("infer.py: ")
        return lines[0]

    garbage = tmp_path / "broken.ogg"
    garbage.write_bytes(b"OggS but not really" * 100)
    assert "unreadable audio" in error(str(garbage), "--model", str(untrained))
    assert "no such file" in error(str(tmp_path / "missing.ogg"), "--model", str(untrained))
    # the model is checked before any audio work: a missing one is named even when the song is missing too
    assert "no model at" in error(str(tmp_path / "missing.ogg"), "--model", str(tmp_path / "nowhere"))
    monkeypatch.chdir(tmp_path)  # no output/ and no output/starter here: how to get a model, in one line
    monkeypatch.setattr(infer, "REPO", tmp_path)  # nor beside infer.py
    assert "python train.py --starter" in error(str(tmp_path / "missing.ogg"))
    empty = tmp_path / "empty.ogg"
    empty.write_bytes(b"")
    assert "empty.ogg: empty file (0 bytes)" in error(str(empty), "--model", str(untrained))

    short = tmp_path / "short.ogg"
    short.write_bytes(ogg_vorbis(np.sin(np.arange(44100 * 3) / 10).astype(np.float32) * 0.5, 44100))
    assert "at least 5 s" in error(str(short), "--model", str(untrained))

    song, _ = _synth_song(tmp_path, 1, bars=2)
    message = error(str(song), "--bpm", "87", "--model", str(tmp_path / "nowhere"))
    assert "no model at" in message and "train.py" in message and "--model" in message

    other = tmp_path / "other_space"
    other.mkdir()
    info = json.loads((untrained / "automapper.json").read_text()) | {"token_space_version": 0}
    (other / "automapper.json").write_text(json.dumps(info))
    assert "token space version 0" in error(str(song), "--bpm", "87", "--model", str(other))


def test_the_starter_beside_infer_py_is_found_from_any_folder(tmp_path, monkeypatch):
    repo, music = tmp_path / "repo", tmp_path / "music"
    (repo / infer.STARTER_DIR).mkdir(parents=True)
    (repo / infer.STARTER_DIR / "automapper.json").write_text("{}")
    music.mkdir()
    monkeypatch.chdir(music)
    monkeypatch.setattr(infer, "REPO", repo)
    assert infer.default_model() == str(repo / infer.STARTER_DIR)
    (music / "output").mkdir()
    (music / "output" / "automapper.json").write_text("{}")  # a model of the user's own, here, comes first
    assert infer.default_model() == "output"
