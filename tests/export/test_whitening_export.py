"""The whitening stored at export: its files and manifest section, what embed applies by default,
raw vectors on request, old exports without it, and every route to embed (CLI, server, info)."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from helpers.exports import copy_export
from helpers.tiny import TINY_SENTENCES
from rich.console import Console

from textae.errors import TextaeError
from textae.manifest import MANIFEST_FILE, Manifest, postprocess_file_name, postprocess_files
from textae.runtime.model import TextAE
from textae.runtime.postprocess import fit_block_whitening, fit_whitening

Cli = Callable[..., tuple[int, str, str]]
OUTPUTS = ("sentence_embedding", "features")


def without_postprocess(source: Path, target: Path) -> Path:
    """A copy of an export as textae wrote it before exports stored a whitening."""
    folder = copy_export(source, target)
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    for name in postprocess_files(manifest["postprocess"]):
        (folder / name).unlink()
        del manifest["files"][name]
    del manifest["postprocess"]
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest))
    return folder


def test_export_stores_a_checksummed_whitening_per_output(random_export: Path) -> None:
    manifest = Manifest.load(random_export)
    assert set(manifest.postprocess) == set(OUTPUTS)
    widths = {"sentence_embedding": manifest.model.latent_dim, "features": manifest.model.feature_dim}
    blocks = {"sentence_embedding": [manifest.model.latent_dim], "features": list(manifest.model.feature_blocks)}
    assert manifest.postprocess["features"]["blocks"] == blocks["features"] and "blocks" not in manifest.postprocess["sentence_embedding"]
    for output, entry in manifest.postprocess.items():
        assert entry["method"] == "whiten" and entry["input_dim"] == widths[output]
        # the random run has no token store: the export's sample sentences (all of the tiny corpus)
        assert entry["sentences"] == len(TINY_SENTENCES) and "no token store" in entry["source"]
        # each block clipped to the sample's rank
        assert 1 <= entry["dim"] <= sum(min(width, len(TINY_SENTENCES) - 1) for width in blocks[output])
        for key in ("mean", "transform"):
            assert entry[key] == postprocess_file_name(output, key) and entry[key] in manifest.files
        assert np.load(random_export / entry["transform"]).shape == (widths[output], entry["dim"])


def test_the_stored_whitening_is_the_fit_of_the_samples_raw_vectors(random_export: Path) -> None:
    model = TextAE.load(random_export, precision="fp32")
    # the features (the sentence vector beside the token pools) are whitened block by block
    blocks = {"sentence_embedding": [model.config.latent_dim], "features": list(model.config.feature_blocks)}
    for output in OUTPUTS:
        raw = model.embed(TINY_SENTENCES, output=output, raw=True)
        refit = fit_whitening(raw) if output == "sentence_embedding" else fit_block_whitening(raw, blocks[output])
        stored = model.postprocessing(output)
        assert stored.dim == refit.dim
        np.testing.assert_allclose(stored.mean, refit.mean, atol=1e-5)
        whitened = model.embed(TINY_SENTENCES, output=output)
        np.testing.assert_allclose(whitened, stored.apply(raw), atol=0, rtol=0)
        # on the sample it was fitted on: centred, and within each block unit variance in every
        # kept direction, scaled by 1/sqrt(the block's width) where there are several blocks
        np.testing.assert_allclose(whitened.mean(axis=0), 0.0, atol=1e-3)
        column, start = 0, 0
        for width in blocks[output]:
            kept = fit_whitening(raw[:, start : start + width]).dim  # the block's sample rank
            start += width
            scale = 1.0 if len(blocks[output]) == 1 else 1.0 / kept
            part = whitened[:, column : column + kept].astype(np.float64)
            np.testing.assert_allclose(np.cov(part, rowvar=False), np.eye(kept) * scale, atol=1e-2 * scale)
            column += kept


def test_embed_whitens_by_default_and_raw_gives_the_encoders_vectors(random_export: Path) -> None:
    model = TextAE.load(random_export, precision="fp32")
    raw, default = model.embed(TINY_SENTENCES[:5], raw=True), model.embed(TINY_SENTENCES[:5])
    assert raw.shape == (5, model.raw_dim) and default.shape == (5, model.dim) and not np.allclose(raw[:, : model.dim], default)
    features = model.embed(TINY_SENTENCES[:5], output="features")
    assert features.shape == (5, model.feature_dim) and model.feature_dim <= model.raw_feature_dim  # each block's sample rank
    assert model.embed(TINY_SENTENCES[:5], output="features", raw=True).shape == (5, model.raw_feature_dim)
    ids = model.tokenize(TINY_SENTENCES[:5])
    assert np.array_equal(model.embed_ids(ids, raw=True), raw) and np.array_equal(model.embed_ids(ids), default)
    # reconstruct is unchanged; decode takes embed's default vectors (the whitening undone) or raw ones
    assert model.decode(raw, raw=True) == model.decode(default) == model.reconstruct(TINY_SENTENCES[:5])
    np.testing.assert_allclose(model.postprocessing().undo(default), raw, atol=1e-4, rtol=0)
    np.testing.assert_allclose(np.linalg.norm(model.embed(TINY_SENTENCES[:5], normalize=True), axis=1), 1.0, atol=1e-6)


def test_whitened_vectors_do_not_depend_on_their_batch(random_export: Path) -> None:
    model = TextAE.load(random_export, precision="fp32")
    sentences = TINY_SENTENCES + ["", "a"]
    for output in OUTPUTS:
        batched = model.embed(sentences, batch_size=64, output=output)
        alone = np.concatenate([model.embed([sentence], output=output) for sentence in sentences])
        raw_batched = model.embed(sentences, batch_size=64, output=output, raw=True)
        raw_alone = np.concatenate([model.embed([sentence], output=output, raw=True) for sentence in sentences])
        # whitening adds no difference of its own: exact wherever the encoder's vectors are exact
        same = np.all(raw_batched == raw_alone, axis=1)
        assert np.array_equal(batched[same], alone[same])
        np.testing.assert_allclose(alone, batched, atol=1e-4, rtol=0)


def test_a_tampered_whitening_file_is_refused(random_export: Path, tmp_path: Path) -> None:
    folder = copy_export(random_export, tmp_path / "tampered")
    name = postprocess_file_name("features", "transform")
    np.save(folder / name, np.load(folder / name) * 2)
    with pytest.raises(TextaeError, match=rf"{name}: sha256 does not match"):
        TextAE.load(folder)


def test_a_whitening_file_without_checksum_is_refused(random_export: Path, tmp_path: Path) -> None:
    folder = copy_export(random_export, tmp_path / "unlisted")
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    del manifest["files"][postprocess_file_name("sentence_embedding", "mean")]
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(TextaeError, match=r"postprocess file 'whiten_sentence_embedding_mean\.npy' of sentence_embedding has no checksum"):
        TextAE.load(folder)


def test_exports_without_the_section_load_and_embed_raw_vectors(random_export: Path, tmp_path: Path, cli: Cli) -> None:
    old = without_postprocess(random_export, tmp_path / "old")
    model, current = TextAE.load(old, precision="fp32"), TextAE.load(random_export, precision="fp32")
    assert model.postprocessing() is None and model.dim == model.raw_dim and model.feature_dim == model.raw_feature_dim
    assert np.array_equal(model.embed(TINY_SENTENCES[:3]), current.embed(TINY_SENTENCES[:3], raw=True))
    assert np.array_equal(model.embed(TINY_SENTENCES[:3], raw=True), model.embed(TINY_SENTENCES[:3]))
    code, out, _ = cli("info", old)
    assert code == 0 and "embed post-processing" in out and "embed features" not in out


def test_info_shows_the_whitening(random_export: Path, cli: Cli) -> None:
    code, out, _ = cli("info", random_export)
    entry = Manifest.load(random_export).postprocess["features"]
    assert code == 0 and "embed features" in out and f"whitened {entry['input_dim']} -> {entry['dim']} dims" in out


def test_cli_embed_raw(random_export: Path, tmp_path: Path, cli: Cli) -> None:
    (tmp_path / "in.txt").write_text("\n".join(TINY_SENTENCES[:4]) + "\n")
    model = TextAE.load(random_export, precision="fp32")
    for flags, expected in (((), model.embed(TINY_SENTENCES[:4])), (("--raw",), model.embed(TINY_SENTENCES[:4], raw=True))):
        out = tmp_path / f"v{len(flags)}.npy"
        code, _, err = cli("embed", random_export, tmp_path / "in.txt", "--out", out, "--precision", "fp32", *flags)
        assert code == 0, err
        assert np.array_equal(np.load(out), expected)


def test_export_options_none_and_whiten_dim(random_run: Path, tmp_path: Path, cli: Cli) -> None:
    from textae.export.folder import export_model

    quiet = {"console": Console(file=io.StringIO()), "sample_sentences": TINY_SENTENCES, "quantize": "none"}
    plain = export_model(random_run, tmp_path / "plain", postprocess="none", **quiet)
    assert plain["postprocess"] is None and "postprocess" not in json.loads((tmp_path / "plain" / MANIFEST_FILE).read_text())
    assert TextAE.load(tmp_path / "plain").dim == TextAE.load(tmp_path / "plain").raw_dim
    narrow = export_model(random_run, tmp_path / "narrow", whiten_dim=5, **quiet)
    assert {output: entry["dim"] for output, entry in narrow["postprocess"].items()} == dict.fromkeys(OUTPUTS, 5)
    model = TextAE.load(tmp_path / "narrow")
    assert model.embed(TINY_SENTENCES[:2]).shape == (2, 5) and model.embed(TINY_SENTENCES[:2], output="features").shape == (2, 5)
    # 5 of 24 directions cannot be undone: decode says to use raw vectors, and takes them
    with pytest.raises(TextaeError, match=r"whitens sentence vectors to 5 of 24 dimensions, which decode cannot undo.*raw=True"):
        model.decode(model.embed(TINY_SENTENCES[:2]))
    assert model.decode(model.embed(TINY_SENTENCES[:2], raw=True), raw=True) == model.reconstruct(TINY_SENTENCES[:2])
    code, _, err = cli("export", random_run, "--out", tmp_path / "bad", "--postprocess", "pca")
    assert code == 2 and "postprocess must be one of whiten, none" in err
