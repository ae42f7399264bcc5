"""Configuration dataclasses and their JSON round trip (stdlib only, shared by both sides)."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import json
import re
import textwrap
import tokenize
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from textae.errors import TextaeError

PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, UNK_TOKEN = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS = (PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, UNK_TOKEN)  # ids 0, 1, 2, 3 in this order

CELLS = ("lstm", "gru", "rnn")
POOLINGS = ("final", "mean", "max")
# What the encoder's `features` output holds: vector+tokens, the sentence vector beside the mean,
# max and min over each sentence's token embeddings (the bottom of the encoder); or the mean and
# max of its token embeddings, of its top layer's states, or of both side by side
FEATURE_SOURCES = ("vector+tokens", "tokens", "states", "states+tokens")
TEACHER_FORCING_SCHEDULES = ("constant", "linear", "exponential", "inverse_sigmoid")
LR_SCHEDULES = ("cosine", "constant")
SCHEDULED_SAMPLING_MODES = ("parallel", "step")
TRAINING_PRECISIONS = ("auto", "fp32", "bf16")
OPTIMIZERS = ("adamw", "adam", "sgd")
# What a run gets when it sets no --learning-rate / --weight-decay: optimizer -> (peak learning rate,
# weight decay). SGD uses Nesterov momentum 0.9 (a steady-state step 10x the learning rate) under
# the same clipping and schedule; of 0.03, 0.1, 0.3 and 1.0, 0.3 gave the lowest validation loss
# after 300 steps (5.25, 3.95, 2.52, 2.82; AdamW at 2e-3: 1.93), on tatoeba with a 128/256 LSTM.
# Decoupled weight decay belongs to AdamW; for Adam and SGD it would be an L2 term, so none.
OPTIMIZER_DEFAULTS: dict[str, tuple[float, float]] = {"adamw": (2e-3, 0.01), "adam": (2e-3, 0.0), "sgd": (0.3, 0.0)}

C = TypeVar("C")


@dataclass
class ModelConfig:
    """Everything needed to rebuild the network; saved in every checkpoint and export manifest."""

    vocab_size: int = 2000  # size of the tokenizer's vocabulary (the softmax width)
    embedding_dim: int = 256  # token embedding width, shared by encoder and decoder
    hidden_size: int = 512  # recurrent state width of encoder and decoder
    latent_dim: int = 256  # width of the sentence vector
    num_layers: int = 1  # stacked recurrent layers in encoder and decoder
    cell: str = "lstm"  # recurrent cell: lstm, gru or rnn
    bidirectional: bool = False  # run the encoder in both directions
    dropout: float = 0.0  # dropout on embeddings and between layers (training only)
    tie_embeddings: bool = True  # reuse the input embedding as the output projection
    pooling: str = "final"  # sentence vector from the final state, or mean/max over encoder states
    # issue 22 measured the token embeddings' mean and max, whitened, above the top states' (a
    # 6-minute screen's export, AMD EPYC with AVX-512 VNNI, fp32: STS-B dev 74.0 vs 69.8, SICK trial
    # 62.4 vs 56.2, probes 71.7 vs 67.5; adding the states lowered all three), and on the 30-minute
    # final's export (vocabulary 2000, VNNI, fp32) the sentence vector beside the tokens' mean, max
    # and min, each block whitened on its own: probes 73.5 against the mean and max's 72.1 (Doc2Vec's
    # best 72.8), for 0.8 less STS-B dev (74.0) and 0.2 less SICK trial (62.4), both above Doc2Vec's
    feature_source: str = "vector+tokens"  # what the encoder's features output holds: vector+tokens (the sentence vector, and the mean, max and min of the token embeddings), tokens (mean and max of the token embeddings), states (of the top layer's states) or states+tokens (both)
    reverse_input: bool = True  # encoder reads each sentence back to front, so the decoder's first words were read last (Sutskever et al. 2014)
    max_length: int = 64  # longest sentence in tokens (longer ones are truncated)
    pad_id: int = 0  # id of <pad>
    bos_id: int = 1  # id of <bos>, the decoder's first input
    eos_id: int = 2  # id of <eos>, the decoder's last target
    unk_id: int = 3  # id of <unk> (byte-level BPE never needs it; kept for foreign tokenizers)

    @property
    def feature_dim(self) -> int:
        """Width of the encoder's features: the sum of feature_blocks."""
        return sum(self.feature_blocks)

    @property
    def feature_blocks(self) -> tuple[int, ...]:
        """The widths of the features' blocks, in their order: the sentence vector (Z), the states'
        mean and max (D * H each), the token embeddings' mean, max [and min] (E each), where read."""
        vector = (self.latent_dim,) if self.features_read_vector else ()
        states = (2 if self.bidirectional else 1) * self.hidden_size
        return (
            vector
            + ((states, states) if self.features_read_states else ())
            + ((self.embedding_dim,) * len(self.token_pools) if self.features_read_tokens else ())
        )

    @property
    def features_read_vector(self) -> bool:
        """Whether the features begin with the sentence vector. Its blocks differ in scale and
        meaning, so the export whitens each block on its own (textae.runtime.postprocess)."""
        return self.feature_source.startswith("vector")

    @property
    def features_read_states(self) -> bool:
        """Whether the features pool the top layer's states."""
        return "states" in self.feature_source

    @property
    def features_read_tokens(self) -> bool:
        """Whether the features pool the token embeddings."""
        return "tokens" in self.feature_source

    @property
    def token_pools(self) -> tuple[str, ...]:
        """How the features pool the token embeddings: beside the sentence vector, their min too."""
        return ("mean", "max", "min") if self.features_read_vector else ("mean", "max")

    def validate(self) -> None:
        _check_choice("cell", self.cell, CELLS)
        _check_choice("pooling", self.pooling, POOLINGS)
        _check_choice("feature_source", self.feature_source, FEATURE_SOURCES)
        for name in ("vocab_size", "embedding_dim", "hidden_size", "latent_dim", "num_layers", "max_length"):
            _check_positive(name, getattr(self, name))
        if not 0.0 <= self.dropout < 1.0:
            raise TextaeError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.vocab_size <= max(self.pad_id, self.bos_id, self.eos_id, self.unk_id):
            raise TextaeError(f"vocab_size {self.vocab_size} is too small to hold the special tokens")


