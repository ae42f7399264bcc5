"""int8 exports on this CPU and on an emulated AVX2-only CPU: the same vectors, and the same speed.

    python benchmarks/bench_int8_isa.py EXPORT [EXPORT ...] --text CORPUS [--emulate-avx2] [--n 400]

For each export folder: its int8 vectors against fp32 here (minimum cosine), and with
--emulate-avx2 the same int8 vectors computed under `qemu-x86_64 -cpu Haswell` (AVX2 + FMA, no
AVX-512 and no VNNI: onnxruntime then takes its saturating vpmaddubsw kernels), against this CPU's
(max abs difference) and against fp32. Then sentences/s at batch 64 and ms at batch 1 of every
export's int8 encoder and the first one's fp32, interleaved over --rounds, each keeping its best.
Torch-free (the runtime only); qemu-user comes from `apt-get install qemu-user`. Emulated runs are
slow (minutes for a few hundred sentences) and their timings mean nothing: only vectors come back.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from textae.cpu import this_cpu
from textae.evaluation.metrics import row_cosines
from textae.runtime.files import read_sentences
from textae.runtime.model import TextAE

EMBED_INT8 = (
    "import sys, numpy as np\n"
    "from textae.runtime.model import TextAE\n"
    "sentences = open(sys.argv[2], encoding='utf-8').read().split('\\n')\n"
    "np.save(sys.argv[3], TextAE.load(sys.argv[1], precision='int8', num_threads=1).embed(sentences))\n"
)


def emulated_avx2_vectors(folder: Path, sentences: list[str]) -> np.ndarray:
    """The export's int8 vectors computed by this interpreter under qemu's Haswell CPU model."""
    qemu = shutil.which("qemu-x86_64")
    if qemu is None:
        raise SystemExit("--emulate-avx2 needs qemu-user: apt-get install qemu-user")
    with tempfile.TemporaryDirectory() as tmp:
        text, out = Path(tmp) / "sentences.txt", Path(tmp) / "vectors.npy"
        text.write_text("\n".join(sentences), encoding="utf-8")
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        command = [qemu, "-cpu", "Haswell", os.path.realpath(sys.executable), "-c", EMBED_INT8, str(folder), str(text), str(out)]
        subprocess.run(command, env=env, check=True, stderr=subprocess.DEVNULL)
        return np.load(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("exports", type=Path, nargs="+", help="export folders with int8 graphs")
    parser.add_argument("--text", type=Path, required=True, help="real sentences, one a line")
    parser.add_argument("--n", type=int, default=400, help="sentences compared (every 50th line)")
    parser.add_argument("--speed-n", type=int, default=2000, help="sentences timed at batch 64")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--emulate-avx2", action="store_true", help="also compute the int8 vectors under qemu -cpu Haswell")
    args = parser.parse_args()
    print(f"CPU: {this_cpu().describe()}")
    lines = read_sentences(args.text)
    sample, timed = lines[::50][: args.n], lines[: args.speed_n]
    for folder in args.exports:
        fp32 = TextAE.load(folder, precision="fp32", num_threads=1).embed(sample)
        int8 = TextAE.load(folder, precision="int8", num_threads=1).embed(sample)
        bits = (TextAE.load(folder).manifest.quantization or {}).get("weight_bits", 8)
        line = f"{folder} ({bits}-bit weights): int8 min cosine to fp32 here {row_cosines(int8, fp32).min():.5f}"
        if args.emulate_avx2:
            avx2 = emulated_avx2_vectors(folder, sample)
            line += (f"; emulated AVX2: min cosine to fp32 {row_cosines(avx2, fp32).min():.5f}, "
                     f"max |AVX2 - here| {np.abs(avx2 - int8).max():.3g}")  # fmt: skip
        print(line)
    contenders = {f"{folder} int8": TextAE.load(folder, precision="int8", num_threads=args.threads) for folder in args.exports}
    contenders[f"{args.exports[0]} fp32"] = TextAE.load(args.exports[0], precision="fp32", num_threads=args.threads)
    batch64 = {name: float("inf") for name in contenders}
    batch1 = dict(batch64)
    for model in contenders.values():
        model.embed(timed[:256])  # warm-up
    for _ in range(args.rounds):  # interleaved, so a burst of load elsewhere hits every contender
        for name, model in contenders.items():
            start = time.perf_counter()
            model.embed(timed, batch_size=64)
            batch64[name] = min(batch64[name], time.perf_counter() - start)
            start = time.perf_counter()
            for sentence in timed[:200]:
                model.embed([sentence], batch_size=1)
            batch1[name] = min(batch1[name], (time.perf_counter() - start) / 200)
    reference = f"{args.exports[0]} fp32"
    for name in contenders:
        print(f"{name:<50} {len(timed) / batch64[name]:7,.0f} sentences/s at batch 64 (x{batch64[reference] / batch64[name]:.3f} fp32)"
              f"   {batch1[name] * 1e3:.2f} ms at batch 1 (x{batch1[reference] / batch1[name]:.3f})")  # fmt: skip


if __name__ == "__main__":
    main()
