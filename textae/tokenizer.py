"""The subword tokenizer: byte-level BPE from HF `tokenizers`, so no character is ever unknown.

Torch-free: the production runtime loads the same `tokenizer.json` that training wrote.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from textae.config import BOS_TOKEN, EOS_TOKEN, PAD_TOKEN, SPECIAL_TOKENS, UNK_TOKEN
from textae.errors import TextaeError

TOKENIZER_FILE = "tokenizer.json"  # its name in a run folder and in an export folder alike

REPLACEMENT_CHARACTER = "\ufffd"


def clean_text(text: str) -> str:
    """text with every lone surrogate (U+D800..U+DFFF) replaced by U+FFFD.

    Python strings may hold lone surrogates (json.loads("\\ud800"), surrogateescape decoding) that
    UTF-8, and so the Rust tokenizer, cannot represent. Embedding them as U+FFFD, as a UTF-8 decoder
    does for bytes it cannot read, beats refusing a whole batch over one character. Training and the
    runtime both tokenize through encode_batch, so both see the same text. A surrogate pair written
    as two code points becomes the one character it encodes.
    """
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def train_tokenizer(sentences: Iterable[str], vocab_size: int) -> Tokenizer:
    """Train byte-level BPE on a stream of sentences; the special tokens get ids 0..3."""
    tokenizer = Tokenizer(models.BPE(unk_token=UNK_TOKEN))
    tokenizer.normalizer = normalizers.NFC()
    # add_prefix_space: a word is the same token at the start of a sentence and in its middle
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(map(clean_text, sentences), trainer=trainer)
    return tokenizer


def load_tokenizer(path: Path) -> Tokenizer:
    path = Path(path)
    if not path.is_file():
        raise TextaeError(f"{path}: tokenizer file not found")
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # noqa: BLE001 - the Rust side raises a bare Exception on malformed JSON
        raise TextaeError(f"{path}: not a valid tokenizer.json ({str(exc).splitlines()[0]})") from None
    special_token_ids(tokenizer, where=str(path))
    return tokenizer


def special_token_ids(tokenizer: Tokenizer, where: str = "tokenizer") -> dict[str, int]:
    """The ids of pad/bos/eos/unk; a tokenizer lacking pad, bos or eos cannot drive the decoder."""
    ids: dict[str, int] = {}
    for name, token in (("pad_id", PAD_TOKEN), ("bos_id", BOS_TOKEN), ("eos_id", EOS_TOKEN), ("unk_id", UNK_TOKEN)):
        token_id = tokenizer.token_to_id(token)
        if token_id is None:
            if name == "unk_id":
                token_id = ids["pad_id"]  # byte-level vocabularies never produce unknown tokens
            else:
                raise TextaeError(f"{where}: tokenizer has no {token} token; textae needs {', '.join(SPECIAL_TOKENS[:3])}")
        ids[name] = token_id
    return ids


def encode_batch(tokenizer: Tokenizer, sentences: Sequence[str], max_length: int) -> list[list[int]]:
    """Token ids of each sentence without special tokens, truncated to max_length."""
    encodings = tokenizer.encode_batch([clean_text(sentence) for sentence in sentences], add_special_tokens=False)
    return [encoding.ids[:max_length] for encoding in encodings]


def decode_batch(tokenizer: Tokenizer, sequences: Sequence[Sequence[int]]) -> list[str]:
    """Text of each id sequence; special tokens are dropped and the prefix space is removed."""
    texts = tokenizer.decode_batch([list(map(int, ids)) for ids in sequences], skip_special_tokens=True)
    return [text.strip() for text in texts]
