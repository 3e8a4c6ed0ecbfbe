"""train.py on CPU: the CLI end to end with resume, label alignment, no truncation, clear errors."""

import importlib.util
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch

import infer
import train
from conftest import ROOT, level_dict, zip_bytes
from data import (
    AUDIO,
    DIFFICULTY,
    EOS,
    NOTE,
    NOTES_START,
    PAD,
    SPECIAL,
    TIME,
    audio_masking_collator,
    audio_token_ids,
)
from levels.package import write_zip
from levels.synth import synth_level, write_synth_corpus
from maps import current_umask, load_level


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_synth_corpus(tmp_path_factory.mktemp("synth"), songs=4, bars=4)[0].parent


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def _train(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "train.py", *args], cwd=ROOT, capture_output=True, text=True, env=env, timeout=900
    )


def _log(checkpoint) -> list[dict]:
    return json.loads((checkpoint / "trainer_state.json").read_text())["log_history"]


def test_cli_trains_saves_reloads_and_resumes(corpus, cache_dir, tmp_path):
    out = tmp_path / "out"
    common = ["--data", str(corpus), "--tiny", "--codec-weights", "random", "--output-dir", str(out)]
    fast = ["--cache-dir", str(cache_dir), "--chunk-beats", "16", "--grad-accum", "2", "--learning-rate", "1e-3"]
    first = _train(*common, *fast, "--max-steps", "30", "--eval-maps", "2")
    assert first.returncode == 0, first.stderr[-3000:]
    assert "training: tiny Qwen3, transformers" in first.stdout

    losses = [entry["loss"] for entry in _log(out / "checkpoint-30") if "loss" in entry]
    assert len(losses) == 30 and np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.5
    assert any("eval_loss" in entry and "eval_mean_token_accuracy" in entry for entry in _log(out / "checkpoint-30"))
    # --eval-maps: map quality logged beside the validation loss, the last figures kept in automapper.json
    mapped = [entry for entry in _log(out / "checkpoint-30") if "eval_map_timing_f1" in entry]
    assert mapped and 0 <= mapped[-1]["eval_map_timing_f1"] <= 1 and mapped[-1]["eval_map_density_ratio"] >= 0
    assert "eval_map_parity_errors_per_swing" in mapped[-1]

    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert model.config.vocab_size >= DIFFICULTY.stop and tokenizer.eos_token_id == EOS
    info = json.loads((out / "automapper.json").read_text())
    assert info["token_space_version"] == train.TOKEN_SPACE_VERSION and info["chunk_beats"] == 16
    assert info["codec"]["id"].startswith("encodec24k-random") and info["codec"]["frame_rate"] == 75
    assert info["data"]["songs"] == {"train": 3, "validation": 1} and info["data"]["difficulties"] == 8
    assert info["last_map_evaluation"]["eval_map_timing_f1"] == mapped[-1]["eval_map_timing_f1"]
    assert info["steps"] == 30
    # the model card is the project's own, never TRL's template
    card = (out / "README.md").read_text()
    assert "AI-generated" in card and "python infer.py" in card and "30 optimizer steps" in card
    assert "random test codec" in card and "eval_map" not in card and "map_timing_f1" in card
    assert "fine-tuned version of" not in card
    mode = 0o666 & ~current_umask()  # every file as a plain open() would create it (0644 under umask 022)
    for name in ("model.safetensors", "automapper.json", "README.md"):
        assert (out / name).stat().st_mode & 0o777 == mode, name
    # a checkpoint maps while training goes on: it carries automapper.json and the card
    checkpoint = out / "checkpoint-30"
    assert json.loads((checkpoint / "automapper.json").read_text())["steps"] == 30
    assert "fine-tuned version of" not in (checkpoint / "README.md").read_text()
    source = sorted(corpus.glob("*.zip"))[0]
    song = tmp_path / "song.egg"
    song.write_bytes(zipfile.ZipFile(source).read("song.egg"))
    level = tmp_path / "level.zip"
    bpm = str(load_level(source).bpm)
    flags = ["--model", str(checkpoint), "--bpm", bpm, "--offset", "0", "--output", str(level)]
    assert infer.main([str(song), *flags]) == 0
    assert load_level(level).difficulties[0].notes is not None

    resumed = _train(*common, *fast, "--max-steps", "40", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    steps = [entry["step"] for entry in _log(out / "checkpoint-40") if "loss" in entry]
    assert steps == list(range(1, 41))  # the 30 restored steps, then 31..40, none repeated
    assert json.loads((out / "checkpoint-40" / "trainer_state.json").read_text())["global_step"] == 40


def _one_song(tmp_path, index: int, bars: int):
    write_zip(tmp_path / "song.zip", synth_level(index, bars=bars)[0])
    return tmp_path


def _args(data, cache_dir, out, *extra: str):
    return train.parse_args(
        ["--data", str(data), "--tiny", "--codec-weights", "random", "--output-dir", str(out), "--val-share", "0"]
        + ["--cache-dir", str(cache_dir), "--report-to", "none", "--save-steps", "100000", *extra]
    )


def test_label_alignment_by_overfitting_one_chunk(tmp_path, cache_dir):
    args = _args(_one_song(tmp_path, 0, 2), cache_dir, tmp_path / "out", "--chunk-beats", "8", "--max-empty-share", "0")
    args.max_steps, args.grad_accum, args.learning_rate, args.warmup_steps = 150, 1, 3e-3, 0
    dataset, _, _ = train.build_datasets(args)
    dataset.chunks = dataset.chunks[-1:]  # one chunk with notes, kept across epochs
    dataset.set_epoch = lambda epoch: None
    model, _ = train.load_model(args)
    train.build_trainer(args, model, dataset, None).train()

    batch = audio_masking_collator([dataset[0]])
    model.eval()
    with torch.no_grad():
        predicted = model(input_ids=batch["input_ids"]).logits[0, :-1].argmax(-1)
    labels = batch["labels"][0, 1:]
    trained = labels != -100
    assert trained.sum() > 10 and labels[trained][-1] == EOS
    assert torch.equal(predicted[trained], labels[trained])  # every note token and EOS, teacher-forced


def test_long_sequence_reaches_the_model_whole(tmp_path, cache_dir):
    args = _args(_one_song(tmp_path, 5, 16), cache_dir, tmp_path / "out")  # 60.5 BPM: 64 beats = 63 s
    args.max_steps, args.grad_accum = 1, 1
    dataset, _, _ = train.build_datasets(args)
    longest = max(len(dataset[i]["input_ids"]) for i in range(len(dataset)))
    assert longest > 5000
    model, _ = train.load_model(args)
    reached, seen = [], []  # what the transformer layers got; what the loss got
    model.get_decoder().register_forward_pre_hook(lambda module, a, kw: reached.append(kw), with_kwargs=True)
    trainer = train.build_trainer(args, model, dataset, None)
    loss = trainer.compute_loss
    trainer.compute_loss = lambda model, inputs, *a, **k: seen.append(inputs) or loss(model, inputs, *a, **k)
    trainer.train()
    assert max(kw["input_ids"].shape[1] for kw in reached) == longest  # nothing truncated
    for kw in seen:
        ids, labels = kw["input_ids"][0], kw["labels"][0]
        in_notes = torch.arange(len(ids)) > int(torch.nonzero(ids == NOTES_START)[0, 0])
        note = ((ids < TIME.stop) | ((ids >= NOTE.start) & (ids < NOTE.stop))) & in_notes | (ids == EOS)
        masked = (ids >= AUDIO.start) & (ids < AUDIO.stop) | (ids >= SPECIAL.start) & (ids != EOS)
        masked |= (ids < TIME.stop) & ~in_notes  # the time markers inside the audio
        assert (labels[masked] == -100).all() and torch.equal(labels[note], ids[note])
        assert ((ids >= DIFFICULTY.start) & (labels == -100)).sum() == 1  # the difficulty token is not trained


def test_clear_errors_exit_2(tmp_path, corpus, cache_dir, capsys):
    assert train.main(["--data", str(tmp_path / "nope"), "--tiny"]) == 2
    assert "train.py: no data folder at" in capsys.readouterr().err

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "level.zip").write_bytes(zip_bytes({"Info.dat": level_dict("v2")["Info.dat"]}))
    random_codec = ["--codec-weights", "random", "--cache-dir", str(cache_dir)]
    assert train.main(["--data", str(broken), "--tiny", *random_codec]) == 2
    err = capsys.readouterr().err
    assert "no trainable level in" in err and "unreadable difficulty file" in err

    common = ["--data", str(corpus), *random_codec]
    assert train.main([*common, "--tiny", "--resume", "--output-dir", str(tmp_path / "fresh")]) == 2
    assert "nothing to resume" in capsys.readouterr().err

    offline = os.environ | {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    no_weights = _train(*common, "--model", "someone/not-downloaded", "--output-dir", str(tmp_path / "o"), env=offline)
    assert no_weights.returncode == 2 and "cannot load model 'someone/not-downloaded'" in no_weights.stderr
    assert "--init scratch" in no_weights.stderr


def test_split_is_by_song_and_seeded():
    songs = [f"{i:040x}" for i in range(20)]
    train_songs, val_songs = train.split_songs(songs + songs, 0.1, seed=1)
    assert len(val_songs) == 2 and not train_songs & val_songs and train_songs | val_songs == set(songs)
    assert train.split_songs(songs, 0.1, seed=1) == (train_songs, val_songs)
    assert train.split_songs(songs[:1], 0.5, seed=1) == (set(songs[:1]), set())  # never leaves training empty


class _Plan:
    """What SimilarLengths reads of a BeatDataset: this epoch's chunks' token bounds."""

    def __init__(self, bounds: list[int]):
        self.bounds, self.epoch = bounds, 0

    def token_bounds(self) -> list[int]:
        return self.bounds


def test_length_grouped_batches_cover_every_row_once_with_little_padding():
    rng = np.random.default_rng(0)
    # four tempi (the audio sets a chunk's length) plus a few tokens of notes each
    bounds = (rng.choice([480, 640, 900, 1300], 203) + rng.integers(0, 24, 203)).tolist()
    plan, batch = _Plan(bounds), 4
    sampler = train.SimilarLengths(plan, rows=203, batch_size=batch, seed=0)
    rows = list(sampler)
    assert sorted(rows) == list(range(203)) and len(sampler) == 203
    lengths = np.asarray(bounds)[rows[:200]].reshape(-1, batch)  # the 50 whole batches; the short one comes last

    def padded_share(lengths: np.ndarray) -> float:
        return (lengths.max(1) * batch).sum() / lengths.sum()

    random_order = np.asarray(bounds)[rng.permutation(203)[:200]].reshape(-1, batch)
    assert padded_share(lengths) < 1.03 < 1.15 < padded_share(random_order)
    # every batch is a random draw of one length, not the windows of one song in a row: batches come shuffled
    assert np.abs(np.diff(lengths[:, 0])).max() > 300
    assert np.asarray(bounds)[rows[:batch]].max() == max(bounds)  # a batch too long for memory fails at once
    assert list(sampler) == rows  # one epoch, one order
    plan.epoch = 1
    assert list(sampler) != rows and sorted(sampler) == list(range(203))
    # more rows than this epoch plans: IndexedChunks wraps them onto the plan, so do the bounds
    assert sorted(train.SimilarLengths(_Plan(bounds[:150]), rows=203, batch_size=batch, seed=0)) == list(range(203))


def test_time_limit_stops_training_once_the_budget_is_spent():
    import time

    from transformers import TrainerControl

    limit, control = train.TimeLimit(max_minutes=0.05 / 60), TrainerControl()  # 50 ms
    limit.on_train_begin(None, None, control)
    limit.on_step_end(None, None, control)
    assert not control.should_training_stop
    time.sleep(0.1)
    limit.on_step_end(None, None, control)
    assert control.should_training_stop


def test_the_progress_bar_under_a_time_limit_counts_the_steps_that_fit():
    from tqdm import tqdm
    from transformers import TrainerControl, TrainerState

    limit, control = train.TimeLimit(max_minutes=10), TrainerControl()
    limit.progress = type("Progress", (), {"training_bar": tqdm(total=100_000, disable=True)})()
    state = TrainerState(max_steps=100_000, global_step=50)
    limit.on_train_begin(None, state, control)
    limit.start -= 60  # one minute of the ten gone, 50 steps done: about 500 fit
    limit.on_step_end(None, state, control)
    assert 490 <= limit.progress.training_bar.total <= 510 and not control.should_training_stop


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_timed_schedule_reaches_zero_when_the_minutes_or_the_steps_run_out(kind, monkeypatch):
    from transformers import TrainerControl

    clock = [0.0]
    monkeypatch.setattr(train.time, "monotonic", lambda: clock[0])

    def rates(total_steps: int, seconds: list[float]) -> tuple[list[float], TrainerControl]:
        # the Trainer's order each step: optimizer step, scheduler step, callbacks
        limit, control = train.TimeLimit(max_minutes=1), TrainerControl()
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        schedule = train.timed_schedule(optimizer, kind, warmup=2, total_steps=total_steps, limit=limit)
        clock[0] = 0.0
        limit.on_train_begin(None, None, control)
        out = []
        for second in seconds:
            optimizer.step()
            schedule.step()
            out.append(optimizer.param_groups[0]["lr"])
            clock[0] = second
            limit.on_step_end(None, None, control)
        return out, control

    # steps far from --max-steps: the minutes set the pace (1 minute: the rate at 15 s, 30 s, 60 s)
    lr, control = rates(10**6, [0, 15, 30, 60, 61])
    assert lr[0] == 0.5  # warmup
    at_quarter = 0.75 if kind == "linear" else 0.5 * (1 + np.cos(np.pi / 4))
    assert lr[2] == pytest.approx(at_quarter, abs=1e-4) and lr[3] == pytest.approx(0.5, abs=1e-4)
    assert lr[4] == pytest.approx(0.0, abs=1e-9) and control.should_training_stop
    # few steps: they end first, before any time has passed
    lr, control = rates(4, [0, 0, 0, 0])
    assert lr[2:] == pytest.approx([0.5, 0.0]) and not control.should_training_stop


def test_audio_embeddings_start_from_the_codec_vectors(tmp_path):
    model, _ = train.load_model(train.parse_args(["--data", "-", "--tiny"]))
    weight = model.get_input_embeddings().weight
    before = weight.detach().clone()
    g = torch.Generator().manual_seed(0)
    # codes in 8 families of alike sounds, around a shared offset
    books = torch.randn(2, 8, 128, generator=g)[:, torch.arange(1024) % 8] + 0.3 * torch.randn(
        2, 1024, 128, generator=g
    )
    books = books * 0.01 + 0.5
    train.seed_audio_embeddings(model, books, seed=0)
    ids = torch.as_tensor(audio_token_ids())  # [2, 1024]
    audio = torch.zeros(len(weight), dtype=torch.bool)
    audio[ids.reshape(-1)] = True
    assert torch.equal(weight[~audio], before[~audio])  # only the audio rows move
    for q in range(2):
        rows = weight[ids[q]].detach()
        assert abs(rows.std() / before.std() - 1) < 0.1  # at the model's own scale
        # distances between codes carry over: the pairwise distances correlate with the codebook's
        centred = books[q] - books[q].mean(0)
        pairs = torch.randint(0, 1024, (2, 2000), generator=torch.Generator().manual_seed(1))
        ours = (rows[pairs[0]] - rows[pairs[1]]).norm(dim=1)
        theirs = (centred[pairs[0]] - centred[pairs[1]]).norm(dim=1)
        assert np.corrcoef(ours.numpy(), theirs.numpy())[0, 1] > 0.8
    trained = tmp_path / "trained"
    trained.mkdir()
    (trained / "automapper.json").write_text("{}")
    assert train.maps_already(train.parse_args(["--data", "-", "--model", str(trained)]))
    assert not train.maps_already(train.parse_args(["--data", "-", "--model", str(trained), "--init", "scratch"]))


def test_torchrun_two_processes_encode_once_log_once_save_once(tmp_path):
    """Data-parallel on CPU (gloo): the main process encodes, the other reads its cache; one log line per
    step, one saved model that reloads; checkpoints resume under the launcher."""
    write_synth_corpus(tmp_path / "data", 3, seed=0, bars=4)
    out, cache = tmp_path / "out", tmp_path / "cache"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    argv = [str(ROOT / "train.py"), "--data", str(tmp_path / "data"), "--tiny", "--codec-weights", "random"]
    argv += ["--output-dir", str(out), "--cache-dir", str(cache), "--val-share", "0", "--chunk-beats", "8"]
    argv += ["--batch-size", "1", "--grad-accum", "1", "--logging-steps", "1", "--save-steps", "2"]
    argv += ["--optim", "adamw_torch", "--no-gradient-checkpointing", "--report-to", "none"]
    env = os.environ | {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}

    def run(*extra: str) -> subprocess.CompletedProcess:
        done = subprocess.run([*launcher, *argv, *extra], capture_output=True, text=True, env=env, timeout=900)
        assert done.returncode == 0, done.stderr[-3000:]
        return done

    first = run("--max-steps", "4")
    losses = [line for line in first.stdout.splitlines() if "'loss'" in line]
    assert len(losses) == 4  # once per step, not per process
    # the mean over both processes' labels, as one process would log it: ~ln(vocab) for random weights
    assert abs(float(losses[0].split("'loss': '")[1].split("'")[0]) / np.log(train.TINY["vocab_size"]) - 1) < 0.1
    assert first.stdout.count("training: tiny Qwen3") == 1 and "2 process(es), effective batch 2" in first.stdout
    info = json.loads((out / "automapper.json").read_text())
    assert info["data"]["songs_encoded_by_process"] == [3, 0]
    assert len(list((cache / "codes").glob("*.npy"))) == 3
    assert {p.name for p in out.glob("checkpoint-*")} == {"checkpoint-2", "checkpoint-4"}
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(out).config.num_hidden_layers == train.TINY["num_hidden_layers"]

    resumed = run("--max-steps", "6", "--resume")
    assert sum("'loss'" in line for line in resumed.stdout.splitlines()) == 2  # steps 5 and 6 only
    assert json.loads((out / "automapper.json").read_text())["data"]["songs_encoded_by_process"] == [0, 0]


# ---------------------------------------------------------------- the GPU path, checked on CPU


def test_bench_batch_is_labelled_and_the_bench_model_trains_as_train_py_does():
    sys.path.insert(0, str(ROOT / "tests"))
    import bench_train

    batch = bench_train.bench_batch(1024)
    assert (batch["labels"] != -100).sum() >= 100  # a note section: the loss is finite, not NaN
    model, batch = bench_train.prepared("transformers", 1024, ("--tiny",))
    assert model.training and model.is_gradient_checkpointing
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = [bench_train.train_step(model, batch, optimizer) for _ in range(3)]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    # 6 x every linear weight (the tied LM head included) + 12 x layers x hidden x length
    head = model.get_output_embeddings().weight.numel()
    assert bench_train.flops_per_token(model, 1024) > 6 * head + 12 * 2 * 64 * 1024


def test_labelled_logits_under_unsloth_apply_the_head_to_its_hidden_states(monkeypatch):
    args = train.parse_args(["--data", ".", "--tiny"])
    model, _ = train.load_model(args)
    inputs = audio_masking_collator([{"input_ids": np.arange(40) % 300}])
    positions = torch.tensor([3, 10, 38])
    plain = train.labelled_logits(model, inputs, positions)
    forward = model.forward

    def unsloth_forward(**kwargs):  # Unsloth's forward: hidden states as "logits" when asked, a tensor keep ignored
        assert "logits_to_keep" not in kwargs
        if os.environ.get("UNSLOTH_RETURN_HIDDEN_STATES") == "1":
            out = model.model(**kwargs)
            return type("Out", (), {"logits": out.last_hidden_state})()
        return forward(**kwargs)

    monkeypatch.setattr(model.config, "unsloth_version", "2026.10.9", raising=False)
    monkeypatch.setattr(model, "forward", unsloth_forward)
    assert torch.allclose(train.labelled_logits(model, inputs, positions), plain, atol=1e-5)
    assert "UNSLOTH_RETURN_HIDDEN_STATES" not in os.environ  # set for that one call only


def test_scratch_model_folder_has_the_token_space_tokenizer(tmp_path, monkeypatch):
    from transformers import AutoTokenizer

    monkeypatch.setattr(train, "QWEN3_06B", train.TINY)  # the same path at a test's size
    args = train.parse_args(["--data", ".", "--init", "scratch", "--cache-dir", str(tmp_path)])
    folder = train.scratch_model_dir(args)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.pad_token_id == PAD and tokenizer.eos_token_id == EOS


def test_unsloth_that_cannot_load_falls_back_to_transformers_in_one_line(tmp_path, monkeypatch, capsys):
    fake = type(sys)("unsloth")

    class FastLanguageModel:
        @staticmethod
        def from_pretrained(**kwargs):
            raise ImportError("Unsloth: Please install bitsandbytes via `pip install bitsandbytes`")

    fake.FastLanguageModel = FastLanguageModel
    monkeypatch.setitem(sys.modules, "unsloth", fake)
    monkeypatch.setattr(train, "UNSLOTH", fake)
    monkeypatch.setattr(train, "QWEN3_06B", train.TINY)
    args = train.parse_args(["--data", ".", "--init", "scratch", "--cache-dir", str(tmp_path)])
    model, how = train.load_model(args)
    assert "transformers" in how and isinstance(model, torch.nn.Module)
    said = [line for line in capsys.readouterr().err.splitlines() if "Unsloth" in line]  # beside progress bars
    assert len(said) == 1 and "bitsandbytes" in said[0] and "plain transformers" in said[0]


def test_unsloth_can_be_switched_off_by_environment():
    script = "import train, sys; sys.exit(train.UNSLOTH is not None)"
    env = os.environ | {"AUTOMAPPER_UNSLOTH": "0"}
    assert subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, check=False).returncode == 0


