"""The training loop: epochs of optimisation steps, and the records, validations and checkpoints
that fall due between them.

The loop knows the model only through `forward(input_ids, lengths, targets, ratio) -> (logits, loss)`,
`encode` and `greedy_decode`. What it calls lives beside it: the data (`data`), validation
(`validation`), checkpoints and resume (`checkpoint`, `run_folder`), metrics.jsonl (`metrics`),
what the user sees (`reporting`) and heap trimming (`memory`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from textae import faults
from textae.config import ModelConfig, TrainConfig, parse_noise
from textae.corpus import resolve_paths
from textae.errors import NoSpaceError, TextaeError
from textae.tokenizer import special_token_ids
from textae.training import distributed
from textae.training.budget import TimeBudget
from textae.training.checkpoint import (
    METRICS_FILE,
    TrainingState,
    restore_training_checkpoint,
    rng_state,
    save_best,
    save_training_checkpoint,
)
from textae.training.data import collate, epoch_batch_groups, prepare_data
from textae.training.memory import TRIM_EVERY, release_freed_memory
from textae.training.metrics import MetricsLog, Throughput
from textae.training.model import Autoencoder
from textae.training.objective import TrainingObjective, second_view_noise
from textae.training.optimizers import make_optimizer
from textae.training.precision import MasterWeights, native_bf16, resolve_precision
from textae.training.reporting import announce_start, make_progress, show_validation, write_summary
from textae.training.run_folder import (
    clean_for_resume,
    discard_unstarted_run,
    has_checkpoint,
    load_run_configs,
    prepare_new_run_dir,
    save_run_configs,
)
from textae.training.schedules import learning_rate_factor, teacher_forcing_ratio
from textae.training.validation import evaluate

UNPLANNED_STEPS = 1 << 40  # the step count of a time-budgeted run before its pace is measured


def train(
    train_config: TrainConfig,
    model_config: ModelConfig | None = None,
    *,
    resume: bool = False,
    show_progress: bool = True,
    console: Console | None = None,
    stop_at_step: int | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Train (or resume) a run and return its summary. stop_at_step simulates a killed run; clock
    is what the time budget reads (tests pass a fake one).

    resume=True continues from the run folder's checkpoint, or, when the run was stopped before its
    first checkpoint, starts it over with the options saved in its config.json (see run_folder).
    Under torchrun every process calls this: each trains on its own shard of every epoch with
    DistributedDataParallel, and only rank 0 writes files and shows progress.
    """
    faults.reached("start")
    run_dir = Path(train_config.out)
    if resume:
        train_config, model_config = load_run_configs(run_dir)
    else:
        model_config = model_config or ModelConfig()
        train_config.validate()
        model_config.validate()
    resolve_paths(train_config.corpus + ([train_config.valid] if train_config.valid else []))  # fail before writing
    workers = distributed.start(train_config.device)
    try:
        if not workers.is_main:
            console, show_progress = Console(quiet=True), False
        console = console or Console(stderr=True)
        if resume:
            workers.barrier()  # every rank has seen the folder as the killed run left it
            workers.on_main(lambda: clean_for_resume(run_dir))
        else:
            workers.on_main(lambda: prepare_new_run_dir(run_dir, train_config, model_config))
        try:
            trainer = _Trainer(train_config, model_config, run_dir, workers, console, show_progress, resume)
        except TextaeError as exc:
            if not resume and not isinstance(exc, NoSpaceError) and workers.is_main:
                discard_unstarted_run(run_dir)
            raise
        return trainer.run(stop_at_step, clock)
    except NoSpaceError as exc:
        raise NoSpaceError(
            f"{exc}; free some space, then continue with: textae train --resume --out {run_dir}"
        ) from None
    finally:
        distributed.stop(workers)
        # flush-to-zero is process-wide: leave the caller's floats as torch's default (off) had them
        torch.set_flush_denormal(False)


