"""The recurrent sentence autoencoder: embedding + RNN encoder -> sentence vector -> RNN decoder -> softmax.

Only the network lives here; the loop that trains it is in `textae.training.loop`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from textae.config import ModelConfig
from textae.training.sampled_softmax import sample_candidates

RNN_CLASSES: dict[str, type[nn.RNNBase]] = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}

RecurrentState = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


class Encoder(nn.Module):
    """Reads a padded batch of token ids and returns one vector per sentence."""

    def __init__(self, config: ModelConfig, embedding: nn.Embedding) -> None:
        super().__init__()
        self.config = config
        self.embedding = embedding
        self.dropout = nn.Dropout(config.dropout)
        self.rnn = RNN_CLASSES[config.cell](
            config.embedding_dim,
            config.hidden_size,
            num_layers=config.num_layers,
            batch_first=True,
            dropout=config.dropout if config.num_layers > 1 else 0.0,
            bidirectional=config.bidirectional,
        )
        directions = 2 if config.bidirectional else 1
        self.to_latent = nn.Linear(directions * config.hidden_size, config.latent_dim)

    def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """input_ids (B, T) int64, lengths (B,) int64 -> sentence_embedding (B, latent_dim)."""
        outputs, lengths = self.states(input_ids, lengths)
        return self.to_latent(self.dropout(pool(outputs, lengths, self.config)))

    def encode_with_features(
        self, input_ids: torch.Tensor, lengths: torch.Tensor, packed: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (sentence_embedding (B, latent_dim), features (B, config.feature_dim)); packed as in states().

        features: the blocks config.feature_blocks lists, as config.feature_source names them: the
        sentence vector, the masked mean and max over each sentence's tokens of the top layer's
        states (D directions of H each), and the masked mean and max [and min] of its token
        embeddings (E each). Vectors for similarity and downstream tasks, wider than the sentence
        vector and not squeezed through it.
        """
        outputs, lengths = self.states(input_ids, lengths, packed)
        sentence_embedding = self.to_latent(self.dropout(pool(outputs, lengths, self.config)))
        # an empty sentence's length is 1 here: its features read its one <pad>, as its states do
        state_pools = mean_and_max(outputs, lengths) if self.config.features_read_states else None
        token_pools = pool_tokens(self.embedding(input_ids), lengths, self.config) if self.config.features_read_tokens else None
        return sentence_embedding, join_features(sentence_embedding, state_pools, token_pools, self.config)

    def states(self, input_ids: torch.Tensor, lengths: torch.Tensor, packed: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """The top layer's states (B, T', D*H), exact for each row's first lengths[b] steps, and the
        lengths they were read with (at least 1, on the states' device).

        packed: run a forward RNN on the packed batch too (the export does): it becomes an ONNX
        recurrent op with sequence_lens, which onnxruntime stops at the longest row, so padding costs
        nothing at inference (batch 8, 6 tokens padded to 64: 26.4 -> 2.9 ms, 512-wide LSTM)."""
        # An empty sentence reads a single <pad>: the packed RNN needs at least one step per row.
        lengths = lengths.clamp(min=1)
        if self.config.reverse_input:
            input_ids = reverse_within_lengths(input_ids, lengths)
        embedded = self.dropout(self.embedding(input_ids))  # (B, T, E)
        if self.config.bidirectional or packed:
            # The backward direction must start at each sentence's own end: packing makes that exact.
            packed_input = pack_padded_sequence(embedded, lengths.cpu(), batch_first=True, enforce_sorted=False)
            packed_outputs, _ = self.rnn(packed_input)
            outputs, _ = pad_packed_sequence(packed_outputs, batch_first=True)  # (B, T', 2H), zero past lengths
        else:
            # A forward RNN's state at step t never sees the padding after it, and pool() reads only
            # the first lengths[b] steps, so the padded batch is exact too; it runs the fused
            # whole-sequence kernel, which packing (varying batch size per step) cannot use.
            outputs, _ = self.rnn(embedded)  # (B, T, H)
        return outputs, lengths.to(outputs.device)


def reverse_within_lengths(input_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each row's first lengths[b] tokens and leave its padding where it is."""
    steps = torch.arange(input_ids.size(1), device=input_ids.device).unsqueeze(0)  # (1, T)
    index = lengths.to(input_ids.device).unsqueeze(1) - 1 - steps  # (B, T)
    return input_ids.gather(1, torch.where(index >= 0, index, steps))


def pool(outputs: torch.Tensor, lengths: torch.Tensor, config: ModelConfig) -> torch.Tensor:
    """(B, T, D*H) encoder states -> (B, D*H) features, reading only the first lengths[b] steps."""
    hidden = config.hidden_size
    if config.pooling == "final":
        # Read the final states off the outputs (not h_n): the same numbers, and ONNX export needs
        # the packed output to be used.
        last = (lengths - 1).view(-1, 1, 1).expand(-1, 1, outputs.size(2))
        final = outputs.gather(1, last).squeeze(1)  # (B, D*H)
        if config.bidirectional:
            # the backward direction ends at position 0
            final = torch.cat([final[:, :hidden], outputs[:, 0, hidden:]], dim=1)
        return final
    if config.pooling == "mean":
        return masked_mean(outputs, lengths)
    return masked_max(outputs, lengths)


def mean_and_max(steps: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B, T, F) -> (B, 2F): the masked mean and the masked max over each row's first lengths[b] steps."""
    return torch.cat([masked_mean(steps, lengths), masked_max(steps, lengths)], dim=1)


def pool_tokens(embedded: torch.Tensor, lengths: torch.Tensor, config: ModelConfig) -> torch.Tensor:
    """(B, T, E) token embeddings -> (B, len(config.token_pools) * E): their masked mean, max [and min]."""
    pools = {"mean": masked_mean, "max": masked_max, "min": masked_min}
    return torch.cat([pools[name](embedded, lengths) for name in config.token_pools], dim=1)


def join_features(
    sentence_embedding: torch.Tensor, state_pools: torch.Tensor | None, token_pools: torch.Tensor | None, config: ModelConfig
) -> torch.Tensor:
    """The features output, in config.feature_blocks' order: the sentence vector (B, Z) where the
    features read it, the states' pools (B, 2*D*H), then the tokens' (B, k*E), where present."""
    vector = sentence_embedding if config.features_read_vector else None
    parts = [part for part in (vector, state_pools, token_pools) if part is not None]
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


def _step_mask(outputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    steps = torch.arange(outputs.size(1), device=outputs.device)
    return (steps.unsqueeze(0) < lengths.unsqueeze(1)).unsqueeze(2)  # (B, T, 1)


def masked_mean(outputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B, T, F) -> (B, F): the mean over each row's first lengths[b] steps."""
    mask = _step_mask(outputs, lengths)
    return outputs.masked_fill(~mask, 0.0).sum(dim=1) / lengths.unsqueeze(1).to(outputs.dtype)


def masked_max(outputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B, T, F) -> (B, F): the maximum over each row's first lengths[b] steps."""
    return outputs.masked_fill(~_step_mask(outputs, lengths), float("-inf")).max(dim=1).values


def masked_min(outputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B, T, F) -> (B, F): the minimum over each row's first lengths[b] steps."""
    return outputs.masked_fill(~_step_mask(outputs, lengths), float("inf")).min(dim=1).values


class Decoder(nn.Module):
    """An RNN language model conditioned on the sentence vector (initial state and every input)."""

    def __init__(self, config: ModelConfig, embedding: nn.Embedding) -> None:
        super().__init__()
        self.config = config
        self.embedding = embedding
        self.dropout = nn.Dropout(config.dropout)
        states = 2 if config.cell == "lstm" else 1  # LSTM carries (h, c)
        self.init_state = nn.Linear(config.latent_dim, states * config.num_layers * config.hidden_size)
        self.rnn = RNN_CLASSES[config.cell](
            config.embedding_dim + config.latent_dim,
            config.hidden_size,
            num_layers=config.num_layers,
            batch_first=True,
            dropout=config.dropout if config.num_layers > 1 else 0.0,
        )
        if config.tie_embeddings:
            # project to the embedding width, then score against the (shared) embedding matrix
            self.output_projection = nn.Linear(config.hidden_size, config.embedding_dim)
            self.output_bias = nn.Parameter(torch.zeros(config.vocab_size))
        else:
            self.output = nn.Linear(config.hidden_size, config.vocab_size)

    def initial_state(self, sentence_embedding: torch.Tensor) -> RecurrentState:
        batch = sentence_embedding.size(0)
        layers, hidden = self.config.num_layers, self.config.hidden_size
        state = torch.tanh(self.init_state(sentence_embedding))  # (B, states * L * H)
        state = state.view(batch, -1, layers, hidden).permute(1, 2, 0, 3).contiguous()  # (states, L, B, H)
        if self.config.cell == "lstm":
            return state[0], state[1]
        return state[0]

    def forward(
        self, input_ids: torch.Tensor, sentence_embedding: torch.Tensor, state: RecurrentState
    ) -> tuple[torch.Tensor, RecurrentState]:
        """input_ids (B, T) -> logits (B, T, V) and the state after the last step."""
        outputs, state = self.run(input_ids, sentence_embedding, state)
        return self.project(outputs), state

    def run(
        self, input_ids: torch.Tensor, sentence_embedding: torch.Tensor, state: RecurrentState
    ) -> tuple[torch.Tensor, RecurrentState]:
        """The recurrent part alone: input_ids (B, T) -> outputs (B, T, H) before the vocabulary projection."""
        embedded = self.dropout(self.embedding(input_ids))  # (B, T, E)
        latent = sentence_embedding.unsqueeze(1).expand(-1, input_ids.size(1), -1)  # (B, T, Z)
        outputs, state = self.rnn(torch.cat([embedded, latent], dim=2), state)  # (B, T, H)
        return self.dropout(outputs), state

    def project(self, outputs: torch.Tensor) -> torch.Tensor:
        if self.config.tie_embeddings:
            return F.linear(self.output_projection(outputs), self.embedding.weight, self.output_bias)
        return self.output(outputs)

    def project_onto(self, outputs: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
        """The logits of only these token ids: outputs (N, H), token_ids (C,) -> (N, C) (sampled softmax)."""
        if self.config.tie_embeddings:
            return F.linear(self.output_projection(outputs), self.embedding.weight[token_ids], self.output_bias[token_ids])
        return F.linear(outputs, self.output.weight[token_ids], self.output.bias[token_ids])


class Autoencoder(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.embedding_dim, padding_idx=config.pad_id)
        self.encoder = Encoder(config, self.embedding)
        self.decoder = Decoder(config, self.embedding)

    def encode(self, input_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.encoder(input_ids, lengths)

    def encode_with_features(
        self, input_ids: torch.Tensor, lengths: torch.Tensor, packed: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(sentence_embedding (B, Z), features (B, config.feature_dim)); see Encoder.encode_with_features."""
        return self.encoder.encode_with_features(input_ids, lengths, packed)

    def forward(
        self,
        input_ids: torch.Tensor,
        lengths: torch.Tensor,
        targets: torch.Tensor | None = None,
        teacher_forcing_ratio: float = 1.0,
        sampling: str = "parallel",
        return_logits: bool = True,
        softmax_samples: int = 0,
        sentence_embedding: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Reconstruct targets (default: the input followed by <eos>) from the input's vector.

        input_ids (B, T), lengths (B,), targets (B, T') padded with <pad> -> (logits (B, T', V), loss).
        return_logits=False returns (None, loss) and projects only the non-padding positions onto the
        vocabulary: the same loss for less work (training needs nothing else).
        The loss (log-softmax and cross-entropy) is computed in float32 whatever the weights' dtype.
        With teacher_forcing_ratio < 1 each decoder input is, with that probability, the gold token,
        and otherwise the model's own detached greedy prediction (scheduled sampling). sampling="step"
        feeds predictions step by step as in Bengio et al. 2015; "parallel" takes them from a
        teacher-forced pass without gradient and then decodes the mixed inputs in one call
        (two-pass scheduled sampling, Duckworth et al. 2019 / Mihaylova & Martins 2019), which keeps
        the fast whole-sequence RNN kernel.
        softmax_samples > 0 (training, return_logits=False, parallel sampling) scores each target
        against the batch's targets and that many sampled negatives instead of the whole vocabulary
        (textae.training.sampled_softmax): a cheaper estimate of the same loss. sentence_embedding,
        when given, is decoded instead of encoding input_ids again (the contrastive objective
        encodes the batch itself).
        """
        if targets is None:
            targets = append_eos(input_ids, lengths, self.config)
        if sentence_embedding is None:
            sentence_embedding = self.encode(input_ids, lengths)
        state = self.decoder.initial_state(sentence_embedding)
        bos = torch.full_like(targets[:, :1], self.config.bos_id)
        gold_inputs = torch.cat([bos, targets[:, :-1]], dim=1)  # (B, T')
        if teacher_forcing_ratio >= 1.0 or not self.training:
            outputs, _ = self.decoder.run(gold_inputs, sentence_embedding, state)
        elif sampling == "step":
            logits = self._scheduled_sampling(gold_inputs, sentence_embedding, state, teacher_forcing_ratio)
            return _loss(logits, targets, self.config.pad_id, return_logits)
        else:
            with torch.no_grad():
                # outputs at step t predict input t + 1; the last input predicts nothing that is fed
                first_pass, _ = self.decoder.run(gold_inputs[:, :-1], sentence_embedding, state)
                # project only the positions that will be fed a prediction: the vocabulary
                # projection is the costly part, and most positions keep their gold token
                mixed = mix_inputs(
                    gold_inputs, teacher_forcing_ratio, lambda fed: self.decoder.project(first_pass[fed]).argmax(-1)
                )
            outputs, _ = self.decoder.run(mixed, sentence_embedding, state)
        if return_logits:
            return _loss(self.decoder.project(outputs), targets, self.config.pad_id, True)
        real = targets != self.config.pad_id  # (B, T')
        # the vocabulary projection and its softmax are the costliest part of a step: skip the padding
        if softmax_samples > 0 and self.training:
            candidates, target_index, log_weight = sample_candidates(targets[real], self.config.vocab_size, softmax_samples)
            logits = self.decoder.project_onto(outputs[real], candidates)  # (N, C)
            return None, cross_entropy_in_float32(logits, target_index, log_weight)
        logits = self.decoder.project(outputs[real])  # (N, V)
        return None, cross_entropy_in_float32(logits, targets[real])

    def _scheduled_sampling(
        self, gold_inputs: torch.Tensor, sentence_embedding: torch.Tensor, state: RecurrentState, ratio: float
    ) -> torch.Tensor:
        """Bengio et al.'s step-by-step scheduled sampling: each input depends on the previous choice."""
        step_logits = []
        next_input = gold_inputs[:, :1]
        for step in range(gold_inputs.size(1)):
            logits, state = self.decoder(next_input, sentence_embedding, state)  # (B, 1, V)
            step_logits.append(logits)
            if step + 1 < gold_inputs.size(1):
                gold = gold_inputs[:, step : step + 2]
                next_input = mix_inputs(gold, ratio, lambda fed, logits=logits: logits.argmax(dim=-1)[fed])[:, 1:]
        return torch.cat(step_logits, dim=1)

    @torch.no_grad()
    def greedy_decode(self, sentence_embedding: torch.Tensor, max_length: int | None = None) -> torch.Tensor:
        """Free-running reconstruction: (B, Z) -> ids (B, L), <pad> after each row's <eos>."""
        max_length = max_length or self.config.max_length + 1
        batch = sentence_embedding.size(0)
        state = self.decoder.initial_state(sentence_embedding)
        next_input = torch.full((batch, 1), self.config.bos_id, dtype=torch.long, device=sentence_embedding.device)
        finished = torch.zeros(batch, dtype=torch.bool, device=sentence_embedding.device)
        outputs = []
        for _ in range(max_length):
            logits, state = self.decoder(next_input, sentence_embedding, state)
            prediction = logits.argmax(dim=-1)  # (B, 1)
            prediction = prediction.masked_fill(finished.unsqueeze(1), self.config.pad_id)
            outputs.append(prediction)
            finished |= prediction.squeeze(1) == self.config.eos_id
            if bool(finished.all()):
                break
            next_input = prediction
        return torch.cat(outputs, dim=1)

    @torch.no_grad()
    def score(self, input_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Mean per-token negative log-likelihood of each sentence given its own vector: (B,)."""
        targets = append_eos(input_ids, lengths, self.config)
        logits, _ = self.forward(input_ids, lengths, targets)
        token_nll = F.cross_entropy(
            logits.transpose(1, 2).float(), targets, ignore_index=self.config.pad_id, reduction="none"
        )  # (B, T')
        return token_nll.sum(dim=1) / (lengths.clamp(min=0) + 1).to(token_nll.dtype)


def _loss(
    logits: torch.Tensor, targets: torch.Tensor, pad_id: int, return_logits: bool
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Mean token cross-entropy over the non-padding targets, in float32; logits (B, T', V)."""
    loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1), ignore_index=pad_id)
    return (logits if return_logits else None), loss


def cross_entropy_in_float32(
    logits: torch.Tensor, targets: torch.Tensor, log_weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean cross-entropy of logits (N, C) (+ a float32 per-column log_weight (C,)), computed in float32."""
    if logits.dtype == torch.float32:
        return F.cross_entropy(logits if log_weight is None else logits + log_weight, targets)
    return Float32CrossEntropy.apply(logits, targets, log_weight)


class Float32CrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of low-precision logits (N, V), with log-softmax and loss in float32.

    Casting all logits to float32 first (logits.float(), then F.cross_entropy) writes and reads the
    (N, V) array several times more and was the largest cost of a bf16 step after the LSTM (92 ms of
    a 290 ms step at batch 128). Here float32 exists one block of rows at a time, in cache; the
    loss equals the cast-first one to float32 rounding and the gradient comes back in the logits' dtype.
    log_weight (C,) float32, when given, is added to every row in float32 (the sampled softmax's
    correction, which rounding into bf16 first would blur); the gradient is that of the sum.
    """

    ROWS = 128  # rows per float32 block: 128 x 8000 floats = 4 MB

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        logits: torch.Tensor,
        targets: torch.Tensor,
        log_weight: torch.Tensor | None = None,
    ) -> torch.Tensor:
        offset = torch.zeros(logits.size(1), device=logits.device) if log_weight is None else log_weight  # (C,)
        log_normalizer = torch.empty(logits.size(0), dtype=torch.float32, device=logits.device)  # (N,)
        for start in range(0, logits.size(0), Float32CrossEntropy.ROWS):
            block = slice(start, start + Float32CrossEntropy.ROWS)
            log_normalizer[block] = torch.logsumexp(logits[block].float() + offset, dim=1)
        target_logits = logits.gather(1, targets.unsqueeze(1)).squeeze(1).float() + offset[targets]
        ctx.save_for_backward(logits, targets, log_normalizer, offset)
        return (log_normalizer - target_logits).mean()

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad_loss: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        logits, targets, log_normalizer, offset = ctx.saved_tensors  # type: ignore[attr-defined]
        grad = torch.empty_like(logits)
        scale = grad_loss.float() / logits.size(0)
        for start in range(0, logits.size(0), Float32CrossEntropy.ROWS):
            block = slice(start, start + Float32CrossEntropy.ROWS)
            probabilities = (logits[block].float() + offset - log_normalizer[block].unsqueeze(1)).exp_()  # softmax
            probabilities.scatter_add_(1, targets[block].unsqueeze(1), torch.full_like(probabilities[:, :1], -1.0))
            grad[block] = probabilities.mul_(scale)
        return grad, None, None


def mix_inputs(
    gold_inputs: torch.Tensor, ratio: float, predict: Callable[[torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """The one place that decides, per decoder input, the gold token or the model's own prediction.

    gold_inputs (B, T) start with <bos>, which always stays. Each later input is the gold token with
    probability ratio; predict(fed) returns the model's predictions for the inputs where the (B, T-1)
    mask fed is True, in row-major order. Predictions are detached: no gradient through the choice.
    """
    fed = torch.rand(gold_inputs[:, 1:].shape, device=gold_inputs.device) >= ratio
    tail = gold_inputs[:, 1:].masked_scatter(fed, predict(fed).detach())
    return torch.cat([gold_inputs[:, :1], tail], dim=1)


def append_eos(input_ids: torch.Tensor, lengths: torch.Tensor, config: ModelConfig) -> torch.Tensor:
    """(B, T) ids -> (B, T+1) targets: each row's tokens, then <eos>, then <pad>."""
    padded = F.pad(input_ids, (0, 1), value=config.pad_id)
    return padded.scatter(1, lengths.view(-1, 1), config.eos_id)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
