"""16 threads sharing one TextAE get exactly the serial results; a command whose extra is not
installed names the pip command instead of printing a traceback."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_SENTENCES

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


# `import torch` (or onnx, sklearn) fails as in an install without the extra
BLOCK = "import sys; sys.modules[{module!r}] = None\nfrom textae.cli import main\nsys.argv = ['textae', *sys.argv[1:]]\nmain()\n"


@pytest.mark.parametrize(
    ("module", "args", "extra"),
    [
        ("torch", ["train", "{corpus}", "--out", "{tmp}/run"], "train"),
        ("torch", ["export", "{run}", "--out", "{tmp}/export"], "train"),
        ("onnx", ["export", "{run}", "--out", "{tmp}/export"], "train"),
        ("sklearn", ["evaluate", "{export}", "--probe", "{probe}"], "eval"),
    ],
)
def test_a_missing_extra_names_the_install_command(
    module: str, args: list[str], extra: str, tiny_corpus: Path, random_run: Path, random_export: Path, tmp_path: Path
) -> None:
    probe = tmp_path / "probe.tsv"
    probe.write_text("".join(f"{i % 2}\t{s}\n" for i, s in enumerate(TINY_SENTENCES)))
    values = {"corpus": tiny_corpus, "tmp": tmp_path, "run": random_run, "export": random_export, "probe": probe}
    argv = [arg.format(**values) for arg in args]
    result = subprocess.run([sys.executable, "-c", BLOCK.format(module=module), *argv], capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("textae: error: ") and f'pip install "textae[{extra}]"' in lines[0]
