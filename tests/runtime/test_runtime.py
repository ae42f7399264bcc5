"""textae.runtime.model: torch-free loading and inference, manifest verification, batching, threads."""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from helpers.blocked_imports import run_python
from helpers.exports import copy_export, without_calibration
from helpers.tiny import TINY_SENTENCES

from textae.errors import TextaeError
from textae.manifest import MANIFEST_FILE
from textae.runtime.model import TextAE


@pytest.fixture(scope="session")
def runtime(random_export: Path) -> TextAE:
    return TextAE.load(random_export, precision="fp32")


def test_runtime_runs_where_torch_cannot_be_imported(random_export: Path, runtime: TextAE) -> None:
    script = (
        "from textae.runtime.model import TextAE\n"
        "model = TextAE.load(sys.argv[1], num_threads=1, precision='fp32')\n"
        "sentences = json.loads(sys.argv[2])\n"
        "vectors = model.embed(sentences, raw=True)\n"
        "print(json.dumps({'vectors': vectors.tolist(), 'whitened': model.embed(sentences).tolist(), 'scores': model.score(sentences).tolist(),\n"
        "    'reconstructions': model.reconstruct(sentences), 'decoded': model.decode(vectors, raw=True),\n"
        "    'loaded': loaded()}))\n"
    )
    sentences = TINY_SENTENCES[:4] + [""]
    done = run_python(script, str(random_export), json.dumps(sentences))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["loaded"] == []
    np.testing.assert_allclose(result["vectors"], runtime.embed(sentences, raw=True), atol=1e-5, rtol=0)
    np.testing.assert_allclose(result["whitened"], runtime.embed(sentences), atol=1e-4, rtol=0)
    np.testing.assert_allclose(result["scores"], runtime.score(sentences), atol=1e-5, rtol=0)
    assert result["reconstructions"] == result["decoded"] == runtime.reconstruct(sentences)


def test_a_sentence_vector_does_not_depend_on_its_batch_or_position(runtime: TextAE) -> None:
    sentences = TINY_SENTENCES + ["", "a"]
    batched = runtime.embed(sentences, batch_size=64)
    alone = np.concatenate([runtime.embed([sentence]) for sentence in sentences])
    np.testing.assert_allclose(alone, batched, atol=1e-5, rtol=0)
    order = np.random.default_rng(0).permutation(len(sentences))
    shuffled = runtime.embed([sentences[i] for i in order], batch_size=7)
    np.testing.assert_allclose(shuffled, batched[order], atol=1e-5, rtol=0)
    scores = runtime.score(sentences, batch_size=64)
    np.testing.assert_allclose(runtime.score([sentences[i] for i in order], batch_size=5), scores[order], atol=1e-5, rtol=0)


def test_results_are_deterministic_across_calls_and_loads(random_export: Path, runtime: TextAE) -> None:
    again = TextAE.load(random_export, precision="fp32")
    assert np.array_equal(runtime.embed(TINY_SENTENCES), again.embed(TINY_SENTENCES))
    assert np.array_equal(runtime.score(TINY_SENTENCES), runtime.score(TINY_SENTENCES))
    assert runtime.reconstruct(TINY_SENTENCES[:5]) == again.reconstruct(TINY_SENTENCES[:5])


def test_empty_inputs_and_empty_sentences(runtime: TextAE) -> None:
    assert runtime.embed([]).shape == (0, runtime.dim) and runtime.embed([]).dtype == np.float32
    assert runtime.score([]).shape == (0,)
    assert runtime.reconstruct([]) == [] and runtime.decode(np.zeros((0, runtime.raw_dim))) == []
    # an empty sentence has zero tokens: the encoder reads one <pad> (as in training), the score is <eos>'s NLL
    vectors = runtime.embed(["", "   ", "the cat sat on the mat."])
    assert np.isfinite(vectors).all() and np.array_equal(vectors[0], vectors[1])
    assert np.isfinite(runtime.score([""])).all()
    assert [type(text) for text in runtime.reconstruct(["", "the cat."])] == [str, str]


def test_decode_any_point_and_normalize(runtime: TextAE) -> None:
    vectors = runtime.embed(TINY_SENTENCES[:2], raw=True)  # what the decoder reads
    assert runtime.decode(vectors, raw=True) == runtime.reconstruct(TINY_SENTENCES[:2])
    # decode takes what embed returns by default: the export's whitening is undone first
    assert runtime.decode(runtime.embed(TINY_SENTENCES[:2])) == runtime.reconstruct(TINY_SENTENCES[:2])
    middle = runtime.decode((vectors[:1] + vectors[1:]) / 2, raw=True)
    assert len(middle) == 1 and isinstance(middle[0], str)
    assert runtime.greedy_ids(vectors, method="loop") == runtime.greedy_ids(vectors, method="step")
    assert all(len(ids) <= 3 for ids in runtime.greedy_ids(vectors, max_length=3))
    norms = np.linalg.norm(runtime.embed(TINY_SENTENCES, normalize=True), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)


