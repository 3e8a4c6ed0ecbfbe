"""A song in, a ready-to-play Beat Saber level out.

    python infer.py SONG [--model output] [--difficulty Expert ...] [--output PATH]
    python infer.py SONG --analyze [--json]        # tempo and first beat only, no model

The song's tempo and first beat are estimated (or given with --bpm/--offset); silence is
prepended so that beat 0 sits on the song's beat grid, as mappers do. The song is cut
into the checkpoint's chunk_beats windows exactly as training cut them; every window is
prefilled and decoded in batches with the KV cache under the note grammar
(data.NoteGrammar), with the object kinds the switches leave on; notes, bombs, walls, arcs
and chains go back to absolute beats, pass the playability repairs and are packaged as a
level zip (or folder) Beat Saber loads as is.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import soxr
import torch
from tqdm import tqdm

from audio import (
    CLEAR_MARGIN,
    ONSET_RATE,
    STEADY_SHARE,
    AudioError,
    AudioTokenizer,
    Tempo,
    audio_seconds,
    create_audio_tokenizer,
    estimate_first_beat,
    estimate_tempo,
    load_audio,
    onset_peaks,
    onset_strengths,
    song_tags,
    truncation,
)
from data import (
    BOMBS_AND_WALLS_PER_BEAT,
    DIFFICULTIES,
    EOS,
    FLOOR_BEATS,
    KIND_NAMES,
    MARKER_TICKS,
    NOTES_ONLY_VERSIONS,
    PAD,
    PEAK_NOTES_PER_BEAT,
    PPQ,
    TOKEN_SPACE_VERSION,
    VOCAB_SIZE,
    ChunkObject,
    NoteGrammar,
    generated_notes,
    placed_objects,
    prompt_tokens,
    window_codes,
)
from levels.lightshow import LIGHT_MODES
from levels.package import OUTPUT_RATE, LevelInfo, cover_from_image, level_package, write_level
from levels.playability import MIN_NOTE_SECONDS, OBJECT_REPAIRS, REPAIRS, repair_objects
from levels.preview import preview_path, preview_png
from maps import BEAT_TEMPO_TOLERANCE, HelpFormatter, Objects, TempoMap, atomic_file

EXIT_USAGE = 2
STARTER_DIR = "output/starter"  # where train.py --starter saves the offline starter model
DEFAULT_MODELS = ("output", STARTER_DIR)  # --model when not given: the first that holds a model
REPO = Path(__file__).resolve().parent  # where DEFAULT_MODELS are also looked for, after the working directory
MIN_SONG_SECONDS = 5.0
MAX_SONG_MINUTES = 15.0  # longer files are refused: few levels run past 10 minutes, and CPU mapping would take hours
MAX_SONG_BYTES = 256 << 20  # a 15-minute 24-bit stereo WAV fits; lossy files are far smaller
DEFAULT_DIFFICULTIES = ("Expert",)
DEFAULT_PORT = 8765
DEFAULT_TEMPERATURE, DEFAULT_TOP_P = 0.8, 0.95
DECODE_ATTENTION = "sdpa_grouped_decode"  # see grouped_decode_attention
MEMORY_SHARE = 0.6  # of the free RAM (or GPU memory) that a batch's KV caches and activations may take
AUDIBLE_DB = -20.0  # a span of song this far below the whole song's RMS level is a rest: the floor leaves it empty
FLOOR_STEP = PPQ // 2  # the floor's notes go on a beat or a half beat


# the switches for the kinds beside colour notes: --bombs/--no-bombs ...
SWITCHES = {
    "bomb": "bombs to dodge",
    "wall": "walls to dodge or duck (spans of time over lanes)",
    "arc": "arcs: curves joining a note to its colour's next",
    "chain": "chains: a note that splits into slices along its cut",
}


class UsageError(Exception):
    """One line for the user; exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Map a song: write a Beat Saber level (Info.dat, difficulties, song.egg, cover.jpg).",
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "song",
        metavar="SONG",
        nargs="?",
        help=f"audio file: .ogg/.egg, .wav, .flac, .mp3 ... ({MIN_SONG_SECONDS:g} s to {MAX_SONG_MINUTES:g} minutes, "
        f"at most {MAX_SONG_BYTES >> 20} MiB)",
    )
    parser.add_argument(
        "--model",
        help="a model folder written by train.py, or one of its checkpoint-N folders (default: output when it "
        f"holds a model, else the starter model in {STARTER_DIR})",
    )
    parser.add_argument("--bpm", type=_positive, help="the song's tempo; estimated from the audio when omitted")
    parser.add_argument(
        "--offset",
        type=_non_negative,
        help="seconds from the file's start to its first beat; estimated when omitted (also with --bpm)",
    )
    parser.add_argument(
        "--analyze",
        action="store_true",
        help="print the tempo, first beat, confidence, the top tempo candidates (pick one with --bpm) and any "
        "tempo change, then exit",
    )
    parser.add_argument("--json", action="store_true", help="with --analyze: one JSON object")
    parser.add_argument(
        "--serve",
        action="store_true",
        help="instead of SONG: start the web page (upload a song, watch the progress, preview and download the "
        "level) with these options as its defaults",
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="with --serve: the page's port")
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="with --serve: the address to listen on; the default serves this machine alone (0.0.0.0 opens the "
        "page to your network, with no login)",
    )
    parser.add_argument("--tracker", choices=("essentia", "librosa"), help="beat tracker (default: best installed)")
    parser.add_argument(
        "--difficulty", nargs="+", choices=DIFFICULTIES, default=list(DEFAULT_DIFFICULTIES), help="difficulties"
    )
    parser.add_argument("--output", help="a .zip path, or a folder to write the level into (default: SONG.zip)")
    parser.add_argument(
        "--temperature", type=_non_negative, default=DEFAULT_TEMPERATURE, help="sampling temperature; 0 = greedy"
    )
    parser.add_argument("--top-p", type=float, default=DEFAULT_TOP_P, help="nucleus sampling mass")
    parser.add_argument("--seed", type=int, default=0, help="random seed: the same seed gives the same level")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available")
    parser.add_argument(
        "--dtype",
        choices=("auto", "float32", "bfloat16"),
        default="auto",
        help="auto: bfloat16 on CUDA; on CPU the checkpoint's own precision (bfloat16 when trained on a GPU; "
        "twice as fast as float32 on CPUs with AVX512-BF16 or AMX), float32 on CPUs without native bf16",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=16,
        help="at most this many windows decoded together; fewer where their KV caches would not fit in "
        f"{MEMORY_SHARE * 100:.0f}%% of the free memory (RAM, or GPU memory)",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="compile the decode step (CUDA, through transformers' generate): faster steps once each batch "
        "shape has paid its compile; off, every step runs eagerly",
    )
    parser.add_argument(
        "--quantize",
        choices=("none", "int8"),
        default="none",
        help="int8: dynamic int8 weights for the linear layers (CPU only; faster, not exact)",
    )
    parser.add_argument(
        "--max-notes-per-beat",
        type=_positive,
        help="no span of one beat holds more notes than this (rounded down), in every difficulty; default by "
        "difficulty, about human maps' busiest beats: "
        + ", ".join(f"{name} {cap}" for name, cap in PEAK_NOTES_PER_BEAT.items()),
    )
    parser.add_argument(
        "--floor-beats",
        type=_non_negative,
        help="the density floor: every span of this many beats in which the music plays holds at least one note; "
        "where the model wrote none, one goes on the span's strongest onset (0: no floor); default by "
        "difficulty: " + ", ".join(f"{name} {beats}" for name, beats in FLOOR_BEATS.items()),
    )
    for kind, what in SWITCHES.items():
        parser.add_argument(
            f"--{kind}s",
            action=argparse.BooleanOptionalAction,
            help=f"{what} (default: on when the model learned them, i.e. its training maps held some; off, the "
            "grammar never writes one)",
        )
    parser.add_argument(
        "--lights",
        choices=LIGHT_MODES,
        default="full",
        help="lightshow: full (lasers, rings, laser speed, boosts), simple (centre and ring lights), none",
    )
    parser.add_argument(
        "--preview", action="store_true", help="also write a PNG lane chart of the first 30 s beside the level"
    )
    parser.add_argument("--cover", help="cover image (jpg/png); default: a generated one")
    parser.add_argument("--song-name", help="default: the file's title tag, else its name")
    parser.add_argument("--song-author", help="default: the file's artist tag")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.serve and args.song:
        parser.error("give SONG or --serve, not both: the page takes its songs by upload")
    if not args.serve and not args.song:
        parser.error("give a SONG to map (or --serve for the web page)")
    return args


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {text}")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, not {text}")
    return value


