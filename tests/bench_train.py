"""Benchmark: training throughput. Run on demand:  python tests/bench_train.py

CPU: the tiny model on a synthetic corpus through train.py's own trainer: tokens/s and
peak memory (RSS). With CUDA, also the real Qwen3-0.6B architecture (random init) at
4k, 8k and 16k tokens, Unsloth and plain transformers each in its own process (Unsloth
patches transformers globally): tokens/s, peak GPU memory and MFU = 6 x params x tokens/s
divided by this card's measured bf16 matmul peak.
"""

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def tiny_cpu(steps: int) -> dict:
    import train
    from data import audio_masking_collator
    from utils import write_synth_corpus

    with tempfile.TemporaryDirectory() as tmp:
        write_synth_corpus(Path(tmp) / "synth", songs=4, bars=16)
        args = train.parse_args(
            ["--data", f"{tmp}/synth", "--tiny", "--codec-weights", "random", "--cache-dir", f"{tmp}/cache"]
            + ["--output-dir", f"{tmp}/out", "--val-share", "0", "--save-steps", "100000", "--grad-accum", "1"]
        )
        args.max_steps = steps
        dataset, _, _ = train.build_datasets(args)
        model, _ = train.load_model(args)
        tokens = []

        def counting(batch):
            tokens.append(sum(len(b["input_ids"]) for b in batch))
            return audio_masking_collator(batch)

        trainer = train.build_trainer(args, model, dataset, None)
        trainer.data_collator = counting
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
    return {
        "what": f"tiny Qwen3, CPU ({torch.get_num_threads()} threads), {steps} steps",
        "tokens/s": sum(tokens) / seconds,
        "peak memory": f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB RSS",
    }


def bf16_peak_flops() -> float:
    """Measured dense bf16 matmul throughput of this GPU (FLOP/s)."""
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ a
    torch.cuda.synchronize()
    start, n = time.perf_counter(), 20
    for _ in range(n):
        a @ a
    torch.cuda.synchronize()
    return n * 2 * 8192**3 / (time.perf_counter() - start)


def gpu_child(backend: str, seq_len: int, steps: int) -> dict:
    """One (backend, length) measurement: Qwen3-0.6B architecture, random weights, bf16."""
    if backend == "unsloth":
        from unsloth import FastLanguageModel  # before transformers
    import train
    from data import AUDIO, audio_masking_collator

    args = train.parse_args(["--data", ".", "--init", "scratch", "--max-seq-length", str(seq_len)])
    if backend == "unsloth":
        model, _ = FastLanguageModel.from_pretrained(
            train.scratch_model_dir(args), max_seq_length=seq_len, load_in_4bit=True, full_finetuning=True
        )
    else:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(train.scratch_model_dir(args), dtype=torch.bfloat16).cuda()
    model.gradient_checkpointing_enable()
    params = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    ids = torch.randint(AUDIO.start, AUDIO.stop, (seq_len,))
    ids[-seq_len // 8 :] = torch.randint(0, 12_000, (seq_len // 8,))  # a note section with labels
    batch = {k: v.cuda() for k, v in audio_masking_collator([{"input_ids": ids}]).items()}
    torch.cuda.reset_peak_memory_stats()
    for step in range(steps + 2):  # two warm-up steps
        if step == 2:
            torch.cuda.synchronize()
            start = time.perf_counter()
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    tokens_per_second = steps * seq_len / (time.perf_counter() - start)
    return {
        "what": f"Qwen3-0.6B, {backend}, {seq_len // 1024}k tokens",
        "tokens/s": tokens_per_second,
        "peak memory": f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB GPU",
        "mfu": 6 * params * tokens_per_second / bf16_peak_flops(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--child", nargs=2, metavar=("BACKEND", "SEQ_LEN"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(gpu_child(args.child[0], int(args.child[1]), args.steps)))
        return
    rows = [tiny_cpu(args.steps)]
    if torch.cuda.is_available():
        for seq_len in (4096, 8192, 16384):
            for backend in ("unsloth", "transformers"):
                child = [sys.executable, __file__, "--child", backend, str(seq_len), "--steps", str(args.steps)]
                result = subprocess.run(child, capture_output=True, text=True, cwd=ROOT)
                last = result.stdout.strip().splitlines()[-1:] if result.returncode == 0 else []
                rows.append(json.loads(last[0]) if last else {"what": f"{backend} {seq_len}: failed"})
    print(f"\n{'run':<44}{'tokens/s':>12}{'peak memory':>20}{'MFU':>8}")
    for row in rows:
        mfu = f"{row['mfu']:.0%}" if "mfu" in row else "-"
        speed = f"{row['tokens/s']:,.0f}" if "tokens/s" in row else "-"
        print(f"{row['what']:<44}{speed:>12}{row.get('peak memory', '-'):>20}{mfu:>8}")


if __name__ == "__main__":
    main()
