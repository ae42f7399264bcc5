"""The run folder before training starts: create it, reopen it for --resume, and ready its data.

What a kill at any moment leaves, and what `textae train --resume --out RUN` then does:

    killed ...                           the folder holds             --resume
    before config.json                   nothing of the run           says to start it again (nothing was kept)
    training the tokenizer               config.json                  starts over with the saved options
    building the token store             + tokenizer.json, *.building starts over, reusing the tokenizer
    before the first checkpoint          + tokens/KEY/, metrics       starts over, reusing tokenizer and store
    after a checkpoint                   + checkpoint.pt (+ best.pt)  continues from the checkpoint
    after the last checkpoint            everything but summary.json  writes the summary

Every file appears complete under its name or not at all (textae.atomic; the token store is built
beside its name and renamed), so "starting over" never reads half a file. Starting over follows
exactly the path of a fresh run with the saved options, so the final weights are bit for bit those
of a run that was never killed.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from tokenizers import Tokenizer

from textae import faults
from textae.atomic import atomic_write_text
from textae.config import ModelConfig, TrainConfig, from_dict, load_json, save_json, to_dict
from textae.corpus import iter_corpus, resolve_paths
from textae.errors import TextaeError
from textae.tokenizer import load_tokenizer, train_tokenizer
from textae.training import distributed
from textae.training.checkpoint import (
    BEST_FILE,
    CHECKPOINT_FILE,
    CONFIG_FILE,
    LOSS_PLOT_FILE,
    METRICS_FILE,
    SUMMARY_FILE,
    TOKENIZER_FILE,
)
from textae.training.data import TokenizedCorpus, build_token_store, open_token_store, token_store_key

TOKENS_DIR = "tokens"
# Progress made before the first checkpoint cannot be resumed: a restart replays it from step 0.
UNSAVED_PROGRESS = (METRICS_FILE, BEST_FILE, LOSS_PLOT_FILE, SUMMARY_FILE)


def on_main_then_everywhere(workers: distributed.Workers, action: Callable[[], Any]) -> None:
    """Run action on rank 0 and let every rank raise its user error, so no rank waits forever."""
    error = None
    if workers.is_main:
        try:
            action()
        except TextaeError as exc:
            error = str(exc)
    error = workers.broadcast(error)
    if error:
        raise TextaeError(error)


def prepare_new_run_dir(run_dir: Path, train_config: TrainConfig, model_config: ModelConfig) -> Path:
    """Create the run folder and save the options first: from then on, --resume can always restart."""
    if (run_dir / CHECKPOINT_FILE).exists() or (run_dir / CONFIG_FILE).exists():
        state = "finished" if (run_dir / SUMMARY_FILE).exists() else "not finished"
        raise TextaeError(
            f"{run_dir}: already holds a run ({state}); continue it with: textae train --resume --out {run_dir} "
            "(or choose another --out)"
        )
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except FileExistsError:
        raise TextaeError(f"{run_dir}: exists and is not a folder") from None
    except NotADirectoryError:
        raise TextaeError(f"{run_dir}: cannot write the run folder (a parent is a file, not a folder)") from None
    except OSError as exc:
        raise TextaeError(f"{run_dir}: cannot write the run folder ({exc.strerror})") from None
    save_run_configs(run_dir, train_config, model_config)
    return run_dir


def save_run_configs(run_dir: Path, train_config: TrainConfig, model_config: ModelConfig) -> None:
    save_json(run_dir / CONFIG_FILE, {"model": to_dict(model_config), "train": to_dict(train_config)})


def load_run_configs(run_dir: Path) -> tuple[TrainConfig, ModelConfig]:
    """The options a run was started with, from its config.json, checked as on the command line."""
    if not run_dir.is_dir():
        raise TextaeError(f"{run_dir}: no such run folder to resume")
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise TextaeError(
            f"{run_dir}: not a textae run folder (no {CONFIG_FILE}: not a run, or one stopped before it saved its "
            f"options); start one with: textae train CORPUS --out {run_dir}"
        )
    saved = load_json(path)
    try:
        train_config = from_dict(TrainConfig, saved["train"], where=str(path))
        model_config = from_dict(ModelConfig, saved["model"], where=str(path))
        train_config.validate()
        model_config.validate()
    except (KeyError, TypeError, AttributeError):
        raise TextaeError(f"{path}: not a textae run config") from None
    train_config.out = str(run_dir)  # the folder may have been moved since
    return train_config, model_config


def has_checkpoint(run_dir: Path) -> bool:
    return (run_dir / CHECKPOINT_FILE).is_file()


def clean_for_resume(run_dir: Path) -> None:
    """Remove what a killed run leaves that is not a finished file: temporary files of interrupted
    atomic writes, half-built token stores, and, without a checkpoint, records of steps that a
    restart will replay."""
    entries = [*run_dir.iterdir(), *(run_dir / TOKENS_DIR).glob("*")]
    for entry in filter(_is_leftover, entries):
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
    if not has_checkpoint(run_dir):
        for name in UNSAVED_PROGRESS:
            (run_dir / name).unlink(missing_ok=True)


def discard_unstarted_run(run_dir: Path) -> None:
    """Undo a new run that failed on a user error before its first checkpoint (an empty corpus, too
    few sentences), so the same command with the mistake fixed starts cleanly."""
    if has_checkpoint(run_dir):
        return
    for name in (CONFIG_FILE, TOKENIZER_FILE, *UNSAVED_PROGRESS):
        (run_dir / name).unlink(missing_ok=True)
    shutil.rmtree(run_dir / TOKENS_DIR, ignore_errors=True)
    try:
        run_dir.rmdir()  # only when nothing else is in it
    except OSError:
        pass


def _is_leftover(entry: Path) -> bool:
    return (entry.name.startswith(".") and entry.name.endswith(".tmp")) or entry.name.endswith(".building") or entry.name == ".write-test"


def prepare_data(
    config: TrainConfig, run_dir: Path, resume: bool, console: Console, workers: distributed.Workers
) -> tuple[Tokenizer, TokenizedCorpus, TokenizedCorpus]:
    """Tokenizer and token store are made once, by rank 0, and reused on resume; every rank opens them."""
    paths = resolve_paths(config.corpus)
    valid_paths = resolve_paths([config.valid]) if config.valid else []
    tokenizer_path = run_dir / TOKENIZER_FILE
    where = ", ".join(map(str, paths))

    def make_tokenizer() -> None:
        if resume and tokenizer_path.is_file():
            return  # written atomically, so complete: the one this run has used from the start
        if config.tokenizer:
            load_tokenizer(Path(config.tokenizer))
            atomic_write_text(tokenizer_path, Path(config.tokenizer).read_text(encoding="utf-8"))
            return
        with console.status("training the tokenizer"):
            tokenizer = train_tokenizer(iter_corpus(paths), config.vocab_size)
        faults.reached("tokenizer")
        atomic_write_text(tokenizer_path, tokenizer.to_str(pretty=True))

    on_main_then_everywhere(workers, make_tokenizer)
    tokenizer = load_tokenizer(tokenizer_path)
    settings = {"max_length": config.max_length, "valid_fraction": config.valid_fraction,
                "max_valid": config.max_valid_sentences, "seed": config.seed}  # fmt: skip
    store_dir = run_dir / TOKENS_DIR / token_store_key(paths, valid_paths, tokenizer_path, settings)

    def make_store() -> None:
        if store_dir.is_dir():
            console.print(f"reusing the token store {store_dir}")
            return
        with console.status("tokenizing the corpus into the token store"):
            build_token_store(
                store_dir, iter_corpus(paths), tokenizer, config.max_length,
                valid_sentences=iter_corpus(valid_paths) if valid_paths else None,
                valid_fraction=config.valid_fraction, max_valid=config.max_valid_sentences, seed=config.seed,
            )  # fmt: skip

    on_main_then_everywhere(workers, make_store)
    try:
        train_data, valid_data = open_token_store(store_dir)
    except (OSError, ValueError, EOFError) as exc:  # a store damaged by hand: the kill-safe build never leaves one
        raise TextaeError(f"{store_dir}: damaged token store ({type(exc).__name__}); delete the folder to rebuild it") from None
    if len(train_data) + len(valid_data) == 0:
        raise TextaeError(f"{where}: no sentences (the corpus is empty or holds only empty lines)")
    if len(valid_data) == 0:
        # a corpus too small for the fraction still gets one validation sentence
        train_data, valid_data = _split_last(train_data)
    if len(train_data) < config.batch_size:
        raise TextaeError(
            f"{where}: only {len(train_data)} training sentences ({len(valid_data)} more held out for validation), "
            f"fewer than one batch of {config.batch_size}; lower --batch-size or add text"
        )
    return tokenizer, train_data, valid_data


def _split_last(data: TokenizedCorpus) -> tuple[TokenizedCorpus, TokenizedCorpus]:
    last = np.array(data.sentence(len(data) - 1))
    valid = TokenizedCorpus(np.array([0, len(last)], dtype=np.int64), last)
    if len(data) == 1:
        return data, valid
    cut = int(data.offsets[-2])
    tokens = data.token_ids[:cut] if data.token_ids is not None else None
    return TokenizedCorpus(data.offsets[:-1], tokens, data.token_file), valid