def read_song(path: str) -> np.ndarray:
    """The song as written to the level: [n, channels] float32 at 44.1 kHz, within the size and length
    limits."""
    if not Path(path).is_file():
        raise UsageError(f"{path}: no such file")
    if (size := Path(path).stat().st_size) > MAX_SONG_BYTES:
        raise UsageError(f"{path}: {size / 2**20:.0f} MiB; a song may be at most {MAX_SONG_BYTES >> 20} MiB")
    if (seconds := audio_seconds(path)) > MAX_SONG_MINUTES * 60:
        raise UsageError(f"{path}: {seconds / 60:.1f} minutes long; a song may be at most {MAX_SONG_MINUTES:g} minutes")
    try:
        song = load_audio(path, OUTPUT_RATE, mono=False)
    except AudioError as e:
        raise UsageError(str(e)) from None
    song = song.reshape(len(song), -1)
    if cut := truncation(path):
        print(f"warning: {path} looks truncated ({cut}); mapping the {len(song) / OUTPUT_RATE:.1f} s it holds")
    if len(song) < MIN_SONG_SECONDS * OUTPUT_RATE:
        raise UsageError(
            f"{path}: {len(song) / OUTPUT_RATE:.1f} s of audio; a song needs at least {MIN_SONG_SECONDS:g} s"
        )
    return song


def song_tempo(args: argparse.Namespace, mono: np.ndarray) -> Tempo:
    """--bpm/--offset where given, the estimate for the rest."""
    if args.bpm is not None and args.offset is not None:
        return Tempo(args.bpm, args.offset, 1.0, "given")
    if args.bpm is not None:
        return Tempo(args.bpm, estimate_first_beat(mono, OUTPUT_RATE, args.bpm), 1.0, "given BPM, estimated first beat")
    try:
        estimate = estimate_tempo(mono, OUTPUT_RATE, args.tracker)
    except AudioError as e:
        raise UsageError(f"{args.song}: {e}") from None
    return estimate._replace(first_beat=args.offset) if args.offset is not None else estimate


ANALYZE_CANDIDATES = 8  # --analyze lists this many tempo candidates


