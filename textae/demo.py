"""The main job end to end on the shipped corpus: train -> export -> embed, reconstruct, score with onnxruntime.

Each stage calls the same library function as its own command (`textae train`, `textae export`,
`TextAE`), so the demo is also a worked example of the Python API.
"""

from __future__ import annotations

import importlib.resources
import json
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from textae.config import ModelConfig, TrainConfig

CORPUS_FILE = "python-docs.txt"


def shipped_corpus() -> Path:
    """The corpus the package ships: package data `textae.corpora`, which pyproject.toml maps onto the
    top-level corpora/ folder. Run from a checkout that is not installed, that folder itself."""
    try:
        return Path(str(importlib.resources.files("textae.corpora") / CORPUS_FILE))
    except ModuleNotFoundError:
        return Path(__file__).resolve().parent.parent / "corpora" / CORPUS_FILE


SHIPPED_CORPUS = shipped_corpus()
DEMO_RUN_DIR = Path("runs/python-docs")
DEMO_EXPORT_DIR = Path("export/python-docs")
DEMO_STEPS = 300  # about 2 minutes on 2 cores

# Sentences the demo reconstructs: in the corpus's domain, written for the demo, not in the corpus.
IN_DOMAIN = [
    "Return the number of items in the list.",
    "This method raises an exception if the file is closed.",
    "The default value is None.",
    "If the key is not found, a new entry is created.",
]
# Sentences of another domain, which the autoencoder should find harder to reconstruct.
OUT_OF_DOMAIN = [
    "The weather in Paris was lovely this spring.",
    "She scored twice in the second half of the final.",
]


def run_demo(
    corpus: Path = SHIPPED_CORPUS,
    run_dir: Path = DEMO_RUN_DIR,
    export_dir: Path = DEMO_EXPORT_DIR,
    max_steps: int = DEMO_STEPS,
    threads: int | None = None,
    console: Console | None = None,
) -> dict[str, object]:
    """Train (or reuse/resume the run in run_dir), export to export_dir, then use the torch-free runtime."""
    from textae.export.folder import export_model
    from textae.runtime.model import TextAE
    from textae.training.loop import train

    console = console or Console()
    if (run_dir / "summary.json").is_file():
        console.rule(f"1/3 reusing the finished run {run_dir} (delete it to train again)")
    elif (run_dir / "checkpoint.pt").is_file():
        console.rule(f"1/3 resuming the run in {run_dir}")
        train(TrainConfig(out=str(run_dir)), resume=True, console=console)
    else:
        console.rule(f"1/3 training on {corpus} for {max_steps} steps")
        config = TrainConfig(corpus=[str(corpus)], out=str(run_dir), max_steps=max_steps, eval_every=100, num_threads=threads)
        train(config, ModelConfig(), console=console)

    console.rule(f"2/3 exporting to {export_dir}")
    export_model(run_dir, export_dir, console=console)

    console.rule("3/3 the exported model in onnxruntime (no torch)")
    model = TextAE.load(export_dir, num_threads=threads)
    sentences = IN_DOMAIN + OUT_OF_DOMAIN
    vectors = model.embed(sentences, normalize=True)
    reconstructions = model.reconstruct(sentences)
    scores = model.score(sentences)
    table = Table(title=f"{model.dim}-dimensional sentence vectors, reconstructions and anomaly scores")
    table.add_column("sentence")
    table.add_column("reconstruction")
    table.add_column("score", justify="right")
    table.add_column("domain")
    for index, sentence in enumerate(sentences):
        domain = "docs" if index < len(IN_DOMAIN) else "other"
        table.add_row(sentence, reconstructions[index], f"{scores[index]:.2f}", domain)
    console.print(table)
    similarity = vectors @ vectors.T
    console.print(
        f"cosine similarity: docs/docs {similarity[0, 1]:.2f}, docs/other {similarity[0, len(IN_DOMAIN)]:.2f}; "
        f"mean anomaly score: docs {scores[: len(IN_DOMAIN)].mean():.2f}, other {scores[len(IN_DOMAIN) :].mean():.2f}"
    )
    halfway = model.decode((vectors[0:1] + vectors[1:2]) / 2)[0]
    console.print(f"decoded halfway between the first two: {halfway!r}")
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    return {
        "run_dir": str(run_dir),
        "export_dir": str(export_dir),
        "best_valid": summary.get("best_valid", {}),
        "exact_reconstructions": int(sum(r == s for r, s in zip(reconstructions, sentences))),
        "in_domain_score": float(np.mean(scores[: len(IN_DOMAIN)])),
        "out_of_domain_score": float(np.mean(scores[len(IN_DOMAIN) :])),
    }