class _Trainer:
    """One training run in one process: setup, then the loop of run()."""

    def __init__(
        self,
        train_config: TrainConfig,
        model_config: ModelConfig,
        run_dir: Path,
        workers: distributed.Workers,
        console: Console,
        show_progress: bool,
        resume: bool,
    ) -> None:
        self.config, self.run_dir, self.workers, self.console = train_config, run_dir, workers, console
        if train_config.num_threads:
            torch.set_num_threads(train_config.num_threads)
        # Recurrent gradients decay into denormal floats, which CPU matmuls handle far more slowly
        # than normal ones (docs/benchmarks.md, "What moved these numbers").
        torch.set_flush_denormal(True)

        self.tokenizer, self.train_data, self.valid_data = prepare_data(train_config, run_dir, resume, console, workers)
        self.model_config = replace(
            model_config, vocab_size=self.tokenizer.get_vocab_size(), max_length=train_config.max_length,
            **special_token_ids(self.tokenizer),
        )  # fmt: skip
        self.model_config.validate()
        # "auto" is decided once, here, and saved: a resumed run keeps the arithmetic it started with
        self.config = train_config = replace(
            train_config, precision=resolve_precision(train_config.precision, workers.device)
        )
        # a resume without a checkpoint starts over, exactly as a fresh run would
        restore = resume and has_checkpoint(run_dir)
        if not restore and workers.is_main:
            save_run_configs(run_dir, train_config, self.model_config)  # now with the tokenizer's sizes and ids

        torch.manual_seed(train_config.seed)  # the same initial weights on every rank
        self.model = Autoencoder(self.model_config).to(workers.device)
        self.weights = MasterWeights(self.model, train_config.precision)
        self.objective = TrainingObjective(
            self.weights.compute, train_config.softmax_samples,
            train_config.contrastive_weight, train_config.contrastive_temperature,
        )  # fmt: skip
        self.forward: torch.nn.Module = self.objective
        if workers.distributed:
            # bf16: DDP wraps the compute copy and all-reduces its bf16 gradients, as it does fp32 ones
            device_ids = [workers.local_rank] if workers.device.type == "cuda" else None
            self.forward = torch.nn.parallel.DistributedDataParallel(self.objective, device_ids=device_ids)
        self.optimizer = make_optimizer(self.model.parameters(), train_config)
        self.steps_per_epoch = len(self._my_batches(0))
        if self.steps_per_epoch == 0:
            raise TextaeError(
                f"{len(self.train_data)} training sentences are too few for {workers.world_size} processes"
            )
        self.time_budget = train_config.time_budget_seconds
        self.total_steps = self._planned_steps()
        # the lambda reads self.total_steps at every step: a time budget re-plans it as the run goes
        schedule, warmup = train_config.lr_schedule, train_config.warmup_steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: learning_rate_factor(schedule, step, warmup, self.total_steps)
        )
        self.state = TrainingState(world_size=workers.world_size)
        if restore:
            self.state = restore_training_checkpoint(run_dir, self.model, self.optimizer, self.scheduler, workers)
            if self.state.planned_steps is not None:
                self.total_steps = self.state.planned_steps
            console.print(f"resuming {run_dir} at step {self.state.step}")
        else:
            if resume:
                console.print(f"restarting {run_dir} from step 0 with its saved options (it had no checkpoint yet)")
            # each rank draws its own dropout masks and sampling coins
            torch.manual_seed(train_config.seed * 1000 + workers.rank)
            announce_start(
                console, train_config, self.model, self.train_data, self.valid_data, self.total_steps, workers
            )
        self.noise = parse_noise(train_config.noise)
        # the contrastive term's second view (None: no second view is built)
        self.second_view = (
            second_view_noise(self.noise, self.model_config.dropout) if train_config.contrastive_weight > 0 else None
        )
        self.metrics = MetricsLog(
            run_dir / METRICS_FILE, keep_through_step=self.state.step if restore else None, writes=workers.is_main
        )
        self.progress = make_progress(console, show_progress)
        if train_config.softmax_samples >= self.model_config.vocab_size:
            # a given tokenizer may be smaller than vocab_size said: each step then draws every
            # token outside its targets, which is the full softmax (sample_candidates clips)
            console.print(
                f"note: softmax_samples {train_config.softmax_samples} covers the whole vocabulary "
                f"({self.model_config.vocab_size} tokens): training uses the full softmax"
            )
        if train_config.precision == "bf16" and not native_bf16(workers.device):
            console.print(f"note: {workers.device} has no native bf16 matmul; bf16 is emulated and slower than fp32")

    def _planned_steps(self) -> int:
        if self.time_budget is None:
            steps = self.config.epochs * self.steps_per_epoch
            return min(steps, self.config.max_steps) if self.config.max_steps else steps
        # a time budget replaces the epoch count; until the step time is measured (within the
        # warm-up), the run plans for max_steps or for no end
        return self.config.max_steps or UNPLANNED_STEPS

    def _my_batches(self, epoch: int) -> list[np.ndarray]:
        """This rank's shard of the epoch: its member of every full group, the same count on every rank.

        The few batches of incomplete groups at pool ends are skipped this epoch; which ones changes
        with the epoch's shuffle.
        """
        world = self.workers.world_size
        groups = epoch_batch_groups(self.train_data.lengths, self.config.batch_size, self.config.seed, epoch, world)
        return [group[self.workers.rank] for group in groups if len(group) == world]

    def run(self, stop_at_step: int | None, clock: Callable[[], float] = time.monotonic) -> dict[str, Any]:
        """Train to the run's end, then validate, checkpoint and summarise; stop_at_step (a simulated
        kill) and Ctrl-C stop earlier, with a checkpoint to resume from."""
        state = self.state
        self.budget = TimeBudget(self.time_budget, state.train_seconds, max_steps=self.config.max_steps, clock=clock)
        shown_total = None if self.total_steps == UNPLANNED_STEPS else self.total_steps
        self.task = self.progress.add_task(
            "train", total=shown_total, completed=state.step, loss=float("nan"), tps=0.0, tf=1.0
        )
        self.throughput = Throughput()
        try:
            with self.progress:
                self._train(stop_at_step)
        except KeyboardInterrupt:
            self._stop_resumably()
            raise
        if stop_at_step is not None and state.step < self.total_steps and not state.stopped_early:
            self._stop_resumably()
            return {"run_dir": str(self.run_dir), "step": state.step, "finished": False}
        return self._finish()

    def _train(self, stop_at_step: int | None) -> None:
        """Epoch after epoch, until the planned steps are taken, early stopping says stop, or stop_at_step."""
        state = self.state
        while state.step < self.total_steps and not state.stopped_early:
            if not self._train_epoch(stop_at_step):
                return
            state.epoch += 1
            state.batch_in_epoch = 0
            if state.epoch >= self.config.epochs and self.time_budget is None:
                return

    def _train_epoch(self, stop_at_step: int | None) -> bool:
        """The rest of this epoch's batches; True when the epoch ran to its end, False when the run
        stopped inside it (the step limit, stop_at_step or early stopping)."""
        state = self.state
        for indices in self._my_batches(state.epoch)[state.batch_in_epoch :]:
            if state.step >= self.total_steps or (stop_at_step is not None and state.step >= stop_at_step):
                return False
            self._train_step(indices)
            if state.stopped_early:
                return False
        return True

    def _train_step(self, indices: np.ndarray) -> None:
        """One step: optimise, then record, validate and checkpoint when they are due."""
        state, config = self.state, self.config
        ratio = teacher_forcing_ratio(
            config.teacher_forcing_schedule, state.step, config.teacher_forcing_start,
            config.teacher_forcing_end, config.teacher_forcing_decay_steps or self.total_steps,
        )  # fmt: skip
        loss, contrastive, tokens = self._optimize(indices, ratio)
        self._follow_budget()
        faults.reached("step")
        if state.step % TRIM_EVERY == 0:
            release_freed_memory()
        state.tokens_seen += tokens
        state.losses_since_record.append(loss)
        if contrastive is not None:
            state.contrastive_since_record.append(contrastive)
        tokens_per_second = self.throughput.add(tokens)
        self.progress.update(self.task, completed=state.step, loss=loss, tps=tokens_per_second, tf=ratio)
        if state.step % config.log_every == 0:
            self._record_training(ratio, tokens_per_second)
        if state.step % config.eval_every == 0 and self._validate():
            state.stopped_early = True
        if state.step % config.checkpoint_every == 0 or state.stopped_early:
            self._checkpoint()

    def _stop_resumably(self) -> None:
        self._checkpoint()
        self.console.print(
            f"stopped at step {self.state.step}; continue with: textae train --resume --out {self.run_dir}"
        )

    def _finish(self) -> dict[str, Any]:
        """The final validation (unless the last step had one), the final checkpoint, and the summary."""
        state, config = self.state, self.config
        if state.validated_step != state.step:
            self._validate()
        self._checkpoint()
        in_sync = self._ranks_in_sync()
        if not self.workers.is_main:
            return {"run_dir": str(self.run_dir), "step": state.step, "finished": True}
        extra = {"processes": self.workers.world_size, "ranks_in_sync": in_sync, "optimizer": config.optimizer,
                 "peak_learning_rate": config.peak_learning_rate, "train_seconds": round(state.train_seconds, 1),
                 "time_budget_seconds": self.time_budget}  # fmt: skip
        return write_summary(self.run_dir, state, self.total_steps, self.console, extra)

    def _optimize(self, indices: np.ndarray, ratio: float) -> tuple[float, float | None, float]:
        """One optimisation step; returns (reconstruction loss, contrastive loss or None, target tokens
        over all ranks). The reconstruction loss is the sampled estimate under softmax_samples."""
        self.model.train()
        cfg = self.model_config
        # noise is a pure function of (seed, step, rank): a resumed run corrupts the same way
        rng = np.random.default_rng([self.config.seed, self.state.step, self.workers.rank])
        batch = collate(self.train_data, indices, cfg.pad_id, cfg.eos_id, self.noise, cfg.unk_id, rng, self.second_view)
        batch = batch.to(self.workers.device)
        self.weights.refresh()  # bf16: round the master weights into the compute copy
        loss, reconstruction, contrastive = self.forward(
            batch.input_ids, batch.lengths, batch.targets, ratio, self.config.scheduled_sampling,
            batch.view_ids, batch.view_lengths,
        )  # fmt: skip
        if not torch.isfinite(loss):
            raise TextaeError(f"loss became {loss.item()} at step {self.state.step}; lower --learning-rate")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.weights.gradients_to_master()  # already averaged over ranks by DDP
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.state.step += 1
        self.state.batch_in_epoch += 1
        contrastive_value = contrastive.item() if contrastive is not None else None
        return reconstruction.item(), contrastive_value, self.workers.sum(float(batch.num_target_tokens))

    def _follow_budget(self) -> None:
        """Re-plan the step count for the time budget; rank 0's plan is every rank's plan."""
        planned = self.budget.observe(self.state.step)
        if self.time_budget is None:
            return
        planned = self.workers.broadcast(planned)
        if planned is not None and planned != self.total_steps:
            self.total_steps = self.state.planned_steps = planned
            self.progress.update(self.task, total=planned)

    def _record_training(self, ratio: float, tokens_per_second: float) -> None:
        """A "train" record: the mean loss since the last one; it starts the next throughput window.

        "loss" is the reconstruction cross-entropy (as in runs without the contrastive term, so
        their curves compare); "contrastive_loss" the InfoNCE term before its weight, when on."""
        state = self.state
        record = {"type": "train", "step": state.step, "epoch": state.epoch,
                  "loss": float(np.mean(state.losses_since_record)),
                  "learning_rate": self.scheduler.get_last_lr()[0], "teacher_forcing_ratio": ratio,
                  "tokens_per_second": tokens_per_second}  # fmt: skip
        if state.contrastive_since_record:
            record["contrastive_loss"] = float(np.mean(state.contrastive_since_record))
        self.metrics.write(record)
        self.throughput.restart()
        state.losses_since_record, state.contrastive_since_record = [], []

    def _validate(self) -> bool:
        """Validate on rank 0 and keep the best weights; True (on every rank) when early stopping says stop."""
        state = self.state
        state.validated_step = state.step
        stop = False
        started = self.budget.spent  # as of the step just taken: the fake clocks of the tests tick per reading
        if self.workers.is_main:
            result = evaluate(self.model, self.valid_data, self.config.free_running_sentences)
            faults.reached("validate")
            self.metrics.write({"type": "valid", "step": state.step, "epoch": state.epoch, **result})
            improved = result["loss"] < state.best_valid_loss - 1e-4
            if improved:
                state.best_valid_loss, state.best_step = result["loss"], state.step
                state.validations_without_improvement = 0
                save_best(self.run_dir, self.model, self.model_config, state.step, result)
            else:
                state.validations_without_improvement += 1
            show_validation(self.progress.console, state.step, result, improved)
            stop = bool(self.config.patience) and state.validations_without_improvement >= self.config.patience
        release_freed_memory()  # evaluation batches are the largest allocations of a run
        self.budget.validation_took(self.budget.read_clock() - started)
        decision = self.workers.broadcast(
            (stop, state.best_valid_loss, state.best_step, state.validations_without_improvement)
        )
        stop, state.best_valid_loss, state.best_step, state.validations_without_improvement = decision
        return stop

    def _checkpoint(self) -> None:
        self.state.train_seconds = self.budget.spent  # as of the last step or validation
        rng_states = self.workers.gather(rng_state(self.workers.device))
        if self.workers.is_main:
            save_training_checkpoint(
                self.run_dir, model=self.model, optimizer=self.optimizer, scheduler=self.scheduler,
                rng_states=rng_states, state=self.state, model_config=self.model_config, train_config=self.config,
            )  # fmt: skip
        self.workers.barrier()

    def _ranks_in_sync(self) -> bool:
        """DDP keeps replicas identical; check it once at the end (cheap, and it catches a broken setup)."""
        checksum = float(sum(p.detach().double().sum().item() for p in self.model.parameters()))
        checksums = self.workers.gather(checksum)
        return all(value == checksums[0] for value in checksums)
