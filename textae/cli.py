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
SHIPPED_CORPUS = Path(__file__).resolve().parent.parent / "corpora" / "python-docs.txt"


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
    resume: Annotated[bool, typer.Option(help="Continue the run in --out from its last checkpoint.")] = False,
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
    eval_every: Annotated[int, typer.Option(help="Validate every this many steps.")] = _T.eval_every,
    patience: Annotated[int, typer.Option(help="Early stopping: validations without improvement (0: off).")] = _T.patience,
    checkpoint_every: Annotated[int, typer.Option(help="Write the resumable checkpoint every this many steps.")] = _T.checkpoint_every,
    seed: Annotated[int, typer.Option(help="Seed for data order, initialisation, dropout and sampling.")] = _T.seed,
    threads: Annotated[Optional[int], typer.Option(help="Torch CPU threads (default: torch's choice).")] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Train a tokenizer and a recurrent sentence autoencoder on CORPUS; write a run folder to --out."""
    from textae.train import train as run_training

    train_config = TrainConfig(
        corpus=list(corpus or []), out=str(out), valid=valid, valid_fraction=valid_fraction, tokenizer=tokenizer,
        vocab_size=vocab_size, max_length=max_length, batch_size=batch_size, epochs=epochs, max_steps=max_steps,
        learning_rate=learning_rate, weight_decay=weight_decay, warmup_steps=warmup_steps, lr_schedule=lr_schedule,
        grad_clip=grad_clip, teacher_forcing_schedule=teacher_forcing_schedule,
        teacher_forcing_start=teacher_forcing_start, teacher_forcing_end=teacher_forcing_end,
        teacher_forcing_decay_steps=teacher_forcing_decay_steps, eval_every=eval_every, patience=patience,
        checkpoint_every=checkpoint_every, seed=seed, num_threads=threads,
    )  # fmt: skip
    model_config = ModelConfig(
        cell=cell, embedding_dim=embedding_dim, hidden_size=hidden_size, latent_dim=latent_dim, num_layers=num_layers,
        bidirectional=bidirectional, dropout=dropout, tie_embeddings=tie_embeddings, pooling=pooling,
    )  # fmt: skip
    if not resume and not train_config.corpus:
        raise TextaeError("no corpus given: textae train CORPUS... (or --resume --out RUN_DIR)")
    run_training(train_config, model_config, resume=resume, show_progress=not quiet)


# --- export and runtime side (export, embed, reconstruct, score, info) -----------------------
