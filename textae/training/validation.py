"""How well the torch model reconstructs held-out sentences: teacher-forced and free-running."""

from __future__ import annotations

import math

import numpy as np
import torch
from tokenizers import Tokenizer

from textae.batching import cut_at_eos, length_sorted_batches
from textae.tokenizer import decode_batch
from textae.training.data import TokenizedCorpus, collate, tokenize_corpus
from textae.training.model import Autoencoder

EVAL_BATCH_SIZE = 128


def evaluate(model: Autoencoder, data: TokenizedCorpus, free_running_sentences: int) -> dict[str, float]:
    """Teacher-forced loss and token accuracy, and free-running greedy reconstruction next to them.

    The gap between the two accuracies is the exposure bias the teacher-forcing schedule fights.
    """
    config = model.config
    device = next(model.parameters()).device
    model.eval()
    total_loss = total_tokens = correct = 0.0
    with torch.no_grad():
        for indices in length_sorted_batches(data.lengths, EVAL_BATCH_SIZE):
            batch = collate(data, indices, config.pad_id, config.eos_id).to(device)
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
            batch = collate(data, indices, config.pad_id, config.eos_id).to(device)
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
    """Greedy reconstructions with the torch model (the runtime's TextAE.reconstruct is the production path)."""
    model.eval()
    data = tokenize_corpus(sentences, tokenizer, model.config.max_length)
    batch = collate(data, np.arange(len(data)), model.config.pad_id, model.config.eos_id)
    predicted = model.greedy_decode(model.encode(batch.input_ids, batch.lengths))
    return decode_batch(tokenizer, [cut_at_eos(row.tolist(), model.config.eos_id) for row in predicted])
