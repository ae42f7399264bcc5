"""The training loop: data, schedules, validation, checkpoints, resume, progress and metrics.

The loop knows the model only through `forward(input_ids, lengths, targets, ratio) -> (logits, loss)`,
`encode` and `greedy_decode`.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from tokenizers import Tokenizer

from textae.atomic import atomic_write_text
from textae.checkpoint import (
    BEST_FILE,
    CHECKPOINT_FILE,
    CONFIG_FILE,
    LOSS_PLOT_FILE,
    METRICS_FILE,
    SUMMARY_FILE,
    TOKENIZER_FILE,
    is_run_dir,
    load_checkpoint,
    save_checkpoint,
)
from textae.config import ModelConfig, TrainConfig, from_dict, load_json, save_json, to_dict
from textae.corpus import iter_corpus, resolve_paths
from textae.data import TokenizedCorpus, collate, epoch_batches, sorted_batches, tokenize_corpus, tokenize_with_split
from textae.errors import TextaeError
from textae.model import Autoencoder, count_parameters
from textae.schedules import learning_rate_factor, teacher_forcing_ratio
from textae.tokenizer import decode_batch, load_tokenizer, special_token_ids, train_tokenizer

EVAL_BATCH_SIZE = 128


@dataclass
class TrainingState:
    """Where a run stands; everything here goes into checkpoint.pt."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0  # batches of `epoch` already consumed
    best_valid_loss: float = math.inf
    best_step: int = -1
    validations_without_improvement: int = 0
    tokens_seen: int = 0
    stopped_early: bool = False


