"""textae.ray and `--engine ray`: the answers of one process, on a real multi-node Ray cluster.

One cluster serves the file (ray.cluster_utils.Cluster: a head without CPUs and two worker nodes
of one CPU each, 100 MB object stores, no dashboard), always shut down at the end. Every job
starts its actors afresh, which is most of each test's time. The fault test kills a worker node
mid-job and must still see every line exactly once. Tests that need Ray skip when the extra is
not installed; the test of its error message runs either way.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers.blocked_imports import run_cli
from helpers.exports import copy_export
from helpers.paths import TINY_EXPORT
from helpers.tiny import TINY_SENTENCES

from textae.corpus import iter_numbered_sentences
from textae.errors import TextaeError
from textae.runtime.model import TextAE

HAS_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(not HAS_RAY, reason='Ray is not installed (pip install "textae[ray]")')
NODE = {"num_cpus": 1, "object_store_memory": 100 * 1024**2}
LONG_LINE = ("a very long line of words " * 4000)[:100_000]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """A head node (no CPUs: every actor runs on a worker node) and two one-CPU worker nodes."""
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={**NODE, "num_cpus": 0, "include_dashboard": False})
    try:
        for _ in range(2):
            cluster.add_node(**NODE)
        ray.init(address=cluster.address)
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Several files: blank lines and padding, an empty file, a .gz, and a line of 100,000 characters."""
    folder = tmp_path_factory.mktemp("ray-corpus")
    lines = []
    for i in range(300):
        lines.append(f"  {TINY_SENTENCES[i % len(TINY_SENTENCES)]} {i}  ")
        if i % 7 == 0:
            lines.extend(["", "   "])
    (folder / "a.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "b.txt").write_text("", encoding="utf-8")
    with gzip.open(folder / "c.txt.gz", "wt", encoding="utf-8") as handle:
        handle.write("".join(f"{sentence}\n" for sentence in TINY_SENTENCES[::-1]))
    (folder / "d.txt").write_text(f"first.\n\n{LONG_LINE}\nlast.\n", encoding="utf-8")
    return [folder / name for name in ("a.txt", "b.txt", "c.txt.gz", "d.txt")]


def expected_rows(paths: list[Path], names: list[str] | None = None) -> list[tuple[str, int, str]]:
    """(file, line, text) of every non-empty line, as `textae embed` reads them."""
    names = names or [str(path) for path in paths]
    return [(name, line, text) for path, name in zip(paths, names) for line, text in iter_numbered_sentences(path)]


def read_output(folder: Path) -> Any:
    import pandas as pd

    return pd.read_parquet(folder)


def rows_of(frame: Any) -> list[tuple[str, int, str]]:
    return list(zip(frame["file"], frame["line"].tolist(), frame["text"]))


def no_staging_left(parent: Path) -> bool:
    return not [path for path in parent.iterdir() if ".incomplete-" in path.name]


def quiet() -> Any:
    from textae.ray import RaySettings

    return RaySettings(batch_lines=64, workers=2, progress=False)


# --- the same answers as one process ----------------------------------------------------------


@needs_ray
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_ray_gives_the_vectors_and_scores_of_one_process(
    cluster: Any, random_export: Path, corpus: list[Path], tmp_path: Path, precision: str
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from textae.ray import MapSettings, map_files

    out = tmp_path / "out"
    summary = map_files(random_export, [str(path) for path in corpus], out, MapSettings(columns=("embedding", "score"), precision=precision), quiet())

    rows = expected_rows(corpus)
    assert rows[:2] == [(str(corpus[0]), 1, f"{TINY_SENTENCES[0]} 0"), (str(corpus[0]), 4, f"{TINY_SENTENCES[1]} 1")]
    assert (str(corpus[3]), 3, LONG_LINE[:4096]) in rows  # cut to 4096 characters, as today
    frame = read_output(out)
    assert rows_of(frame) == rows  # row for row in input order: no line missing, none twice
    model = TextAE.load(random_export, precision=precision)
    texts = [text for _, _, text in rows]
    vectors = np.stack(frame["embedding"].to_numpy())
    np.testing.assert_allclose(vectors, model.embed(texts), atol=1e-6, rtol=0)
    # A score is a float32 mean of about ten NLLs near 6, whose last bits depend on the batch's
    # padded width even in one process (TextAE.score alone vs in a batch: up to 1.4e-6 apart), so
    # it is compared to 1e-6 of its value; vectors are batch-invariant and compared to 1e-6 absolute.
    np.testing.assert_allclose(frame["score"].to_numpy(), model.score(texts), atol=0, rtol=1e-6)
    long_row = [i for i, (_, _, text) in enumerate(rows) if len(text) == 4096]
    np.testing.assert_allclose(vectors[long_row], model.embed([LONG_LINE]), atol=1e-6, rtol=0)  # cutting changes nothing

    schema = pq.read_schema(sorted(out.glob("*.parquet"))[0])
    assert schema.field("embedding").type == pa.list_(pa.float32(), model.dim)  # fixed size, no Ray extension type
    assert schema.field("score").type == pa.float32() and schema.names == ["file", "line", "text", "embedding", "score"]
    assert summary.lines == len(rows) and summary.files == 4 and summary.parts == len(list(out.glob("*.parquet"))) > 4
    assert sorted(path.name for path in out.iterdir()) == sorted(path.name for path in out.glob("part-*.parquet"))
    assert no_staging_left(tmp_path)


@needs_ray
def test_a_new_user_embeds_a_glob_into_parquet_from_the_command_line(cluster: Any, random_export: Path, corpus: list[Path], tmp_path: Path) -> None:
    """A fresh driver process joins the running cluster by its address, as after `ray start --head`."""
    (tmp_path / "corpus").mkdir()
    for path in corpus:
        (tmp_path / "corpus" / path.name).write_bytes(path.read_bytes())
    done = subprocess.run(
        [sys.executable, "-m", "textae", "embed", str(random_export), "corpus/*.txt*", "--out", "vecs/", "--engine", "ray",
         "--address", cluster.address, "--workers", "2"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    names = ["corpus/a.txt", "corpus/b.txt", "corpus/c.txt.gz", "corpus/d.txt"]
    rows = expected_rows(corpus, names)
    assert done.stderr.strip().splitlines()[-1].startswith(f"embedded {len(rows)} sentences from 4 file(s) into vecs/")
    assert "Traceback" not in done.stderr
    frame = read_output(tmp_path / "vecs")
    assert rows_of(frame) == rows
    want = TextAE.load(random_export).embed([text for _, _, text in rows])
    np.testing.assert_allclose(np.stack(frame["embedding"].to_numpy()), want, atol=1e-6, rtol=0)


@needs_ray
def test_score_writes_scores_and_calibrated_flags(cluster: Any, random_export: Path, corpus: list[Path], tmp_path: Path, cli: Any) -> None:
    code, _, err = cli("score", random_export, corpus[0], corpus[2], "--engine", "ray", "--out", tmp_path / "scores", "--flag-percentile", 50)
    assert code == 0, err
    frame = read_output(tmp_path / "scores")
    rows = expected_rows([corpus[0], corpus[2]])
    assert rows_of(frame) == rows and list(frame.columns) == ["file", "line", "text", "score", "flagged"]
    model = TextAE.load(random_export)
    scores = model.score([text for _, _, text in rows])
    np.testing.assert_allclose(frame["score"].to_numpy(), scores, atol=0, rtol=1e-6)
    assert frame["flagged"].tolist() == (frame["score"].to_numpy() >= model.anomaly_threshold(50)).tolist()
    assert 0 < frame["flagged"].sum() < len(frame)


@needs_ray
@pytest.mark.parametrize("command", ["embed", "score"])
def test_a_non_utf8_file_stops_the_job_with_todays_one_line_error(
    cluster: Any, random_export: Path, corpus: list[Path], tmp_path: Path, cli: Any, command: str
) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"a fine line\n\nthen caf\xe9 in latin-1\n")
    local = ["--out", tmp_path / "v.npy"] if command == "embed" else []
    code, _, today = cli(command, random_export, bad, *local)
    assert code == 2 and today.strip() == f"textae: error: {bad}:3: not valid UTF-8 (byte 0xe9 at column 9); convert the file to UTF-8"
    code, _, err = cli(command, random_export, corpus[0], bad, "--engine", "ray", "--out", tmp_path / "out")
    assert code == 2 and err.strip().splitlines()[-1] == today.strip()
    assert "Traceback" not in err and "textae: error" not in "".join(err.strip().splitlines()[:-1])
    assert not (tmp_path / "out").exists() and no_staging_left(tmp_path)


@needs_ray
def test_a_corpus_without_lines_gives_an_empty_table_with_the_columns(cluster: Any, corpus: list[Path], tmp_path: Path) -> None:
    from textae.ray import embed_files

    summary = embed_files(TINY_EXPORT, [str(corpus[1])], tmp_path / "out", ray_settings=quiet())
    frame = read_output(tmp_path / "out")
    assert summary.lines == 0 and len(frame) == 0 and list(frame.columns) == ["file", "line", "text", "embedding"]


# --- TextAEMapper in a user's own pipeline ----------------------------------------------------


@needs_ray
def test_the_mapper_in_a_users_own_map_batches_pipeline(cluster: Any, random_export: Path) -> None:
    import ray

    from textae.ray import TextAEMapper, ship_export

    texts = [f"{sentence} {i}" for i, sentence in enumerate(TINY_SENTENCES * 3)]
    ds = ray.data.from_items([{"text": text} for text in texts], override_num_blocks=4)
    ds = ds.map_batches(
        TextAEMapper, fn_constructor_args=(ship_export(random_export),),
        fn_constructor_kwargs={"columns": ("embedding", "score", "flagged", "reconstruction"), "flag_percentile": 95},
        batch_format="numpy", batch_size=16, num_cpus=1, compute=ray.data.ActorPoolStrategy(size=2),
    )  # fmt: skip
    frame = ds.to_pandas()
    frame = frame.set_index("text").loc[texts]  # Ray does not promise an order here; the job's files do
    model = TextAE.load(random_export)
    np.testing.assert_allclose(np.stack(frame["embedding"].to_numpy()), model.embed(texts), atol=1e-6, rtol=0)
    scores = model.score(texts)
    np.testing.assert_allclose(frame["score"].to_numpy(), scores, atol=0, rtol=1e-6)
    assert frame["flagged"].tolist() == (frame["score"].to_numpy() >= model.anomaly_threshold(95)).tolist()
    assert frame["reconstruction"].tolist() == model.reconstruct(texts)


@needs_ray
def test_an_actors_threads_follow_its_num_cpus(cluster: Any) -> None:
    import ray

    from textae.ray import TextAEMapper
    from textae.ray.mapper import actor_threads

    actor = ray.remote(TextAEMapper).options(num_cpus=1).remote(str(TINY_EXPORT))
    assert ray.get(actor.__ray_call__.remote(lambda mapper: mapper.model.num_threads)) == 1
    pinned = ray.remote(TextAEMapper).options(num_cpus=1).remote(str(TINY_EXPORT), num_threads=3)
    assert ray.get(pinned.__ray_call__.remote(lambda mapper: mapper.model.num_threads)) == 3
    assert actor_threads() is None  # the driver is no actor: onnxruntime's own default
    ray.kill(actor)
    ray.kill(pinned)


# --- the export on the workers ----------------------------------------------------------------


def damage(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, another sha256
    path.write_bytes(bytes(data))


@needs_ray
def test_a_worker_refuses_an_export_whose_checksums_fail_there(
    cluster: Any, random_export: Path, corpus: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shared storage: the driver's check passes, then the folder changes before the workers read it."""
    import textae.ray.job as job
    from textae.ray import RaySettings, embed_files

    folder = copy_export(random_export, tmp_path / "export")
    ship = job.ship_export

    def ship_then_damage(model: Path, **options: Any) -> Any:
        shipped = ship(model, **options)
        damage(folder / "tokenizer.json")
        return shipped

    monkeypatch.setattr(job, "ship_export", ship_then_damage)
    settings = RaySettings(batch_lines=64, workers=2, progress=False, model_on_shared_storage=True)
    with pytest.raises(TextaeError) as refused:
        embed_files(folder, [str(corpus[0])], tmp_path / "out", ray_settings=settings)
    message = str(refused.value)
    assert message.startswith(f"{folder / 'tokenizer.json'}: sha256 does not match textae.json") and "(on the Ray node at " in message
    assert "\n" not in message and not (tmp_path / "out").exists() and no_staging_left(tmp_path)


@needs_ray
def test_a_damaged_cached_copy_on_a_node_is_written_again(cluster: Any, random_export: Path, corpus: list[Path], tmp_path: Path) -> None:
    from textae.manifest import MANIFEST_FILE, Manifest
    from textae.ray import embed_files
    from textae.ray.shipping import cache_root

    fingerprint = hashlib.sha256((random_export / MANIFEST_FILE).read_bytes()).hexdigest()
    cached = cache_root() / fingerprint
    if not cached.is_dir():
        copy_export(random_export, cached)
    damage(cached / "tokenizer.json")  # every node of this cluster shares this machine's temporary folder
    embed_files(random_export, [str(corpus[2])], tmp_path / "out", ray_settings=quiet())
    frame = read_output(tmp_path / "out")
    np.testing.assert_allclose(np.stack(frame["embedding"].to_numpy()), TextAE.load(random_export).embed(frame["text"].tolist()), atol=1e-6, rtol=0)
    Manifest.load(cached)  # the copy verifies again


# --- a worker node killed mid-job -------------------------------------------------------------


@needs_ray
@pytest.mark.slow
def test_a_job_survives_a_worker_node_killed_mid_job(cluster: Any, random_export: Path, tmp_path: Path) -> None:
    """Kill a worker node (its raylet, object store, actor and tasks) once some parts are written;
    with a spare node to restart the actor on, the job finishes with every line exactly once.
    Retries are RaySettings' defaults: 3 for a read task and 3 restarts per actor, whose calls are
    retried for as long as it can be restarted."""
    from textae.ray import RaySettings, embed_files

    folder = tmp_path / "corpus"
    folder.mkdir()
    for f in range(6):
        (folder / f"{f}.txt").write_text("".join(f"{TINY_SENTENCES[i % 50]} {f} {i}\n" for i in range(4000)), encoding="utf-8")
    paths = sorted(folder.glob("*.txt"))
    outcome: dict[str, Any] = {}

    def job() -> None:
        try:
            outcome["summary"] = embed_files(random_export, [str(p) for p in paths], tmp_path / "out", ray_settings=RaySettings(batch_lines=100, workers=2, progress=False))
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            outcome["error"] = exc

    runner = threading.Thread(target=job)
    runner.start()
    parts_at_kill = wait_for_parts(tmp_path, at_least=10, runner=runner)
    victim = next(iter(cluster.worker_nodes))  # each worker node runs one of the two actors
    cluster.add_node(**NODE)  # room for the killed node's actor to restart
    cluster.remove_node(victim, allow_graceful=False)
    runner.join(timeout=300)
    assert not runner.is_alive(), "the job did not finish within 300 s of the kill"
    assert "error" not in outcome, repr(outcome.get("error"))
    rows = expected_rows(paths)
    assert parts_at_kill < outcome["summary"].parts, "the kill came after the job's last part"
    frame = read_output(tmp_path / "out")
    assert rows_of(frame) == rows  # every line exactly once, in order
    np.testing.assert_allclose(np.stack(frame["embedding"].to_numpy()), TextAE.load(random_export).embed([t for _, _, t in rows]), atol=1e-6, rtol=0)


def wait_for_parts(parent: Path, *, at_least: int, runner: threading.Thread, timeout: float = 180) -> int:
    """Parts the job has written into its staging folder, once there are at least `at_least`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and runner.is_alive():
        written = [name for folder in parent.glob(".out.incomplete-*") for name in os.listdir(folder) if name.startswith("part-")]
        if len(written) >= at_least:
            return len(written)
        time.sleep(0.05)
    raise AssertionError("the job ended, or wrote no parts, before the node could be killed")


# --- options and the extra, no cluster needed -------------------------------------------------


@needs_ray
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["embed", "{model}", "{a}", "--out", "{tmp}/v.npy", "--engine", "ray"], "--engine ray writes a folder of Parquet files; give a folder name"),
        (["embed", "{model}", "{a}", "--out", "{tmp}/full", "--engine", "ray"], "full: already exists and is not an empty folder"),
        (["embed", "{model}", "-", "--out", "{tmp}/o", "--engine", "ray"], "--engine ray reads files, not standard input"),
        (["embed", "{model}", "{tmp}/*.none", "--out", "{tmp}/o", "--engine", "ray"], "*.none: no file matches this pattern"),
        (["embed", "{model}", "{a}", "--out", "{tmp}/o", "--engine", "ray", "--workers", "0"], "workers must be a positive integer, got 0"),
        (["embed", "{model}", "{a}", "--out", "{tmp}/o", "--engine", "ray", "--output", "features"], "no features output"),
        (["embed", "{model}", "{a}", "--out", "{tmp}/o", "--engine", "spark"], "--engine must be one of local, ray"),
        (["embed", "{model}", "{a}", "{a}", "--out", "{tmp}/v.npy"], "give one input file (got 2); several files or globs need --engine ray"),
        (["embed", "{model}", "{a}", "--out", "{tmp}/v.npy", "--workers", "2"], "--workers only with --engine ray"),
        (["score", "{model}", "{a}", "--out", "{tmp}/o"], "--out only with --engine ray"),
        (["score", "{model}", "{a}", "--engine", "ray"], "--engine ray writes Parquet files: give the folder with --out"),
        (["score", "{model}", "{a}", "--engine", "ray", "--out", "{tmp}/o", "--top", "3"], "--top needs every score in one place"),
        (["score", "{model}", "{a}", "--engine", "ray", "--out", "{tmp}/o", "--flag-percentile", "99"], "no calibrated score percentiles"),
    ],
)
def test_bad_options_are_one_line_errors_before_any_cluster_starts(args: list[str], message: str, corpus: list[Path], tmp_path: Path, cli: Any) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "old.parquet").write_bytes(b"")
    code, out, err = cli(*[arg.format(model=TINY_EXPORT, a=corpus[0], tmp=tmp_path) for arg in args])
    assert code == 2 and not out, err
    assert err.startswith("textae: error: ") and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "o").exists()


@needs_ray
def test_the_mapper_maps_every_batch_format_and_refuses_bad_batches() -> None:
    import pandas as pd
    import pyarrow as pa

    from textae.ray import MapSettings, TextAEMapper

    mapper = TextAEMapper(TINY_EXPORT, columns=("embedding", "score"), num_threads=1)
    texts = TINY_SENTENCES[:5]
    want = TextAE.load(TINY_EXPORT, num_threads=1).embed(texts)
    for batch in ({"text": np.array(texts, dtype=object), "id": np.arange(5)}, pd.DataFrame({"text": texts, "id": range(5)}),
                  pa.table({"text": texts, "id": list(range(5))})):  # fmt: skip
        table = mapper(batch)
        assert table.column_names == ["text", "id", "embedding", "score"] and table.column("id").to_pylist() == list(range(5))
        np.testing.assert_allclose(np.stack(table.column("embedding").to_numpy(zero_copy_only=False)), want, atol=1e-6, rtol=0)
    assert mapper({"text": np.array([], dtype=object)}).num_rows == 0
    for batch, message in [
        ({"sentence": ["a"]}, "the batch has no column 'text' (it has sentence); set text_column"),
        ({"text": ["a", None]}, "column 'text' is null in row 1"),
        ({"text": [1, 2]}, "column 'text' must hold strings"),
        ({"text": ["a"], "score": [1.0]}, "the batch already has column(s) score"),
    ]:
        with pytest.raises(TextaeError, match=message.replace("(", r"\(").replace(")", r"\)")):
            mapper(batch)
    for fields, message in [
        ({"columns": ("vector",)}, "columns must be distinct names among embedding, features, score, flagged, reconstruction"),
        ({"columns": ("score", "flagged")}, "the flagged column needs a threshold or a flag_percentile"),
        ({"columns": ("score",), "threshold": 3.0}, "the flagged column needs a threshold or a flag_percentile"),
        ({"batch_size": 0}, "batch_size must be a positive integer"),
        ({"precision": "fp16"}, "precision must be one of fp32, int8"),
    ]:
        with pytest.raises(TextaeError, match=message):
            MapSettings(**fields)


def test_without_the_extra_the_engine_names_the_pip_install(tmp_path: Path) -> None:
    source = tmp_path / "a.txt"
    source.write_text("one line.\n", encoding="utf-8")
    (result,) = run_cli([["embed", TINY_EXPORT, source, "--out", tmp_path / "out", "--engine", "ray"]], blocked=("torch", "onnx", "ray")).results
    assert result["code"] == 2 and "Traceback" not in result["err"]
    assert result["err"] == 'textae: error: textae.ray (--engine ray) needs ray, which is not installed: pip install "textae[ray]"\n'
    assert not (tmp_path / "out").exists()


@needs_ray
def test_the_mapper_whitens_like_embed_unless_raw(random_export: Path) -> None:
    from textae.ray import TextAEMapper

    texts = TINY_SENTENCES[:6]
    model = TextAE.load(random_export, num_threads=1)
    for raw in (False, True):
        mapper = TextAEMapper(random_export, columns=("embedding", "features"), num_threads=1, raw=raw)
        table = mapper({"text": np.array(texts, dtype=object)})
        for column, output in (("embedding", "sentence_embedding"), ("features", "features")):
            got = np.stack(table.column(column).to_numpy(zero_copy_only=False))
            assert np.array_equal(got, model.embed(texts, output=output, raw=raw))
