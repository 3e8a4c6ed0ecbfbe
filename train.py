"""Fully fine-tune Qwen3-0.6B on the audio + note token space.

    python train.py --data data/maps [--max-steps N] [--output-dir output] [--model unsloth/Qwen3-0.6B-Base]

On CUDA with Unsloth installed (requirements-gpu.txt) the model loads through Unsloth's
FastLanguageModel; anywhere else through plain transformers, which also really trains on
a CPU. Either way TRL's SFTTrainer runs on pre-tokenized sequences (data.BeatDataset), so
nothing is re-tokenized or truncated, and the output dir ends up holding a normal
save_pretrained model, a tokenizer and automapper.json for infer.py.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import unittest.mock
from collections import Counter
from pathlib import Path

import numpy as np
import torch

# set by torchrun and accelerate launch (one process per GPU, on one machine or several)
PROCESSES = int(os.environ.get("WORLD_SIZE", "1"))
RANK = int(os.environ.get("RANK", "0"))


def _unsloth():
    """The unsloth module when it can be used (CUDA present, package installed, one process, not turned
    off with AUTOMAPPER_UNSLOTH=0; AUTOMAPPER_UNSLOTH=force imports it without CUDA too, where Unsloth
    takes its own CPU backend: the rehearsal of this path on a CPU), else None. It must be imported
    before transformers and trl so that its patches apply."""
    switch = os.environ.get("AUTOMAPPER_UNSLOTH", "1")
    if switch == "0" or (switch != "force" and not torch.cuda.is_available()):
        return None
    os.environ.setdefault("UNSLOTH_DISABLE_STATISTICS", "1")  # no network probe at import
    if PROCESSES > 1:  # Unsloth's open-source build trains on one GPU
        if RANK == 0:
            print(f"{PROCESSES} processes: training through plain transformers (DDP), not Unsloth", file=sys.stderr)
        return None
    try:
        import unsloth

        return unsloth
    except Exception as e:  # not installed, or an incompatible install
        print(f"Unsloth not used ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})", file=sys.stderr)
        return None


UNSLOTH = _unsloth()

import datasets  # noqa: E402
from transformers import AutoModelForCausalLM, ProgressCallback, Qwen3Config, TrainerCallback  # noqa: E402
from trl import SFTConfig, SFTTrainer  # noqa: E402

from audio import ENCODEC_WEIGHTS, AudioError, create_audio_tokenizer  # noqa: E402
from data import (  # noqa: E402
    NOTES_START,
    PPQ,
    TOKEN_SPACE_VERSION,
    VOCAB_SIZE,
    BeatDataset,
    ChunkRules,
    audio_masking_collator,
    audio_token_ids,
    build_tokenizer,
    generated_notes,
    placed_objects,
)
from infer import STARTER_DIR  # noqa: E402
from maps import HelpFormatter, MapError, TempoMap, ZippedBeatSaberDataset, atomic_file, with_user_modes  # noqa: E402

# Qwen3-0.6B's architecture, so --init scratch needs no download
QWEN3_06B = dict(
    vocab_size=151_936,
    hidden_size=1024,
    intermediate_size=3072,
    num_hidden_layers=28,
    num_attention_heads=16,
    num_key_value_heads=8,
    head_dim=128,
    max_position_embeddings=40_960,
    rope_theta=1_000_000.0,
    rms_norm_eps=1e-6,
    tie_word_embeddings=True,
)
# a few-layer Qwen3 whose vocabulary just covers the token space, for tests and the offline demo
TINY = dict(
    vocab_size=math.ceil(VOCAB_SIZE / 64) * 64,
    hidden_size=64,
    intermediate_size=192,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    max_position_embeddings=40_960,
    tie_word_embeddings=True,
)
# a few-million-parameter Qwen3 for the learnability benchmark and CPU experiments
SMALL = TINY | dict(hidden_size=192, intermediate_size=576, num_hidden_layers=4, num_attention_heads=4, head_dim=48)
EXIT_USAGE = 2
MEGABATCH = 50  # batches that --group-by-length sorts together (as transformers' LengthGroupedSampler)
LENGTH_BUCKET = 32  # tokens: chunks whose bounds differ by less are batched in random order
# --starter: the offline starter model, in one block (nanoGPT-style); the recipe tests/bench_learn.py measured on
# synthetic songs (8-beat chunks, batch 4, lr 2e-3 decaying to zero over the minutes), on real and synthetic songs
STARTER = dict(
    data="data/starter",
    output_dir=STARTER_DIR,
    small=True,
    codec_weights="random",
    chunk_beats=8,
    batch_size=4,
    grad_accum=1,
    learning_rate=2e-3,
    warmup_steps=30,
    max_steps=100_000,  # the minutes end it
    max_minutes=10.0,
    optim="adamw_torch",
    gradient_checkpointing=False,
    val_share=0.0,
    logging_steps=25,
    save_steps=250,
)
STARTER_SYNTH_SONGS = 32  # hard synthetic songs beside the LMMS ones: the beat grid at many tempi


class UsageError(Exception):
    """Bad input or environment: main() prints the message as one line and exits 2."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Fully fine-tune Qwen3-0.6B on Beat Saber levels (audio tokens in, note tokens out).",
        formatter_class=HelpFormatter,
    )
    p.add_argument(
        "--data", help="folder of level zips / level folders (searched recursively); required but with --starter"
    )
    p.add_argument(
        "--starter",
        action="store_true",
        help=f"build the offline starter model: the corpus if missing ({STARTER['data']}: LMMS demo songs rendered "
        f"by lmms, and hard synthetic songs), then the small model with the random test codec for "
        f"{STARTER['max_minutes']:g} minutes into {STARTER['output_dir']}, which infer.py uses when --model is "
        "not given; any flag given beside it wins",
    )
    p.add_argument("--output-dir", default="output", help="where checkpoints and the final model go")
    p.add_argument("--max-steps", type=int, default=-1, help="optimizer steps; -1 trains for --epochs")
    p.add_argument("--epochs", type=float, default=3.0, help="passes over the data when --max-steps is -1")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --output-dir")
    p.add_argument(
        "--max-minutes",
        type=float,
        help="stop training (and save) after this many minutes; the linear and cosine schedules end there",
    )
    model = p.add_argument_group("model")
    model.add_argument("--model", default="unsloth/Qwen3-0.6B-Base", help="hub id or local directory")
    model.add_argument(
        "--init",
        choices=["pretrained", "scratch"],
        default="pretrained",
        help="scratch: Qwen3-0.6B's architecture with random weights (no download)",
    )
    model.add_argument("--tiny", action="store_true", help="a 2-layer Qwen3 with a small vocabulary (tests, demo)")
    model.add_argument(
        "--small", action="store_true", help="a 4-layer, ~5M-parameter Qwen3 (learnability benchmark, CPU experiments)"
    )
    model.add_argument(
        "--load-in-4bit",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="passed to Unsloth as the source spec does; with full fine-tuning Unsloth turns 4-bit off "
        "and trains in bf16",
    )
    model.add_argument(
        "--codec-embeddings",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="start each audio token's embedding from its code's codec vector (randomly projected), so codes "
        "that sound alike start alike; never applied to a model that already maps (has automapper.json)",
    )
    data = p.add_argument_group("data")
    data.add_argument(
        "--codec-weights", default=ENCODEC_WEIGHTS, help="Encodec weights: hub id, local dir, or 'random' (test mode)"
    )
    rules = ChunkRules()
    data.add_argument(
        "--chunk-beats", type=int, default=rules.chunk_beats, help="beats per training chunk (bar-aligned)"
    )
    data.add_argument(
        "--max-seq-length", type=int, default=rules.max_seq_length, help="longer chunks are skipped, never truncated"
    )
    data.add_argument(
        "--max-empty-share", type=float, default=rules.max_empty_share, help="cap on the share of chunks without notes"
    )
    data.add_argument("--val-share", type=float, default=0.05, help="share of songs held out for validation")
    data.add_argument("--cache-dir", default="cache", help="level index and Encodec codes cache")
    data.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: 2 on CUDA, 0 on CPU)")
    opt = p.add_argument_group("optimization")
    opt.add_argument("--learning-rate", type=float, default=2e-5, help="peak learning rate, after warmup")
    opt.add_argument("--warmup-steps", type=int, default=10, help="optimizer steps of linear warmup")
    opt.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay")
    opt.add_argument(
        "--lr-scheduler",
        default="linear",
        help="any transformers scheduler; with --max-minutes, linear and cosine decay to zero over those minutes "
        "(or over --max-steps, whichever ends first)",
    )
    opt.add_argument("--batch-size", type=int, default=1, help="sequences per device step (long sequences: keep 1)")
    opt.add_argument(
        "--group-by-length",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="batch chunks of about the same length (the same tempo), so that batches hold little padding; "
        "--no-group-by-length draws every batch at random",
    )
    opt.add_argument("--grad-accum", type=int, default=8, help="gradient accumulation steps")
    opt.add_argument("--optim", default="adamw_8bit", help="adamw_8bit needs bitsandbytes; else adamw_torch is used")
    opt.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None, help="default: on with CUDA")
    opt.add_argument(
        "--gradient-checkpointing",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="recompute activations in the backward pass: far less memory for one more forward pass of compute",
    )
    opt.add_argument(
        "--seed", type=int, default=ChunkRules.seed, help="seed for weights built here, data order and sampling"
    )
    log = p.add_argument_group("logging and saving")
    log.add_argument("--logging-steps", type=int, default=1, help="log the loss every this many optimizer steps")
    log.add_argument("--save-steps", type=int, default=200, help="write OUT/checkpoint-N every this many steps")
    log.add_argument("--eval-steps", type=int, default=200, help="validate every this many optimizer steps")
    log.add_argument("--save-total-limit", type=int, default=4, help="checkpoints kept (older ones deleted)")
    log.add_argument(
        "--eval-maps",
        type=int,
        default=0,
        help="at every evaluation, also map this many validation chunks (grammar, infer.py's sampling) and log "
        "timing F1, density ratio and parity errors",
    )
    log.add_argument(
        "--report-to", choices=["none", "tensorboard", "wandb"], default="none", help="where metrics are logged"
    )
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.starter:
        words = argv if argv is not None else sys.argv[1:]
        given = {a.dest for a in parser._actions if any(o in words for o in a.option_strings)}
        for key, value in STARTER.items():
            if key not in given:
                setattr(args, key, value)
    elif args.data is None:
        parser.error("--data is required (or build the starter model with --starter)")
    return args


