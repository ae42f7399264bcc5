"""The `textae` command line: parses options and calls one library function per command.

Torch-side modules are imported inside command bodies, so runtime commands start fast and work
in an install without torch.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional, TypeVar

import typer

from textae.batching import DEFAULT_BATCH_SIZE
from textae.config import DERIVED_MODEL_FIELDS, ModelConfig, TrainConfig
from textae.demo import DEMO_EXPORT_DIR, DEMO_RUN_DIR, DEMO_STEPS, SHIPPED_CORPUS
from textae.errors import TextaeError
from textae.evaluation.settings import LoadSettings, MapSettings, SimilarSettings
from textae.extras import missing_extra
from textae.manifest import DEFAULT_OPSET
from textae.options import OptionGroup, build_config, with_config_options
from textae.serve.settings import ServeSettings

app = typer.Typer(
    help="Train a recurrent sentence autoencoder, export it to ONNX, and embed/reconstruct/score text.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

F = TypeVar("F", bound=Callable[..., Any])



def user_errors(command: F) -> F:
    """Turn a TextaeError, a missing extra or an OSError into one line on stderr and exit status 2, with no traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except TextaeError as exc:
            typer.echo(f"textae: error: {exc}", err=True)
            raise typer.Exit(2) from None
        except ImportError as exc:  # a module of an extra that is not installed (torch, scikit-learn, ...)
            # the command's name is its function's up to a "_" (map_sentences is `textae map`)
            error = missing_extra(exc, f"textae {command.__name__.partition('_')[0]}")
            if error is None:
                raise
            typer.echo(f"textae: error: {error}", err=True)
            raise typer.Exit(2) from None
        except OSError as exc:  # the machine, not textae: a full disk, a read-only or vanished folder
            typer.echo(f"textae: error: {describe_os_error(exc)}", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.echo("textae: interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def describe_os_error(exc: OSError) -> str:
    """One line for an OSError: the file, what went wrong, the errno name (ENOSPC: "no space left")."""
    import errno

    where = exc.filename if exc.filename is not None else "writing"
    code = errno.errorcode.get(exc.errno or 0, "")
    what = "no space left on the device" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else (exc.strerror or str(exc))
    return f"{where}: {what}" + (f" ({code})" if code else "")


def main() -> None:
    """Console entry point: usage errors also come out as one line."""
    if len(sys.argv) <= 1:
        sys.argv.append("--help")
    try:
        code = app(standalone_mode=False)
    except typer.TyperException as exc:  # typer's usage and parameter errors
        context = getattr(exc, "ctx", None)
        command = context.command_path if context is not None else "textae"
        typer.echo(f"textae: error: {exc.format_message()} (see '{command} --help')", err=True)
        sys.exit(getattr(exc, "exit_code", 2))
    except typer.Abort:
        typer.echo("textae: aborted", err=True)
        sys.exit(1)
    sys.exit(code or 0)


# --- training side (train, demo) -------------------------------------------------------------
# Every ModelConfig and TrainConfig field is an option of `textae train`, made from the dataclass
# (type, default, trailing comment as help): a new config field is a new option, and
# tests/training/test_cli_train.py checks that fields and options stay one-to-one.

TRAIN_OPTIONS = OptionGroup(TrainConfig, "Training (TrainConfig)", skip={"corpus"}, rename={"num_threads": "threads"})
MODEL_OPTIONS = OptionGroup(ModelConfig, "Model (ModelConfig)", skip=DERIVED_MODEL_FIELDS)


def _load_toml_defaults(ctx: typer.Context, _param: typer.CallbackParam, value: Optional[Path]) -> Optional[Path]:
    """--config FILE: options from a TOML file become the defaults; flags on the line still win."""
    if value is None:
        return value
    import tomllib

    try:
        data = tomllib.loads(Path(value).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise typer.BadParameter(f"{value}: no such file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise typer.BadParameter(f"{value}: not valid TOML ({exc})") from None
    data = data.get("train", data)  # accept a [train] table or top-level keys
    known = {param.name for param in ctx.command.params}
    defaults = {key.replace("-", "_"): item for key, item in data.items()}
    unknown = sorted(set(defaults) - known)
    if unknown:
        raise typer.BadParameter(f"{value}: unknown option(s) {', '.join(unknown)}")
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    return value


@app.command()
@user_errors
@with_config_options(TRAIN_OPTIONS, MODEL_OPTIONS)
def train(
    corpus: Annotated[Optional[list[str]], typer.Argument(help="Text files or globs, one sentence a line (.gz ok).", show_default=False)] = None,
    config: Annotated[Optional[Path], typer.Option("--config", help="TOML file of options (keys as the option names).", is_eager=True, callback=_load_toml_defaults)] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out from its last checkpoint, with the options it was started with.")] = False,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
    **options: Any,
) -> None:
    """Train a tokenizer and a recurrent sentence autoencoder on CORPUS; write a run folder to --out."""
    from textae.training.loop import train as run_training

    train_config = build_config(TRAIN_OPTIONS, options, corpus=list(corpus or []))
    model_config = build_config(MODEL_OPTIONS, options)
    if not resume and not train_config.corpus:
        raise TextaeError("no corpus given: textae train CORPUS... (or --resume --out RUN_DIR)")
    run_training(train_config, model_config, resume=resume, show_progress=not quiet)


@app.command()
@user_errors
def demo(
    corpus: Annotated[Path, typer.Option(help="Corpus to train on (default: the shipped corpora/python-docs.txt).", show_default=False)] = SHIPPED_CORPUS,
    out: Annotated[Path, typer.Option(help="Run folder (reused when finished, resumed when interrupted).")] = DEMO_RUN_DIR,
    export_dir: Annotated[Path, typer.Option("--export", help="Export folder.")] = DEMO_EXPORT_DIR,
    max_steps: Annotated[int, typer.Option(help=f"Training steps ({DEMO_STEPS} take about 2 minutes on 2 cores).")] = DEMO_STEPS,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads for training and onnxruntime.")] = None,
) -> None:
    """The main job end to end: train on the shipped corpus, export to ONNX, embed/reconstruct/score with onnxruntime."""
    from textae.demo import run_demo

    run_demo(corpus, out, export_dir, max_steps, threads)


# --- export and runtime side (export, embed, reconstruct, score, info) -----------------------

_MODEL_HELP = "Export folder written by `textae export` (holds textae.json)."
_THREADS_HELP = "onnxruntime intra-op threads (default: one per core)."
_PRECISION_HELP = "Graphs to run: fp32 or int8 (default: the one the export chose)."
_RAY_THREADS_HELP = "onnxruntime intra-op threads (default: one per core); with --engine ray, the CPUs (and threads) of each worker (default 1)."
_ENGINE_HELP = "local: this process; ray: a Ray cluster (pip install \"textae[ray]\"), writing Parquet."
_ADDRESS_HELP = "With --engine ray: the cluster to join, auto (the one `ray start` runs here) or HOST:PORT (default: RAY_ADDRESS, else a new local one)."
_WORKERS_HELP = "With --engine ray: Ray actors, each loading the model once (default: the cluster's CPUs // --threads)."


@app.command()
@user_errors
def export(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN_DIR", help="Run folder written by `textae train`.")],
    out: Annotated[Optional[Path], typer.Option(help="Folder to write (default: export/<run folder name>).")] = None,
    quantize: Annotated[str, typer.Option(help="int8: also write int8 graphs, loaded by default when they pass the accuracy gate; none: fp32 only.")] = "int8",
    opset: Annotated[int, typer.Option(help="ONNX opset version.")] = DEFAULT_OPSET,
    postprocess: Annotated[str, typer.Option(help="whiten: store a whitening of the sentence vector and features, fitted on up to 20,000 training sentences of the run, that embed applies by default (raw vectors with embed --raw); none: embed returns raw vectors.")] = "whiten",
    whiten_dim: Annotated[Optional[int], typer.Option(metavar="K", help="Keep the K largest whitened directions of each output (default: the full width of each).", show_default=False)] = None,
    feature_source: Annotated[Optional[str], typer.Option(metavar="SOURCE", help="What the features output holds: vector+tokens (the sentence vector, and the mean, max and min of the token embeddings), tokens (mean and max of the token embeddings), states (of the encoder's top-layer states) or states+tokens (default: the run's --feature-source; runs trained before it existed pooled the states).", show_default=False)] = None,
) -> None:
    """Export a trained run to a self-contained ONNX folder that runs without torch."""
    from textae.export.folder import default_export_dir, export_model

    export_model(run_dir, out or default_export_dir(run_dir), quantize=quantize, opset=opset, postprocess=postprocess,
                 whiten_dim=whiten_dim, feature_source=feature_source)  # fmt: skip


@app.command()
@user_errors
def embed(
    model: Annotated[Path, typer.Argument(metavar="MODEL", help=_MODEL_HELP)],
    sources: Annotated[list[str], typer.Argument(metavar="INPUT...", help="Text file, one sentence a line, or - for standard input; with --engine ray, files or globs (plain or .gz).", show_default=False)],
    out: Annotated[Path, typer.Option(help="Output file: .npy (N x D float32) or .jsonl (text and vector per line); with --engine ray, a new folder of Parquet files.")],
    batch_size: Annotated[int, typer.Option(help="Sentences per onnxruntime call.")] = DEFAULT_BATCH_SIZE,
    normalize: Annotated[bool, typer.Option(help="Scale every vector to unit length.")] = False,
    output: Annotated[str, typer.Option(help="sentence_embedding (the latent vector the decoder reads) or features (what the export's feature source names, by default the sentence vector beside the mean, max and min of the token embeddings: the better vectors for similarity and classifiers; `textae info` shows the width).")] = "sentence_embedding",
    raw: Annotated[bool, typer.Option("--raw", help="The encoder's raw vectors, without the whitening the export stores and applies by default (`textae info` shows it).")] = False,
    threads: Annotated[Optional[int], typer.Option(help=_RAY_THREADS_HELP)] = None,
    precision: Annotated[Optional[str], typer.Option(help=_PRECISION_HELP)] = None,
    engine: Annotated[str, typer.Option(help=_ENGINE_HELP)] = "local",
    address: Annotated[Optional[str], typer.Option(help=_ADDRESS_HELP, show_default=False)] = None,
    workers: Annotated[Optional[int], typer.Option(help=_WORKERS_HELP, show_default=False)] = None,
) -> None:
    """Write one sentence vector (or feature vector) per non-empty input line."""
    if _ray_engine(engine, sources, address=address, workers=workers):
        from textae.ray import embed_files

        summary = embed_files(model, sources, out, normalize=normalize, output=output, raw=raw, precision=precision,
                              batch_size=batch_size, ray_settings=_ray_settings(address, workers, threads))  # fmt: skip
        typer.echo(_ray_report("embedded", summary), err=True)
        return
    from textae.runtime.files import check_embedding_output, embed_file
    from textae.runtime.model import TextAE

    check_embedding_output(out)
    loaded = TextAE.load(model, threads, precision)
    loaded.embed([], output=output)  # refuse an unknown output, or features an old export lacks, before reading
    count = embed_file(loaded, sources[0], out, batch_size=batch_size, normalize=normalize, output=output, raw=raw)
    typer.echo(f"embedded {count} sentences into {out}", err=True)


@app.command()
@user_errors
def reconstruct(
    model: Annotated[Path, typer.Argument(metavar="MODEL", help=_MODEL_HELP)],
    text: Annotated[Optional[list[str]], typer.Argument(metavar="TEXT...", help="Sentences to reconstruct.", show_default=False)] = None,
    file: Annotated[Optional[Path], typer.Option(help="Read the sentences from this file (- for standard input).")] = None,
    threads: Annotated[Optional[int], typer.Option(help=_THREADS_HELP)] = None,
    precision: Annotated[Optional[str], typer.Option(help=_PRECISION_HELP)] = None,
    beam: Annotated[int, typer.Option(help="Keep this many hypotheses per sentence, 1 to 64 (1: greedy); wider beams reproduce more sentences exactly, at about this many times the decoding cost.")] = 1,
) -> None:
    """Print what the model reconstructs from each sentence's vector, one line per sentence."""
    from textae.runtime.files import read_sentences
    from textae.runtime.model import TextAE

    if bool(text) == (file is not None):
        raise TextaeError("give the sentences as arguments or with --file, not both")
    sentences = read_sentences(file) if file is not None else text
    for line in TextAE.load(model, threads, precision).reconstruct(sentences, beam_size=beam):
        typer.echo(line)


@app.command()
@user_errors
def score(
    model: Annotated[Path, typer.Argument(metavar="MODEL", help=_MODEL_HELP)],
    sources: Annotated[list[str], typer.Argument(metavar="FILE...", help="Text file, one sentence a line, or - for standard input; with --engine ray, files or globs (plain or .gz).", show_default=False)],
    top: Annotated[Optional[int], typer.Option(metavar="K", help="Print only the K most anomalous lines, highest score first.")] = None,
    threshold: Annotated[Optional[float], typer.Option(metavar="X", help="Print only lines scoring at least X (with --engine ray: flag them).")] = None,
    flag_percentile: Annotated[Optional[float], typer.Option(metavar="P", help="Print only lines scoring above the P-th percentile of the run's in-domain validation sentences (stored at export: 50, 75, 90, 95, 99, 99.5, 99.9; with --engine ray: flag them).")] = None,
    threads: Annotated[Optional[int], typer.Option(help=_RAY_THREADS_HELP)] = None,
    precision: Annotated[Optional[str], typer.Option(help=_PRECISION_HELP)] = None,
    engine: Annotated[str, typer.Option(help=_ENGINE_HELP)] = "local",
    out: Annotated[Optional[Path], typer.Option(help="With --engine ray: a new folder of Parquet files (file, line, text, score, flagged).", show_default=False)] = None,
    address: Annotated[Optional[str], typer.Option(help=_ADDRESS_HELP, show_default=False)] = None,
    workers: Annotated[Optional[int], typer.Option(help=_WORKERS_HELP, show_default=False)] = None,
) -> None:
    """Print index, anomaly score (mean token negative log-likelihood) and sentence, tab-separated.

    The index counts non-empty lines from 1. Higher scores are sentences the model reconstructs worse.
    With --engine ray, write every line's score to Parquet files instead.
    """
    from textae.runtime.files import check_flag_options, flag_anomalies, read_sentences

    check_flag_options(top, threshold, flag_percentile)
    if _ray_engine(engine, sources, address=address, workers=workers, out=out, top=top):
        from textae.ray import score_files

        summary = score_files(model, sources, out, threshold=threshold, flag_percentile=flag_percentile,  # type: ignore[arg-type]
                              precision=precision, ray_settings=_ray_settings(address, workers, threads))  # fmt: skip
        typer.echo(_ray_report("scored", summary), err=True)
        return
    from textae.runtime.model import TextAE

    loaded = TextAE.load(model, threads, precision)
    if flag_percentile is not None:
        threshold = loaded.anomaly_threshold(flag_percentile)
        typer.echo(f"flagging scores of at least {threshold:.4f}, the {flag_percentile:g}th percentile of in-domain validation sentences", err=True)
    sentences = read_sentences(sources[0])
    scores = loaded.score(sentences)
    for index in flag_anomalies(scores, top=top, threshold=threshold):
        typer.echo(f"{index + 1}\t{scores[index]:.4f}\t{sentences[index]}")


# --- embed and score on a Ray cluster (--engine ray; the `ray` extra, textae.ray) ---

_ENGINES = ("local", "ray")


def _ray_engine(engine: str, sources: list[str], **ray_only: Any) -> bool:
    """Whether the command runs on Ray; refuses options that belong to the other engine."""
    if engine not in _ENGINES:
        raise TextaeError(f"--engine must be one of {', '.join(_ENGINES)}, got {engine!r}")
    if engine == "ray":
        if ray_only.get("top") is not None:
            raise TextaeError("--top needs every score in one place; with --engine ray, sort the Parquet output by score")
        if "out" in ray_only and ray_only["out"] is None:
            raise TextaeError("--engine ray writes Parquet files: give the folder with --out")
        return True
    given = [f"--{name}" for name, value in ray_only.items() if value is not None and name != "top"]
    if given:
        raise TextaeError(f"{', '.join(given)} only with --engine ray")
    if len(sources) != 1:
        raise TextaeError(f"give one input file (got {len(sources)}); several files or globs need --engine ray")
    return False


def _ray_settings(address: Optional[str], workers: Optional[int], threads: Optional[int]) -> Any:
    from textae.ray import RaySettings

    return RaySettings(address=address, workers=workers, worker_cpus=threads or 1)


def _ray_report(verb: str, summary: Any) -> str:
    return (f"{verb} {summary.lines} sentences from {summary.files} file(s) into {summary.out}/ "
            f"({summary.parts} Parquet files, {summary.workers} Ray workers, {summary.seconds:.1f} s)")  # fmt: skip


@app.command()
@user_errors
def generate(
    model: Annotated[Path, typer.Argument(metavar="MODEL", help=_MODEL_HELP)],
    count: Annotated[int, typer.Option("-n", "--count", metavar="N", help="Sentences to generate.")] = 10,
    near: Annotated[Optional[str], typer.Option(metavar="SENTENCE", help="Sample around this sentence's vector instead of around the whole distribution.")] = None,
    spread: Annotated[Optional[float], typer.Option(help="Scale of the sampling noise: times the validation vectors' covariance (default 1.0), or with --near times each dimension's standard deviation (default 0.8).", show_default=False)] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed for a repeatable draw (default: a fresh one).")] = None,
    threads: Annotated[Optional[int], typer.Option(help=_THREADS_HELP)] = None,
    precision: Annotated[Optional[str], typer.Option(help=_PRECISION_HELP)] = None,
) -> None:
    """Print N new sentences decoded from vectors sampled where the run's validation vectors lie (or near --near)."""
    from textae.runtime.model import TextAE

    for line in TextAE.load(model, threads, precision).generate(count, near=near, spread=spread, seed=seed):
        typer.echo(line)


@app.command()
@user_errors
def info(model: Annotated[Path, typer.Argument(metavar="MODEL", help=_MODEL_HELP)]) -> None:
    """Check an export folder against its manifest and describe the model in it."""
    from rich.console import Console
    from rich.table import Table

    from textae.manifest import Manifest, describe_manifest

    table = Table(show_header=False, box=None)
    for field, value in describe_manifest(model, Manifest.load(model)):
        table.add_row(f"[bold]{field}[/]", value)
    Console().print(table)


# --- evaluation side (evaluate, similar, index, map) ---
# Scores, neighbours and maps computed on an export folder with the torch-free runtime. The
# optional packages (scikit-learn, sacrebleu, matplotlib) come from the `eval` extra. The options of
# similar and map are the fields of their settings dataclasses (textae/evaluation/settings.py).

LOAD_OPTIONS = OptionGroup(LoadSettings)
SIMILAR_OPTIONS = OptionGroup(SimilarSettings)
MAP_OPTIONS = OptionGroup(MapSettings)


@app.command()
@user_errors
def evaluate(
    model: Annotated[Path, typer.Argument(metavar="MODEL", help=_MODEL_HELP)],
    text: Annotated[Optional[Path], typer.Option(metavar="FILE", help="Reconstruction: token accuracy, exact match and chrF by sentence length, on one sentence a line.")] = None,
    sts: Annotated[Optional[Path], typer.Option(metavar="FILE", help="Similarity: Spearman x100 of cosine vs gold, on score<TAB>sentence1<TAB>sentence2 lines.")] = None,
    probe: Annotated[Optional[Path], typer.Option(metavar="FILE", help="Logistic-regression probe accuracy (10-fold CV) on label<TAB>text lines.")] = None,
    probe_test: Annotated[Optional[Path], typer.Option(metavar="FILE", help="Train the probe on --probe and test it on this label<TAB>text file instead of CV.")] = None,
    anomalies: Annotated[Optional[tuple[Path, Path]], typer.Option(metavar="IN_FILE OUT_FILE", help="AUROC of the anomaly score at telling OUT_FILE's sentences from IN_FILE's.")] = None,
    beam: Annotated[int, typer.Option(help="--text: reconstruct with a beam of this many hypotheses, 1 to 64 (1: greedy).")] = 1,
    json_output: Annotated[bool, typer.Option("--json", help="Print the results as JSON on standard output.")] = False,
    threads: Annotated[Optional[int], typer.Option(help=_THREADS_HELP)] = None,
    precision: Annotated[Optional[str], typer.Option(help=_PRECISION_HELP)] = None,
) -> None:
    """Measure an exported model on the given files (at least one of --text, --sts, --probe, --anomalies)."""
    import json

    from rich.console import Console

    from textae.evaluation.evaluate import evaluate_model
    from textae.evaluation.report import print_report
    from textae.runtime.model import TextAE

    report = evaluate_model(
        TextAE.load(model, threads, precision), text=text, sts=sts, probe=probe, probe_test=probe_test, anomalies=anomalies,
        beam_size=beam,
    )  # fmt: skip
    if json_output:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        print_report(report, Console())


@app.command()
@user_errors
@with_config_options(SIMILAR_OPTIONS, LOAD_OPTIONS)
def similar(
    model: Annotated[Path, typer.Argument(metavar="MODEL", help=_MODEL_HELP)],
    queries: Annotated[list[str], typer.Argument(metavar="QUERY...", help="Sentences to find neighbours for.", show_default=False)],
    **options: Any,
) -> None:
    """Print each query's K most similar corpus sentences: rank, cosine similarity and sentence, tab-separated."""
    from textae.runtime.model import TextAE
    from textae.runtime.search import similar_sentences

    settings, load = build_config(SIMILAR_OPTIONS, options), build_config(LOAD_OPTIONS, options)
    loaded = TextAE.load(model, load.threads, load.precision)
    results = similar_sentences(loaded, settings.corpus, queries, settings.top)
    for number, (query, neighbours) in enumerate(zip(queries, results)):
        if number:
            typer.echo("")
        typer.echo(f"# {query}")
        for rank, neighbour in enumerate(neighbours, start=1):
            typer.echo(f"{rank}\t{neighbour.score:.4f}\t{neighbour.text}")


@app.command()
@user_errors
def index(
    model: Annotated[Path, typer.Argument(metavar="MODEL", help=_MODEL_HELP)],
    source: Annotated[str, typer.Argument(metavar="FILE", help="Text file, one sentence a line, or - for standard input.")],
    out: Annotated[Path, typer.Option(metavar="INDEX.npz", help="Index file to write; `textae similar --corpus INDEX.npz` reuses it.")],
    batch_size: Annotated[int, typer.Option(help="Sentences per onnxruntime call.")] = DEFAULT_BATCH_SIZE,
    threads: Annotated[Optional[int], typer.Option(help=_THREADS_HELP)] = None,
    precision: Annotated[Optional[str], typer.Option(help=_PRECISION_HELP)] = None,
) -> None:
    """Embed FILE once into a reusable index: unit vectors, sentences, model fingerprint and file sha256."""
    from textae.runtime.model import TextAE
    from textae.runtime.search import VectorIndex, check_index_output

    check_index_output(out)
    built = VectorIndex.build(TextAE.load(model, threads, precision), Path(source), batch_size=batch_size)
    built.save(out)
    typer.echo(f"indexed {len(built.texts)} sentences into {out}", err=True)


@app.command("map")
@user_errors
@with_config_options(MAP_OPTIONS, LOAD_OPTIONS)
def map_sentences(
    model: Annotated[Path, typer.Argument(metavar="MODEL", help=_MODEL_HELP)],
    source: Annotated[Path, typer.Argument(metavar="FILE", help="Text file, one sentence a line (label<TAB>text with --labels).")],
    **options: Any,
) -> None:
    """Draw the sentence vectors of FILE in 2-D as a PNG, with title, axes and legend."""
    from textae.evaluation.maps import check_map_options, plot_map
    from textae.runtime.model import TextAE

    settings, load = build_config(MAP_OPTIONS, options), build_config(LOAD_OPTIONS, options)
    check_map_options(settings.out, settings.method, settings.max_points)
    loaded = TextAE.load(model, load.threads, load.precision)
    summary = plot_map(
        loaded, source, settings.out, labelled=settings.labels, method=settings.method, max_points=settings.max_points
    )
    typer.echo(f"drew {summary.points} sentences into {settings.out}", err=True)


# --- serving (serve) ---
# The HTTP service from the `serve` extra (FastAPI + uvicorn); see textae/serve/. Every ServeSettings
# field but `model` is an option, made from the dataclass; tests/runtime/test_cli_runtime.py checks them one to one.

SERVE_OPTIONS = OptionGroup(ServeSettings, skip={"model"})


@app.command()
@user_errors
@with_config_options(SERVE_OPTIONS)
def serve(
    model: Annotated[Path, typer.Argument(metavar="MODEL", help=_MODEL_HELP)],
    log_level: Annotated[str, typer.Option(help="uvicorn's log level: critical, error, warning, info or debug.")] = "info",
    **options: Any,
) -> None:
    """Serve the model over HTTP: OpenAI-compatible /v1/embeddings, /embed, /reconstruct, /score, /decode."""
    from textae.serve.server import serve as run_server

    if log_level not in ("critical", "error", "warning", "info", "debug"):
        raise TextaeError(f"--log-level must be critical, error, warning, info or debug, got {log_level!r}")
    run_server(build_config(SERVE_OPTIONS, options, model=str(model)), log_level=log_level)