def train(
    train_config: TrainConfig,
    model_config: ModelConfig | None = None,
    *,
    resume: bool = False,
    show_progress: bool = True,
    console: Console | None = None,
    stop_at_step: int | None = None,
) -> dict[str, Any]:
    """Train (or resume) a run and return its summary. stop_at_step simulates a killed run."""
    console = console or Console(stderr=True)
    if resume:
        run_dir = Path(train_config.out)
        train_config, model_config = _load_run_configs(run_dir)
    else:
        model_config = model_config or ModelConfig()
        train_config.validate()
        run_dir = _prepare_new_run_dir(Path(train_config.out))
    if train_config.num_threads:
        torch.set_num_threads(train_config.num_threads)
    # Recurrent gradients decay into denormal floats, which slow CPU matmuls by up to 10x.
    torch.set_flush_denormal(True)

    tokenizer, train_data, valid_data = _prepare_data(train_config, run_dir, resume, console)
    model_config = replace(
        model_config,
        vocab_size=tokenizer.get_vocab_size(),
        max_length=train_config.max_length,
        **special_token_ids(tokenizer),
    )
    model_config.validate()
    if not resume:
        save_json(run_dir / CONFIG_FILE, {"model": to_dict(model_config), "train": to_dict(train_config)})

    torch.manual_seed(train_config.seed)
    model = Autoencoder(model_config)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=train_config.learning_rate, weight_decay=train_config.weight_decay
    )
    batches_per_epoch = math.ceil(len(train_data) / train_config.batch_size)
    total_steps = train_config.epochs * batches_per_epoch
    if train_config.max_steps:
        total_steps = min(total_steps, train_config.max_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: learning_rate_factor(train_config.lr_schedule, step, train_config.warmup_steps, total_steps),
    )
    state = TrainingState()
    if resume:
        state = _restore(run_dir, model, optimizer, scheduler)
        console.print(f"resuming {run_dir} at step {state.step}")
    else:
        console.print(
            f"training {count_parameters(model):,} parameters on {len(train_data):,} sentences "
            f"({train_data.num_tokens:,} tokens), validating on {len(valid_data):,}; {total_steps:,} steps"
        )

    decay_steps = train_config.teacher_forcing_decay_steps or total_steps
    metrics = _MetricsLog(run_dir / METRICS_FILE, keep_through_step=state.step if resume else None)
    last_validated_step = -1
    interrupted = False
    progress = _make_progress(console, show_progress)
    task = progress.add_task("train", total=total_steps, completed=state.step, loss=float("nan"), tps=0.0, tf=1.0)
    window_tokens, window_start = 0, time.perf_counter()

    def checkpoint() -> None:
        save_checkpoint(run_dir / CHECKPOINT_FILE, _checkpoint_state(model, optimizer, scheduler, state, model_config, train_config))

    def validate() -> bool:
        """Run validation, keep the best weights; True when early stopping says stop."""
        nonlocal last_validated_step
        last_validated_step = state.step
        result = evaluate(model, valid_data, train_config.free_running_sentences)
        metrics.write({"type": "valid", "step": state.step, "epoch": state.epoch, **result})
        improved = result["loss"] < state.best_valid_loss - 1e-4
        if improved:
            state.best_valid_loss, state.best_step = result["loss"], state.step
            state.validations_without_improvement = 0
            save_checkpoint(
                run_dir / BEST_FILE,
                {"model": model.state_dict(), "model_config": to_dict(model_config), "step": state.step, "metrics": result},
            )
        else:
            state.validations_without_improvement += 1
        progress.console.print(
            f"step {state.step:>6}  valid loss {result['loss']:.3f}  token acc {result['token_accuracy']:.3f}  "
            f"free-running token acc {result['free_running_token_accuracy']:.3f}  "
            f"exact {result['free_running_exact_match']:.3f}" + ("  (best)" if improved else "")
        )
        return bool(train_config.patience) and state.validations_without_improvement >= train_config.patience

    try:
        with progress:
            while state.step < total_steps and state.epoch < train_config.epochs and not state.stopped_early:
                batches = epoch_batches(train_data.lengths, train_config.batch_size, train_config.seed, state.epoch)
                for indices in batches[state.batch_in_epoch :]:
                    if state.step >= total_steps or (stop_at_step is not None and state.step >= stop_at_step):
                        break
                    model.train()
                    batch = collate(train_data, indices, model_config.pad_id, model_config.eos_id)
                    ratio = teacher_forcing_ratio(
                        train_config.teacher_forcing_schedule,
                        state.step,
                        train_config.teacher_forcing_start,
                        train_config.teacher_forcing_end,
                        decay_steps,
                    )
                    _, loss = model(
                        batch.input_ids,
                        batch.lengths,
                        batch.targets,
                        teacher_forcing_ratio=ratio,
                        sampling=train_config.scheduled_sampling,
                    )
                    if not torch.isfinite(loss):
                        raise TextaeError(f"loss became {loss.item()} at step {state.step}; lower --learning-rate")
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(model.parameters(), train_config.grad_clip)
                    optimizer.step()
                    scheduler.step()
                    state.step += 1
                    state.batch_in_epoch += 1
                    state.tokens_seen += batch.num_target_tokens
                    window_tokens += batch.num_target_tokens

                    elapsed = time.perf_counter() - window_start
                    tokens_per_second = window_tokens / elapsed if elapsed > 0 else 0.0
                    progress.update(task, completed=state.step, loss=loss.item(), tps=tokens_per_second, tf=ratio)
                    if state.step % train_config.log_every == 0:
                        metrics.write(
                            {
                                "type": "train",
                                "step": state.step,
                                "epoch": state.epoch,
                                "loss": loss.item(),
                                "learning_rate": scheduler.get_last_lr()[0],
                                "teacher_forcing_ratio": ratio,
                                "tokens_per_second": tokens_per_second,
                            }
                        )
                        window_tokens, window_start = 0, time.perf_counter()
                    if state.step % train_config.eval_every == 0 and validate():
                        state.stopped_early = True
                    if state.step % train_config.checkpoint_every == 0 or state.stopped_early:
                        checkpoint()
                    if state.stopped_early:
                        break
                else:
                    # the epoch ran to its end
                    state.epoch += 1
                    state.batch_in_epoch = 0
                    checkpoint()
                    continue
                break  # step limit, simulated kill or early stop inside the epoch
    except KeyboardInterrupt:
        interrupted = True

    if interrupted or (stop_at_step is not None and state.step < total_steps and not state.stopped_early):
        checkpoint()
        message = f"stopped at step {state.step}; continue with: textae train --resume --out {run_dir}"
        console.print(message)
        if interrupted:
            raise KeyboardInterrupt
        return {"run_dir": str(run_dir), "step": state.step, "finished": False}

    if last_validated_step != state.step:
        validate()
    checkpoint()
    return _finish(run_dir, state, total_steps, console)


def evaluate(model: Autoencoder, data: TokenizedCorpus, free_running_sentences: int) -> dict[str, float]:
    """Teacher-forced loss and token accuracy, and free-running greedy reconstruction next to them.

    The gap between the two accuracies is the exposure bias the teacher-forcing schedule fights.
    """
    config = model.config
    model.eval()
    total_loss = total_tokens = correct = 0.0
    with torch.no_grad():
        for indices in sorted_batches(data.lengths, EVAL_BATCH_SIZE):
            batch = collate(data, indices, config.pad_id, config.eos_id)
            logits, loss = model(batch.input_ids, batch.lengths, batch.targets)
            mask = batch.targets != config.pad_id
            tokens = int(mask.sum())
            total_loss += loss.item() * tokens
            total_tokens += tokens
            correct += int(((logits.argmax(-1) == batch.targets) & mask).sum())
        free_correct = free_tokens = exact = sentences = 0
        subset = np.arange(min(free_running_sentences, len(data)))
        for start in range(0, len(subset), EVAL_BATCH_SIZE):
            indices = subset[start : start + EVAL_BATCH_SIZE]
            batch = collate(data, indices, config.pad_id, config.eos_id)
            sentence_embedding = model.encode(batch.input_ids, batch.lengths)
            predicted = model.greedy_decode(sentence_embedding, max_length=batch.targets.size(1))
            width = batch.targets.size(1)
            predicted = torch.nn.functional.pad(predicted, (0, width - predicted.size(1)), value=config.pad_id)
            mask = batch.targets != config.pad_id
            matches = (predicted == batch.targets) & mask
            free_correct += int(matches.sum())
            free_tokens += int(mask.sum())
            exact += int((matches.sum(1) == mask.sum(1)).sum())
            sentences += len(indices)
    return {
        "loss": total_loss / max(total_tokens, 1),
        "perplexity": math.exp(min(total_loss / max(total_tokens, 1), 50.0)),
        "token_accuracy": correct / max(total_tokens, 1),
        "free_running_token_accuracy": free_correct / max(free_tokens, 1),
        "free_running_exact_match": exact / max(sentences, 1),
    }


