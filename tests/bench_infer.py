"""Benchmark: inference seconds per minute of audio.

    python tests/bench_infer.py [--skip-real] [--device cuda] [--song-minutes 3 10] [--exact-only]
    python tests/bench_infer.py --real-dtype --song-minutes 20 --exact-only   # only the 20-minute row

Rows: the tiny model end to end through infer.py (CPU, untrained, temperature 1 so it
writes notes); the real Qwen3-0.6B architecture (random init, loaded as infer.py loads it) decoding one
64-beat chunk (120 BPM: 32 s of audio, ~5,200 prompt tokens with the time markers, and
544 note tokens: the 384 grid ticks token space v4 walks plus 160 note types, an Expert
density), extrapolated to a minute and to a 3-minute song; with --device cuda,
a 3-minute song end to end through infer.py with the real architecture. Random weights
everywhere (no download): speed does not depend on them, except that the number of
generated tokens is pinned for the real-size rows.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import sys
import tempfile
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("AUTOMAPPER_UNSLOTH", "0")  # mapping needs none of Unsloth's training patches (import train)

import infer  # noqa: E402
import train  # noqa: E402
from audio import create_audio_tokenizer  # noqa: E402
from data import CODEBOOK_SIZE, EOS, MARKER_TICKS, PAD, NoteGrammar, chunk_markers, prompt_tokens  # noqa: E402
from levels.synth import SYNTH_BPMS, synth_level  # noqa: E402

CHUNK_BEATS, BPM = 64, 120.0
NOTE_TOKENS = len(MARKER_TICKS) * CHUNK_BEATS + 160  # v4: every grid tick's time token, then 160 note types
PEAK_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "int8": torch.int8}


def checkpoint(folder: Path, config: dict, dtype: torch.dtype) -> Path:
    """A train.py-shaped output dir holding a randomly initialised Qwen3 of this config."""
    from transformers import AutoModelForCausalLM, Qwen3Config

    model = AutoModelForCausalLM.from_config(Qwen3Config(**config), dtype=dtype)
    model.save_pretrained(folder)
    args = train.parse_args(["--data", "-", "--codec-weights", "random", "--chunk-beats", str(CHUNK_BEATS)])
    train.save_inference_files(
        folder, train.checkpoint_info(args, create_audio_tokenizer(weights="random", device="cpu"), {})
    )
    return folder


def song_file(folder: Path, seconds: float) -> tuple[Path, float]:
    """A synthetic song of about this length at 120 BPM: (path, its seconds)."""
    index = SYNTH_BPMS.index(BPM)
    files, _ = synth_level(index, bars=max(1, round(seconds * BPM / 60 / 4)) - 2)
    path = folder / "song.ogg"
    path.write_bytes(files["song.egg"])
    import soundfile as sf

    return path, sf.info(path).duration


def end_to_end(model_dir: Path, song: Path, device: str, *extra: str) -> float:
    """Seconds infer.py takes for the song, imports and model loading included."""
    start = time.perf_counter()
    with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
        status = infer.main(
            [str(song), "--model", str(model_dir), "--bpm", str(BPM), "--offset", "0", "--device", device]
            + ["--temperature", "1", "--output", str(song.with_suffix(".zip")), *extra]
        )
    assert status == 0, "infer.py failed"
    return time.perf_counter() - start


def window_prompt() -> torch.Tensor:
    """[1, ~5,200] the Expert prompt of one CHUNK_BEATS window at BPM: random audio codes (75 frames/s,
    2 codebooks) and the window's time markers."""
    frames = round(CHUNK_BEATS * 60 / BPM * 75)
    codes = np.random.default_rng(0).integers(0, CODEBOOK_SIZE, (frames, 2))  # [frames, 2]
    return torch.from_numpy(prompt_tokens(codes, "Expert", chunk_markers(0, CHUNK_BEATS, BPM, 75, frames)))[None]


def greedy(model, prompt: torch.Tensor, grammar: NoteGrammar, **options) -> torch.Tensor:
    """prompt: [1, length] one window's prompt -> [1, length + generated] greedy decoding under the grammar."""
    return model.generate(
        input_ids=prompt,
        attention_mask=torch.ones_like(prompt),
        logits_processor=[grammar],
        do_sample=False,
        **options,
    )


