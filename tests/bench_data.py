"""Benchmark: training-data throughput. Run on demand:  python tests/bench_data.py [--device cuda]

- Encodec encoding speed as a real-time factor (seconds of audio per second) on 60 s
  of a synthetic song, random-weights mode (same architecture and cost as the real one);
- BeatDataset samples/s from a warm cache, in one process (what each DataLoader worker does);
- audio_masking_collator batches/s at batch 8.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audio import create_audio_tokenizer, load_audio  # noqa: E402
from data import BeatDataset, ChunkRules, audio_masking_collator  # noqa: E402
from levels.synth import synth_level, write_synth_corpus  # noqa: E402
from maps import ZippedBeatSaberDataset  # noqa: E402


def best_seconds(fn, trials: int) -> float:
    times = []
    for _ in range(trials):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--trials", type=int, default=3, help="timed runs per row; the fastest counts")
    args = parser.parse_args()
    tokenizer = create_audio_tokenizer(weights="random", device=args.device)
    rows = []

    files, _ = synth_level(1, bars=24)  # 87 BPM: 26 bars = 72 s of drums
    minute = load_audio(files["song.egg"], tokenizer.sample_rate)[None, : 60 * tokenizer.sample_rate]
    seconds = best_seconds(lambda: tokenizer.encode(minute), args.trials)
    rows.append((f"Encodec encode, 60 s audio ({args.device})", f"{60 / seconds:.1f}x real time"))

    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus"
        write_synth_corpus(corpus, songs=8, bars=48)
        base = ZippedBeatSaberDataset(corpus, cache_dir=Path(tmp) / "cache", progress=False)
        dataset = BeatDataset(base, tokenizer, ChunkRules(chunk_beats=64), cache_dir=Path(tmp) / "cache", verbose=False)
        n = len(dataset)
        seconds = best_seconds(lambda: [dataset[i] for i in range(n)], args.trials)
        rows.append((f"BeatDataset, warm cache ({n} chunks of 64 beats)", f"{n / seconds:,.0f} samples/s"))

        samples = [dataset[i] for i in range(n)]
        batches = [samples[i : i + 8] for i in range(0, n - 7, 8)]
        seconds = best_seconds(lambda: [audio_masking_collator(b) for b in batches], args.trials)
        longest = np.mean([max(len(s["input_ids"]) for s in b) for b in batches])
        rows.append((f"collator, batch 8 (~{longest:,.0f} tokens each)", f"{len(batches) / seconds:,.0f} batches/s"))

    print(f"\ntorch {torch.__version__}, {torch.get_num_threads()} threads")
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value:>22}")


if __name__ == "__main__":
    main()
