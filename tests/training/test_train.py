import dataclasses
import json
from pathlib import Path

import pytest
import torch
from helpers.tiny import TINY_MODEL, TINY_SENTENCES, TINY_TRAIN

from textae.config import ModelConfig, TrainConfig
from textae.errors import TextaeError
from textae.tokenizer import load_tokenizer
from textae.training.checkpoint import load_model_from_run
from textae.training.loop import train
from textae.training.metrics import read_metrics
from textae.training.validation import reconstruct


def test_overfits_tiny_corpus_to_exact_free_running_reconstruction(trained_run: Path) -> None:
    model, checkpoint = load_model_from_run(trained_run)
    assert checkpoint["metrics"]["free_running_exact_match"] >= 0.95
    tokenizer = load_tokenizer(trained_run / "tokenizer.json")
    outputs = reconstruct(model, tokenizer, TINY_SENTENCES)
    exact = sum(o == s for o, s in zip(outputs, TINY_SENTENCES)) / len(TINY_SENTENCES)
    assert exact >= 0.95


def test_loss_goes_down_and_run_folder_is_complete(trained_run: Path) -> None:
    records = read_metrics(trained_run)
    train_losses = [r["loss"] for r in records if r["type"] == "train"]
    assert train_losses[-1] < train_losses[0] / 20
    valid = [r for r in records if r["type"] == "valid"]
    assert {"loss", "token_accuracy", "free_running_token_accuracy", "free_running_exact_match"} <= set(valid[-1])
    assert {"teacher_forcing_ratio", "tokens_per_second", "learning_rate"} <= set(records[0])
    for name in ("config.json", "tokenizer.json", "checkpoint.pt", "best.pt", "metrics.jsonl", "loss.png", "summary.json"):
        assert (trained_run / name).is_file(), name
    assert (trained_run / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((trained_run / "summary.json").read_text())
    assert summary["finished"] and summary["best_valid"]["free_running_exact_match"] >= 0.95
    # checkpoints hold only tensors and plain values
    state = torch.load(trained_run / "checkpoint.pt", weights_only=True)
    assert {"model", "optimizer", "scheduler", "rng_states", "training_state", "model_config"} <= set(state)


def _config(tmp_path: Path, corpus: Path, name: str, **overrides: object) -> TrainConfig:
    settings = {**TINY_TRAIN, "eval_every": 6, "checkpoint_every": 3, "log_every": 2, "max_steps": 12, **overrides}
    return TrainConfig(corpus=[str(corpus)], out=str(tmp_path / name), epochs=100, **settings)


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoint.pt", weights_only=True)["model"]


@pytest.mark.parametrize(("sampling", "precision"), [("parallel", "fp32"), ("step", "fp32"), ("parallel", "bf16")])
def test_resume_continues_bit_for_bit(tmp_path: Path, tiny_corpus: Path, sampling: str, precision: str) -> None:
    # dropout, scheduled sampling and input noise all draw random numbers: resume must reproduce them
    model = ModelConfig(**TINY_MODEL, dropout=0.1)
    overrides = {"teacher_forcing_end": 0.5, "scheduled_sampling": sampling, "noise": "delete:0.1,swap:0.1,mask:0.1", "precision": precision}
    straight = _config(tmp_path, tiny_corpus, "straight", **overrides)
    train(straight, model, show_progress=False)
    interrupted = _config(tmp_path, tiny_corpus, "interrupted", **overrides)
    partial = train(interrupted, model, show_progress=False, stop_at_step=5)
    assert partial["finished"] is False and not (tmp_path / "interrupted" / "summary.json").exists()
    stores = list((tmp_path / "interrupted" / "tokens").iterdir())
    built_at = stores[0].stat().st_mtime_ns
    train(dataclasses.replace(interrupted), resume=True, show_progress=False)
    assert list((tmp_path / "interrupted" / "tokens").iterdir()) == stores  # the token store is reused,
    assert stores[0].stat().st_mtime_ns == built_at  # not rebuilt
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "interrupted")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(tensor.dtype == torch.float32 for tensor in a.values())  # checkpoints hold the fp32 masters
    strip = lambda records: [{k: v for k, v in r.items() if k != "tokens_per_second"} for r in records]  # noqa: E731
    assert strip(read_metrics(tmp_path / "straight")) == strip(read_metrics(tmp_path / "interrupted"))


def test_same_seed_same_result_other_seed_other_result(tmp_path: Path, tiny_corpus: Path) -> None:
    model = ModelConfig(**TINY_MODEL)
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        train(_config(tmp_path, tiny_corpus, name, seed=seed, max_steps=4), model, show_progress=False)
    a, b, c = (_weights(tmp_path / n) for n in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_refuses_to_overwrite_a_run_and_to_resume_a_non_run(tmp_path: Path, tiny_corpus: Path) -> None:
    config = _config(tmp_path, tiny_corpus, "run", max_steps=2)
    train(config, ModelConfig(**TINY_MODEL), show_progress=False)
    with pytest.raises(TextaeError, match="already holds a run"):
        train(config, ModelConfig(**TINY_MODEL), show_progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(TextaeError, match="not a textae run folder"):
        train(_config(tmp_path, tiny_corpus, "empty"), resume=True, show_progress=False)


def test_reuses_a_given_tokenizer(tmp_path: Path, tiny_corpus: Path, trained_run: Path) -> None:
    config = _config(tmp_path, tiny_corpus, "reuse", max_steps=1, tokenizer=str(trained_run / "tokenizer.json"))
    train(config, ModelConfig(**TINY_MODEL), show_progress=False)
    assert (tmp_path / "reuse" / "tokenizer.json").read_bytes() == (trained_run / "tokenizer.json").read_bytes()


def test_bf16_training_follows_fp32(tmp_path: Path, tiny_corpus: Path) -> None:
    """bf16 compute with fp32 master weights: same run, nearly the same losses; the run records bf16."""
    model = ModelConfig(**TINY_MODEL)
    losses = {}
    for precision in ("fp32", "bf16"):
        train(_config(tmp_path, tiny_corpus, precision, precision=precision, max_steps=30, eval_every=30), model, show_progress=False)
        valid = [r for r in read_metrics(tmp_path / precision) if r["type"] == "valid"]
        losses[precision] = valid[-1]["loss"]
        saved = json.loads((tmp_path / precision / "config.json").read_text())["train"]
        assert saved["precision"] == precision
    first = next(r["loss"] for r in read_metrics(tmp_path / "fp32") if r["type"] == "train")
    assert losses["fp32"] < 0.95 * first  # it learned something in 30 steps
    assert abs(losses["bf16"] - losses["fp32"]) < 0.05 * losses["fp32"]


def test_auto_precision_is_resolved_and_saved(tmp_path: Path, tiny_corpus: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import textae.training.precision as precision

    monkeypatch.setattr(precision, "native_bf16", lambda device: False)
    train(_config(tmp_path, tiny_corpus, "auto", precision="auto", max_steps=1), ModelConfig(**TINY_MODEL), show_progress=False)
    assert json.loads((tmp_path / "auto" / "config.json").read_text())["train"]["precision"] == "fp32"


def test_training_leaves_denormal_floats_to_the_caller(trained_run: Path) -> None:
    # train() flushes denormals to zero while it runs (trained_run has trained in this process);
    # afterwards the caller's tensors keep them, as torch's default has it
    tiny = torch.tensor([1e-40], dtype=torch.float32)
    assert tiny.item() != 0.0