def tempo_line(tempo: Tempo) -> str:
    """The console's account of the tempo: what was found, and when it is doubtful, what to do."""
    line = f"tempo: {tempo.bpm:.3f} BPM, first beat at {tempo.first_beat:.3f} s "
    line += f"({tempo.tracker}, confidence {tempo.confidence:.2f})"
    if tempo.beats is not None:
        tempi = 60 / np.diff(tempo.beats)
        line += (
            f"; the tempo changes ({tempi.min():.1f}-{tempi.max():.1f} BPM): mapped window by window, with bpmEvents"
        )
    if tempo.doubtful:
        why = []
        if tempo.steady_share < STEADY_SHARE:
            why.append(f"only {tempo.steady_share:.0%} of the song's stretches sit on one beat grid")
        if len(tempo.candidates) > 1 and tempo.candidates[0].score - tempo.candidates[1].score < CLEAR_MARGIN / 2:
            why.append(f"{tempo.candidates[1].bpm:.2f} BPM scores almost as well")
        line += f"\nwarning: the tempo is doubtful ({'; '.join(why) or 'low confidence'}): check the candidates with "
        line += "--analyze and pass the right one with --bpm"
    return line


def tempo_report(tempo: Tempo, as_json: bool) -> str:
    """--analyze's output: the tempo, the top candidates and any tempo change, as text or one JSON object."""
    report = {"bpm": round(tempo.bpm, 3), "first_beat": round(tempo.first_beat, 4)}
    report |= {"confidence": round(tempo.confidence, 3), "steady_share": round(tempo.steady_share, 3)}
    report |= {"tracker": tempo.tracker, "doubtful": tempo.doubtful}
    report["candidates"] = [
        {"bpm": round(c.bpm, 3), "score": round(c.score, 3), "sharpness": round(c.sharpness, 3), "source": c.source}
        for c in tempo.candidates[:ANALYZE_CANDIDATES]
    ]
    if tempo.beats is not None:
        events = TempoMap.from_beat_times(tempo.beats).events(BEAT_TEMPO_TOLERANCE, decimals=4)
        report["bpm_events"] = [{"beat": e.beat, "bpm": e.bpm} for e in events]
    if as_json:
        return json.dumps(report)
    lines = [tempo_line(tempo), f"{'candidate BPM':>14s} {'score':>7s} {'sharpness':>9s}  source"]
    lines += [f"{c['bpm']:14.3f} {c['score']:7.2f} {c['sharpness']:9.2f}  {c['source']}" for c in report["candidates"]]
    if tempo.beats is not None:
        lines.append(
            "tempo changes (beat: BPM): " + ", ".join(f"{e['beat']:g}: {e['bpm']:.2f}" for e in report["bpm_events"])
        )
    return "\n".join(lines)


def native_bf16_cpu() -> bool:
    """Whether this CPU computes in bf16 natively (matmuls then run at about twice the fp32 rate)."""
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def auto_dtype(path: str, device: torch.device) -> str:
    """bfloat16 on CUDA; on CPU the checkpoint's own precision (a GPU-trained one is bfloat16), but
    float32 where the CPU lacks native bf16."""
    from transformers import AutoConfig

    if device.type == "cuda":
        return "bfloat16"
    stored = getattr(AutoConfig.from_pretrained(path), "dtype", None)
    return "bfloat16" if stored in (torch.bfloat16, "bfloat16") and native_bf16_cpu() else "float32"


def default_model() -> str:
    """The first of DEFAULT_MODELS that holds a model, under the working directory and then beside this
    file (infer.py run from a music folder still finds the repo's models), or a UsageError saying how to
    get one."""
    for root in dict.fromkeys((Path.cwd(), REPO)):
        for folder in DEFAULT_MODELS:
            if (root / folder / "automapper.json").is_file():
                return folder if root == Path.cwd() else str(root / folder)
    raise UsageError(
        "no model: build the starter model with `python train.py --starter` (about 30 minutes on a CPU, no GPU "
        "or download needed), or pass --model DIR"
    )


def model_info(path: str) -> dict:
    """automapper.json of a train.py output dir or one of its checkpoint-N folders; refuses other token
    spaces. Reads no weights, so a wrong --model fails before any audio work."""
    info_path = Path(path) / "automapper.json"
    if not info_path.is_file():
        raise UsageError(f"no model at {path} (no automapper.json): run train.py first, or pass --model DIR")
    try:
        info = json.loads(info_path.read_text())
    except (OSError, ValueError) as e:
        raise UsageError(f"{info_path}: unreadable ({e})") from None
    if info.get("token_space_version") not in (TOKEN_SPACE_VERSION, *NOTES_ONLY_VERSIONS):
        raise UsageError(
            f"{path}: token space version {info.get('token_space_version')} but this infer.py speaks "
            f"{TOKEN_SPACE_VERSION}: retrain, or use the infer.py of that checkpoint's version"
        )
    return info


def learned_kinds(info: dict) -> list[str]:
    """The object kinds a model can write: colour notes, and each other kind its training maps held."""
    if info.get("token_space_version") in NOTES_ONLY_VERSIONS:
        return ["note"]
    counts = info.get("data", {}).get("objects", {})
    return [kind for kind in KIND_NAMES if kind == "note" or counts.get(kind, 0) > 0]