# ---------------------------------------------------------------- model


def load_model(args: argparse.Namespace) -> tuple[torch.nn.Module, str]:
    """(model, a line saying which path loads it). The vocabulary stays Qwen3's for real models."""
    cuda = torch.cuda.is_available()
    dtype = torch.bfloat16 if _bf16(args) else torch.float32
    if args.tiny or args.small:
        torch.manual_seed(args.seed)
        config = Qwen3Config(**(TINY if args.tiny else SMALL))
        return AutoModelForCausalLM.from_config(config, dtype=dtype), f"{base_model(args)}, transformers"
    source = args.model
    if args.init == "scratch":
        source = scratch_model_dir(args)
    if UNSLOTH is not None:
        from unsloth import FastLanguageModel

        try:
            model, _ = FastLanguageModel.from_pretrained(
                model_name=source,
                max_seq_length=args.max_seq_length,
                load_in_4bit=args.load_in_4bit,
                full_finetuning=True,
            )
            return model, f"{base_model(args)}, Unsloth"
        except ImportError as e:  # e.g. "Unsloth: Please install bitsandbytes", even for full fine-tuning
            print(f"Unsloth cannot load the model ({str(e).splitlines()[0]}): plain transformers", file=sys.stderr)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
    return model, f"{base_model(args)}, transformers on {'cuda' if cuda else 'cpu'}"


