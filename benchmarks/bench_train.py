"""Training throughput of the default configuration in fp32 and bf16, each against its own matmul rate.

    python benchmarks/bench_train.py CORPUS [--threads 2] [--steps 60] [--sentences 40000]
                                            [--precision fp32 bf16] [--compare-loss 1000] [--quick]

Measures, in one run: torch.mm 2048^3 FLOP/s in float32 and in bf16 on this machine; tokens/s of
training steps with the default configuration in each precision (bf16: a bf16 compute copy with
float32 master weights and AdamW, as `textae train --precision bf16` runs it); the model FLOPs
those tokens cost (counted analytically: 3x the forward matmul work, on real tokens, padding
excluded) as a share of that precision's own matmul rate; the projected time for one epoch over
--sentences sentences; and the bf16 / fp32 speed ratio (target >= 3). With --compare-loss N it
also trains N steps in each precision from the same seed with the real training loop and compares
the validation losses (target: bf16 within 2 % of fp32). --quick: a smoke run of a few steps.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from textae.config import ModelConfig, TrainConfig
from textae.corpus import iter_corpus, resolve_paths
from textae.tokenizer import special_token_ids, train_tokenizer
from textae.training.data import collate, epoch_batches, tokenize_corpus
from textae.training.model import Autoencoder
from textae.training.precision import MasterWeights, native_bf16


def matmul_flops_per_second(size: int = 2048, repeats: int = 10, dtype: torch.dtype = torch.float32) -> float:
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    torch.mm(a, b)
    start = time.perf_counter()
    for _ in range(repeats):
        torch.mm(a, b)
    return 2 * size**3 * repeats / (time.perf_counter() - start)


GATES = {"lstm": 4, "gru": 3, "rnn": 1}  # weight blocks per recurrent cell


def model_flops_per_token(config: ModelConfig) -> tuple[float, float]:
    """Forward matmul FLOPs per encoder input token and per decoder target token."""
    gates = GATES[config.cell]
    directions = 2 if config.bidirectional else 1
    encoder = 0.0
    input_width = config.embedding_dim
    for _ in range(config.num_layers):
        encoder += directions * 2 * gates * config.hidden_size * (input_width + config.hidden_size)
        input_width = directions * config.hidden_size
    decoder = 0.0
    input_width = config.embedding_dim + config.latent_dim
    for _ in range(config.num_layers):
        decoder += 2 * gates * config.hidden_size * (input_width + config.hidden_size)
        input_width = config.hidden_size
    if config.tie_embeddings:
        decoder += 2 * config.hidden_size * config.embedding_dim + 2 * config.embedding_dim * config.vocab_size
    else:
        decoder += 2 * config.hidden_size * config.vocab_size
    return encoder, decoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", nargs="+")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--sentences", type=int, default=40000)
    parser.add_argument("--teacher-forcing", type=float, nargs="*", default=[1.0, 0.75],
                        help="teacher-forcing ratios to time (1.0: teacher forcing only; <1: scheduled sampling)")
    parser.add_argument("--precision", nargs="*", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--compare-loss", type=int, default=0, metavar="STEPS",
                        help="also train STEPS steps per precision with textae's loop and compare validation loss")
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 timed steps, 4,000 sentences, 30-step loss comparison")
    args = parser.parse_args()  # fmt: skip
    if args.quick:
        args.steps, args.sentences = 3, min(args.sentences, 4000)
        args.compare_loss = min(args.compare_loss, 30) if args.compare_loss else 0
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # as textae.training.loop does
    console = Console()

    train_config = TrainConfig()
    sentences = list(itertools.islice(iter_corpus(resolve_paths(args.corpus)), args.sentences))
    tokenizer = train_tokenizer(sentences, train_config.vocab_size)
    data = tokenize_corpus(sentences, tokenizer, train_config.max_length)
    config = dataclasses.replace(ModelConfig(), vocab_size=tokenizer.get_vocab_size(), **special_token_ids(tokenizer))
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    peaks = {precision: matmul_flops_per_second(dtype=dtypes[precision]) for precision in args.precision}

    title = f"textae training throughput, default config, {args.threads} threads, torch {torch.__version__}"
    table = Table(title=title)
    for column in ("precision", "teacher forcing", "tokens/s", "model GFLOP/s", "share of own matmul rate", "epoch of 40k (min)"):
        table.add_column(column, justify="right")
    results: dict[tuple[str, float], tuple[float, float, float]] = {}
    for precision in args.precision:
        for ratio in args.teacher_forcing:
            tokens_per_second, flops_per_second = time_steps(data, config, train_config, precision, ratio, args.steps)
            share = flops_per_second / peaks[precision]
            epoch_minutes = (data.num_tokens + len(data)) / tokens_per_second / 60 * args.sentences / len(data)
            results[precision, ratio] = (tokens_per_second, share, epoch_minutes)
            table.add_row(precision, f"{ratio:.2f}", f"{tokens_per_second:,.0f}", f"{flops_per_second / 1e9:.1f}", f"{share:.0%}", f"{epoch_minutes:.1f}")
    for precision, peak in peaks.items():
        console.print(f"machine: torch.mm 2048^3 {precision} = {peak / 1e9:,.1f} GFLOP/s on {args.threads} threads")
    if "bf16" in peaks and "fp32" in peaks:
        native = native_bf16(torch.device("cpu"))
        console.print(f"bf16 / fp32 matmul rate x{peaks['bf16'] / peaks['fp32']:.1f}; native bf16 (AMX-BF16 or AVX512-BF16): {native}"
                      + ("" if native else " -- bf16 is emulated here and `--precision auto` stays in fp32"))  # fmt: skip
    console.print(
        f"model: vocab {config.vocab_size}, embedding {config.embedding_dim}, hidden {config.hidden_size}, "
        f"latent {config.latent_dim}, {config.cell}, tied={config.tie_embeddings}; batch {train_config.batch_size}; "
        f"{len(data):,} sentences, mean {data.num_tokens / len(data):.1f} tokens; 1-minute load average {os.getloadavg()[0]:.2f}"
    )
    console.print(table)
    for (precision, ratio), (_, share, epoch_minutes) in results.items():
        console.print(
            f"{precision}, teacher forcing {ratio:.2f}: share of its matmul rate {share:.0%}; epoch over "
            f"{args.sentences:,} sentences {epoch_minutes:.1f} min (target <= 5: {'met' if epoch_minutes <= 5 else 'NOT met'})"
        )
    for ratio in args.teacher_forcing:
        if ("fp32", ratio) in results and ("bf16", ratio) in results:
            speedup = results["bf16", ratio][0] / results["fp32", ratio][0]
            console.print(f"bf16 / fp32 tokens/s at teacher forcing {ratio:.2f}: x{speedup:.2f} (target >= 3: {'met' if speedup >= 3 else 'NOT met'})")
    if args.compare_loss:
        compare_losses(args.corpus, args.compare_loss, args.sentences, console)


def time_steps(data, config: ModelConfig, train_config: TrainConfig, precision: str, ratio: float, steps: int) -> tuple[float, float]:
    """Tokens/s and model FLOP/s of `steps` optimisation steps after 3 warm-up steps, as the training loop runs them."""
    torch.manual_seed(0)
    model = Autoencoder(config)
    weights = MasterWeights(model, precision)
    optimizer = torch.optim.AdamW(model.parameters(), lr=train_config.peak_learning_rate)
    encoder_flops, decoder_flops = model_flops_per_token(config)
    batches = epoch_batches(data.lengths, train_config.batch_size, seed=0, epoch=0)
    warmup = 3
    tokens = flops = 0.0
    start = time.perf_counter()
    for step, indices in enumerate(batches[: steps + warmup]):
        if step == warmup:  # warm-up steps excluded
            start, tokens, flops = time.perf_counter(), 0.0, 0.0
        batch = collate(data, indices, config.pad_id, config.eos_id)
        weights.refresh()
        _, loss = weights.compute(
            batch.input_ids, batch.lengths, batch.targets,
            teacher_forcing_ratio=ratio, sampling=train_config.scheduled_sampling, return_logits=False,
        )  # fmt: skip
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        weights.gradients_to_master()
        torch.nn.utils.clip_grad_norm_(model.parameters(), train_config.grad_clip)
        optimizer.step()
        input_tokens = int(batch.lengths.sum())
        target_tokens = input_tokens + len(indices)
        tokens += target_tokens
        flops += 3 * (encoder_flops * input_tokens + decoder_flops * target_tokens)
    elapsed = time.perf_counter() - start
    return tokens / elapsed, flops / elapsed


def compare_losses(corpus: list[str], steps: int, sentences: int, console: Console) -> None:
    """Train `steps` steps in fp32 and in bf16 from the same seed with textae's loop; compare validation loss."""
    from textae.training.loop import train
    from textae.training.metrics import read_metrics

    losses = {}
    with tempfile.TemporaryDirectory() as tmp:
        subset = Path(tmp) / "corpus.txt"
        subset.write_text("\n".join(itertools.islice(iter_corpus(resolve_paths(corpus)), sentences)) + "\n", encoding="utf-8")
        for precision in ("fp32", "bf16"):
            started = time.perf_counter()
            config = TrainConfig(corpus=[str(subset)], out=str(Path(tmp) / precision), max_steps=steps, eval_every=steps,
                                 checkpoint_every=steps, patience=0, precision=precision, seed=0)  # fmt: skip
            train(config, ModelConfig(), show_progress=False, console=Console(quiet=True))
            valid = [r for r in read_metrics(Path(tmp) / precision) if r["type"] == "valid"]
            losses[precision] = valid[-1]["loss"]
            console.print(f"{precision}: validation loss after {steps} steps {losses[precision]:.4f} ({time.perf_counter() - started:.0f} s)")
    gap = (losses["bf16"] - losses["fp32"]) / losses["fp32"]
    console.print(f"bf16 validation loss vs fp32: {gap:+.2%} (target within 2 %: {'met' if abs(gap) <= 0.02 else 'NOT met'})")


if __name__ == "__main__":
    main()
