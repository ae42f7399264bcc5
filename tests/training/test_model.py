import pytest
import torch

from textae.config import FEATURE_SOURCES, ModelConfig, from_dict, to_dict
from textae.errors import TextaeError
from textae.training.model import Autoencoder, append_eos, mix_inputs

VOCAB = 50


def make_model(**overrides: object) -> Autoencoder:
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=VOCAB, embedding_dim=16, hidden_size=24, latent_dim=12, max_length=20, **overrides)
    return Autoencoder(config).eval()


def padded_batch(sentences: list[list[int]], width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    width = width or max(map(len, sentences))
    input_ids = torch.zeros(len(sentences), width, dtype=torch.long)
    for row, tokens in enumerate(sentences):
        input_ids[row, : len(tokens)] = torch.tensor(tokens)
    return input_ids, torch.tensor([len(s) for s in sentences])


VARIANTS = [
    {},
    {"cell": "gru"},
    {"cell": "rnn"},
    {"bidirectional": True},
    {"num_layers": 2},
    {"pooling": "mean"},
    {"pooling": "max", "bidirectional": True},
    {"tie_embeddings": False},
    {"reverse_input": False},
]


@pytest.mark.parametrize("overrides", VARIANTS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
def test_sentence_vector_does_not_depend_on_its_batch(overrides: dict) -> None:
    model = make_model(**overrides)
    sentence = [5, 9, 11, 7]
    alone = model.encode(*padded_batch([sentence]))
    others = [[4] * 12, sentence, [8, 6], [30] * 7]
    in_batch = model.encode(*padded_batch(others, width=15))  # extra padding columns too
    torch.testing.assert_close(in_batch[1], alone[0], atol=1e-6, rtol=0)


def test_reverse_input_reads_the_sentence_back_to_front() -> None:
    forward = make_model(reverse_input=False)
    backward = make_model(reverse_input=True)
    backward.load_state_dict(forward.state_dict())
    sentence = [5, 9, 11, 7]
    reversed_alone = backward.encode(*padded_batch([sentence]))
    torch.testing.assert_close(reversed_alone, forward.encode(*padded_batch([sentence[::-1]])), atol=1e-6, rtol=0)
    # padding stays after the reversed tokens, so the vector does not depend on the batch width
    in_batch = backward.encode(*padded_batch([[4, 4], sentence], width=9))
    torch.testing.assert_close(in_batch[1], reversed_alone[0], atol=1e-6, rtol=0)


def test_configs_saved_before_reverse_input_existed_read_forward() -> None:
    saved = to_dict(ModelConfig())
    del saved["reverse_input"]
    assert from_dict(ModelConfig, saved).reverse_input is False
    assert ModelConfig().reverse_input is True


@pytest.mark.parametrize("source", FEATURE_SOURCES)
def test_features_pool_what_feature_source_names(source: str) -> None:
    model = make_model(feature_source=source)
    input_ids, lengths = padded_batch([[5, 6, 7], [8, 9], []], width=6)
    with torch.no_grad():
        vectors, features = model.encode_with_features(input_ids, lengths)
        states, _ = model.encoder.states(input_ids, lengths)
        table = model.embedding.weight
    assert features.shape == (3, model.config.feature_dim)
    expected = []
    for row, tokens in enumerate([[5, 6, 7], [8, 9], [0]]):  # an empty sentence reads its one <pad>
        parts = []
        if source == "vector+tokens":
            parts += [vectors[row], table[tokens].mean(0), table[tokens].amax(0), table[tokens].amin(0)]
        if "states" in source:
            read = states[row, : len(tokens)]
            parts += [read.mean(0), read.amax(0)]
        if source in ("tokens", "states+tokens"):
            parts += [table[tokens].mean(0), table[tokens].amax(0)]
        expected.append(torch.cat(parts))
    torch.testing.assert_close(features, torch.stack(expected), atol=1e-6, rtol=0)
    widths = {"vector+tokens": (12, 16, 16, 16), "tokens": (16, 16), "states": (24, 24), "states+tokens": (24, 24, 16, 16)}
    assert model.config.feature_blocks == widths[source] and model.config.feature_dim == sum(widths[source])


def test_configs_saved_before_feature_source_existed_pool_the_states() -> None:
    saved = to_dict(ModelConfig())
    del saved["feature_source"]
    old = from_dict(ModelConfig, saved)
    assert old.feature_source == "states" and old.feature_dim == 2 * old.hidden_size
    today = ModelConfig()
    assert today.feature_source == "vector+tokens" and today.feature_dim == today.latent_dim + 3 * today.embedding_dim
    with pytest.raises(TextaeError, match="feature_source"):
        ModelConfig(feature_source="words").validate()


def test_loss_ignores_padding() -> None:
    model = make_model()
    input_ids, lengths = padded_batch([[5, 6, 7], [8, 9]])
    _, loss = model(input_ids, lengths)
    wider_ids, _ = padded_batch([[5, 6, 7], [8, 9]], width=9)
    _, wider_loss = model(wider_ids, lengths)
    torch.testing.assert_close(loss, wider_loss, atol=1e-6, rtol=0)


def test_forward_shapes_and_targets() -> None:
    model = make_model()
    input_ids, lengths = padded_batch([[5, 6, 7], [8, 9]])
    targets = append_eos(input_ids, lengths, model.config)
    assert targets.tolist() == [[5, 6, 7, 2], [8, 9, 2, 0]]
    logits, loss = model(input_ids, lengths)
    assert logits.shape == (2, 4, VOCAB)
    assert loss.item() == pytest.approx(torch.log(torch.tensor(float(VOCAB))).item(), rel=0.2)


def test_mix_inputs_keeps_bos_and_chooses_gold_or_prediction() -> None:
    gold = torch.tensor([[1, 5, 6, 7]])
    guesses = torch.tensor([[15, 16, 17]])
    predict = lambda fed: guesses.expand(fed.shape[0], -1)[fed]  # noqa: E731
    assert mix_inputs(gold, 1.0, predict).tolist() == [[1, 5, 6, 7]]
    assert mix_inputs(gold, 0.0, predict).tolist() == [[1, 15, 16, 17]]
    torch.manual_seed(0)
    mixed = mix_inputs(gold.repeat(2000, 1), 0.7, predict)
    assert (mixed[:, 1:] == gold[:, 1:]).float().mean().item() == pytest.approx(0.7, abs=0.03)
    assert set(mixed[:, 2].tolist()) == {6, 16}  # each position gets its own gold token or its own guess


def test_parallel_sampling_feeds_the_predictions_of_a_teacher_forced_pass() -> None:
    model = make_model()
    model.train()
    model.decoder.dropout.p = model.encoder.dropout.p = 0.0
    input_ids, lengths = padded_batch([[5, 6, 7, 8], [8, 9, 10, 11]])
    targets = append_eos(input_ids, lengths, model.config)
    z = model.encode(input_ids, lengths)
    gold = torch.cat([torch.ones_like(targets[:, :1]), targets[:, :-1]], dim=1)
    expected = model.decoder(gold, z, model.decoder.initial_state(z))[0].argmax(-1)[:, :-1]
    fed_inputs = []
    original = model.decoder.run  # both passes run the recurrence through Decoder.run
    model.decoder.run = lambda ids, *rest: (fed_inputs.append(ids), original(ids, *rest))[1]  # type: ignore[method-assign]
    model(input_ids, lengths, targets, teacher_forcing_ratio=0.0, sampling="parallel")
    assert torch.equal(fed_inputs[-1][:, 1:], expected) and torch.equal(fed_inputs[-1][:, 0], gold[:, 0])


@pytest.mark.parametrize("sampling", ["parallel", "step"])
def test_scheduled_sampling_trains_and_full_teacher_forcing_matches_eval(sampling: str) -> None:
    model = make_model()
    input_ids, lengths = padded_batch([[5, 6, 7], [8, 9]])
    model.train()
    _, forced = model(input_ids, lengths, teacher_forcing_ratio=1.0, sampling=sampling)
    _, sampled = model(input_ids, lengths, teacher_forcing_ratio=0.0, sampling=sampling)
    sampled.backward()
    assert model.encoder.rnn.weight_hh_l0.grad is not None
    model.eval()
    _, evaluated = model(input_ids, lengths)
    torch.testing.assert_close(forced, evaluated)


def test_step_sampling_with_full_forcing_equals_parallel_decoder() -> None:
    model = make_model()
    input_ids, lengths = padded_batch([[5, 6, 7], [8, 9]])
    targets = append_eos(input_ids, lengths, model.config)
    z = model.encode(input_ids, lengths)
    gold = torch.cat([torch.ones_like(targets[:, :1]), targets[:, :-1]], dim=1)
    parallel, _ = model.decoder(gold, z, model.decoder.initial_state(z))
    stepped = model._scheduled_sampling(gold, z, model.decoder.initial_state(z), ratio=1.0)
    torch.testing.assert_close(parallel, stepped, atol=1e-5, rtol=0)


def test_greedy_decode_pads_after_eos() -> None:
    model = make_model()
    z = torch.randn(3, model.config.latent_dim)
    ids = model.greedy_decode(z, max_length=12)
    assert ids.shape[0] == 3 and ids.shape[1] <= 12
    for row in ids.tolist():
        if 2 in row:
            assert all(token == 0 for token in row[row.index(2) + 1 :])


def test_score_is_mean_token_negative_log_likelihood() -> None:
    model = make_model()
    input_ids, lengths = padded_batch([[5, 6, 7], [8, 9]])
    logits, _ = model(input_ids, lengths)
    targets = append_eos(input_ids, lengths, model.config)
    log_probs = logits.log_softmax(-1).gather(2, targets.unsqueeze(2)).squeeze(2)
    expected = torch.stack([-log_probs[0, :4].mean(), -log_probs[1, :3].mean()])
    torch.testing.assert_close(model.score(input_ids, lengths), expected, atol=1e-5, rtol=0)


def test_empty_sentence_reads_one_pad_instead_of_crashing() -> None:
    model = make_model()
    vector = model.encode(torch.zeros(1, 1, dtype=torch.long), torch.tensor([0]))
    assert torch.isfinite(vector).all()


def test_bad_config_is_refused() -> None:
    from textae.errors import TextaeError

    with pytest.raises(TextaeError, match="cell"):
        Autoencoder(ModelConfig(vocab_size=VOCAB, cell="transformer"))
    with pytest.raises(TextaeError, match="dropout"):
        Autoencoder(ModelConfig(vocab_size=VOCAB, dropout=1.5))