def seed_audio_embeddings(model: torch.nn.Module, codebooks: torch.Tensor, seed: int) -> None:
    """Overwrite the audio tokens' embedding rows with their codec vectors, standardized per codebook and
    sent through a fixed random projection (near-isometric: distances between codes carry over) at the
    scale of the model's own rows. codebooks: [2, 1024, 128], the codec's vector per code."""
    weight = model.get_input_embeddings().weight  # [vocab, hidden]; tied to the LM head, whose audio rows no label uses
    ids = torch.as_tensor(audio_token_ids())  # [2, 1024]
    generator = torch.Generator().manual_seed(seed)
    scale = weight.detach().float().std()
    with torch.no_grad():
        for book, rows in zip(codebooks, ids):
            centred = book - book.mean(0)  # [1024, 128]; the shared offset would dominate
            standard = centred / centred.std()
            projection = torch.randn(book.shape[1], weight.shape[1], generator=generator) / book.shape[1] ** 0.5
            weight[rows.to(weight.device)] = (standard @ projection * scale).to(weight.device, weight.dtype)


def maps_already(args: argparse.Namespace) -> bool:
    """Whether --model is an automapper checkpoint (its audio embeddings are trained)."""
    built_here = args.tiny or args.small or args.init == "scratch"
    return not built_here and (Path(args.model) / "automapper.json").exists()


def base_model(args: argparse.Namespace) -> str:
    """What the weights start from, in words."""
    if args.tiny or args.small:
        return "tiny Qwen3" if args.tiny else "small Qwen3"
    return args.model if args.init == "pretrained" else "Qwen3-0.6B (scratch)"


def scratch_model_dir(args: argparse.Namespace) -> str:
    """A saved random-weight Qwen3-0.6B in the cache dir, so every loader takes it like a download."""
    path = Path(args.cache_dir) / f"qwen3-0.6b-scratch-seed{args.seed}"
    if not (path / "config.json").exists():
        torch.manual_seed(args.seed)
        AutoModelForCausalLM.from_config(Qwen3Config(**QWEN3_06B), dtype=torch.bfloat16).save_pretrained(path)
    if not (path / "tokenizer_config.json").exists():  # loaders (Unsloth's) build a broken one without it
        build_tokenizer().save_pretrained(path)
    return str(path)


def _bf16(args: argparse.Namespace) -> bool:
    return torch.cuda.is_available() if args.bf16 is None else args.bf16


def _optimizer(args: argparse.Namespace) -> str:
    if args.optim == "adamw_8bit":
        try:
            import bitsandbytes  # noqa: F401

            if torch.cuda.is_available():
                return args.optim
        except ImportError:
            pass
        print("adamw_8bit needs bitsandbytes and CUDA: using adamw_torch", file=sys.stderr)
        return "adamw_torch"
    return args.optim


# ---------------------------------------------------------------- data


def split_songs(song_hashes: list[str], val_share: float, seed: int) -> tuple[set[str], set[str]]:
    """(train songs, validation songs): a seeded split by song, never the same song in both."""
    songs = sorted(set(song_hashes))
    n_val = min(len(songs) - 1, math.ceil(val_share * len(songs))) if val_share > 0 else 0
    order = np.random.default_rng(seed).permutation(len(songs))
    val = {songs[i] for i in order[:n_val]}
    return set(songs) - val, val