def test_concurrent_calls_from_threads_match_sequential_ones(random_export: Path) -> None:
    model = TextAE.load(random_export, num_threads=1, precision="fp32")
    chunks = [TINY_SENTENCES[i::4] for i in range(4)]
    expected = [(model.embed(chunk), model.score(chunk), model.reconstruct(chunk[:3])) for chunk in chunks]
    fresh = TextAE.load(random_export, num_threads=1, precision="fp32")  # sessions are created concurrently too
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda chunk: (fresh.embed(chunk), fresh.score(chunk), fresh.reconstruct(chunk[:3])), chunks * 3))
    for (vectors, scores, texts), (want_vectors, want_scores, want_texts) in zip(results, expected * 3):
        np.testing.assert_allclose(vectors, want_vectors, atol=1e-6, rtol=0)
        np.testing.assert_allclose(scores, want_scores, atol=1e-6, rtol=0)
        assert texts == want_texts


def test_sessions_stop_spinning_between_calls(random_export: Path) -> None:
    # reconstruct() runs two sessions back to back; workers left spinning by the first slowed the second 2.4x
    model = TextAE.load(random_export, num_threads=2, precision="fp32")
    model.reconstruct(TINY_SENTENCES[:2])
    for graph in ("encoder", "decoder_greedy"):
        options = model._session(graph, "text").get_session_options()
        assert options.get_session_config_entry("session.force_spinning_stop") == "1"
        assert options.intra_op_num_threads == 2


def _flip_byte(folder: Path) -> None:
    path = folder / "encoder.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _set_format_version(folder: Path) -> None:
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    manifest["format_version"] = 99
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest))


def _escape_folder(folder: Path) -> None:
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    manifest["files"]["../outside.onnx"] = {"bytes": 1, "sha256": "0"}
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest))


DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    "edited-graph": (_flip_byte, r"encoder\.onnx: sha256 does not match textae\.json"),
    "truncated-graph": (lambda f: (f / "encoder.onnx").write_bytes((f / "encoder.onnx").read_bytes()[:1000]), r"encoder\.onnx: 1000 bytes, but"),
    "deleted-graph": (lambda f: (f / "decoder_step.onnx").unlink(), r"decoder_step\.onnx: missing"),
    "deleted-tokenizer": (lambda f: (f / "tokenizer.json").unlink(), r"tokenizer\.json: missing"),
    "truncated-manifest": (lambda f: (f / MANIFEST_FILE).write_text((f / MANIFEST_FILE).read_text()[:200]), r"textae\.json: not valid JSON"),
    "deleted-manifest": (lambda f: (f / MANIFEST_FILE).unlink(), r"not a textae export folder \(no textae\.json\)"),
    "unknown-format-version": (_set_format_version, r"textae\.json: format_version 99 is not supported"),
    "file-outside-folder": (_escape_folder, r"points outside the model folder"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_export_is_refused_naming_the_file(damage: str, random_export: Path, tmp_path: Path) -> None:
    folder = copy_export(random_export, tmp_path / "model")
    spoil, message = DAMAGE[damage]
    spoil(folder)
    with pytest.raises(TextaeError, match=message) as error:
        TextAE.load(folder)
    assert "\n" not in str(error.value)


def test_missing_folder_and_bad_arguments_are_refused(random_export: Path, runtime: TextAE, tmp_path: Path) -> None:
    with pytest.raises(TextaeError, match="model folder not found"):
        TextAE.load(tmp_path / "nowhere")
    with pytest.raises(TextaeError, match="precision 'fp16' not available; this export has fp32, int8"):
        TextAE.load(random_export, precision="fp16")
    with pytest.raises(TextaeError, match="num_threads must be a positive integer"):
        TextAE.load(random_export, num_threads=0)
    with pytest.raises(TextaeError, match="got a single string"):
        runtime.embed("the cat sat on the mat.")
    with pytest.raises(TextaeError, match="sentence 1 is a int"):
        runtime.score(["fine", 3])
    with pytest.raises(TextaeError, match=r"expected vectors of shape \(N, 24\)"):
        runtime.decode(np.zeros(24))
    with pytest.raises(TextaeError, match="batch_size must be a positive integer"):
        runtime.embed(["a"], batch_size=0)
    with pytest.raises(TextaeError, match="method must be one of loop, step"):
        runtime.greedy_ids(np.zeros((1, 24)), method="beam")
    with pytest.raises(TextaeError, match="no graph 'decoder'"):
        runtime.run_graph("decoder")


def test_int8_vectors_stay_close_to_fp32_in_any_batch(random_export: Path, runtime: TextAE) -> None:
    # the int8 encoder scales each row by itself: a sentence's vector does not depend on its batch
    int8 = TextAE.load(random_export, precision="int8")
    batched = int8.embed(TINY_SENTENCES)
    alone = np.concatenate([int8.embed([s]) for s in TINY_SENTENCES[:10]])
    assert np.abs(batched[:10] - alone).max() <= 1e-5
    fp32 = runtime.embed(TINY_SENTENCES)
    for a, b in ((batched[:10], alone), (batched, fp32)):
        cosines = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        assert cosines.min() >= 0.99


def _as_format_version_1(source: Path, target: Path) -> Path:
    """A copy of an export as textae wrote them before format version 2: an encoder without the
    features output, no calibration."""
    import onnx

    from textae.manifest import file_record

    folder = without_calibration(source, target)
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    manifest["format_version"] = 1
    entry = manifest["graphs"]["encoder"]
    entry["outputs"] = [t for t in entry["outputs"] if t["name"] != "features"]
    for name in entry["files"].values():
        proto = onnx.load(str(folder / name))
        kept = [output for output in proto.graph.output if output.name != "features"]
        del proto.graph.output[:]
        proto.graph.output.extend(kept)
        onnx.save(proto, str(folder / name))
        manifest["files"][name] = file_record(folder / name)
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest))
    return folder


