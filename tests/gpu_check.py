"""The Python stages of tests/gpu_check.sh; each prints one JSON line of results.

python tests/gpu_check.py codec --device cuda --seconds 180   # Encodec real-time factor, codes vs CPU
python tests/gpu_check.py trained OUT_DIR                     # the loss fell, the checkpoint reloads
python tests/gpu_check.py song DIR --seconds 180              # a synthetic song of about that length
python tests/gpu_check.py times LOG...                        # infer.py's time lines, as JSON
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from audio import create_audio_tokenizer  # noqa: E402
from levels.synth import SYNTH_BPMS, synth_level  # noqa: E402

SONG_BPM = 120.0


def song(folder: Path, seconds: float) -> dict:
    """A synthetic drum song of about `seconds` at SONG_BPM, written as folder/song.ogg."""
    files, _ = synth_level(SYNTH_BPMS.index(SONG_BPM), bars=max(1, round(seconds * SONG_BPM / 240) - 2))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "song.ogg").write_bytes(files["song.egg"])
    import soundfile as sf

    return {"song": str(folder / "song.ogg"), "seconds": sf.info(folder / "song.ogg").duration, "bpm": SONG_BPM}


def codec(device: str, seconds: float) -> dict:
    """Encodec (random test weights: the real architecture and cost) on `device`: real-time factor with
    its segments batched, and the share of codes equal to the CPU's on the first 30 s."""
    rng = np.random.default_rng(0)
    audio = (rng.normal(0, 0.1, int(24_000 * seconds)) * np.sin(np.arange(int(24_000 * seconds)) / 900)).astype(
        np.float32
    )  # [samples] at 24 kHz: noise bursts, codes vary
    here = create_audio_tokenizer(weights="random", device=device)
    here.encode(audio[: 24_000 * 5])  # warm-up: kernels chosen, memory taken
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    codes = here.encode(audio)  # [frames, 2]
    if device == "cuda":
        torch.cuda.synchronize()
    took = time.perf_counter() - start
    cpu = create_audio_tokenizer(weights="random", device="cpu")
    part = audio[: 24_000 * min(30, int(seconds))]
    reference = cpu.encode(part)
    ours = here.encode(part)
    return {
        "device": device,
        "seconds_of_audio": seconds,
        "encode_seconds": took,
        "real_time_factor": seconds / took,
        "segments_batched": here.batch_size,
        "codes_equal_to_cpu": float((ours == reference).mean()),
        "first_codebook_equal_to_cpu": float((ours[:, 0] == reference[:, 0]).mean()),
        "frames": int(codes.shape[0]),
    }


def trained(out_dir: Path) -> dict:
    """From a train.py output dir: did the loss fall, which path and optimizer ran, does the model reload."""
    from transformers import AutoModelForCausalLM

    checkpoints = sorted(out_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    state = json.loads((checkpoints[-1] / "trainer_state.json").read_text()) if checkpoints else {}
    losses = [e["loss"] for e in state.get("log_history", []) if "loss" in e]
    accuracy = [e["mean_token_accuracy"] for e in state.get("log_history", []) if "mean_token_accuracy" in e]
    model = AutoModelForCausalLM.from_pretrained(out_dir)
    head = min(5, max(1, len(losses) // 4))
    return {
        "steps": state.get("global_step"),
        "first_losses": losses[:head],
        "last_losses": losses[-head:],
        "loss_fell": bool(losses) and float(np.mean(losses[-head:])) < float(np.mean(losses[:head])),
        "finite": bool(losses) and all(np.isfinite(losses)),
        "token_accuracy_logged": bool(accuracy),
        "reloaded_parameters": sum(p.numel() for p in model.parameters()),
        "dtype": str(model.dtype),
    }


def times(logs: list[Path]) -> dict:
    """infer.py's closing 'time:' line and note counts from each log -> {log name: {part: seconds}}."""
    result = {}
    for log in logs:
        text = log.read_text(errors="replace")
        line = next((ln for ln in reversed(text.splitlines()) if ln.startswith("time: ")), "")
        parts = dict((k.strip(), float(v)) for k, v in re.findall(r"([a-z ]+) ([\d.]+) s", line.removeprefix("time:")))
        notes = {d: int(n) for d, n in re.findall(r"^(\w+): (\d+) notes", text, flags=re.M)}
        result[log.stem] = parts | {"notes": notes} if parts else {"error": text.strip().splitlines()[-1:]}
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="stage", required=True)
    c = sub.add_parser("codec", help="Encodec speed and agreement with the CPU")
    c.add_argument("--device", default="cuda")
    c.add_argument("--seconds", type=float, default=180.0)
    t = sub.add_parser("trained", help="a train.py output dir: loss, reload")
    t.add_argument("out_dir", type=Path)
    s = sub.add_parser("song", help="write a synthetic song")
    s.add_argument("folder", type=Path)
    s.add_argument("--seconds", type=float, default=180.0)
    m = sub.add_parser("times", help="infer.py logs -> their time lines")
    m.add_argument("logs", type=Path, nargs="+")
    args = p.parse_args(argv)
    if args.stage == "codec":
        result = codec(args.device, args.seconds)
    elif args.stage == "trained":
        result = trained(args.out_dir)
    elif args.stage == "song":
        result = song(args.folder, args.seconds)
    else:
        result = times(args.logs)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