class IndexedChunks:
    """A datasets.Dataset (what SFTTrainer takes) over a BeatDataset, read lazily.

    Row i is chunk i of the current epoch's plan (wrapping if a later epoch plans fewer);
    nothing is materialised, so memory stays flat for any corpus size.
    """

    def __init__(self, beats: BeatDataset):
        self.beats = beats
        self.dataset = datasets.Dataset.from_dict({"index": list(range(len(beats)))}).with_transform(self._rows)

    def _rows(self, batch: dict) -> dict:
        return {"input_ids": [self.beats[i % len(self.beats)]["input_ids"] for i in batch["index"]]}


class SimilarLengths(torch.utils.data.Sampler):
    """Row indices of IndexedChunks in batches of chunks of about the same length, so that little of a
    batch is padding; random batches of 4 on the starter's corpus pad 23% more tokens than they hold
    (attention's n^2 54% more), grouped ones 1%.

    Each epoch: the rows shuffled, cut into megabatches of MEGABATCH batches, each ordered by its chunks'
    token bounds in buckets of LENGTH_BUCKET tokens (random order inside a bucket, so a batch mixes songs
    of one tempo rather than the windows of one song), cut into batches; the batches shuffled, the longest
    first. The bounds are read when the epoch begins, after EpochCallback planned it; rows is the
    dataset's fixed length, which IndexedChunks wraps onto each epoch's plan."""

    def __init__(self, beats: BeatDataset, rows: int, batch_size: int, seed: int):
        self.beats, self.rows, self.batch_size, self.seed = beats, rows, batch_size, seed

    def __len__(self) -> int:
        return self.rows

    def __iter__(self):
        bounds = np.asarray(self.beats.token_bounds())  # [chunks this epoch]: tokens at most
        rng = np.random.default_rng([self.seed, self.beats.epoch])
        order = rng.permutation(self.rows)  # [rows]
        buckets = bounds[order % len(bounds)] // LENGTH_BUCKET  # [rows]
        span = MEGABATCH * self.batch_size
        batches = []  # [batch_size] row arrays, only the very last possibly shorter
        for lo in range(0, self.rows, span):
            mega, keys = order[lo : lo + span], buckets[lo : lo + span]
            mega = mega[np.lexsort((rng.random(len(mega)), keys))]  # by bucket, at random inside one
            batches += [mega[i : i + self.batch_size] for i in range(0, len(mega), self.batch_size)]
        whole = len(batches) - (len(batches[-1]) < self.batch_size)
        shuffled = [batches[i] for i in rng.permutation(whole)] + batches[whole:]
        longest = max(range(whole), key=lambda i: bounds[shuffled[i] % len(bounds)].max(), default=0)
        shuffled[0], shuffled[longest] = shuffled[longest], shuffled[0]  # out of memory on the first step, if at all
        return iter(np.concatenate(shuffled).tolist())


class TimeLimit(TrainerCallback):
    """Stops training once max_minutes have passed since training began (the model is then saved),
    and keeps the share of that time spent, which the linear and cosine schedules decay over."""

    def __init__(self, max_minutes: float):
        self.seconds = max_minutes * 60
        self.start = 0.0
        self.spent = 0.0  # share of max_minutes gone at the last step end, the same on every process

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.monotonic()

    def on_step_end(self, args, state, control, **kwargs):
        seconds = torch.tensor(time.monotonic() - self.start, dtype=torch.float64)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(seconds, op=torch.distributed.ReduceOp.MAX)  # one clock for every process
        self.spent = seconds.item() / self.seconds
        if self.spent >= 1:
            control.should_training_stop = True
        self._show_steps_that_fit(state)

    progress: object | None = None  # transformers' ProgressCallback, whose bar would count to --max-steps

    def _show_steps_that_fit(self, state) -> None:
        """The progress bar's total: the steps the minutes will hold at the pace so far (not --max-steps,
        which the minutes cut short), so its ETA is the time limit's."""
        bar = getattr(self.progress, "training_bar", None)
        if bar is not None and self.spent > 0.01:
            bar.total = min(state.max_steps, max(state.global_step, math.ceil(state.global_step / self.spent)))
            bar.refresh()


# learning-rate factor after warmup at progress p in [0, 1]
DECAYS = {"linear": lambda p: 1 - p, "cosine": lambda p: 0.5 * (1 + math.cos(math.pi * p))}


