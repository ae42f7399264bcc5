"""16 threads sharing one TextAE get exactly the serial results; a command whose extra is not
installed names the pip command instead of printing a traceback."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from helpers.blocked_imports import run_cli
from helpers.tiny import TINY_SENTENCES

from textae.runtime.model import TextAE


def test_sixteen_threads_on_one_model_give_exactly_the_serial_results(random_export: Path) -> None:
    model = TextAE.load(random_export, precision="fp32", num_threads=1)
    batches = [TINY_SENTENCES[i : i + 1 + i % 7] for i in range(0, 48, 3)]  # 16 different batches
    serial = [(model.embed(b), model.score(b), model.reconstruct(b, max_length=10)) for b in batches]
    with ThreadPoolExecutor(max_workers=16) as pool:
        for _ in range(3):
            parallel = list(pool.map(lambda b: (model.embed(b), model.score(b), model.reconstruct(b, max_length=10)), batches))
            for (vectors, scores, texts), (want_vectors, want_scores, want_texts) in zip(parallel, serial):
                assert np.array_equal(vectors, want_vectors) and np.array_equal(scores, want_scores)
                assert texts == want_texts


@pytest.mark.parametrize(
    ("module", "args", "extra"),
    [
        ("torch", ["train", "{corpus}", "--out", "{tmp}/run"], "train"),
        ("torch", ["export", "{run}", "--out", "{tmp}/export"], "train"),
        ("onnx", ["export", "{run}", "--out", "{tmp}/export"], "train"),
        ("torch", ["demo", "--out", "{tmp}/demo-run", "--export", "{tmp}/demo-export"], "train"),
        ("sklearn", ["evaluate", "{export}", "--probe", "{probe}"], "eval"),
    ],
)
def test_a_missing_extra_names_the_install_command(
    module: str, args: list[str], extra: str, tiny_corpus: Path, random_run: Path, random_export: Path, tmp_path: Path
) -> None:
    probe = tmp_path / "probe.tsv"
    probe.write_text("".join(f"{i % 2}\t{s}\n" for i, s in enumerate(TINY_SENTENCES)))
    values = {"corpus": tiny_corpus, "tmp": tmp_path, "run": random_run, "export": random_export, "probe": probe}
    (result,) = run_cli([[arg.format(**values) for arg in args]], blocked=(module,)).results
    assert result["code"] == 2, result["err"]
    lines = result["err"].strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result["err"], result["err"]
    assert lines[0].startswith("textae: error: ") and lines[0].endswith(f'needs {module}, which is not installed: pip install "textae[{extra}]"')
    assert not (tmp_path / "run").exists() and not (tmp_path / "export").exists() and not (tmp_path / "demo-run").exists()