def chosen_kinds(args: argparse.Namespace, info: dict) -> list[str]:
    """The kinds to write: what the model learned, each switch given turning its kind on or off; a kind
    switched on that the model never learned is a UsageError."""
    learned = learned_kinds(info)
    kinds = ["note"]
    for kind in SWITCHES:
        wanted = getattr(args, f"{kind}s", None)
        if wanted and kind not in learned:
            raise UsageError(
                f"{args.model}: this model never saw {kind}s in training (token space "
                f"{info.get('token_space_version')}); leave --{kind}s out or retrain on maps that hold them"
            )
        if wanted or (wanted is None and kind in learned):
            kinds.append(kind)
    return kinds


def load_checkpoint(path: str, device: torch.device, dtype: str):
    """(model, automapper.json) of a train.py output dir or checkpoint."""
    info = model_info(path)
    from transformers import AutoModelForCausalLM

    if dtype == "auto":
        dtype = auto_dtype(path, device)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=getattr(torch, dtype), attn_implementation=_register_decode_attention()
        )
    except OSError as e:
        raise UsageError(f"{path}: cannot load the model ({str(e).splitlines()[0]})") from None
    return token_space_head(model.to(device).eval()), info


def grouped_decode_attention(module, query, key, value, attention_mask, scaling=None, **kwargs):
    """transformers attention: SDPA for prefill; for a decode step (one query position) two grouped
    matmuls that read each cached key and value once, where SDPA on CPU first copies them per query head
    (GQA) and runs a kernel tiled for long queries. The same arithmetic, in a different order.

    query: [rows, heads, positions, dim]; key, value: [rows, kv_heads, cached, dim];
    attention_mask: bool [rows, 1, positions, cached] (True: attend) or None -> [rows, positions, heads, dim]."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    rows, heads, positions, dim = query.shape
    if positions > 1:
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, **kwargs)
    groups = key.shape[1]
    q = query.reshape(rows, groups, heads // groups, dim)  # [rows, kv_heads, heads per kv head, dim]
    scores = torch.matmul(q, key.transpose(-1, -2)).float() * (scaling or dim**-0.5)  # [rows, kv, per, cached]
    if attention_mask is not None:
        scores = scores.masked_fill(~attention_mask, -math.inf)  # mask [rows, 1, 1, cached] broadcasts
    out = torch.matmul(scores.softmax(-1).to(value.dtype), value)  # [rows, kv_heads, per, dim]
    return out.reshape(rows, 1, heads, dim), None


def _register_decode_attention() -> str:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(DECODE_ATTENTION, grouped_decode_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(DECODE_ATTENTION, sdpa_mask)  # SDPA's masks for both
    return DECODE_ATTENTION


def token_space_head(model):
    """The model with its LM head cut to the token space's ids (exact: the grammar masks every other id).
    Qwen3-0.6B: 151,936 -> 14,587 rows, ~140M fewer multiply-adds per decoded token; the rows kept are a
    view of the tied embedding, so no memory is added."""
    head = model.get_output_embeddings()
    if head.weight.shape[0] > VOCAB_SIZE:
        cut = torch.nn.Linear(head.in_features, VOCAB_SIZE, bias=False, device="meta")
        cut.weight = torch.nn.Parameter(head.weight[:VOCAB_SIZE].detach(), requires_grad=False)
        model.set_output_embeddings(cut)
    return model


def quantized(model):
    """The model with every linear layer's weights in dynamic int8 (per-channel scales; activations are
    quantized per call). CPU only; the embeddings stay float32."""
    import warnings

    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's notice that its quantized tensors move to torchao
        return quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


def window_bytes(model, tokens: int) -> int:
    """Bytes one row of `tokens` (prompt and decoded) holds in a batch at its peak: its KV cache in every
    layer, plus one layer's prefill activations (attention projections, the MLP's three intermediates)."""
    c = model.config
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    width = torch.finfo(model.dtype).bits // 8
    kv = 2 * c.num_hidden_layers * c.num_key_value_heads * head_dim
    projections = (c.num_attention_heads + 2 * c.num_key_value_heads) * head_dim  # q, k, v
    activations = 3 * c.intermediate_size + 2 * c.hidden_size + projections
    return tokens * (kv + activations) * width


def free_bytes(device: torch.device, cgroup: Path = Path("/sys/fs/cgroup")) -> int:
    """Memory this process may still take: free GPU memory, or available RAM capped by a cgroup v2 limit
    (containers, where the machine's RAM is not ours)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    import psutil

    available = psutil.virtual_memory().available
    try:
        limit = (cgroup / "memory.max").read_text().strip()
        used = int((cgroup / "memory.current").read_text())
    except (OSError, ValueError):
        return available
    return available if limit == "max" else min(available, max(0, int(limit) - used))


def batches(lengths: list[int], max_rows: int, fits) -> list[range]:
    """lengths: prompt tokens per row, ascending -> consecutive row ranges of at most max_rows whose rows,
    each left-padded to the longest, fit: fits(rows, longest) is True (a single row always goes)."""
    out, first = [], 0
    for i, length in enumerate(lengths):
        if i > first and (i - first >= max_rows or not fits(i - first + 1, length)):
            out.append(range(first, i))
            first = i
    return out + [range(first, len(lengths))] if lengths else out


Report = Callable[[str, float, float], None]  # (stage, done, total): where a mapping stands, for the web page
STAGES = ("song and tempo", "model", "encodec", "prefill", "decoding", "level")  # the order a mapping takes


def silent(stage: str, done: float, total: float) -> None:
    """A Report that tells no one: the console has its own bars and lines."""


class Progress:
    """tqdm bars with ETAs for prefill (prompt tokens, advanced layer by layer) and decoding (steps), and the
    seconds each took. Prefill is seen by hooks on every decoder layer (a call over more than one position);
    decode steps by this object's place among generate()'s logits processors, outside the model, so the
    hooks do nothing in a compiled decode step and break no graph."""

    def __init__(self, model, prompt_tokens: int, steps: int, report: Report | None = None):
        self.report = report or silent
        # [done, total] per stage, for report (a hidden tqdm bar counts nothing)
        self.counts = {"prefill": [0.0, prompt_tokens], "decoding": [0, steps]}
        self.layers = model.get_decoder().layers
        self.prefill = tqdm(total=prompt_tokens, desc="prefill", unit="tok", disable=None)
        self.decode = tqdm(total=steps, desc="decoding", unit="step", disable=None)
        self.seconds = {"prefill": 0.0, "decode": 0.0}
        self.hooks = [layer.register_forward_hook(self._layer_done, with_kwargs=True) for layer in self.layers]

    def batch(self, prompt_tokens: int, steps: int) -> Progress:
        self.tokens, self.steps, self.taken, self.clock = prompt_tokens, steps, 0, time.perf_counter()
        return self

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        now = time.perf_counter()
        self.seconds["decode"] += now - self.clock
        self.decode.update(max(0, self.steps - self.taken))  # steps not taken: every row ended early
        self._count("decoding", max(0, self.steps - self.taken))

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        """A logits processor: called once per generated token of the batch, before it is chosen."""
        if self.taken == 0:  # the first call follows the prefill
            now = time.perf_counter()
            self.seconds["prefill"] += now - self.clock
            self.clock = now
        self.taken += 1
        self.decode.update(1)
        self._count("decoding", 1)
        return scores

    def _layer_done(self, layer, args, kwargs, output) -> None:
        if torch.compiler.is_compiling():
            return
        hidden = args[0] if args else kwargs["hidden_states"]  # [rows, positions, hidden]
        if hidden.shape[1] > 1:
            self.prefill.update(self.tokens / len(self.layers))
            self._count("prefill", self.tokens / len(self.layers))

    def _count(self, stage: str, amount: float) -> None:
        self.counts[stage][0] += amount
        self.report(stage, *self.counts[stage])

    def close(self) -> None:
        for hook in self.hooks:
            hook.remove()
        self.prefill.close()
        self.decode.close()


class Window(NamedTuple):
    """One window of one difficulty, ready to decode."""

    difficulty: str
    start: int  # the window's first beat in the song
    ticks: int  # ticks the window spans (chunk_beats * PPQ): the grammar's grid ends there
    prompt: np.ndarray  # [tokens] int64: prompt_tokens of the window's audio
    floor: dict[int, int] = {}  # the density floor in window ticks: {a span's chosen tick: the span's first tick}


Floor = list[tuple[float, float]]  # (first beat of a span where the music plays, the beat its floor note takes)


def floor_beats(
    mono: np.ndarray, beats: TempoMap, span_beats: float, song_beats: float, peaks: np.ndarray | None = None
) -> Floor:
    """mono: [n] float at OUTPUT_RATE, beat 0 at sample 0; peaks: its onset_peaks, where already found ->
    for every span of span_beats beats (from beat 0) whose RMS level is within AUDIBLE_DB of the whole
    song's, the beat or half beat in it (from MIN_NOTE_SECONDS on) with the strongest onset. No spans for
    span_beats 0."""
    if span_beats <= 0:
        return []
    peaks = onset_peaks(mono, OUTPUT_RATE) if peaks is None else peaks  # [frames]
    starts = np.arange(0.0, song_beats, span_beats)  # [spans] first beat of each
    # steps: [spans, k] the beats and half beats of each span, NaN where past the song or too early to play
    steps = starts[:, None] + np.arange(0.0, span_beats, FLOOR_STEP / PPQ)[None, :]
    steps[(steps >= song_beats) | (steps < beats.beat_at(MIN_NOTE_SECONDS))] = np.nan
    strength = onset_strengths(peaks, beats.seconds_at(np.nan_to_num(steps, nan=-1.0).ravel()))
    strength = np.where(np.isnan(steps), -np.inf, strength.reshape(steps.shape))  # [spans, k]
    edges = np.round(beats.seconds_at(np.r_[starts, starts[-1] + span_beats]) * OUTPUT_RATE).astype(np.int64)
    song_rms = np.sqrt(np.mean(np.square(mono, dtype=np.float64)))
    floor = []
    for i, start in enumerate(starts.tolist()):
        part = mono[edges[i] : edges[i + 1]]
        rms = np.sqrt(np.mean(np.square(part, dtype=np.float64))) if part.size else 0.0
        if rms > song_rms * 10 ** (AUDIBLE_DB / 20) and np.isfinite(strength[i]).any():
            floor.append((start, float(steps[i, int(np.argmax(strength[i]))])))
    return floor


def window_floor(floor: Floor, start: int, chunk_beats: int) -> dict[int, int]:
    """The floor's spans whose note falls in the window from beat `start` -> {its tick: its span's first tick},
    in window ticks (a span that began before the window begins with it)."""
    return {
        round((beat - start) * PPQ): max(0, round((first - start) * PPQ))
        for first, beat in floor
        if start <= beat < start + chunk_beats
    }


def song_windows(
    codes: np.ndarray,
    silence: np.ndarray,
    tempo: TempoMap,
    difficulties: list[str],
    chunk_beats: int,
    frame_rate: float,
    floors: dict[str, Floor] | None = None,
) -> list[Window]:
    """codes: [frames, 2] of the whole (padded) song, beat 0 at frame 0; silence: [2], the codec's silent
    frame, which fills the last window past the song's end as in training; floors: {difficulty: its density
    floor} (floor_beats) -> a window per chunk_beats beats per difficulty, laid out as training laid them out
    (window_codes)."""
    floors = floors or {}
    windows = []
    for start in range(0, math.ceil(tempo.beat_at(len(codes) / frame_rate)), chunk_beats):
        window, markers = window_codes(codes, silence, tempo, start, chunk_beats, frame_rate)  # [frames, 2]
        windows += [
            Window(
                name,
                start,
                chunk_beats * PPQ,
                prompt_tokens(window, name, markers),
                window_floor(floors.get(name, []), start, chunk_beats),
            )
            for name in difficulties
        ]
    return windows


def level_objects(
    model,
    windows: list[Window],
    info: dict,
    sampling: dict,
    batch_size: int,
    max_notes_per_beat: float | None = None,
    song_beats: float = math.inf,
    report: Report | None = None,
    kinds: Sequence[str] = ("note",),
) -> tuple[dict[str, Objects], dict[str, float]]:
    """Every window decoded -> ({difficulty: objects starting before song_beats}, seconds of prefill and of
    decoding). Windows go in batches of similar length that fit in memory."""
    chunk_beats = info["chunk_beats"]
    windows = sorted(windows, key=lambda w: len(w.prompt))  # similar lengths share a batch: little padding
    steps = decode_budget(chunk_beats, max(beat_caps([w.difficulty for w in windows], max_notes_per_beat)), kinds)
    memory = MEMORY_SHARE * free_bytes(model.device)

    def fits(count: int, longest: int) -> bool:
        return count * window_bytes(model, longest + steps) <= memory

    plan = batches([len(w.prompt) for w in windows], batch_size, fits)
    padded_tokens = sum(len(part) * len(windows[part[-1]].prompt) for part in plan)  # rows as long as the batch's last
    level: dict[str, Objects] = {w.difficulty: Objects() for w in windows}
    progress = Progress(model, padded_tokens, steps * len(plan), report)
    try:
        for part in plan:
            batch = [windows[i] for i in part]
            with progress.batch(len(batch) * len(batch[-1].prompt), steps):
                chunks = decode(model, batch, chunk_beats, info, sampling, max_notes_per_beat, [progress], kinds)
            for window, chunk in zip(batch, chunks):
                placed, into = placed_objects(chunk, window.start), level[window.difficulty]
                # none in the padding past the song's end
                into.notes += [n for n in placed.notes if n.beat < song_beats]
                into.bombs += [b for b in placed.bombs if b.beat < song_beats]
                into.obstacles += [o for o in placed.obstacles if o.beat < song_beats]
                into.arcs += [a for a in placed.arcs if a.tail.beat < song_beats]
                into.chains += [c for c in placed.chains if c.tail_beat < song_beats]
    finally:
        progress.close()
    return level, progress.seconds


def floor_span(difficulty: str, floor_beats: float | None = None) -> float:
    """The density floor's span in beats: the one given (0: none), else the difficulty's default."""
    return FLOOR_BEATS[difficulty] if floor_beats is None else floor_beats


def beat_caps(difficulties: list[str], max_notes_per_beat: float | None = None) -> list[float]:
    """Each difficulty's cap on notes in one beat: the one given, else its default."""
    return [max_notes_per_beat or PEAK_NOTES_PER_BEAT[name] for name in difficulties]


def decode_budget(chunk_beats: int, max_notes_per_beat: float, kinds: Sequence[str] = ("note",)) -> int:
    """Tokens a window decodes at most: the grid's time tokens; per note a time token, its type, and an arc
    (one token) and a chain (type and length) where those are on; per bomb or wall a time token, its type
    and a wall's length; and EOS."""
    per_note = 2 + ("arc" in kinds) + 2 * ("chain" in kinds)
    others = 3 * BOMBS_AND_WALLS_PER_BEAT if {"bomb", "wall"} & set(kinds) else 0
    per_beat = len(MARKER_TICKS) + per_note * math.floor(max_notes_per_beat) + others
    return math.ceil(per_beat * chunk_beats) + 1


@torch.inference_mode()
def decode(
    model,
    batch: list[Window],
    chunk_beats: int,
    info: dict,
    sampling: dict,
    max_notes_per_beat: float | None = None,
    watchers: Sequence = (),
    kinds: Sequence[str] = ("note",),
) -> list[list[ChunkObject]]:
    """Prefill a batch of prompts (left-padded) and decode each under the grammar, writing the object kinds
    given -> chunk objects per row. watchers: logits processors that only look (Progress), run before the
    grammar at every step."""
    length = max(len(w.prompt) for w in batch)
    # input_ids, attention_mask: [rows, length], PAD with attention 0 on the left
    input_ids = torch.full((len(batch), length), PAD, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    for r, window in enumerate(batch):
        input_ids[r, length - len(window.prompt) :] = torch.from_numpy(np.asarray(window.prompt))
        attention_mask[r, length - len(window.prompt) :] = 1
    caps = beat_caps([w.difficulty for w in batch], max_notes_per_beat)  # per row: notes in one beat
    budget = min(decode_budget(chunk_beats, max(caps), kinds), info.get("max_seq_length", 1 << 30) - length)
    grammar = NoteGrammar(length, [w.ticks for w in batch], caps, kinds, [w.floor for w in batch])
    output = model.generate(
        input_ids=input_ids.to(model.device),
        attention_mask=attention_mask.to(model.device),
        logits_processor=[*watchers, grammar],
        max_new_tokens=max(budget, 1),
        eos_token_id=EOS,
        pad_token_id=PAD,
        cache_implementation="static",  # preallocated: no copy of the whole cache per step, as a growing one makes
        **sampling,
    )
    # output: [rows, length + generated] token ids; what follows the prompt is notes, then EOS/PAD
    return [generated_notes(row) for row in output[:, length:].tolist()]


def sampling_options(
    temperature: float = DEFAULT_TEMPERATURE, top_p: float = DEFAULT_TOP_P, compile_decode: bool = False
) -> dict:
    """generate() keyword arguments: greedy for temperature 0, else nucleus sampling; the decode step
    compiled (transformers' auto-compile with the static cache, on CUDA) only when asked."""
    compiling = {"disable_compile": not compile_decode}
    if temperature == 0:
        return {"do_sample": False, "temperature": None, "top_p": None, "top_k": None} | compiling
    return {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": None} | compiling


def output_path(args: argparse.Namespace) -> Path:
    return Path(args.output) if args.output else Path(args.song).with_suffix(".zip")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except UsageError as e:
        print(f"infer.py: {e}", file=sys.stderr)
        return EXIT_USAGE


class Laps:
    """Where the time goes: seconds per named step, printed at the end."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.clock = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = self.seconds.get(name, 0.0) + now - self.clock
        self.clock = now

    def line(self) -> str:
        total = sum(self.seconds.values())
        return "time: " + ", ".join(f"{k} {v:.1f} s" for k, v in self.seconds.items()) + f", total {total:.1f} s"


def loaded_model(args: argparse.Namespace) -> tuple[torch.nn.Module, dict, AudioTokenizer]:
    """The checkpoint on the chosen device and precision (int8 layers with --quantize), its automapper.json,
    and the codec it was trained with."""
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.quantize != "none" and device.type != "cpu":
        raise UsageError(f"--quantize {args.quantize} is for CPU decoding; on {device.type} use --dtype")
    # int8 quantizes float32 linear layers
    model, info = load_checkpoint(args.model, device, "float32" if args.quantize == "int8" else args.dtype)
    if args.quantize == "int8":
        model = quantized(model)
        if native_bf16_cpu():
            # measured (docs/performance.md): its attention and KV cache stay float32, twice the bytes per decode
            # step of bf16, and decoding is bound by reading that cache
            print("note: this CPU computes bf16 natively; exact bf16 mapping (no --quantize) is faster here than int8")
    precision = str(model.dtype).removeprefix("torch.") + (", int8 linear layers" if args.quantize == "int8" else "")
    print(f"model: {args.model} ({precision})")
    codec = info["codec"]
    try:
        tokenizer = create_audio_tokenizer(codec["bandwidth"], device, codec["weights"])
    except AudioError as e:
        raise UsageError(str(e)) from None
    if tokenizer.id != codec["id"]:
        raise UsageError(f"{args.model}: trained on codec {codec['id']}, but {tokenizer.id} loaded")
    return model, info, tokenizer


def beat_aligned(song: np.ndarray, tempo: Tempo) -> tuple[np.ndarray, TempoMap]:
    """song: [n, channels] at OUTPUT_RATE -> (the song with silence before it so that a beat falls on its
    first sample: [n + pad, channels], its tempo with beat 0 at 0 s)."""
    period = 60 / tempo.bpm if tempo.beats is None else float(tempo.beats[1] - tempo.beats[0])
    pad = round((period - tempo.first_beat % period) % period * OUTPUT_RATE)
    pad = 0 if pad >= round(period * OUTPUT_RATE) else pad
    padded = np.concatenate([np.zeros((pad, song.shape[1]), dtype=song.dtype), song])
    if tempo.beats is None:
        return padded, TempoMap.steady(tempo.bpm)
    beat_times = tempo.beats + pad / OUTPUT_RATE  # [beats] seconds of every beat in the padded song
    if beat_times[0] > period / 2:
        beat_times = np.r_[beat_times[0] - period, beat_times]
    return padded, TempoMap.from_beat_times(beat_times)


def song_codes(tokenizer: AudioTokenizer, mono: np.ndarray, report: Report = silent) -> np.ndarray:
    """mono: [n] float at OUTPUT_RATE -> codes: [frames, 2] int16 at the codec's frame rate (75/s)."""
    at_rate = soxr.resample(mono, OUTPUT_RATE, tokenizer.sample_rate)
    return tokenizer.encode(at_rate[None], lambda done, total: report("encodec", done, total))


def repaired_level(level: dict[str, Objects], tempo: TempoMap, max_notes_per_beat: float | None) -> dict:
    """Each difficulty's objects through the repair pass, with a line each on what it holds and what the
    repairs changed (those that changed something, for the other kinds)."""
    kept = {}
    for name, chosen in level.items():
        kept[name], repairs = repair_objects(chosen, tempo, beat_caps([name], max_notes_per_beat)[0])
        held = ", ".join(f"{count} {kind}" for kind, count in kept[name].counts().items() if count or kind == "notes")
        done = [f"{repairs[kind]} {kind}" for kind in REPAIRS] + [
            f"{repairs[kind]} {kind}" for kind in OBJECT_REPAIRS if repairs[kind]
        ]
        print(f"{name}: {held} ({', '.join(done)})")
    return kept


def level_info(args: argparse.Namespace, info: dict, tempo: Tempo, kinds: Sequence[str] = ("note",)) -> LevelInfo:
    """What the level says of itself: the song's tags (or the flags), the cover, and what made it."""
    title, artist = song_tags(args.song)
    try:
        cover = cover_from_image(args.cover) if args.cover else None
    except OSError as e:
        raise UsageError(f"{args.cover}: unreadable cover image ({e})") from None
    generator = {
        "checkpoint": Path(args.model).resolve().name,
        "model": info.get("model_kind", "trained"),
        "baseModel": info.get("base_model", ""),
        "tokenSpaceVersion": info["token_space_version"],
        "codec": info["codec"]["id"],
        "seed": args.seed,
        "temperature": args.temperature,
        "topP": args.top_p,
        "tempo": tempo.tracker,
        "lights": args.lights,
        "objects": list(kinds),
        "floorBeats": {d: floor_span(d, args.floor_beats) for d in args.difficulty},
    }
    name = args.song_name or title or Path(args.song).stem
    return LevelInfo(name, args.song_author or artist, cover, lights=args.lights, seed=args.seed, generator=generator)


def write_preview(path: Path, level: dict[str, Objects], tempo: TempoMap, mono: np.ndarray, title: str) -> Path:
    """The level's preview PNG beside it (mono: [n] float at OUTPUT_RATE, beat 0 at sample 0)."""
    png = preview_png(level, tempo, soxr.resample(mono, OUTPUT_RATE, ONSET_RATE), ONSET_RATE, title=title)
    picture = preview_path(path)
    with atomic_file(picture) as out:
        out.write(png)
    return picture


class Mapped(NamedTuple):
    """A level written by map_song, and what the web page shows of it."""

    path: Path  # the level zip or folder
    objects: dict[str, Objects]  # difficulty -> objects after repair, beats from the padded song's first sample
    beats: TempoMap  # beat 0 at the padded song's first sample
    tempo: Tempo  # as found (or given) on the song as uploaded
    preview: Path | None  # the PNG, with --preview
    laps: Laps


def map_song(args: argparse.Namespace, report: Report = silent, models: dict | None = None) -> Mapped:
    """song -> tempo -> model -> codes -> windows -> decode -> repair -> package (-> preview). models: a cache of
    loaded models (a server's, across songs) by the arguments that choose them."""
    laps = Laps()
    args.model = args.model or default_model()
    kinds = chosen_kinds(args, model_info(args.model))  # a missing or foreign model, a wrong switch: before any audio
    report("song and tempo", 0, 1)
    song = read_song(args.song)  # [n, channels] at 44.1 kHz
    tempo = song_tempo(args, song.mean(axis=1))
    print(tempo_line(tempo))
    laps.lap("song and tempo")
    report("model", 0, 1)
    key = (str(Path(args.model).resolve()), args.device, args.dtype, args.quantize)
    loaded = models.get(key) if models is not None else None
    model, info, tokenizer = loaded or loaded_model(args)
    if models is not None:
        models[key] = (model, info, tokenizer)
    torch.manual_seed(args.seed)
    laps.lap("model")
    report("encodec", 0, 1)
    padded, beats = beat_aligned(song, tempo)  # [n + pad, channels], beat 0 on its first sample
    mono = padded.mean(axis=1)
    codes = song_codes(tokenizer, mono, report)  # [frames, 2] int16, beat 0 at frame 0
    laps.lap("encodec")
    frame_rate = info["codec"]["frame_rate"]
    song_beats = beats.beat_at(len(codes) / frame_rate)
    spans = {d: floor_span(d, args.floor_beats) for d in args.difficulty}  # {difficulty: floor span, 0 = off}
    # peaks: [frames] the song's onsets, found once for every difficulty's floor, and only when one is on
    peaks = onset_peaks(mono, OUTPUT_RATE) if any(span > 0 for span in spans.values()) else None
    floors = {d: floor_beats(mono, beats, span, song_beats, peaks) for d, span in spans.items()}
    windows = song_windows(
        codes, tokenizer.silence_codes(), beats, args.difficulty, info["chunk_beats"], frame_rate, floors
    )
    sampling = sampling_options(args.temperature, args.top_p, args.compile)
    level, decoding = level_objects(
        model, windows, info, sampling, args.batch_size, args.max_notes_per_beat, song_beats, report, kinds
    )
    laps.lap("windows")
    laps.seconds |= decoding
    laps.seconds["other"] = laps.seconds.pop("windows") - sum(decoding.values())  # batching, grammar set-up, collection
    report("level", 0, 1)
    level = repaired_level(level, beats, args.max_notes_per_beat)
    about = level_info(args, info, tempo, kinds)
    path = write_level(output_path(args), level_package(level, beats, padded, about))
    print(f"wrote {path} (generated: declare it as AI-made when you upload it)")
    preview = write_preview(path, level, beats, mono, about.song_name) if args.preview else None
    if preview:
        print(f"wrote {preview}")
    laps.lap("level")
    laps.seconds["other"] += laps.seconds.pop("level")
    return Mapped(path, level, beats, tempo, preview, laps)


def run(args: argparse.Namespace) -> int:
    """--serve: the web page; --analyze: the tempo report; else one level (map_song)."""
    if args.serve:
        from web.app import serve

        return serve(args)
    if args.analyze:
        song = read_song(args.song)
        print(tempo_report(song_tempo(args, song.mean(axis=1)), args.json))
        return 0
    print(map_song(args).laps.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