@pytest.mark.skipif(
    importlib.util.find_spec("unsloth") is None,
    reason="unsloth not installed: the rehearsal of the Unsloth path is opt-in "
    "(pip install --no-deps --target DIR unsloth unsloth_zoo tyro docstring_parser typeguard cut_cross_entropy "
    "hf_transfer, then PYTHONPATH=DIR)",
)
def test_unsloth_path_rehearsed_on_cpu_trains_reloads_and_maps(corpus, cache_dir, tmp_path):
    # a small automapper checkpoint, then train.py's real Unsloth branch on it (Unsloth's own CPU backend)
    base, out = tmp_path / "base", tmp_path / "out"
    common = ["--data", str(corpus), "--codec-weights", "random", "--cache-dir", str(cache_dir), "--val-share", "0"]
    common += ["--chunk-beats", "16", "--grad-accum", "1"]
    assert _train(*common, "--tiny", "--max-steps", "1", "--output-dir", str(base)).returncode == 0
    env = os.environ | {"AUTOMAPPER_UNSLOTH": "force", "HF_HUB_OFFLINE": "1", "UNSLOTH_DISABLE_STATISTICS": "1"}
    flags = ["--model", str(base), "--max-steps", "3", "--learning-rate", "3e-3", "--output-dir", str(out)]
    run = _train(*common, *flags, "--save-steps", "3", env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"training: {base}, Unsloth" in run.stdout
    log = [entry for entry in _log(out / "checkpoint-3") if "loss" in entry]
    assert len(log) == 3 and all(np.isfinite(e["loss"]) for e in log) and log[-1]["loss"] < log[0]["loss"]
    assert all("mean_token_accuracy" in e for e in log)  # logged on this path too
    source = sorted(corpus.glob("*.zip"))[0]
    song = tmp_path / "song.egg"
    song.write_bytes(zipfile.ZipFile(source).read("song.egg"))
    flags = ["--model", str(out), "--bpm", str(load_level(source).bpm), "--offset", "0"]
    assert infer.main([str(song), *flags, "--output", str(tmp_path / "level.zip")]) == 0
