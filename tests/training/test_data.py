import numpy as np
from helpers.tiny import TINY_SENTENCES

from textae.tokenizer import train_tokenizer
from textae.training.data import collate, epoch_batches, tokenize_corpus, tokenize_with_split


def test_split_is_seeded_and_capped() -> None:
    tokenizer = train_tokenizer(TINY_SENTENCES, vocab_size=400)
    first = tokenize_with_split(TINY_SENTENCES * 4, tokenizer, 64, valid_fraction=0.2, max_valid=15, seed=3)
    again = tokenize_with_split(TINY_SENTENCES * 4, tokenizer, 64, valid_fraction=0.2, max_valid=15, seed=3)
    train, valid = first
    assert len(valid) == 15 and len(train) + len(valid) == 200
    assert np.array_equal(train.token_ids, again[0].token_ids) and np.array_equal(valid.offsets, again[1].offsets)


def test_corpus_memory_is_its_token_ids() -> None:
    tokenizer = train_tokenizer(TINY_SENTENCES, vocab_size=400)
    corpus = tokenize_corpus(TINY_SENTENCES, tokenizer, 64)
    assert corpus.token_ids.dtype == np.int32 and corpus.token_ids.ndim == 1
    assert len(corpus) == len(TINY_SENTENCES) and corpus.num_tokens == corpus.token_ids.size


def test_epoch_batches_cover_every_sentence_once_with_little_padding() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 60, size=5000)
    batches = epoch_batches(lengths, batch_size=32, seed=1, epoch=0)
    assert sorted(np.concatenate(batches).tolist()) == list(range(5000))
    assert all(np.array_equal(a, b) for a, b in zip(batches, epoch_batches(lengths, 32, seed=1, epoch=0)))
    assert not np.array_equal(np.concatenate(batches), np.concatenate(epoch_batches(lengths, 32, seed=1, epoch=1)))
    padded = sum(len(b) * lengths[b].max() for b in batches)
    assert lengths.sum() / padded > 0.9  # random batches would be about half padding


def test_collate_places_eos_and_padding() -> None:
    tokenizer = train_tokenizer(TINY_SENTENCES, vocab_size=400)
    corpus = tokenize_corpus(["the cat sat on the mat.", "it rained."], tokenizer, 64)
    batch = collate(corpus, np.array([0, 1]), pad_id=0, eos_id=2)
    n0, n1 = batch.lengths.tolist()
    assert batch.input_ids.shape == (2, max(n0, n1)) and batch.targets.shape == (2, max(n0, n1) + 1)
    assert batch.targets[0, n0] == 2 and batch.targets[1, n1] == 2
    assert batch.input_ids[1, n1:].eq(0).all() and batch.targets[1, n1 + 1 :].eq(0).all()
    assert batch.num_target_tokens == n0 + n1 + 2
    # a <pad> id other than 0 (here one no sentence token has): padding is still not counted as target tokens
    other = collate(corpus, np.array([0, 1]), pad_id=9999, eos_id=2)
    assert other.targets[1, n1 + 1 :].eq(9999).all() and other.num_target_tokens == n0 + n1 + 2


def test_noise_corrupts_inputs_but_not_targets() -> None:
    from textae.training.data import TokenizedCorpus, add_noise

    rng = np.random.default_rng(0)
    tokens = np.arange(10, 40, dtype=np.int32)
    deleted = add_noise(tokens, {"delete": 0.5}, 3, rng)
    assert 0 < len(deleted) < len(tokens) and set(deleted) <= set(tokens)
    swapped = add_noise(tokens, {"swap": 0.5}, 3, rng)
    assert sorted(swapped) == list(tokens) and not np.array_equal(swapped, tokens)
    masked = add_noise(tokens, {"mask": 0.5}, 3, rng)
    assert len(masked) == len(tokens) and (masked == 3).any()
    assert len(add_noise(np.array([7], dtype=np.int32), {"delete": 0.99}, 3, rng)) == 1  # never empty

    corpus = TokenizedCorpus(np.array([0, 30]), tokens)
    batch = collate(corpus, np.array([0]), 0, 2, {"delete": 0.3, "mask": 0.3}, 3, np.random.default_rng(1))
    assert batch.targets[0, :30].tolist() == tokens.tolist() and batch.targets[0, 30] == 2
    assert batch.lengths[0] < 30 and batch.input_ids.shape[1] == batch.lengths[0]


def test_batch_groups_pair_batches_of_similar_length_for_processes_stepping_together() -> None:
    from textae.training.data import epoch_batch_groups

    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 60, size=5000)
    groups = epoch_batch_groups(lengths, batch_size=32, seed=1, epoch=0, group_size=2)
    assert sorted(np.concatenate([b for g in groups for b in g]).tolist()) == list(range(5000))
    full = [g for g in groups if len(g) == 2]
    assert len(full) >= len(groups) - 5  # at most one incomplete group per pool
    longest = np.array([[lengths[b].max() for b in g] for g in full])
    assert np.abs(longest[:, 0] - longest[:, 1]).mean() < 2  # vs about 20 for random pairs


def _lines(count: int) -> list[str]:
    return [f"{TINY_SENTENCES[index % len(TINY_SENTENCES)]} {index}" for index in range(count)]


def test_a_small_corpus_holds_out_enough_to_support_a_p99_flag() -> None:
    # the log corpus: 1,114 lines, of which 5 % (56) cannot support a conformal p99
    tokenizer = train_tokenizer(TINY_SENTENCES, vocab_size=400)
    train, valid = tokenize_with_split(_lines(1114), tokenizer, 64, 0.05, 2000, seed=3, min_valid=200)
    assert len(valid) == 200 and len(train) == 914
    again = tokenize_with_split(_lines(1114), tokenizer, 64, 0.05, 2000, seed=3, min_valid=200)
    assert np.array_equal(valid.token_ids, again[1].token_ids)
    # never more than a fifth of the corpus: 600 lines hold out 120
    assert len(tokenize_with_split(_lines(600), tokenizer, 64, 0.05, 2000, seed=3, min_valid=200)[1]) == 120
    # a corpus whose fifth cannot reach 99 keeps the fraction (the export names what it cannot support)
    small = tokenize_with_split(_lines(400), tokenizer, 64, 0.05, 2000, seed=3, min_valid=200)[1]
    plain = tokenize_with_split(_lines(400), tokenizer, 64, 0.05, 2000, seed=3)[1]
    assert np.array_equal(small.offsets, plain.offsets) and len(small) < 40


def test_a_large_corpus_splits_exactly_as_without_the_minimum() -> None:
    tokenizer = train_tokenizer(TINY_SENTENCES, vocab_size=400)
    with_minimum = tokenize_with_split(_lines(9000), tokenizer, 64, 0.05, 2000, seed=3, min_valid=200)
    without = tokenize_with_split(_lines(9000), tokenizer, 64, 0.05, 2000, seed=3)
    for ours, theirs in zip(with_minimum, without):
        assert np.array_equal(ours.offsets, theirs.offsets) and np.array_equal(ours.token_ids, theirs.token_ids)
