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

# Sentences in the corpus's domain, written for the demo, not in the corpus.
IN_DOMAIN = [
    "Return the number of items in the list.",
    "This method raises an exception if the file is closed.",
    "The default value is None.",
    "If the key is not found, a new entry is created.",
    "Return a new list of the keys in the dictionary.",
    "Close the connection and release its resources.",
    "The encoding argument defaults to UTF-8.",
    "Raise a ValueError if the string is empty.",
]
# Sentences of other domains, which the autoencoder should find harder to reconstruct.
OUT_OF_DOMAIN = [
    "The weather in Paris was lovely this spring.",
    "She scored twice in the second half of the final.",
    "Add the onions and fry them until golden.",
    "My grandmother grew roses behind the old barn.",
    "The train to Edinburgh was delayed by snow.",
    "He proposed to her on a beach in Portugal.",
    "The orchestra played Beethoven's fifth symphony.",
    "Our team lost the match after extra time.",
]
FLAG_PERCENTILES = (95.0, 99.0)


def run_demo(
    corpus: Path = SHIPPED_CORPUS,
    run_dir: Path = DEMO_RUN_DIR,
    export_dir: Path = DEMO_EXPORT_DIR,
    max_steps: int = DEMO_STEPS,
    threads: int | None = None,
    console: Console | None = None,
    model_config: ModelConfig | None = None,
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
        train(config, model_config or ModelConfig(), console=console)

    console.rule(f"2/3 exporting to {export_dir}")
    export_model(run_dir, export_dir, console=console)

    console.rule("3/3 the exported model in onnxruntime (no torch)")
    model = TextAE.load(export_dir, num_threads=threads)
    sentences = IN_DOMAIN + OUT_OF_DOMAIN
    inside = np.arange(len(sentences)) < len(IN_DOMAIN)
    reconstructions = model.reconstruct(sentences)
    scores = model.score(sentences)
    # a corpus given with --corpus may be too small to support p99 (the export says so): flag at the
    # highest of FLAG_PERCENTILES it supports
    stored = model.score_percentiles()
    thresholds = {p: stored[p] for p in FLAG_PERCENTILES if p in stored}
    flag_at = max(thresholds)
    flagged = scores >= thresholds[flag_at]
    exact = np.array([r == s for r, s in zip(reconstructions, sentences)])
    table = Table(title=f"reconstructions and anomaly scores ({model.dim}-dimensional sentence vectors; "
                        f"flagged: above the in-domain {flag_at:g}th percentile)")  # fmt: skip
    for column, justify in (("sentence", "left"), ("reconstruction", "left"), ("score", "right"), ("flagged", "center"), ("domain", "left")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for index, sentence in enumerate(sentences):
        table.add_row(sentence, reconstructions[index], f"{scores[index]:.2f}", "yes" if flagged[index] else "",
                      "python docs" if inside[index] else "other")  # fmt: skip
    console.print(table)

    # cosines of vectors centred on the corpus's mean: raw autoencoder vectors share a large common
    # component, which makes every pair look alike (about 0.1 for any two sentences, in or out)
    vectors = model.embed(sentences, raw=True) - model.latent_distribution().mean
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    cosine = unit @ unit.T
    docs = np.flatnonzero(inside)
    within = cosine[np.ix_(docs, docs)][~np.eye(len(docs), dtype=bool)].mean()
    across = cosine[np.ix_(docs, np.flatnonzero(~inside))].mean()
    contrast = Table(title="what the model tells apart: its own domain against others")
    contrast.add_column("")
    contrast.add_column(f"python docs ({len(IN_DOMAIN)})", justify="right")
    contrast.add_column(f"other domains ({len(OUT_OF_DOMAIN)})", justify="right")
    contrast.add_row("exact reconstructions", f"{exact[inside].sum()}/{inside.sum()}", f"{exact[~inside].sum()}/{(~inside).sum()}")
    contrast.add_row("mean anomaly score", f"{scores[inside].mean():.2f}", f"{scores[~inside].mean():.2f}")
    for percentile, threshold in thresholds.items():
        above = scores >= threshold
        contrast.add_row(
            f"flagged above the in-domain {percentile:g}th percentile ({threshold:.2f})",
            f"{above[inside].sum()}/{inside.sum()}", f"{above[~inside].sum()}/{(~inside).sum()}",
        )  # fmt: skip
    contrast.add_row("mean cosine to the python docs sentences (centred)", f"{within:.2f}", f"{across:.2f}")
    console.print(contrast)

    near = model.generate(3, near=IN_DOMAIN[0], seed=0)
    sampled = model.generate(3, seed=0)
    console.print(f"generated near {IN_DOMAIN[0]!r}: " + " | ".join(near))
    console.print("generated from the distribution of the validation vectors: " + " | ".join(sampled))
    halfway = model.decode((vectors[0:1] + vectors[1:2]) / 2 + model.latent_distribution().mean, raw=True)[0]
    console.print(f"decoded halfway between the first two: {halfway!r}")
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    return {
        "run_dir": str(run_dir),
        "export_dir": str(export_dir),
        "best_valid": summary.get("best_valid", {}),
        "exact_reconstructions": int(exact[inside].sum()),
        "in_domain_score": float(scores[inside].mean()),
        "out_of_domain_score": float(scores[~inside].mean()),
        "in_domain_flagged": int(flagged[inside].sum()),
        "out_of_domain_flagged": int(flagged[~inside].sum()),
        "cosine_within": float(within),
        "cosine_across": float(across),
        "generated": near + sampled,
    }