def timed_schedule(
    optimizer: torch.optim.Optimizer, kind: str, warmup: int, total_steps: int, limit: TimeLimit
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup, then DECAYS[kind] at the larger of the steps' and the time budget's progress, so
    the rate reaches zero whichever of --max-steps and --max-minutes runs out first."""

    def factor(step: int) -> float:
        if step < warmup:
            return step / warmup
        progress = max((step - warmup) / max(1, total_steps - warmup), limit.spent)
        return DECAYS[kind](min(progress, 1.0))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class InferenceFiles(TrainerCallback):
    """Writes automapper.json and the model card into every checkpoint-N as it is saved, so infer.py
    can map with a checkpoint while training goes on."""

    def __init__(self, info: dict):
        self.info = info

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if folder.is_dir():
                save_inference_files(folder, self.info | {"steps": state.global_step})


class EpochCallback(TrainerCallback):
    """Shifts the chunk grid at each epoch (BeatDataset.set_epoch)."""

    def __init__(self, beats: BeatDataset):
        self.beats = beats

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.beats.set_epoch(int(state.epoch or 0))


def starter_corpus(folder: Path) -> None:
    """The starter's data, built where missing: folder/real (the LMMS demo songs, utils.py realsongs; the
    held-out ones beside the folder) and folder/synth (STARTER_SYNTH_SONGS hard synthetic songs); levels
    older corpus rules wrote are rewritten."""
    from levels.hands import CORPUS_RULES, rules_of
    from levels.realsongs import ProjectError, write_real_corpus
    from levels.synth import write_synth_corpus

    real, synth = folder / "real", folder / "synth"
    try:
        write_real_corpus(real, f"{folder}-held-out")
    except ProjectError as e:
        print(f"train.py --starter: {e}; the starter trains on synthetic songs only", file=sys.stderr)
    current = [z for z in synth.glob("*.zip") if rules_of(z) >= CORPUS_RULES]  # by older rules: redo
    if len(current) < STARTER_SYNTH_SONGS:
        write_synth_corpus(synth, songs=STARTER_SYNTH_SONGS, hard=True, bars=13)


def build_datasets(args: argparse.Namespace, main: bool = True) -> tuple[BeatDataset, BeatDataset | None, dict]:
    """(train chunks, validation chunks or None, data summary for automapper.json). Only the main
    process (main) shows progress and reports skipped levels and songs."""
    if not Path(args.data).is_dir():
        raise UsageError(f"no data folder at {args.data} (collect maps with scrape.py, or try: python utils.py synth)")
    try:
        base = ZippedBeatSaberDataset(args.data, cache_dir=args.cache_dir, progress=main, verbose=main)
        if not base.items:  # before the codec is built: that takes a minute
            raise UsageError(f"no trainable level in {args.data}: {base.summary()}".replace("\n", "; "))
        codec = create_audio_tokenizer(weights=args.codec_weights)
    except (MapError, AudioError) as e:
        raise UsageError(str(e)) from None
    train_songs, val_songs = split_songs(list(base.song_hashes.values()), args.val_share, args.seed)
    rules = ChunkRules(args.chunk_beats, args.max_seq_length, args.max_empty_share, args.seed)
    common = dict(rules=rules, cache_dir=args.cache_dir, verbose=main)
    train = BeatDataset(base, codec, songs=train_songs, **common)
    val = BeatDataset(base, codec, songs=val_songs, **common) if val_songs else None
    if len(train) == 0:
        raise UsageError(
            f"no training chunk fits --max-seq-length {args.max_seq_length}; raise it or lower --chunk-beats"
        )
    summary = {
        "levels": base.levels,
        "difficulties": len(base.items),
        "rejected": dict(base.rejections),
        "songs": {"train": len(train_songs), "validation": len(val_songs)},
        "chunks": {"train": len(train), "validation": len(val) if val else 0},
        "skipped_chunks_too_long": sum(d.too_long for d in (train, val) if d),
        # difficulties whose tempo changes: their chunks that lie inside one tempo region train
        "tempo_changes": {
            "difficulties": sum(d.tempo_changes[0] for d in (train, val) if d),
            "chunks": sum(d.tempo_changes[1] for d in (train, val) if d),
        },
        "skipped": dict(sum((d.skipped for d in (train, val) if d), Counter())),
        # objects of each kind in the training difficulties: infer.py writes the kinds seen here by default
        "objects": train.object_counts(),
    }
    return train, val, {"codec": codec, "data": summary}


# ---------------------------------------------------------------- training


class NoteTrainer(SFTTrainer):
    """SFTTrainer whose loss is the shifted cross-entropy over the labelled tokens (notes and EOS), with
    the LM head applied at those positions only (no [tokens, vocab] logits over the audio), on every
    path: CPU, CUDA, Unsloth and DDP. mean_token_accuracy is logged over the same tokens, as TRL does.
    """

    train_chunks: BeatDataset | None = None  # --group-by-length: the chunks behind train_dataset
    map_eval: tuple[BeatDataset, int] | None = None  # (validation chunks, how many to map) for --eval-maps
    last_map_eval: dict[str, float] | None = None
    time_limit: TimeLimit | None = None  # --max-minutes: the linear and cosine schedules decay over it

    def create_model_card(self, *args, **kwargs) -> None:
        """None: save_inference_files writes the model's own card (model_card), never TRL's template."""

    def evaluate(self, *args, **kwargs) -> dict[str, float]:
        metrics = super().evaluate(*args, **kwargs)
        if self.map_eval is not None:
            figures = {f"eval_{k}": v for k, v in map_quality(self.model, *self.map_eval, seed=self.args.seed).items()}
            self.log(figures)  # console, TensorBoard, W&B beside eval_loss
            metrics |= figures
            self.last_map_eval = figures
        return metrics

    def _get_train_sampler(self, train_dataset=None) -> torch.utils.data.Sampler | None:
        if self.train_chunks is None or train_dataset is not None and train_dataset is not self.train_dataset:
            return super()._get_train_sampler(train_dataset)
        return SimilarLengths(self.train_chunks, len(self.train_dataset), self.args.train_batch_size, self.args.seed)

    def create_scheduler(self, num_training_steps: int, optimizer=None) -> torch.optim.lr_scheduler.LRScheduler:
        kind = self.args.lr_scheduler_type
        if self.lr_scheduler is not None or self.time_limit is None or kind not in DECAYS:
            return super().create_scheduler(num_training_steps, optimizer)
        warmup = self.args.get_warmup_steps(num_training_steps)
        optimizer = optimizer or self.optimizer
        self.lr_scheduler = timed_schedule(optimizer, kind, warmup, num_training_steps, self.time_limit)
        self._created_lr_scheduler = True
        return self.lr_scheduler

    def _load_optimizer_and_scheduler(self, checkpoint):
        if checkpoint is None or self.args.world_size == 1 or self.args.device.type != "cpu":
            return super()._load_optimizer_and_scheduler(checkpoint)
        # several CPU processes: transformers maps the optimizer state to args.device, "cpu:0", which
        # torch.load cannot restore to; "cpu" is the same place
        load = torch.load
        try:
            torch.load = lambda *args, **kwargs: load(*args, **kwargs | {"map_location": "cpu"})
            return super()._load_optimizer_and_scheduler(checkpoint)
        finally:
            torch.load = load

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        # the prediction for token t is made at t - 1: targets [batch, n - 1] line up with positions 0..n-2
        targets = inputs["labels"][:, 1:]
        positions = (targets != -100).any(dim=0).nonzero().squeeze(1)  # [k]: positions some row labels
        labelled = targets[:, positions]  # [batch, k]
        logits = labelled_logits(model, inputs, positions)  # [batch, k, vocab]
        logits, labelled = logits.float()[labelled != -100], labelled[labelled != -100]
        loss = torch.nn.functional.cross_entropy(logits, labelled, reduction="sum")
        loss = loss / (num_items_in_batch if num_items_in_batch is not None else max(len(labelled), 1))
        if num_items_in_batch is not None and self.args.average_tokens_across_devices:
            # num_items_in_batch counts every process's labels and DDP averages gradients: as Trainer does
            loss = loss * self.accelerator.num_processes
        mode = "train" if model.training else "eval"
        correct = (logits.argmax(-1) == labelled).sum().item()
        self._metrics[mode]["mean_token_accuracy"].append(correct / max(len(labelled), 1))
        return (loss, {"logits": logits}) if return_outputs else loss


def labelled_logits(model, inputs: dict, positions: torch.Tensor) -> torch.Tensor:
    """Logits at `positions` only ([batch, k, vocab]; audio positions, ~95% of a sequence, never get the LM
    head), through the model's own forward so that DDP syncs the gradients. Unsloth's forward ignores a
    tensor logits_to_keep, so there it returns the hidden states (its UNSLOTH_RETURN_HIDDEN_STATES
    switch, read at every call) and the head is applied here."""
    common = dict(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], use_cache=False)
    if getattr(unwrapped(model).config, "unsloth_version", None) is None:
        return model(**common, logits_to_keep=positions).logits
    with unittest.mock.patch.dict(os.environ, UNSLOTH_RETURN_HIDDEN_STATES="1"):
        hidden = model(**common).logits  # [batch, n, hidden]
    return unwrapped(model).get_output_embeddings()(hidden[:, positions])


def unwrapped(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DDP (or similar) wrapper."""
    return getattr(model, "module", model)


