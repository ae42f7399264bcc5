"""Regenerate tests/data/tiny-export: a tiny trained model, exported, whose vectors tests/contract/test_pinned.py pins.

    python tools/make_tiny_export.py            # rewrites tests/data/tiny-export, prints the pinned values

Deterministic: a fixed slice of the shipped corpus, a tiny config, seed 0, one thread. Regenerate
it only on purpose: when the export format changes so that this folder no longer loads (then paste
the printed values into tests/contract/test_pinned.py), never to make a failing pinned test pass.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "data" / "tiny-export"
CORPUS = ROOT / "corpora" / "python-docs.txt"
CORPUS_LINES = 1500  # the first lines of the shipped corpus
# The sentences whose values tests/contract/test_pinned.py pins (short and long, one empty, one out of domain).
SENTENCES = [
    "Return the number of items in the list.",
    "The default value is None.",
    "",
    "She scored twice in the second half of the final.",
]
PINNED_VALUES = 4  # first values of each sentence vector


def build(out: Path) -> dict[str, object]:
    from rich.console import Console

    from textae.config import ModelConfig, TrainConfig
    from textae.export.folder import export_model
    from textae.runtime.model import TextAE
    from textae.training.loop import train

    with tempfile.TemporaryDirectory() as work:
        corpus = Path(work) / "corpus.txt"
        lines = CORPUS.read_text(encoding="utf-8").splitlines()[:CORPUS_LINES]
        corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
        config = TrainConfig(
            corpus=[str(corpus)], out=str(Path(work) / "tiny"), vocab_size=300, max_length=24, batch_size=32,
            max_steps=60, eval_every=30, checkpoint_every=60, warmup_steps=10, num_threads=1, seed=0,
        )  # fmt: skip
        quiet = Console(file=io.StringIO())
        train(config, ModelConfig(embedding_dim=16, hidden_size=16, latent_dim=8), show_progress=False, console=quiet)
        shutil.rmtree(out, ignore_errors=True)
        export_model(Path(config.out), out, console=quiet, sample_sentences=lines[:64])
    model = TextAE.load(out, num_threads=1, precision="fp32")
    vectors = model.embed(SENTENCES)
    return {
        "token_ids": model.tokenize(SENTENCES[:2]),
        "vectors": [[round(float(v), 6) for v in row[:PINNED_VALUES]] for row in vectors],
        "scores": [round(float(s), 5) for s in model.score(SENTENCES)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help=f"export folder to write (default: {OUT.relative_to(ROOT)})")
    args = parser.parse_args()
    values = build(args.out)
    size = sum(path.stat().st_size for path in args.out.iterdir())
    print(f"wrote {args.out} ({size / 1e3:.0f} kB); the values for tests/contract/test_pinned.py:", file=sys.stderr)
    print(json.dumps(values))


if __name__ == "__main__":
    main()
