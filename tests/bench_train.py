"""Benchmark: training throughput. Run on demand:  python tests/bench_train.py

CPU: the tiny model on a synthetic corpus through train.py's own trainer: tokens/s and
peak memory (RSS). With CUDA, also the real Qwen3-0.6B architecture (random init) at
4k, 8k and 16k tokens, batch 1, Unsloth and plain transformers each in its own process
(Unsloth patches transformers globally; AUTOMAPPER_UNSLOTH picks the path), both through
train.py's model loading and loss: tokens/s, peak GPU memory and MFU = flops_per_token x
tokens/s over this card's bf16 matmul peak, measured in the same run.
"""

import argparse
import json
import math
import os
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
    from levels.synth import write_synth_corpus

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


def bench_batch(seq_len: int, notes_share: float = 0.125) -> dict[str, torch.Tensor]:
    """One training sequence of seq_len tokens as BeatDataset lays one out: audio, then NOTES_START, a
    difficulty and a note section (notes_share of the tokens), labelled as training labels it."""
    from data import AUDIO, DIFFICULTY, NOTE, NOTES_START, TIME, audio_masking_collator

    generator = torch.Generator().manual_seed(0)
    notes = int(seq_len * notes_share)
    ids = torch.randint(AUDIO.start, AUDIO.stop, (seq_len,), generator=generator)
    ids[seq_len - notes - 2] = NOTES_START
    ids[seq_len - notes - 1] = DIFFICULTY.start + 3
    ticks = torch.arange(notes // 2) * 4 % TIME.stop  # time tokens, each followed by a note type
    ids[seq_len - notes :: 2][: len(ticks)] = ticks
    ids[seq_len - notes + 1 :: 2][: len(ticks)] = torch.randint(
        NOTE.start, NOTE.stop, (len(ticks),), generator=generator
    )
    return audio_masking_collator([{"input_ids": ids.numpy()}])


def flops_per_token(model: torch.nn.Module, seq_len: int) -> float:
    """6 x the matmul parameters (every linear layer, the LM head included) + 12 x layers x hidden x
    sequence length (attention scores and values), per trained token."""
    config = model.config
    matmul = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    return 6 * matmul + 12 * config.num_hidden_layers * config.hidden_size * seq_len


def prepared(backend: str, seq_len: int, extra: tuple[str, ...] = ("--init", "scratch")):
    """(model in training mode with gradient checkpointing, as train.py trains it; one labelled batch)."""
    import train

    args = train.parse_args(["--data", ".", "--max-seq-length", str(seq_len), *extra])
    model, how = train.load_model(args)
    if backend == "unsloth" and "Unsloth" not in how:
        raise SystemExit(f"asked for Unsloth, got: {how}")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = model.to(device)
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()  # from_pretrained gives eval mode, where gradient checkpointing is off
    return model, {k: v.to(device) for k, v in bench_batch(seq_len).items()}


def train_step(model: torch.nn.Module, batch: dict, optimizer: torch.optim.Optimizer) -> float:
    """One optimizer step on train.py's loss (the LM head at labelled positions only) -> the loss."""
    import train

    targets = batch["labels"][:, 1:]
    positions = (targets != -100).any(dim=0).nonzero().squeeze(1)
    logits = train.labelled_logits(model, batch, positions).float()  # [1, k, vocab]
    labelled = targets[:, positions]
    loss = torch.nn.functional.cross_entropy(logits[labelled != -100], labelled[labelled != -100])
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


def gpu_child(backend: str, seq_len: int, steps: int) -> dict:
    """One (backend, length) measurement: Qwen3-0.6B architecture, random weights, bf16, train.py's path."""
    model, batch = prepared(backend, seq_len)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    torch.cuda.reset_peak_memory_stats()
    losses = []
    for step in range(steps + 2):  # two warm-up steps
        if step == 2:
            torch.cuda.synchronize()
            start = time.perf_counter()
        losses.append(train_step(model, batch, optimizer))
    torch.cuda.synchronize()
    tokens_per_second = steps * seq_len / (time.perf_counter() - start)
    if not all(math.isfinite(loss) for loss in losses):
        raise SystemExit(f"{backend} {seq_len}: loss not finite ({losses})")
    return {
        "what": f"Qwen3-0.6B, {backend}, {seq_len // 1024}k tokens",
        "tokens/s": tokens_per_second,
        "peak memory": f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB GPU",
        "mfu": flops_per_token(model, seq_len) * tokens_per_second / bf16_peak_flops(),
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
                env = os.environ | {"AUTOMAPPER_UNSLOTH": "1" if backend == "unsloth" else "0"}
                result = subprocess.run(child, capture_output=True, text=True, cwd=ROOT, env=env)
                last = result.stdout.strip().splitlines()[-1:] if result.returncode == 0 else []
                rows.append(json.loads(last[0]) if last else {"what": f"{backend} {seq_len}: failed"})
    print(f"\n{'run':<44}{'tokens/s':>12}{'peak memory':>20}{'MFU':>8}")
    for row in rows:
        mfu = f"{row['mfu']:.0%}" if "mfu" in row else "-"
        speed = f"{row['tokens/s']:,.0f}" if "tokens/s" in row else "-"
        print(f"{row['what']:<44}{speed:>12}{row.get('peak memory', '-'):>20}{mfu:>8}")


if __name__ == "__main__":
    main()
