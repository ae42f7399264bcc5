"""Training throughput of the default configuration against this machine's matmul rate.

    python benchmarks/bench_train.py CORPUS [--threads 2] [--steps 60] [--sentences 40000]

Measures, in one run: the float32 matmul FLOP/s of torch on this machine; tokens/s of training
steps with the default configuration; the model FLOPs those tokens cost (counted analytically:
3x the forward matmul work, on real tokens, padding excluded); and the projected time for one epoch
over --sentences sentences. Prints a table and the ratios against the targets
(>= 50 % of the matmul rate; one epoch over 40,000 sentences in <= 5 minutes).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import time

import torch
from rich.console import Console
from rich.table import Table

from textae.config import ModelConfig, TrainConfig
from textae.corpus import iter_corpus, resolve_paths
from textae.training.data import collate, epoch_batches, tokenize_corpus
from textae.training.model import Autoencoder
from textae.tokenizer import special_token_ids, train_tokenizer


def matmul_flops_per_second(size: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
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
                        help="teacher-forcing ratios to time (1.0: parallel decoder; <1: step loop)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # as textae.training.loop does
    console = Console()

    train_config = TrainConfig()
    sentences = list(itertools.islice(iter_corpus(resolve_paths(args.corpus)), args.sentences))
    tokenizer = train_tokenizer(sentences, train_config.vocab_size)
    data = tokenize_corpus(sentences, tokenizer, train_config.max_length)
    config = dataclasses.replace(ModelConfig(), vocab_size=tokenizer.get_vocab_size(), **special_token_ids(tokenizer))
    peak = matmul_flops_per_second()
    encoder_flops, decoder_flops = model_flops_per_token(config)

    table = Table(title=f"textae training throughput, default config, {args.threads} threads, torch {torch.__version__}")
    for column in ("teacher forcing", "tokens/s", "model GFLOP/s", "share of matmul", "epoch of 40k (min)"):
        table.add_column(column, justify="right")
    results = {}
    for ratio in args.teacher_forcing:
        torch.manual_seed(0)
        model = Autoencoder(config)
        optimizer = torch.optim.AdamW(model.parameters(), lr=train_config.learning_rate)
        batches = epoch_batches(data.lengths, train_config.batch_size, seed=0, epoch=0)
        tokens = flops = 0.0
        start = None
        for step, indices in enumerate(batches[: args.steps + 5]):
            if step == 5:  # warm-up steps excluded
                start, tokens, flops = time.perf_counter(), 0.0, 0.0
            batch = collate(data, indices, config.pad_id, config.eos_id)
            _, loss = model(
                batch.input_ids,
                batch.lengths,
                batch.targets,
                teacher_forcing_ratio=ratio,
                sampling=train_config.scheduled_sampling,
            )
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            input_tokens = int(batch.lengths.sum())
            target_tokens = input_tokens + len(indices)
            tokens += target_tokens
            flops += 3 * (encoder_flops * input_tokens + decoder_flops * target_tokens)
        elapsed = time.perf_counter() - start
        tokens_per_second = tokens / elapsed
        share = flops / elapsed / peak
        epoch_minutes = (data.num_tokens + len(data)) / tokens_per_second / 60 * args.sentences / len(data)
        results[ratio] = (tokens_per_second, share, epoch_minutes)
        table.add_row(f"{ratio:.2f}", f"{tokens_per_second:,.0f}", f"{flops / elapsed / 1e9:.1f}", f"{share:.0%}", f"{epoch_minutes:.1f}")
    console.print(f"machine: torch.mm 2048^3 float32 = {peak / 1e9:.1f} GFLOP/s on {args.threads} threads")
    console.print(
        f"model: vocab {config.vocab_size}, embedding {config.embedding_dim}, hidden {config.hidden_size}, "
        f"latent {config.latent_dim}, {config.cell}, tied={config.tie_embeddings}; batch {train_config.batch_size}; "
        f"{len(data):,} sentences, mean {data.num_tokens / len(data):.1f} tokens"
    )
    console.print(table)
    for ratio, (tokens_per_second, share, epoch_minutes) in results.items():
        console.print(
            f"teacher forcing {ratio:.2f}: share of matmul rate {share:.0%} (target >= 50%: "
            f"{'met' if share >= 0.5 else 'NOT met'}); epoch over {args.sentences:,} sentences {epoch_minutes:.1f} min "
            f"(target <= 5: {'met' if epoch_minutes <= 5 else 'NOT met'})"
        )


if __name__ == "__main__":
    main()