def map_quality(model, val: BeatDataset, count: int, seed: int = 0) -> dict[str, float]:
    """Map `count` validation chunks (spread over the set) as infer.py would and score them against
    their true notes: timing F1 (40 ms), density ratio (generated / true notes), parity errors per swing."""
    from infer import Window, decode, sampling_options
    from levels.scorecard import scorecard

    picks = np.linspace(0, len(val) - 1, min(count, len(val))).round().astype(int)
    windows, truths, tempi = [], [], []
    for i in picks:
        index, start = val.chunks[i]
        item = val.items[index]
        ids = val[i]["input_ids"]
        prompt_end = int(np.flatnonzero(ids == NOTES_START)[0]) + 2  # up to and including DIFF_x
        # the last windows are padded too
        windows.append(Window(item.difficulty, start, val.rules.chunk_beats * PPQ, ids[:prompt_end]))
        truths.append(generated_notes(ids[prompt_end:]))
        tempi.append(TempoMap.steady(item.tempo.steady_start(start)[0]))  # the chunk's tempo region
    was_training = model.training
    model.eval()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        info = {"max_seq_length": val.rules.max_seq_length}
        generated = [
            c
            for i in range(0, len(windows), 8)
            for c in decode(model, windows[i : i + 8], val.rules.chunk_beats, info, sampling_options())
        ]
    model.train(was_training)
    f1, notes, true_notes, errors, swings = [], 0, 0, 0, 0
    for chunk, truth, tempo in zip(generated, truths, tempi):
        ours, true = (placed_objects(part, 0).notes for part in (chunk, truth))
        card = scorecard(ours, tempo, reference=true, chunk_beats=val.rules.chunk_beats)  # the one scorecard, 40 ms
        f1.append(card["timing_f1"])
        notes, true_notes = notes + len(ours), true_notes + len(true)
        errors, swings = errors + card["parity_errors"], swings + card["swings"]
    return {
        "map_timing_f1": float(np.mean(f1)),
        "map_density_ratio": notes / max(true_notes, 1),
        "map_parity_errors_per_swing": errors / max(swings, 1),
    }