@torch.inference_mode()
def real_chunk(model_dir: Path, device: str, dtype: str) -> tuple[float, float]:
    """(prefill seconds, decode seconds) of one 64-beat chunk with the real architecture, loaded and decoded
    as infer.py does (LM head cut to the token space, grouped decode attention, static cache)."""
    model = infer.load_checkpoint(str(model_dir), torch.device(device), dtype)[0]
    prompt = window_prompt().to(device)
    timings = []
    for new_tokens in (1, NOTE_TOKENS):
        grammar = NoteGrammar(prompt.shape[1], [CHUNK_BEATS * 48])
        start = time.perf_counter()
        greedy(
            model,
            prompt,
            grammar,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            pad_token_id=0,
            cache_implementation="static",
        )
        if device == "cuda":
            torch.cuda.synchronize()
        timings.append(time.perf_counter() - start)
    return timings[0], timings[1] - timings[0]


@torch.inference_mode()
def int8_agreement(model_dir: Path) -> dict:
    """How closely --quantize int8 follows the exact model on one 64-beat window's prompt (greedy, under the
    grammar): the share of the exact model's decisions that int8 makes the same when fed the exact output
    (teacher-forced; also among the positions where the grammar leaves more than one token), and how many
    tokens the two produce alike when each runs free."""
    cpu = torch.device("cpu")
    exact = infer.load_checkpoint(str(model_dir), cpu, "auto")[0]
    int8 = infer.quantized(infer.load_checkpoint(str(model_dir), cpu, "float32")[0])
    prompt = window_prompt()
    length, budget = prompt.shape[1], infer.decode_budget(CHUNK_BEATS, 2.5)

    def free_run(model) -> torch.Tensor:
        grammar = NoteGrammar(length, [CHUNK_BEATS * 48], 2.5)
        return greedy(model, prompt, grammar, max_new_tokens=budget, eos_token_id=EOS, pad_token_id=PAD)[0, length:]

    ours, theirs = free_run(exact), free_run(int8)
    same = int((ours[: theirs.numel()] == theirs[: ours.numel()]).cumprod(0).sum())
    sequence = torch.cat([prompt[0], ours])[None]  # [1, prompt + exact output]
    decisions = ours.numel()
    logits = [m(sequence, logits_to_keep=decisions + 1).logits[0, :-1].float() for m in (exact, int8)]
    grammar, agree, choices, agree_choices = NoteGrammar(length, [CHUNK_BEATS * 48], 2.5), 0, 0, 0
    for t in range(decisions):
        allowed = torch.isfinite(grammar(sequence[:, : length + t], logits[0][t : t + 1].clone()))[0]
        picks = [torch.where(allowed, x[t], -math.inf).argmax() for x in logits]
        agree += int(picks[0] == picks[1])
        if allowed.sum() > 1:
            choices, agree_choices = choices + 1, agree_choices + int(picks[0] == picks[1])
    return {
        "decisions": decisions,
        "agree": agree / decisions,
        "choices": choices,
        "agree_choices": agree_choices / max(choices, 1),
        "same_prefix": same,
        "int8_tokens": theirs.numel(),
    }


