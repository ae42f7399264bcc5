"""textae.training.objective: InfoNCE on hand-made vectors, the second view, the objective's parts,
and tiny runs trained with the contrastive term (logged, resumable, exportable)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.exports import exported
from helpers.tiny import TINY_MODEL, TINY_SENTENCES, TINY_TRAIN

from textae.config import ModelConfig, TrainConfig
from textae.errors import TextaeError
from textae.runtime.model import TextAE
from textae.tokenizer import encode_batch
from textae.training.checkpoint import load_model_from_run
from textae.training.data import TokenizedCorpus, collate
from textae.training.loop import train
from textae.training.metrics import read_metrics
from textae.training.model import Autoencoder
from textae.training.objective import LIGHT_DELETION, TrainingObjective, info_nce, second_view_noise


def test_info_nce_is_low_for_matching_views_and_high_for_shuffled_ones() -> None:
    vectors = torch.eye(8) * 3 + 0.01 * torch.randn(8, 8, generator=torch.Generator().manual_seed(0))
    same = info_nce(vectors, vectors, 0.05)
    shuffled = info_nce(vectors, vectors[torch.roll(torch.arange(8), 1)], 0.05)
    assert same.item() < 1e-3  # orthogonal rows: the positive wins by 1 / 0.05 in every row
    assert shuffled.item() > 10.0  # every row's positive is now a negative at similarity 1
    # the scale of a vector does not matter (cosine), and the loss is symmetric in its views
    assert torch.allclose(info_nce(vectors * 5, vectors, 0.05), same, atol=1e-6)
    other = torch.randn(8, 8, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(info_nce(vectors, other, 0.1), info_nce(other, vectors, 0.1))
    # random views of a batch of B: about log(B) at a high temperature
    assert abs(info_nce(other, torch.randn(8, 8), 100.0).item() - np.log(8)) < 0.05


def test_second_view_uses_noise_else_dropout_else_light_deletion() -> None:
    assert second_view_noise({"swap": 0.2}, dropout=0.1) == {"swap": 0.2}
    assert second_view_noise({}, dropout=0.1) == {}
    assert second_view_noise({}, dropout=0.0) == LIGHT_DELETION


def test_collate_builds_an_independent_second_view() -> None:
    sentences = [np.arange(4, 24, dtype=np.int32), np.arange(30, 40, dtype=np.int32)]
    corpus = TokenizedCorpus(np.array([0, 20, 30]), np.concatenate(sentences))
    rng = np.random.default_rng(0)
    batch = collate(corpus, np.arange(2), 0, 2, {}, 3, rng, second_view={"delete": 0.3})
    assert batch.input_ids[0].tolist() == list(range(4, 24))  # the first view stays clean
    assert batch.view_lengths.tolist() != [20, 10] and (batch.view_lengths >= 1).all()
    same = collate(corpus, np.arange(2), 0, 2, {}, 3, rng, second_view={})
    assert same.view_ids is same.input_ids
    assert collate(corpus, np.arange(2), 0, 2).view_ids is None


def test_objective_adds_the_weighted_term_and_decodes_the_first_view() -> None:
    torch.manual_seed(0)
    model = Autoencoder(ModelConfig(vocab_size=50, embedding_dim=16, hidden_size=24, latent_dim=12, max_length=20)).train()
    input_ids = torch.randint(4, 50, (6, 5), generator=torch.Generator().manual_seed(1))
    lengths = torch.full((6,), 5)
    targets = torch.cat([input_ids, torch.full((6, 1), 2)], dim=1)
    objective = TrainingObjective(model, 0, 0.5, 0.05)
    view = input_ids.flip(1)
    total, reconstruction, contrastive = objective(input_ids, lengths, targets, 1.0, "parallel", view, lengths)
    _, alone = model(input_ids, lengths, targets, return_logits=False)
    assert torch.allclose(reconstruction, alone)  # the decoder reads the first view's vector
    assert torch.allclose(total, reconstruction + 0.5 * contrastive)
    expected = info_nce(model.encode(input_ids, lengths), model.encode(view, lengths), 0.05)
    assert torch.allclose(contrastive, expected)
    total, reconstruction, contrastive = TrainingObjective(model, 0, 0.0, 0.05)(input_ids, lengths, targets, 1.0, "parallel")
    assert contrastive is None and torch.equal(total, reconstruction)


def test_config_refuses_bad_contrastive_settings() -> None:
    with pytest.raises(TextaeError, match="contrastive_weight"):
        TrainConfig(contrastive_weight=-0.1).validate()
    with pytest.raises(TextaeError, match="contrastive_temperature"):
        TrainConfig(contrastive_temperature=0.0).validate()
    TrainConfig(contrastive_weight=1.0, contrastive_temperature=0.1).validate()


def _config(tmp_path: Path, corpus: Path, name: str, **overrides: object) -> TrainConfig:
    settings = {**TINY_TRAIN, "contrastive_weight": 1.0, **overrides}
    return TrainConfig(corpus=[str(corpus)], valid=str(corpus), out=str(tmp_path / name), epochs=1000, **settings)


def test_a_tiny_run_with_the_contrastive_term_learns_logs_it_and_exports(
    tmp_path: Path, tiny_corpus: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    run_dir = tmp_path / "run"
    train(_config(tmp_path, tiny_corpus, "run", max_steps=60), ModelConfig(**TINY_MODEL), show_progress=False)
    records = [r for r in read_metrics(run_dir) if r["type"] == "train"]
    assert all("contrastive_loss" in r for r in records)
    assert records[-1]["loss"] < records[0]["loss"] / 3
    assert records[-1]["contrastive_loss"] < records[0]["contrastive_loss"]
    folder = exported(tmp_path_factory, run_dir)
    model, _ = load_model_from_run(run_dir)
    runtime = TextAE.load(folder, precision="fp32")
    vectors = runtime.embed(TINY_SENTENCES[:1], raw=True)
    ids = torch.tensor(encode_batch(runtime.tokenizer, TINY_SENTENCES[:1], model.config.max_length))
    with torch.no_grad():
        reference = model.encode(ids, torch.tensor([ids.size(1)])).numpy()
    np.testing.assert_allclose(vectors, reference, atol=1e-4, rtol=0)


def test_a_contrastive_run_with_noise_and_dropout_resumes_bit_for_bit(tmp_path: Path, tiny_corpus: Path) -> None:
    model = ModelConfig(**TINY_MODEL, dropout=0.1)
    overrides = {"max_steps": 12, "eval_every": 6, "checkpoint_every": 3, "log_every": 2,
                 "noise": "delete:0.1,mask:0.1", "softmax_samples": 30}  # fmt: skip
    train(_config(tmp_path, tiny_corpus, "straight", **overrides), model, show_progress=False)
    interrupted = _config(tmp_path, tiny_corpus, "interrupted", **overrides)
    train(interrupted, model, show_progress=False, stop_at_step=5)
    train(dataclasses.replace(interrupted), resume=True, show_progress=False)
    a = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "interrupted" / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    strip = lambda records: [{k: v for k, v in r.items() if k != "tokens_per_second"} for r in records]  # noqa: E731
    assert strip(read_metrics(tmp_path / "straight")) == strip(read_metrics(tmp_path / "interrupted"))
