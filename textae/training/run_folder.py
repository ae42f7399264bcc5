"""The run folder before training starts: create it, reopen it for --resume, or discard it.

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
from pathlib import Path

from textae.config import ModelConfig, TrainConfig, from_dict, load_json, save_json, to_dict
from textae.errors import TextaeError
from textae.training.checkpoint import (
    BEST_FILE,
    CHECKPOINT_FILE,
    CONFIG_FILE,
    LOSS_PLOT_FILE,
    METRICS_FILE,
    SUMMARY_FILE,
    TOKENIZER_FILE,
    TOKENS_DIR,
)

# Progress made before the first checkpoint cannot be resumed: a restart replays it from step 0.
UNSAVED_PROGRESS = (METRICS_FILE, BEST_FILE, LOSS_PLOT_FILE, SUMMARY_FILE)


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
    return (
        (entry.name.startswith(".") and entry.name.endswith(".tmp"))
        or entry.name.endswith(".building")
        or entry.name == ".write-test"
    )
