from pathlib import Path

import pytest
from helpers.tiny import TINY_SENTENCES

from textae.errors import TextaeError
from textae.tokenizer import decode_batch, encode_batch, load_tokenizer, special_token_ids, train_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(TINY_SENTENCES, vocab_size=400)


def test_special_tokens_come_first(tokenizer) -> None:
    assert special_token_ids(tokenizer) == {"pad_id": 0, "bos_id": 1, "eos_id": 2, "unk_id": 3}


def test_any_text_round_trips_byte_level(tokenizer) -> None:
    texts = ["the cat sat on the mat.", "Zürich — naïve café ☕ 日本語 🙂", "UPPER case & symbols #$%^"]
    ids = encode_batch(tokenizer, texts, max_length=1000)
    assert all(3 not in sequence for sequence in ids)  # never <unk>
    assert decode_batch(tokenizer, ids) == texts


def test_truncation(tokenizer) -> None:
    assert [len(s) for s in encode_batch(tokenizer, ["the cat sat on the mat. " * 20], max_length=7)] == [7]


def test_save_load_and_bad_files(tokenizer, tmp_path: Path) -> None:
    path = tmp_path / "tokenizer.json"
    tokenizer.save(str(path))
    assert load_tokenizer(path).get_vocab() == tokenizer.get_vocab()
    broken = tmp_path / "broken.json"
    broken.write_text("{not json", encoding="utf-8")
    with pytest.raises(TextaeError, match=r"not a valid tokenizer.json"):
        load_tokenizer(broken)
    with pytest.raises(TextaeError, match="not found"):
        load_tokenizer(tmp_path / "missing.json")