def reconstruct(model: Autoencoder, tokenizer: Tokenizer, sentences: list[str]) -> list[str]:
    """Greedy reconstructions of a few sentences with the torch model (for summaries and demos)."""
    from textae.tokenizer import encode_batch

    model.eval()
    data = tokenize_corpus(sentences, tokenizer, model.config.max_length)
    batch = collate(data, np.arange(len(data)), model.config.pad_id, model.config.eos_id)
    predicted = model.greedy_decode(model.encode(batch.input_ids, batch.lengths))
    del encode_batch
    return decode_batch(tokenizer, [_until_eos(row.tolist(), model.config.eos_id) for row in predicted])


def _until_eos(ids: list[int], eos_id: int) -> list[int]:
    return ids[: ids.index(eos_id)] if eos_id in ids else ids


# --- set-up ------------------------------------------------------------------------------------


def _prepare_new_run_dir(run_dir: Path) -> Path:
    if (run_dir / CHECKPOINT_FILE).exists() or (run_dir / CONFIG_FILE).exists():
        raise TextaeError(f"{run_dir}: already holds a run; continue it with --resume or choose another --out")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except FileExistsError:
        raise TextaeError(f"{run_dir}: exists and is not a folder") from None
    except OSError as exc:
        raise TextaeError(f"{run_dir}: cannot write the run folder ({exc.strerror})") from None
    return run_dir


def _load_run_configs(run_dir: Path) -> tuple[TrainConfig, ModelConfig]:
    if not run_dir.is_dir():
        raise TextaeError(f"{run_dir}: no such run folder to resume")
    if not is_run_dir(run_dir) or not (run_dir / CHECKPOINT_FILE).is_file():
        raise TextaeError(f"{run_dir}: not a textae run folder (needs {CONFIG_FILE}, {TOKENIZER_FILE}, {CHECKPOINT_FILE})")
    saved = load_json(run_dir / CONFIG_FILE)
    try:
        return from_dict(TrainConfig, saved["train"], where=str(run_dir / CONFIG_FILE)), from_dict(
            ModelConfig, saved["model"], where=str(run_dir / CONFIG_FILE)
        )
    except (KeyError, TypeError):
        raise TextaeError(f"{run_dir / CONFIG_FILE}: not a textae run config") from None


def _prepare_data(
    config: TrainConfig, run_dir: Path, resume: bool, console: Console
) -> tuple[Tokenizer, TokenizedCorpus, TokenizedCorpus]:
    paths = resolve_paths(config.corpus)
    valid_paths = resolve_paths([config.valid]) if config.valid else []
    tokenizer_path = run_dir / TOKENIZER_FILE
    if resume:
        tokenizer = load_tokenizer(tokenizer_path)
    elif config.tokenizer:
        tokenizer = load_tokenizer(Path(config.tokenizer))
        shutil.copyfile(config.tokenizer, tokenizer_path)
    else:
        with console.status("training the tokenizer"):
            tokenizer = train_tokenizer(iter_corpus(paths), config.vocab_size)
        if tokenizer.get_vocab_size() <= len(special_token_ids(tokenizer)):
            raise TextaeError(f"{', '.join(map(str, paths))}: holds no text to train on")
        tokenizer.save(str(tokenizer_path))
    with console.status("tokenizing the corpus"):
        if valid_paths:
            train_data = tokenize_corpus(iter_corpus(paths), tokenizer, config.max_length)
            valid_data = tokenize_corpus(iter_corpus(valid_paths), tokenizer, config.max_length)
        else:
            train_data, valid_data = tokenize_with_split(
                iter_corpus(paths), tokenizer, config.max_length, config.valid_fraction, config.max_valid_sentences, config.seed
            )
    where = ", ".join(map(str, paths))
    if len(train_data) + len(valid_data) == 0:
        raise TextaeError(f"{where}: no sentences (the corpus is empty or holds only empty lines)")
    if len(valid_data) == 0:
        # a corpus too small for the fraction still gets one validation sentence
        train_data, valid_data = _split_last(train_data)
    if len(train_data) < config.batch_size:
        raise TextaeError(
            f"{where}: only {len(train_data)} training sentences, fewer than one batch of {config.batch_size}; "
            "lower --batch-size or add text"
        )
    return tokenizer, train_data, valid_data