# Set by training, not by the user: the vocabulary and max_length come from the TrainConfig and the
# tokenizer, the special token ids from the tokenizer (so these are not `textae train` options).
DERIVED_MODEL_FIELDS = ("vocab_size", "max_length", "pad_id", "bos_id", "eos_id", "unk_id")


@dataclass
class TrainConfig:
    """How to train; saved as config.json in the run folder and inside every checkpoint."""

    corpus: list[str] = field(default_factory=list)  # files or globs, plain text or .gz, one sentence a line
    out: str = "runs/textae"  # run folder: checkpoints, metrics, tokenizer, plots
    valid: str | None = None  # a separate validation file (default: hold out valid_fraction of the corpus)
    valid_fraction: float = 0.05  # share of the corpus held out for validation when valid is not given
    max_valid_sentences: int = 2000  # cap on the held-out set so validation stays quick
    min_valid_sentences: int = 200  # a small corpus holds out this many (at most a fifth of it): the export's p99 flag needs 99
    free_running_sentences: int = 256  # validation sentences decoded greedily without teacher forcing
    tokenizer: str | None = None  # reuse this tokenizer.json instead of training one
    vocab_size: int = 2000  # vocabulary size of a newly trained tokenizer
    max_length: int = 64  # truncate sentences to this many tokens
    batch_size: int = 128  # sentences per optimisation step (large batches keep 2 CPU cores busy)
    epochs: int = 10  # passes over the training data (the run also stops at max_steps or early stopping)
    max_steps: int | None = None  # stop after this many optimisation steps
    time_budget: str | None = None  # train this long (30m, 2h, 1h30m) instead of for the epochs; the schedule ends at the budget
    optimizer: str = "adamw"  # adamw, adam or sgd (SGD with Nesterov momentum 0.9)
    learning_rate: float | None = None  # peak learning rate (default: 2e-3 for adamw and adam, 0.3 for sgd)
    weight_decay: float | None = None  # weight decay (default: 0.01, decoupled, for adamw; 0 for adam and sgd)
    warmup_steps: int = 100  # linear learning-rate warm-up steps
    lr_schedule: str = "cosine"  # after warm-up: cosine decay to 10 % of the peak, or constant
    grad_clip: float = 1.0  # clip the global gradient norm to this value
    teacher_forcing_schedule: str = "linear"  # how the gold-token probability decays: constant, linear, exponential or inverse_sigmoid (Bengio et al. 2015)
    teacher_forcing_start: float = 1.0  # probability of feeding the gold token at step 0
    teacher_forcing_end: float = 1.0  # probability the schedule decays to (1.0: always the gold token, no scheduled sampling)
    teacher_forcing_decay_steps: int | None = None  # steps to reach the end value (default: the whole run)
    scheduled_sampling: str = "parallel"  # feed predictions step by step ("step", Bengio et al.) or in two parallel passes ("parallel", faster)
    noise: str = ""  # denoising input corruption, e.g. "delete:0.1,swap:0.1,mask:0.1" (targets stay clean)
    softmax_samples: int = 0  # training only: score each step's targets against the batch's target tokens plus this many sampled negatives instead of the whole vocabulary (0: the full softmax; validation always uses it)
    contrastive_weight: float = 0.0  # add this times an InfoNCE loss between two views of each sentence's vector (SimCSE-style; 0: off)
    contrastive_temperature: float = 0.05  # the InfoNCE temperature: cosine similarities are divided by it
    eval_every: int = 500  # validate every this many steps
    patience: int = 5  # stop after this many validations without improvement (0 disables)
    checkpoint_every: int = 200  # write the resumable checkpoint every this many steps
    seed: int = 0  # seeds data order, initialisation, dropout and sampling
    num_threads: int | None = None  # torch intra-op threads (default: torch's choice)
    device: str = "auto"  # auto (cuda when available), cpu or cuda
    precision: str = "auto"  # training arithmetic: fp32, bf16 (fp32 master weights), or auto: bf16 where matmuls are native bf16
    log_every: int = 20  # steps between metrics.jsonl training records

    @property
    def peak_learning_rate(self) -> float:
        """The learning rate the schedule starts from: the one given, else the optimizer's default."""
        return self.learning_rate if self.learning_rate is not None else OPTIMIZER_DEFAULTS[self.optimizer][0]

    @property
    def resolved_weight_decay(self) -> float:
        return self.weight_decay if self.weight_decay is not None else OPTIMIZER_DEFAULTS[self.optimizer][1]

    @property
    def time_budget_seconds(self) -> float | None:
        return parse_duration(self.time_budget, "time_budget") if self.time_budget else None

    def validate(self) -> None:
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("teacher_forcing_schedule", self.teacher_forcing_schedule, TEACHER_FORCING_SCHEDULES)
        _check_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        _check_choice("scheduled_sampling", self.scheduled_sampling, SCHEDULED_SAMPLING_MODES)
        _check_choice("precision", self.precision, TRAINING_PRECISIONS)
        for name in ("vocab_size", "max_length", "batch_size", "epochs", "eval_every", "checkpoint_every", "log_every"):
            _check_positive(name, getattr(self, name))
        for name in ("max_steps", "teacher_forcing_decay_steps", "num_threads"):
            value = getattr(self, name)
            if value is not None:
                _check_positive(name, value)
        if self.min_valid_sentences < 0:
            raise TextaeError(f"min_valid_sentences must be non-negative, got {self.min_valid_sentences}")
        if not 0.0 < self.valid_fraction < 1.0:
            raise TextaeError(f"valid_fraction must be between 0 and 1, got {self.valid_fraction}")
        for name in ("teacher_forcing_start", "teacher_forcing_end"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise TextaeError(f"{name} must be in [0, 1], got {value}")
        if self.learning_rate is not None and not self.learning_rate > 0:
            raise TextaeError(f"learning_rate must be positive, got {self.learning_rate}")
        self.time_budget_seconds  # noqa: B018 (parses, raising on a malformed duration)
        if self.vocab_size < 300:
            # byte-level BPE needs its 256 byte symbols plus the special tokens
            raise TextaeError(f"vocab_size must be at least 300 for a byte-level tokenizer, got {self.vocab_size}")
        parse_noise(self.noise)
        if not isinstance(self.softmax_samples, int) or self.softmax_samples < 0:
            raise TextaeError(f"softmax_samples must be 0 (the full softmax) or a positive integer, got {self.softmax_samples!r}")
        if self.softmax_samples >= self.vocab_size:
            raise TextaeError(
                f"softmax_samples {self.softmax_samples} must be smaller than vocab_size {self.vocab_size} "
                "(use 0 for the full softmax)"
            )
        if self.contrastive_weight < 0:
            raise TextaeError(f"contrastive_weight must be non-negative, got {self.contrastive_weight}")
        if not self.contrastive_temperature > 0:
            raise TextaeError(f"contrastive_temperature must be positive, got {self.contrastive_temperature}")
        if self.grad_clip <= 0 or self.resolved_weight_decay < 0 or self.warmup_steps < 0 or self.patience < 0:
            raise TextaeError("grad_clip must be positive; weight_decay, warmup_steps and patience non-negative")


NOISE_KINDS = ("delete", "swap", "mask")


def parse_noise(spec: str) -> dict[str, float]:
    """"delete:0.1,swap:0.1,mask:0.1" -> {"delete": 0.1, "swap": 0.1, "mask": 0.1}."""
    noise: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        kind, _, value = part.partition(":")
        try:
            probability = float(value)
        except ValueError:
            probability = -1.0
        if kind not in NOISE_KINDS or not 0.0 <= probability < 1.0:
            raise TextaeError(
                f"noise must look like delete:0.1,swap:0.1,mask:0.1 (kinds {', '.join(NOISE_KINDS)}, "
                f"probabilities in [0, 1)); got {part!r}"
            )
        noise[kind] = probability
    return noise


_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?")


def parse_duration(text: str, name: str = "duration") -> float:
    """ "30m" -> 1800.0; also "2h", "90s", "1h30m", "1.5h" (hours, minutes, seconds in this order)."""
    match = _DURATION.fullmatch(text.strip().lower()) if isinstance(text, str) else None
    if not match or not any(match.groups()):
        raise TextaeError(f"{name} must be a duration such as 30m, 2h, 90s or 1h30m; got {text!r}")
    hours, minutes, seconds = (float(group) if group else 0.0 for group in match.groups())
    total = 3600 * hours + 60 * minutes + seconds
    if total <= 0:
        raise TextaeError(f"{name} must be longer than zero, got {text!r}")
    return total


def field_help(cls: type) -> dict[str, str]:
    """Field name -> its documentation: metadata["help"] where a field sets it, else the trailing
    comment every config field carries (what `textae train --help` shows for its option)."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):  # no source (a frozen or compiled install): metadata only
        source = ""
    comments = {
        token.start[0]: token.string.lstrip("#").strip()
        for token in tokenize.generate_tokens(io.StringIO(source).readline)
        if token.type == tokenize.COMMENT
    }
    helps: dict[str, str] = {}
    for node in ast.parse(source).body[0].body if source else []:
        # the comment that ends a field's statement (a field(...) call may span several lines)
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.end_lineno in comments:
            helps[node.target.id] = comments[node.end_lineno]
    for item in dataclasses.fields(cls):
        if "help" in item.metadata:
            helps[item.name] = item.metadata["help"]
    return helps


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


# Fields added after configs were first saved, with the value that rebuilds what those older runs,
# checkpoints and exports trained: a missing field must mean "as it was", not today's default.
SAVED_BEFORE_THE_FIELD: dict[type, dict[str, Any]] = {
    ModelConfig: {"reverse_input": False, "feature_source": "states"},
    TrainConfig: {"precision": "fp32"},  # runs before bf16 trained in float32, and resume must too
}


def from_dict(cls: type[C], data: dict[str, Any], *, where: str = "config") -> C:
    """Rebuild a config, refusing unknown keys so a typo never goes unnoticed."""
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - known)
    if unknown:
        raise TextaeError(f"{where}: unknown {cls.__name__} field(s): {', '.join(unknown)}")
    return cls(**{**SAVED_BEFORE_THE_FIELD.get(cls, {}), **data})


def save_json(path: Path, data: dict[str, Any]) -> None:
    from textae.atomic import atomic_write_text

    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def load_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TextaeError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TextaeError(f"{path}: not valid JSON ({exc})") from None


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise TextaeError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def _check_positive(name: str, value: int) -> None:
    if not isinstance(value, int) or value <= 0:
        raise TextaeError(f"{name} must be a positive integer, got {value!r}")