def build_trainer(args, model, train: BeatDataset, val: BeatDataset | None, info: dict | None = None) -> SFTTrainer:
    """info: automapper.json as far as it is known before training (checkpoint_info), written into every
    checkpoint when given."""
    config = SFTConfig(
        output_dir=args.output_dir,
        max_steps=args.max_steps,
        num_train_epochs=args.epochs,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=1,
        gradient_accumulation_steps=args.grad_accum,
        learning_rate=args.learning_rate,
        warmup_steps=args.warmup_steps,
        weight_decay=args.weight_decay,
        lr_scheduler_type=args.lr_scheduler,
        optim=_optimizer(args),
        bf16=_bf16(args),
        gradient_checkpointing=args.gradient_checkpointing,
        seed=args.seed,
        logging_steps=args.logging_steps,
        save_steps=args.save_steps,
        save_total_limit=args.save_total_limit,
        eval_strategy="steps" if val is not None else "no",
        eval_steps=args.eval_steps,
        report_to=[] if args.report_to == "none" else [args.report_to],
        dataloader_num_workers=args.workers if args.workers is not None else (2 if torch.cuda.is_available() else 0),
        dataloader_pin_memory=torch.cuda.is_available(),
        # pre-tokenized sequences: no dataset preparation, no column pruning, no truncation
        dataset_kwargs={"skip_prepare_dataset": True},
        remove_unused_columns=False,
        max_length=None,
        prediction_loss_only=True,
        use_cpu=not torch.cuda.is_available(),  # so that several CPU processes run DDP over gloo
    )
    trainer = NoteTrainer(
        model=model,
        args=config,
        train_dataset=IndexedChunks(train).dataset,
        eval_dataset=IndexedChunks(val).dataset if val is not None else None,
        data_collator=audio_masking_collator,
        processing_class=build_tokenizer(),
        callbacks=[EpochCallback(train)]
        + ([InferenceFiles(info)] if info is not None else [])
        + ([TimeLimit(args.max_minutes)] if args.max_minutes else []),
    )
    if args.group_by_length:
        trainer.train_chunks = train
    trainer.time_limit = next((c for c in trainer.callback_handler.callbacks if isinstance(c, TimeLimit)), None)
    if trainer.time_limit is not None:
        trainer.time_limit.progress = next(
            (c for c in trainer.callback_handler.callbacks if isinstance(c, ProgressCallback)), None
        )
    if args.eval_maps and val is not None:
        trainer.map_eval = (val, args.eval_maps)
    return trainer


def checkpoint_info(args: argparse.Namespace, codec, data: dict) -> dict:
    """automapper.json: what infer.py needs to use this model, and what it was trained on."""
    return {
        "token_space_version": TOKEN_SPACE_VERSION,
        "codec": {
            "id": codec.id,
            "weights": args.codec_weights,
            "bandwidth": codec.bandwidth,
            "sample_rate": codec.sample_rate,
            "frame_rate": codec.frame_rate,
        },
        "chunk_beats": args.chunk_beats,
        "ppq": PPQ,
        "max_seq_length": args.max_seq_length,
        "base_model": base_model(args),
        # what infer.py's levels say made them: the offline starter (synthetic and LMMS songs, test codec) or a model
        "model_kind": "starter (offline: LMMS demo songs and synthetic drums, random test codec)"
        if args.starter
        else "trained",
        "data": data,
    }


def save_inference_files(output_dir: str | Path, info: dict) -> None:
    """Beside a saved model: the token-space tokenizer (so from_pretrained works), automapper.json (info)
    and README.md, the model card (written over TRL's template)."""
    build_tokenizer().save_pretrained(output_dir)
    with atomic_file(Path(output_dir) / "automapper.json") as out:
        out.write(json.dumps(info, indent=2).encode())
    with atomic_file(Path(output_dir) / "README.md") as out:
        out.write(model_card(info, str(output_dir)).encode())
    with_user_modes(output_dir)  # the weights as readable as any file the user makes