def _split_last(data: TokenizedCorpus) -> tuple[TokenizedCorpus, TokenizedCorpus]:
    cut = int(data.offsets[-2]) if len(data) > 1 else 0
    train = TokenizedCorpus(data.token_ids[:cut], data.offsets[:-1])
    valid = TokenizedCorpus(data.token_ids[cut:], data.offsets[-2:] - data.offsets[-2])
    return (train, valid) if len(data) > 1 else (data, data)


# --- checkpoints -------------------------------------------------------------------------------


def _checkpoint_state(
    model: Autoencoder,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    state: TrainingState,
    model_config: ModelConfig,
    train_config: TrainConfig,
) -> dict[str, Any]:
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "torch_rng_state": torch.get_rng_state(),
        "training_state": {k: v for k, v in vars(state).items()},
        "model_config": to_dict(model_config),
        "train_config": to_dict(train_config),
    }


def _restore(
    run_dir: Path,
    model: Autoencoder,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> TrainingState:
    path = run_dir / CHECKPOINT_FILE
    saved = load_checkpoint(path)
    try:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        torch.set_rng_state(saved["torch_rng_state"])
        return TrainingState(**saved["training_state"])
    except (KeyError, RuntimeError, TypeError, ValueError) as exc:
        raise TextaeError(f"{path}: checkpoint does not fit this run ({str(exc).splitlines()[0][:200]})") from None


# --- reporting ---------------------------------------------------------------------------------


class _MetricsLog:
    """metrics.jsonl, appended a line at a time; on resume, records past the checkpoint are dropped."""

    def __init__(self, path: Path, keep_through_step: int | None) -> None:
        self.path = path
        if keep_through_step is not None and path.exists():
            kept = [line for line in path.read_text(encoding="utf-8").splitlines() if _step_of(line) <= keep_through_step]
            atomic_write_text(path, "".join(line + "\n" for line in kept))

    def write(self, record: dict[str, Any]) -> None:
        # opened per record: records are rare, and a killed run leaves at most one partial line
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")


def _step_of(line: str) -> int:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return 1 << 62  # an unreadable (half-written) line is dropped


def _make_progress(console: Console, enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]step"),
        MofNCompleteColumn(),
        BarColumn(),
        TextColumn("loss {task.fields[loss]:.3f}"),
        TextColumn("{task.fields[tps]:,.0f} tok/s"),
        TextColumn("teacher forcing {task.fields[tf]:.2f}"),
        TimeRemainingColumn(),
        console=console,
        disable=not enabled,
        transient=False,
    )


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _finish(run_dir: Path, state: TrainingState, total_steps: int, console: Console) -> dict[str, Any]:
    records = read_metrics(run_dir)
    valid = [r for r in records if r["type"] == "valid"]
    best = next((r for r in valid if r["step"] == state.best_step), valid[-1] if valid else {})
    plot_path = run_dir / LOSS_PLOT_FILE
    try:
        from textae.plots import plot_losses

        plot_losses(records, plot_path)
    except ImportError:
        plot_path = None  # type: ignore[assignment]
    summary = {
        "run_dir": str(run_dir),
        "finished": True,
        "steps": state.step,
        "total_steps": total_steps,
        "stopped_early": state.stopped_early,
        "tokens_seen": state.tokens_seen,
        "best_step": state.best_step,
        "best_valid": {k: v for k, v in best.items() if k not in ("type", "epoch")},
        "files": {
            "best": str(run_dir / BEST_FILE),
            "checkpoint": str(run_dir / CHECKPOINT_FILE),
            "metrics": str(run_dir / METRICS_FILE),
            "loss_plot": str(plot_path) if plot_path else None,
            "tokenizer": str(run_dir / TOKENIZER_FILE),
        },
    }
    save_json(run_dir / SUMMARY_FILE, summary)
    table = Table(title=f"textae run {run_dir}", show_header=False)
    table.add_row("steps", f"{state.step:,}" + (" (early stop)" if state.stopped_early else ""))
    for key in ("loss", "token_accuracy", "free_running_token_accuracy", "free_running_exact_match"):
        if key in best:
            table.add_row(f"best valid {key.replace('_', ' ')}", f"{best[key]:.4f}")
    table.add_row("best step", str(state.best_step))
    for name, path in summary["files"].items():
        if path:
            table.add_row(name, path)
    console.print(table)
    return summary
