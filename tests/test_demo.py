"""The demo end to end on a small corpus and model: its printed comparison shows in- vs out-of-domain."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from helpers.tiny import TINY_MODEL, TINY_SENTENCES
from rich.console import Console

from textae.config import ModelConfig
from textae.demo import IN_DOMAIN, OUT_OF_DOMAIN, run_demo
from textae.runtime.model import TextAE


@pytest.mark.slow
def test_demo_prints_the_in_and_out_of_domain_contrast(tmp_path: Path) -> None:
    # enough lines for a few batches of the default 128 (400: too few to support p99, so the demo flags at p95)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(f"{a} {b}" for a in TINY_SENTENCES[:20] for b in TINY_SENTENCES[20:40]) + "\n")
    console = Console(file=io.StringIO(), width=200)
    result = run_demo(corpus, tmp_path / "run", tmp_path / "export", max_steps=6, threads=2, console=console,
                      model_config=ModelConfig(**TINY_MODEL))  # fmt: skip
    printed = console.file.getvalue()
    for row in ("exact reconstructions", "mean anomaly score", "flagged above the in-domain 95th percentile",
                "mean cosine to the python docs sentences (centred)", "generated near"):  # fmt: skip
        assert row in printed
    assert 0 <= result["in_domain_flagged"] <= len(IN_DOMAIN) and 0 <= result["out_of_domain_flagged"] <= len(OUT_OF_DOMAIN)
    # the contrast row is the centred cosines of the exported model's own vectors, recomputed here
    model = TextAE.load(tmp_path / "export")
    vectors = model.embed(IN_DOMAIN + OUT_OF_DOMAIN, raw=True) - model.latent_distribution().mean
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    docs, others = unit[: len(IN_DOMAIN)], unit[len(IN_DOMAIN) :]
    within = (docs @ docs.T)[~np.eye(len(docs), dtype=bool)].mean()
    assert result["cosine_within"] == pytest.approx(within, abs=1e-5)
    assert result["cosine_across"] == pytest.approx((docs @ others.T).mean(), abs=1e-5)
    assert f"{result['cosine_within']:.2f}" in printed and f"{result['cosine_across']:.2f}" in printed
    assert len(result["generated"]) == 6