def test_exports_of_format_version_1_still_embed_and_say_they_have_no_features(random_export: Path, tmp_path: Path) -> None:
    old = TextAE.load(_as_format_version_1(random_export, tmp_path / "v1"), precision="fp32")
    new = TextAE.load(random_export, precision="fp32")
    np.testing.assert_allclose(old.embed(TINY_SENTENCES[:4]), new.embed(TINY_SENTENCES[:4]), atol=1e-6, rtol=0)
    assert not old.has_features and new.has_features
    with pytest.raises(TextaeError, match=r"encoder has no features output .* re-export"):
        old.embed(TINY_SENTENCES[:1], output="features")
    with pytest.raises(TextaeError, match="output must be one of sentence_embedding, features"):
        new.embed(TINY_SENTENCES[:1], output="hidden")


def test_features_are_a_mean_a_max_and_a_min_and_do_not_depend_on_the_batch(random_export: Path) -> None:
    model = TextAE.load(random_export, precision="fp32")
    features = model.embed(TINY_SENTENCES[:5], output="features", raw=True)
    assert features.shape == (5, model.config.feature_dim) and features.dtype == np.float32
    # the default vector+tokens: the sentence vector, then the tokens' mean, max and min
    latent, width = model.config.latent_dim, model.config.embedding_dim
    np.testing.assert_allclose(features[:, :latent], model.embed(TINY_SENTENCES[:5], raw=True), atol=1e-6, rtol=0)
    mean, top, bottom = (features[:, latent + i * width : latent + (i + 1) * width] for i in range(3))
    # over time, max >= mean >= min, in every dimension
    assert (top >= mean - 1e-6).all() and (mean >= bottom - 1e-6).all()
    alone = np.concatenate([model.embed([s], output="features", raw=True) for s in TINY_SENTENCES[:5]])
    np.testing.assert_allclose(alone, features, atol=1e-5, rtol=0)


def test_beam_decoding_through_the_export(random_export: Path, trained_export: Path) -> None:
    model = TextAE.load(random_export, precision="fp32")
    vectors = model.embed(TINY_SENTENCES[:4], raw=True)
    assert model.decode_ids(vectors, beam_size=1) == model.greedy_ids(vectors)
    beamed = model.decode_ids(vectors, max_length=5, beam_size=3)
    assert len(beamed) == 4 and all(len(ids) <= 5 for ids in beamed)
    assert model.decode(vectors, raw=True, beam_size=3) == model.reconstruct(TINY_SENTENCES[:4], beam_size=3)
    assert model.decode_ids(np.zeros((0, model.raw_dim), dtype=np.float32), beam_size=4) == []
    # the overfitted model reconstructs its corpus exactly with a beam as it does greedily
    trained = TextAE.load(trained_export)
    assert trained.reconstruct(TINY_SENTENCES, beam_size=4) == [s.strip() for s in TINY_SENTENCES]
    with pytest.raises(TextaeError, match="beam_size must be a whole number from 1 to 64"):
        model.reconstruct(["a"], beam_size=0)
