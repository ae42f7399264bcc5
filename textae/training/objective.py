"""What one training step minimises: the reconstruction cross-entropy, plus, when contrastive_weight
> 0, an InfoNCE term on the sentence vectors (unsupervised SimCSE, Gao et al. 2021).

The reconstruction loss alone shapes the vector for the decoder; the contrastive term asks two
views of the same sentence to be nearer each other (in cosine) than to the batch's other
sentences, which is what similarity tasks read. The decoder still decodes the first view's vector,
so reconstruction trains exactly as without the term.

The two views: the first is the encoder input the run already uses (the clean sentence, or its
`noise` corruption). The second must differ from it by chance, or the term is trivially zero:
- with `noise` set, the second view is a second, independent corruption of the clean sentence;
- else with dropout > 0, it is the same input under other dropout masks (SimCSE's own views);
- else (neither gives randomness: today's defaults), it is the clean sentence with each token
  deleted with probability 0.1 (LIGHT_DELETION), light enough to keep the meaning.
Negatives are the other sentences of this process's batch (no gathering across processes).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from textae.training.model import Autoencoder

LIGHT_DELETION = {"delete": 0.1}  # the second view when neither noise nor dropout gives one


def second_view_noise(noise: dict[str, float], dropout: float) -> dict[str, float]:
    """How collate corrupts the second view (see the module docstring); {} means the first view's input."""
    if noise:
        return noise
    if dropout > 0:
        return {}
    return dict(LIGHT_DELETION)


def info_nce(first: torch.Tensor, second: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE of (B, Z) vector pairs: row i of each is the positive of row i of the other,
    the other rows its negatives; cosine similarity / temperature, in float32."""
    first, second = F.normalize(first.float(), dim=1), F.normalize(second.float(), dim=1)
    similarity = first @ second.T / temperature  # (B, B)
    labels = torch.arange(similarity.size(0), device=similarity.device)
    return (F.cross_entropy(similarity, labels) + F.cross_entropy(similarity.T, labels)) / 2


class TrainingObjective(nn.Module):
    """The model and its training loss in one module, so DistributedDataParallel wraps one forward.

    forward -> (total loss, reconstruction loss, contrastive loss or None); without view_ids it is
    the model's own training loss.
    """

    def __init__(self, model: Autoencoder, softmax_samples: int, contrastive_weight: float, temperature: float) -> None:
        super().__init__()
        self.model = model
        self.softmax_samples, self.contrastive_weight, self.temperature = softmax_samples, contrastive_weight, temperature

    def forward(
        self,
        input_ids: torch.Tensor,
        lengths: torch.Tensor,
        targets: torch.Tensor,
        teacher_forcing_ratio: float,
        sampling: str,
        view_ids: torch.Tensor | None = None,
        view_lengths: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        sentence_embedding = contrastive = None
        if view_ids is not None and self.contrastive_weight > 0:
            sentence_embedding = self.model.encode(input_ids, lengths)  # (B, Z), decoded below
            contrastive = info_nce(sentence_embedding, self.model.encode(view_ids, view_lengths), self.temperature)
        _, reconstruction = self.model(
            input_ids, lengths, targets, teacher_forcing_ratio=teacher_forcing_ratio, sampling=sampling,
            return_logits=False, softmax_samples=self.softmax_samples, sentence_embedding=sentence_embedding,
        )  # fmt: skip
        if contrastive is None:
            return reconstruction, reconstruction, None
        return reconstruction + self.contrastive_weight * contrastive, reconstruction, contrastive
