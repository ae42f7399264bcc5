"""Sampled softmax for training: score a step's targets against a sample of the vocabulary.

The output layer costs (tokens x vocabulary) per step, forward and backward. With softmax_samples
= N, a step scores its tokens against a shared candidate set instead: every token id that is a
target somewhere in the batch (kept exactly), plus N negatives drawn uniformly without replacement
from the rest of the vocabulary, each standing in for (rest / N) tokens. The log of that share is
added to the negatives' logits (the "logits - log Q" correction of Jean et al. 2015 and TF's
sampled_softmax_loss, with Q the inclusion probability N / rest), so the sum of exp over the
candidates is an unbiased estimate of the full softmax's normaliser, and it is the normaliser
itself when N covers the rest. Negatives are drawn from outside the batch's targets, so there are
no accidental hits to remove: a row's true class and the other rows' targets enter exactly once.

Why uniform and not a log-uniform (Zipf) proposal: the batch's targets already hold the frequent
tokens, which are what a Zipf proposal would draw; and byte-level BPE ids are not sorted by
frequency (ids 4-259 are the byte alphabet, most of it rare as whole tokens), so a log-uniform
proposal over ids would spend most draws there.

Validation, scoring and export always use the full softmax: this changes the training loss only.
"""

from __future__ import annotations

import math

import torch


def sample_candidates(targets: torch.Tensor, vocab_size: int, samples: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """targets (N,) -> (candidates (C,) ids, target_index (N,) positions in candidates, log_weight (C,) float32).

    candidates are the unique targets followed by min(samples, vocab_size - unique) negatives;
    log_weight is 0 for the targets and log(rest / drawn) for the negatives (added to their logits).
    Draws from torch's global generator, so a seeded (or resumed) run draws the same negatives.
    """
    positives, target_index = torch.unique(targets, return_inverse=True)  # sorted ids, (N,) positions
    outside = torch.ones(vocab_size, dtype=torch.bool, device=targets.device)
    outside[positives] = False
    rest = outside.nonzero().squeeze(1)  # (V - P,)
    drawn = min(samples, rest.numel())
    negatives = rest[torch.randperm(rest.numel(), device=targets.device)[:drawn]]
    log_weight = torch.zeros(positives.numel() + drawn, dtype=torch.float32, device=targets.device)
    if drawn:
        log_weight[positives.numel() :] = math.log(rest.numel() / drawn)
    return torch.cat([positives, negatives]), target_index, log_weight