def matmul_peak(device: str, dtype: torch.dtype, size: int = 2048, seconds: float = 3.0) -> float | None:
    """GFLOP/s of repeated [size, size] @ [size, size] products in this dtype (int8: torch._int_mm into
    int32), the best of several timed rounds; None where this build has no such kernel on the device."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    if dtype == torch.int8:
        a, b = a.clamp(-127, 127).to(torch.int8), b.clamp(-127, 127).to(torch.int8)
        product = lambda: torch._int_mm(a, b)  # noqa: E731
    else:
        a, b = a.to(dtype), b.to(dtype)
        product = lambda: a @ b  # noqa: E731
    try:
        product()
    except RuntimeError:
        return None
    best, deadline = math.inf, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        product()
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def cpu_song(model_dir: Path, song: Path, *extra: str) -> dict:
    """infer.py in a process of its own on the song (real-size model, Expert at most 2.5 notes per beat, as
    random weights write up to the cap) -> its reported seconds per stage, notes, peak RSS in GiB, dtype."""
    import resource
    import subprocess

    argv = [sys.executable, str(Path(infer.__file__)), str(song), "--model", str(model_dir), "--device", "cpu"]
    argv += ["--bpm", str(BPM), "--offset", "0", "--temperature", "1", "--max-notes-per-beat", "2.5"]
    argv += ["--lights", "none", "--output", str(song.with_suffix(".zip")), *extra]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    done = subprocess.run(argv, capture_output=True, text=True, check=True)
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB: the largest child so far
    line = next(x for x in done.stdout.splitlines() if x.startswith("time: "))
    figures = {k: float(v) for k, v, _ in (part.rsplit(" ", 2) for part in line[6:].split(", "))}
    notes = next(x for x in done.stdout.splitlines() if x.startswith("Expert: "))
    precision = next(x for x in done.stdout.splitlines() if x.startswith("model: ")).split("(")[1].rstrip(")")
    return figures | {"notes": float(notes.split()[1]), "peak RSS GiB": max(rss, before) / 2**20, "dtype": precision}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--skip-real", action="store_true", help="only the tiny model")
    parser.add_argument(
        "--song-minutes",
        type=float,
        nargs="*",
        default=[3.0],
        help="CPU end-to-end rows: real-size infer.py on songs this long (exact, then --quantize int8 on the first)",
    )
    parser.add_argument("--exact-only", action="store_true", help="no --quantize int8 row")
    parser.add_argument(
        "--agreement", action="store_true", help="int8 against exact on one real-size window's prompt (~5 min)"
    )
    parser.add_argument(
        "--real-dtype",
        nargs="*",
        default=["bfloat16", "float32"],
        choices=("bfloat16", "float32"),
        help="dtypes of the real-size one-chunk rows (none: no such rows)",
    )
    args = parser.parse_args()
    peaks = {name: matmul_peak(args.device, dtype) for name, dtype in PEAK_DTYPES.items()}
    print(
        f"matmul peak ({args.device}, {torch.get_num_threads()} threads, 2048^3): "
        + ", ".join(f"{name} {'n/a' if v is None else f'{v:.0f} GFLOP/s'}" for name, v in peaks.items())
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tiny = checkpoint(tmp / "tiny", train.TINY, torch.float32)
        song, seconds = song_file(tmp, 60)
        end_to_end(tiny, song, "cpu")  # warm: imports, codec
        took = end_to_end(tiny, song, "cpu")
        rows.append(("tiny Qwen3, end to end", "cpu", f"{seconds:.0f} s song", took * 60 / seconds))
        # bf16 weights, as train.py writes them on a GPU: infer.py's auto dtype then runs bf16 on CPUs with
        # native bf16 (else float32); int8 quantizes the float32 upcast
        real = None if args.skip_real else checkpoint(tmp / "real", train.QWEN3_06B, torch.bfloat16)
        for dtype in [] if args.skip_real else args.real_dtype:
            prefill, decode = real_chunk(real, args.device, dtype)
            chunk_seconds = CHUNK_BEATS * 60 / BPM
            per_minute = (prefill + decode) * 60 / chunk_seconds
            what = f"Qwen3-0.6B {dtype}, 1 chunk (prefill {prefill:.1f} s, decode {decode:.1f} s)"
            rows.append((what, args.device, f"x{60 / chunk_seconds:.2f}", per_minute))
            print(f"{dtype}: a 3-minute song at this rate takes {per_minute * 3:.0f} s")
        if args.device == "cpu" and not args.skip_real and args.song_minutes:
            for i, minutes in enumerate(args.song_minutes):
                song, seconds = song_file(tmp, minutes * 60)
                for mode in ["exact", "int8"] if i == 0 and not args.exact_only else ["exact"]:
                    r = cpu_song(real, song, *(["--quantize", "int8"] if mode == "int8" else []))
                    print(
                        f"cpu {minutes:g}-min {mode}: total {r['total']:.0f} s (prefill {r['prefill']:.0f} s, "
                        f"decode {r['decode']:.0f} s, encodec {r['encodec']:.0f} s, model {r['model']:.0f} s), "
                        f"{r['notes']:.0f} Expert notes, peak RSS {r['peak RSS GiB']:.1f} GiB, {r['dtype']}",
                        flush=True,
                    )
                    what = f"Qwen3-0.6B {mode}, end to end"
                    rows.append((what, "cpu", f"{seconds:.0f} s song", r["total"] * 60 / seconds))
        if args.agreement:
            a = int8_agreement(checkpoint(tmp / "agree", train.QWEN3_06B, torch.bfloat16))
            print(
                f"int8 agreement: teacher-forced {a['agree']:.1%} of {a['decisions']} decisions "
                f"({a['agree_choices']:.1%} of the {a['choices']} where the grammar allows more than one token); "
                f"free-running, the first {a['same_prefix']} tokens alike (exact {a['decisions']}, "
                f"int8 {a['int8_tokens']}); real-size random weights",
                flush=True,
            )
        if args.device == "cuda" and not args.skip_real:
            song, seconds = song_file(tmp, 180)
            end_to_end(real, song, "cuda")
            took = end_to_end(real, song, "cuda")
            rows.append(("Qwen3-0.6B bf16, end to end", "cuda", f"{seconds:.0f} s song", took * 60 / seconds))
    print(f"{'what':70s} {'device':6s} {'basis':12s} {'s per audio minute':>18s}")
    for what, device, basis, value in rows:
        print(f"{what:70s} {device:6s} {basis:12s} {value:18.1f}")


if __name__ == "__main__":
    main()
