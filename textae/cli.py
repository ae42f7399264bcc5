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

from textae.config import ModelConfig, TrainConfig
from textae.demo import SHIPPED_CORPUS
from textae.errors import TextaeError

app = typer.Typer(
    help="Train a recurrent sentence autoencoder, export it to ONNX, and embed/reconstruct/score text.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

F = TypeVar("F", bound=Callable[..., Any])


def user_errors(command: F) -> F:
    """Turn a TextaeError into one line on stderr and exit status 2, with no traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except TextaeError as exc:
            typer.echo(f"textae: error: {exc}", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.echo("textae: interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


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

_T, _M = TrainConfig(), ModelConfig()


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
def train(
    corpus: Annotated[Optional[list[str]], typer.Argument(help="Text files or globs, one sentence a line (.gz ok).", show_default=False)] = None,
    out: Annotated[Path, typer.Option(help="Run folder for checkpoints, metrics, tokenizer and plots.")] = Path(_T.out),
    config: Annotated[Optional[Path], typer.Option("--config", help="TOML file of options (keys as the option names).", is_eager=True, callback=_load_toml_defaults)] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out from its last checkpoint, with the options it was started with.")] = False,
    valid: Annotated[Optional[str], typer.Option(help="Validation file (default: hold out --valid-fraction of the corpus).")] = None,
    valid_fraction: Annotated[float, typer.Option(help="Share of the corpus held out for validation.")] = _T.valid_fraction,
    tokenizer: Annotated[Optional[str], typer.Option(help="Reuse this tokenizer.json instead of training one.")] = None,
    vocab_size: Annotated[int, typer.Option(help="Vocabulary size of the byte-level BPE tokenizer.")] = _T.vocab_size,
    max_length: Annotated[int, typer.Option(help="Truncate sentences to this many tokens.")] = _T.max_length,
    cell: Annotated[str, typer.Option(help="Recurrent cell: lstm, gru or rnn.")] = _M.cell,
    embedding_dim: Annotated[int, typer.Option(help="Token embedding width.")] = _M.embedding_dim,
    hidden_size: Annotated[int, typer.Option(help="Recurrent state width.")] = _M.hidden_size,
    latent_dim: Annotated[int, typer.Option(help="Width of the sentence vector.")] = _M.latent_dim,
    num_layers: Annotated[int, typer.Option(help="Stacked recurrent layers.")] = _M.num_layers,
    bidirectional: Annotated[bool, typer.Option(help="Bidirectional encoder.")] = _M.bidirectional,
    dropout: Annotated[float, typer.Option(help="Dropout on embeddings and between layers.")] = _M.dropout,
    tie_embeddings: Annotated[bool, typer.Option(help="Share input embedding and output projection.")] = _M.tie_embeddings,
    pooling: Annotated[str, typer.Option(help="Sentence vector: final state, or mean or max over states.")] = _M.pooling,
    reverse_input: Annotated[bool, typer.Option(help="Encoder reads each sentence back to front, so the decoder's first words were read last.")] = _M.reverse_input,
    batch_size: Annotated[int, typer.Option(help="Sentences per step.")] = _T.batch_size,
    epochs: Annotated[int, typer.Option(help="Passes over the training data.")] = _T.epochs,
    max_steps: Annotated[Optional[int], typer.Option(help="Stop after this many steps.")] = None,
    learning_rate: Annotated[float, typer.Option(help="Peak AdamW learning rate.")] = _T.learning_rate,
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay.")] = _T.weight_decay,
    warmup_steps: Annotated[int, typer.Option(help="Linear learning-rate warm-up steps.")] = _T.warmup_steps,
    lr_schedule: Annotated[str, typer.Option(help="Learning-rate decay after warm-up: cosine or constant.")] = _T.lr_schedule,
    grad_clip: Annotated[float, typer.Option(help="Clip the gradient norm to this value.")] = _T.grad_clip,
    teacher_forcing_schedule: Annotated[str, typer.Option(help="How the gold-token probability decays: constant, linear, exponential or inverse_sigmoid (Bengio et al. 2015).")] = _T.teacher_forcing_schedule,
    teacher_forcing_start: Annotated[float, typer.Option(help="Gold-token probability at step 0.")] = _T.teacher_forcing_start,
    teacher_forcing_end: Annotated[float, typer.Option(help="Gold-token probability the schedule decays to.")] = _T.teacher_forcing_end,
    teacher_forcing_decay_steps: Annotated[Optional[int], typer.Option(help="Steps to reach the end value (default: the whole run).")] = None,
    scheduled_sampling: Annotated[str, typer.Option(help="Feed predictions step by step (Bengio et al.) or in two parallel passes (faster).")] = _T.scheduled_sampling,
    noise: Annotated[str, typer.Option(help="Denoising: corrupt the encoder input, e.g. delete:0.1,swap:0.1,mask:0.1.")] = _T.noise,
    eval_every: Annotated[int, typer.Option(help="Validate every this many steps.")] = _T.eval_every,
    patience: Annotated[int, typer.Option(help="Early stopping: validations without improvement (0: off).")] = _T.patience,
    checkpoint_every: Annotated[int, typer.Option(help="Write the resumable checkpoint every this many steps.")] = _T.checkpoint_every,
    log_every: Annotated[int, typer.Option(help="Steps between records in metrics.jsonl.")] = _T.log_every,
    seed: Annotated[int, typer.Option(help="Seed for data order, initialisation, dropout and sampling.")] = _T.seed,
    threads: Annotated[Optional[int], typer.Option(help="Torch CPU threads (default: torch's choice).")] = None,
    device: Annotated[str, typer.Option(help="auto (a CUDA GPU when torch sees one), cpu or cuda.")] = _T.device,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Train a tokenizer and a recurrent sentence autoencoder on CORPUS; write a run folder to --out."""
    from textae.training.loop import train as run_training

    train_config = TrainConfig(
        corpus=list(corpus or []), out=str(out), valid=valid, valid_fraction=valid_fraction, tokenizer=tokenizer,
        vocab_size=vocab_size, max_length=max_length, batch_size=batch_size, epochs=epochs, max_steps=max_steps,
        learning_rate=learning_rate, weight_decay=weight_decay, warmup_steps=warmup_steps, lr_schedule=lr_schedule,
        grad_clip=grad_clip, teacher_forcing_schedule=teacher_forcing_schedule,
        teacher_forcing_start=teacher_forcing_start, teacher_forcing_end=teacher_forcing_end,
        teacher_forcing_decay_steps=teacher_forcing_decay_steps, scheduled_sampling=scheduled_sampling, noise=noise, eval_every=eval_every, patience=patience,
        checkpoint_every=checkpoint_every, log_every=log_every, seed=seed, num_threads=threads, device=device,
    )  # fmt: skip
    model_config = ModelConfig(
        cell=cell, embedding_dim=embedding_dim, hidden_size=hidden_size, latent_dim=latent_dim, num_layers=num_layers,
        bidirectional=bidirectional, dropout=dropout, tie_embeddings=tie_embeddings, pooling=pooling,
        reverse_input=reverse_input,
    )  # fmt: skip
    if not resume and not train_config.corpus:
        raise TextaeError("no corpus given: textae train CORPUS... (or --resume --out RUN_DIR)")
    run_training(train_config, model_config, resume=resume, show_progress=not quiet)


@app.command()
@user_errors
def demo(
    corpus: Annotated[Path, typer.Option(help="Corpus to train on (default: the shipped corpora/python-docs.txt).")] = SHIPPED_CORPUS,
    out: Annotated[Path, typer.Option(help="Run folder (reused when finished, resumed when interrupted).")] = Path("runs/python-docs"),
    export_dir: Annotated[Path, typer.Option("--export", help="Export folder.")] = Path("export/python-docs"),
    max_steps: Annotated[int, typer.Option(help="Training steps (300 take about 2 minutes on 2 cores).")] = 300,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads for training and onnxruntime.")] = None,
) -> None:
    """The main job end to end: train on the shipped corpus, export to ONNX, embed/reconstruct/score with onnxruntime."""
    from textae.demo import run_demo

    run_demo(corpus, out, export_dir, max_steps, threads)


# --- export and runtime side (export, embed, reconstruct, score, info) -----------------------

_MODEL_HELP = "Export folder written by `textae export` (holds textae.json)."
_THREADS_HELP = "onnxruntime intra-op threads (default: one per core)."
_PRECISION_HELP = "Graphs to run: fp32 or int8 (default: the one the export chose)."


@app.command()
@user_errors
def export(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN_DIR", help="Run folder written by `textae train`.")],
    out: Annotated[Optional[Path], typer.Option(help="Folder to write (default: export/<run folder name>).")] = None,
    quantize: Annotated[Optional[str], typer.Option(help="Also write int8 graphs and load them by default: int8.")] = None,
    opset: Annotated[int, typer.Option(help="ONNX opset version.")] = 17,
) -> None:
    """Export a trained run to a self-contained ONNX folder that runs without torch."""
    from textae.export.folder import default_export_dir, export_model

    export_model(run_dir, out or default_export_dir(run_dir), quantize=quantize, opset=opset)


@app.command()
@user_errors
def embed(
    model: Annotated[Path, typer.Argument(metavar="MODEL", help=_MODEL_HELP)],
    source: Annotated[str, typer.Argument(metavar="INPUT", help="Text file, one sentence a line, or - for standard input.")],
    out: Annotated[Path, typer.Option(help="Output file: .npy (N x D float32) or .jsonl (text and vector per line).")],
    batch_size: Annotated[int, typer.Option(help="Sentences per onnxruntime call.")] = 64,
    normalize: Annotated[bool, typer.Option(help="Scale every vector to unit length.")] = False,
    threads: Annotated[Optional[int], typer.Option(help=_THREADS_HELP)] = None,
    precision: Annotated[Optional[str], typer.Option(help=_PRECISION_HELP)] = None,
) -> None:
    """Write one sentence vector per non-empty input line."""
    from textae.runtime.files import check_embedding_output, embed_file
    from textae.runtime.model import TextAE

    check_embedding_output(out)
    count = embed_file(TextAE.load(model, threads, precision), source, out, batch_size=batch_size, normalize=normalize)
    typer.echo(f"embedded {count} sentences into {out}", err=True)


@app.command()
@user_errors
def reconstruct(
    model: Annotated[Path, typer.Argument(metavar="MODEL", help=_MODEL_HELP)],
    text: Annotated[Optional[list[str]], typer.Argument(metavar="TEXT...", help="Sentences to reconstruct.", show_default=False)] = None,
    file: Annotated[Optional[Path], typer.Option(help="Read the sentences from this file (- for standard input).")] = None,
    threads: Annotated[Optional[int], typer.Option(help=_THREADS_HELP)] = None,
    precision: Annotated[Optional[str], typer.Option(help=_PRECISION_HELP)] = None,
) -> None:
    """Print what the model reconstructs from each sentence's vector, one line per sentence."""
    from textae.runtime.files import read_sentences
    from textae.runtime.model import TextAE

    if bool(text) == (file is not None):
        raise TextaeError("give the sentences as arguments or with --file, not both")
    sentences = read_sentences(file) if file is not None else text
    for line in TextAE.load(model, threads, precision).reconstruct(sentences):
        typer.echo(line)


@app.command()
@user_errors
def score(
    model: Annotated[Path, typer.Argument(metavar="MODEL", help=_MODEL_HELP)],
    source: Annotated[str, typer.Argument(metavar="FILE", help="Text file, one sentence a line, or - for standard input.")],
    top: Annotated[Optional[int], typer.Option(metavar="K", help="Print only the K most anomalous lines, highest score first.")] = None,
    threshold: Annotated[Optional[float], typer.Option(metavar="X", help="Print only lines scoring at least X.")] = None,
    threads: Annotated[Optional[int], typer.Option(help=_THREADS_HELP)] = None,
    precision: Annotated[Optional[str], typer.Option(help=_PRECISION_HELP)] = None,
) -> None:
    """Print index, anomaly score (mean token negative log-likelihood) and sentence, tab-separated.

    The index counts non-empty lines from 1. Higher scores are sentences the model reconstructs worse.
    """
    from textae.runtime.files import check_flag_options, flag_anomalies, read_sentences
    from textae.runtime.model import TextAE

    check_flag_options(top, threshold)
    sentences = read_sentences(source)
    scores = TextAE.load(model, threads, precision).score(sentences)
    for index in flag_anomalies(scores, top=top, threshold=threshold):
        typer.echo(f"{index + 1}\t{scores[index]:.4f}\t{sentences[index]}")


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
# optional packages (scikit-learn, sacrebleu, matplotlib) come from the `eval` extra.


@app.command()
@user_errors
def evaluate(
    model: Annotated[Path, typer.Argument(metavar="MODEL", help=_MODEL_HELP)],
    text: Annotated[Optional[Path], typer.Option(metavar="FILE", help="Reconstruction: token accuracy, exact match and chrF by sentence length, on one sentence a line.")] = None,
    sts: Annotated[Optional[Path], typer.Option(metavar="FILE", help="Similarity: Spearman x100 of cosine vs gold, on score<TAB>sentence1<TAB>sentence2 lines.")] = None,
    probe: Annotated[Optional[Path], typer.Option(metavar="FILE", help="Logistic-regression probe accuracy (10-fold CV) on label<TAB>text lines.")] = None,
    probe_test: Annotated[Optional[Path], typer.Option(metavar="FILE", help="Train the probe on --probe and test it on this label<TAB>text file instead of CV.")] = None,
    anomalies: Annotated[Optional[tuple[Path, Path]], typer.Option(metavar="IN_FILE OUT_FILE", help="AUROC of the anomaly score at telling OUT_FILE's sentences from IN_FILE's.")] = None,
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
        TextAE.load(model, threads, precision), text=text, sts=sts, probe=probe, probe_test=probe_test, anomalies=anomalies
    )
    if json_output:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        print_report(report, Console())


@app.command()
@user_errors
def similar(
    model: Annotated[Path, typer.Argument(metavar="MODEL", help=_MODEL_HELP)],
    queries: Annotated[list[str], typer.Argument(metavar="QUERY...", help="Sentences to find neighbours for.", show_default=False)],
    corpus: Annotated[Path, typer.Option(metavar="FILE", help="Sentences to search: a text file (one a line), or an INDEX.npz from `textae index`.")],
    top: Annotated[int, typer.Option(metavar="K", help="Neighbours per query.")] = 5,
    threads: Annotated[Optional[int], typer.Option(help=_THREADS_HELP)] = None,
    precision: Annotated[Optional[str], typer.Option(help=_PRECISION_HELP)] = None,
) -> None:
    """Print each query's K most similar corpus sentences: rank, cosine similarity and sentence, tab-separated."""
    from textae.runtime.model import TextAE
    from textae.runtime.search import similar_sentences

    results = similar_sentences(TextAE.load(model, threads, precision), corpus, queries, top)
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
    batch_size: Annotated[int, typer.Option(help="Sentences per onnxruntime call.")] = 64,
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
def map_sentences(
    model: Annotated[Path, typer.Argument(metavar="MODEL", help=_MODEL_HELP)],
    source: Annotated[Path, typer.Argument(metavar="FILE", help="Text file, one sentence a line (label<TAB>text with --labels).")],
    out: Annotated[Path, typer.Option(metavar="MAP.png", help="PNG file to write.")],
    labels: Annotated[bool, typer.Option("--labels", help="FILE has label<TAB>text lines: colour points by label.")] = False,
    method: Annotated[str, typer.Option(help="Projection to 2-D: pca (numpy SVD) or tsne (scikit-learn).")] = "pca",
    max_points: Annotated[int, typer.Option(help="Draw a uniform sample of at most this many sentences.")] = 20_000,
    threads: Annotated[Optional[int], typer.Option(help=_THREADS_HELP)] = None,
    precision: Annotated[Optional[str], typer.Option(help=_PRECISION_HELP)] = None,
) -> None:
    """Draw the sentence vectors of FILE in 2-D as a PNG, with title, axes and legend."""
    from textae.evaluation.maps import check_map_options, plot_map
    from textae.runtime.model import TextAE

    check_map_options(out, method, max_points)
    summary = plot_map(TextAE.load(model, threads, precision), source, out, labelled=labels, method=method, max_points=max_points)
    typer.echo(f"drew {summary.points} sentences into {out}", err=True)