def model_card(info: dict, folder: str) -> str:
    """README.md of a model folder (its path as train.py was given it): what it is, what it learned from,
    how to use it, and that its levels are AI-made."""
    data, codec = info.get("data", {}), info["codec"]
    songs, chunks = data.get("songs", {}), data.get("chunks", {})
    evaluation = info.get("last_map_evaluation")
    test_codec = (
        ": the random test codec, which needs no download but hears less of a song than Encodec's real weights"
        if codec["weights"] == "random"
        else ""
    )
    lines = [
        f"# {Path(folder).name}: a Beat Saber automapper model",
        "",
        "Maps songs to Beat Saber levels with the beat-saber-automapper project's `infer.py`. **Every level it "
        "makes is AI-generated: declare it as AI-made when you upload it** (BeatSaver asks for this).",
        "",
        f"- what it is: {info.get('model_kind', 'trained')}; base model {info.get('base_model', 'unknown')}, fully "
        "fine-tuned",
        f"- token space: version {info['token_space_version']} ({info.get('ppq', PPQ)} ticks per beat, "
        f"{info.get('chunk_beats')}-beat windows, sequences up to {info.get('max_seq_length')} tokens)",
        f"- audio codec: {codec['id']} (weights: {codec['weights']}, {codec['frame_rate']:g} frames/s){test_codec}",
        f"- trained for {info.get('steps', '?')} optimizer steps",
        f"- data: {data.get('levels', 0)} levels, {data.get('difficulties', 0)} difficulties; songs "
        f"{songs.get('train', 0)} train / {songs.get('validation', 0)} validation; chunks {chunks.get('train', 0)} "
        f"train / {chunks.get('validation', 0)} validation",
    ]
    if evaluation:
        figures = ", ".join(f"{k.removeprefix('eval_')} {v:.3g}" for k, v in evaluation.items() if k != "step")
        lines.append(f"- last map evaluation (step {evaluation.get('step')}): {figures}")
    else:
        lines.append("- last map evaluation: none (train with --eval-maps N to score mapped validation chunks)")
    lines += [
        "",
        "## Use",
        "",
        "```bash",
        f"python infer.py song.ogg --model {folder} --difficulty Normal Expert --preview",
        "python utils.py score song.zip",
        "```",
        "",
        "The folder also loads as a plain transformers causal LM (`AutoModelForCausalLM.from_pretrained`); "
        "`automapper.json` holds what infer.py needs (token space, codec, window length).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from accelerate import PartialState
    from accelerate.utils import gather_object

    args = parse_args(argv)
    # under torchrun / accelerate launch: this process among all (gloo on CPU, NCCL on GPUs); else the only one
    state = PartialState(cpu=not torch.cuda.is_available())
    main_process = state.is_main_process
    try:
        if args.starter and main_process:
            starter_corpus(Path(args.data))
        with state.main_process_first():  # the main process indexes and encodes; the others then read its cache
            train, val, info = build_datasets(args, main_process)
        # songs encoded by each process: [all, 0, 0 ...] on a first run, all 0 once cached
        info["data"]["songs_encoded_by_process"] = gather_object([train.encoded + (val.encoded if val else 0)])
        try:
            model, how = load_model(args)
        except OSError as e:
            raise UsageError(
                f"cannot load model {args.model!r} ({str(e).splitlines()[0]}). Download it once while online "
                f"(huggingface-cli download {args.model}), pass a local directory, or use --init scratch"
            ) from None
        if args.codec_embeddings and not maps_already(args):
            seed_audio_embeddings(model, info["codec"].codebooks(), args.seed)
            how += ", audio embeddings from the codec"
        if main_process:
            chunks = f"{len(train)} train chunks, {len(val) if val else 0} validation chunks"
            changes = info["data"]["tempo_changes"]
            if changes["difficulties"]:
                chunks += f" ({changes['chunks']} of them from {changes['difficulties']} difficulties whose tempo "
                chunks += "changes, each chunk inside one tempo region)"
            batch = args.batch_size * args.grad_accum * state.num_processes
            print(f"training: {how}; {chunks}; {state.num_processes} process(es), effective batch {batch}", flush=True)
        saved = checkpoint_info(args, info["codec"], info["data"])  # automapper.json as known before training
        trainer = build_trainer(args, model, train, val, saved)
        trainer.train(resume_from_checkpoint=args.resume or None)
    except UsageError as e:
        if main_process:
            print(f"train.py: {e}", file=sys.stderr)
        return EXIT_USAGE
    except torch.cuda.OutOfMemoryError:
        print(
            f"train.py: CUDA out of memory at --max-seq-length {args.max_seq_length}, --chunk-beats "
            f"{args.chunk_beats}: lower either (e.g. --max-seq-length 16384 or --chunk-beats 32)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    except ValueError as e:
        if args.resume and "checkpoint" in str(e):
            print(f"train.py: nothing to resume in {args.output_dir} ({e})", file=sys.stderr)
            return EXIT_USAGE
        raise
    trainer.save_model(args.output_dir)  # writes on the main process only
    if not trainer.is_world_process_zero():
        return 0
    checkpoint = saved | {"steps": trainer.state.global_step}
    if trainer.last_map_eval is not None:
        checkpoint["last_map_evaluation"] = {"step": trainer.state.global_step} | trainer.last_map_eval
    save_inference_files(args.output_dir, checkpoint)
    print(f"saved model, tokenizer and automapper.json to {args.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
