"""textae.training.sampled_softmax and the model's sampled training loss: candidates, the estimate,
bf16, config checks, and a tiny run trained with it that still exports and matches torch."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers.exports import exported
from helpers.tiny import TINY_MODEL, TINY_SENTENCES, TINY_TRAIN

from textae.config import ModelConfig, TrainConfig
from textae.errors import TextaeError
from textae.runtime.model import TextAE
from textae.tokenizer import encode_batch
from textae.training.checkpoint import load_model_from_run
from textae.training.loop import train
from textae.training.metrics import read_metrics
from textae.training.model import Autoencoder, Float32CrossEntropy
from textae.training.sampled_softmax import sample_candidates

VOCAB = 50


def tiny_model(**overrides: object) -> Autoencoder:
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=VOCAB, embedding_dim=16, hidden_size=24, latent_dim=12, max_length=20, **overrides)
    return Autoencoder(config).train()


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([5, 3, 1, 0])
    input_ids = torch.randint(4, VOCAB, (4, 5), generator=torch.Generator().manual_seed(1))
    return input_ids.masked_fill(torch.arange(5) >= lengths.unsqueeze(1), 0), lengths


def test_candidates_are_the_targets_then_negatives_from_outside_them() -> None:
    torch.manual_seed(0)
    targets = torch.tensor([7, 3, 7, 12, 3])
    candidates, index, log_weight = sample_candidates(targets, VOCAB, 10)
    assert candidates[:3].tolist() == [3, 7, 12] and torch.equal(candidates[index], targets)
    negatives = candidates[3:]
    assert len(negatives) == 10 and len(set(negatives.tolist())) == 10  # without replacement
    assert not set(negatives.tolist()) & {3, 7, 12}  # no accidental hits
    assert log_weight[:3].tolist() == [0.0, 0.0, 0.0]
    assert torch.allclose(log_weight[3:], torch.full((10,), math.log((VOCAB - 3) / 10)))
    # more samples than the rest of the vocabulary: all of it, with no correction
    candidates, _, log_weight = sample_candidates(targets, VOCAB, 1000)
    assert sorted(candidates.tolist()) == list(range(VOCAB)) and not log_weight.any()


@pytest.mark.parametrize("tie_embeddings", [True, False])
def test_covering_the_vocabulary_gives_the_full_loss_and_gradient(tie_embeddings: bool) -> None:
    input_ids, lengths = batch()
    full_model, sampled_model = tiny_model(tie_embeddings=tie_embeddings), tiny_model(tie_embeddings=tie_embeddings)
    torch.manual_seed(3)
    _, full = full_model(input_ids, lengths, return_logits=False)
    torch.manual_seed(3)  # the same dropout masks (none here) and no other draws before the sampler
    _, sampled = sampled_model(input_ids, lengths, return_logits=False, softmax_samples=VOCAB - 1)
    assert torch.allclose(full, sampled, atol=1e-5)
    full.backward()
    sampled.backward()
    for a, b in zip(full_model.parameters(), sampled_model.parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-5)


def test_the_sampled_loss_estimates_the_full_one() -> None:
    # a wide vocabulary with few targets: the estimate averages to near the full loss
    torch.manual_seed(0)
    model = Autoencoder(ModelConfig(vocab_size=2000, embedding_dim=16, hidden_size=24, latent_dim=12, max_length=20)).train()
    input_ids, lengths = batch()
    input_ids = input_ids * 37 % 2000  # spread the ids over the vocabulary (padding stays 0)
    with torch.no_grad():
        model.decoder.output_bias.normal_(0.0, 2.0)  # an uneven softmax, as a trained one is
        _, full = model(input_ids, lengths, return_logits=False)
        estimates = [model(input_ids, lengths, return_logits=False, softmax_samples=200)[1].item() for _ in range(200)]
    # Jensen: log of an unbiased normaliser estimate is biased low, by little with 200 of 2000
    assert abs(np.mean(estimates) - full.item()) < 0.05 * full.item()
    assert np.std(estimates) > 0  # it does sample


def test_eval_mode_and_logits_ignore_softmax_samples() -> None:
    model = tiny_model().eval()
    input_ids, lengths = batch()
    _, full = model(input_ids, lengths, return_logits=False)
    _, asked = model(input_ids, lengths, return_logits=False, softmax_samples=5)
    assert torch.equal(full, asked)  # validation stays the full cross-entropy


def test_bf16_sampled_loss_is_float32_and_follows_fp32() -> None:
    input_ids, lengths = batch()
    fp32 = tiny_model()
    bf16 = tiny_model().to(torch.bfloat16)
    torch.manual_seed(5)
    _, a = fp32(input_ids, lengths, return_logits=False, softmax_samples=10)
    torch.manual_seed(5)
    _, b = bf16(input_ids, lengths, return_logits=False, softmax_samples=10)
    assert b.dtype == torch.float32 and abs(a.item() - b.item()) < 0.05
    b.backward()
    assert all(p.grad is not None and p.grad.dtype == torch.bfloat16 for p in bf16.parameters() if p.requires_grad)


def test_float32_cross_entropy_adds_its_log_weight_in_float32() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = (torch.randn(200, 31, generator=generator) * 3).bfloat16().requires_grad_()
    targets = torch.randint(0, 31, (200,), generator=generator)
    log_weight = torch.rand(31, generator=generator) * 4
    loss = Float32CrossEntropy.apply(logits, targets, log_weight)
    loss.backward()
    fused = logits.grad.clone()
    logits.grad = None
    reference = F.cross_entropy(logits.float() + log_weight, targets)
    reference.backward()
    assert abs(loss.item() - reference.item()) < 1e-5
    assert torch.allclose(fused.float(), logits.grad.float(), atol=1e-4)


def test_config_refuses_bad_sample_counts() -> None:
    with pytest.raises(TextaeError, match="softmax_samples must be 0"):
        TrainConfig(softmax_samples=-1).validate()
    with pytest.raises(TextaeError, match="smaller than vocab_size 8000"):
        TrainConfig(vocab_size=8000, softmax_samples=8000).validate()
    TrainConfig(vocab_size=8000, softmax_samples=1024).validate()


def test_a_tiny_run_learns_with_sampled_softmax_and_exports(tmp_path: Path, tiny_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    run_dir = tmp_path / "run"
    # 40 of the tiny vocabulary's ~400 ids besides each batch's targets
    config = TrainConfig(corpus=[str(tiny_corpus)], valid=str(tiny_corpus), out=str(run_dir), max_steps=60, epochs=1000,
                         **{**TINY_TRAIN, "softmax_samples": 40})  # fmt: skip
    train(config, ModelConfig(**TINY_MODEL), show_progress=False)
    records = read_metrics(run_dir)
    train_losses = [r["loss"] for r in records if r["type"] == "train"]
    valid_losses = [r["loss"] for r in records if r["type"] == "valid"]
    assert train_losses[-1] < train_losses[0] / 3
    assert valid_losses[-1] < valid_losses[0]  # the full cross-entropy falls too
    folder = exported(tmp_path_factory, run_dir)
    model, _ = load_model_from_run(run_dir)
    runtime = TextAE.load(folder, precision="fp32")
    sentences = TINY_SENTENCES[:8]
    ids = encode_batch(runtime.tokenizer, sentences, model.config.max_length)
    lengths = torch.tensor([len(row) for row in ids])
    input_ids = torch.zeros(len(ids), int(lengths.max()), dtype=torch.long)
    for row, tokens in enumerate(ids):
        input_ids[row, : len(tokens)] = torch.tensor(tokens)
    with torch.no_grad():
        reference = model.encode(input_ids, lengths).numpy()
    np.testing.assert_allclose(runtime.embed(sentences, raw=True), reference, atol=1e-4, rtol=0)
