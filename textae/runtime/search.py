"""Nearest-neighbour search over sentence vectors, and the reusable vector index file (torch-free).

Search is exact: one matrix product of unit vectors (cosine similarity) and a partial sort. That is
the right tool up to about a million sentences: the vectors take N x D x 4 bytes (1M x 256 floats
= 1 GB of RAM) and a query costs one pass over them (measured on 2 CPU cores: ~13 ms per query at
100k x 256, ~90 ms at 1M x 256; batching queries is several times cheaper per query). Beyond that,
or when queries must take well under a millisecond, use an approximate index: FAISS (IndexFlatIP
is the same exact search, faster; IVF or HNSW indexes for tens of millions) or hnswlib.

An index file (`textae index MODEL FILE --out INDEX.npz`) is a NumPy .npz holding the unit vectors,
the sentences (UTF-8 bytes plus offsets, so loading needs no pickle), and JSON metadata: the model's
fingerprint (sha256 of its manifest, which records the sha256 of every graph, plus the precision
used) and the source file's path and sha256. Loading an index for a different model is refused:
its vectors would live in another space.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from textae.atomic import atomic_write
from textae.batching import DEFAULT_BATCH_SIZE, unit_rows
from textae.errors import TextaeError
from textae.manifest import MANIFEST_FILE, sha256_file
from textae.runtime.files import read_sentences
from textae.runtime.model import TextAE

INDEX_FORMAT = 1  # bump when a reader of the previous version could misread an index file
INDEX_SUFFIX = ".npz"
# Similarity rows computed at once: bounds the (queries x corpus) score matrix to ~64 MB of float32.
SCORE_BLOCK = 16 * 1024 * 1024


@dataclass
class Neighbour:
    index: int  # row in the corpus (0-based; the n-th non-empty line of the source file)
    score: float  # cosine similarity, in [-1, 1]
    text: str


def model_fingerprint(model: TextAE) -> str:
    """What an index's vectors depend on: the exact graphs (via the manifest's checksums) and the embed precision."""
    return f"{sha256_file(model.folder / MANIFEST_FILE)}:{model.precisions['embed']}"


def top_k_cosine(corpus_unit: np.ndarray, query_unit: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices (Q, k'), scores (Q, k')) of the k' = min(k, N) most similar corpus rows per query,
    best first; equal scores are ordered by corpus row, so results are deterministic."""
    if k < 1:
        raise TextaeError(f"top k must be a positive integer, got {k}")
    count = len(corpus_unit)
    k = min(k, count)
    indices = np.zeros((len(query_unit), k), dtype=np.int64)
    scores = np.zeros((len(query_unit), k), dtype=np.float32)
    block = max(1, SCORE_BLOCK // max(count, 1))
    for start in range(0, len(query_unit), block):
        similarity = query_unit[start : start + block] @ corpus_unit.T  # (q, N)
        # argpartition finds the k best in O(N); only those k are then sorted
        candidates = np.argpartition(-similarity, k - 1, axis=1)[:, :k] if k < count else np.tile(np.arange(count), (len(similarity), 1))
        for row, columns in enumerate(candidates):
            values = similarity[row, columns]
            order = np.lexsort((columns, -values))
            indices[start + row] = columns[order]
            scores[start + row] = values[order]
    return indices, scores


@dataclass
class VectorIndex:
    vectors: np.ndarray  # (N, D) float32, unit length
    texts: list[str]  # sentence of each row
    model_fingerprint: str
    source: str  # the text file the sentences came from
    source_sha256: str

    @classmethod
    def build(cls, model: TextAE, source: Path, batch_size: int = DEFAULT_BATCH_SIZE) -> VectorIndex:
        """Embed every non-empty line of source."""
        source = Path(source)
        texts = read_sentences(source)
        if not texts:
            raise TextaeError(f"{source}: no sentences (the file is empty or blank)")
        vectors = model.embed(texts, batch_size=batch_size, normalize=True)
        if str(source) == "-":  # standard input has no file to hash: hash the sentences read
            digest = hashlib.sha256("\n".join(texts).encode("utf-8")).hexdigest()
        else:
            digest = sha256_file(source)
        return cls(unit_rows(vectors), texts, model_fingerprint(model), str(source), digest)

    def search(self, query_vectors: np.ndarray, top_k: int = 10) -> list[list[Neighbour]]:
        """The top_k nearest sentences by cosine similarity for each query vector, best first."""
        query_vectors = np.asarray(query_vectors, dtype=np.float32)
        if query_vectors.ndim != 2 or query_vectors.shape[1] != self.vectors.shape[1]:
            raise TextaeError(f"expected query vectors of shape (Q, {self.vectors.shape[1]}), got {query_vectors.shape}")
        indices, scores = top_k_cosine(self.vectors, unit_rows(query_vectors), top_k)
        return [
            [Neighbour(int(i), float(s), self.texts[i]) for i, s in zip(row_indices, row_scores)]
            for row_indices, row_scores in zip(indices, scores)
        ]

    def check_model(self, model: TextAE, where: str) -> None:
        if self.model_fingerprint != model_fingerprint(model):
            raise TextaeError(
                f"{where}: index was built with a different model or precision than {model.folder} ({model.precisions['embed']}); "
                "rebuild it with `textae index`"
            )

    def save(self, path: Path) -> None:
        """Write atomically as .npz: a reader never sees half an index."""
        path = Path(path)
        check_index_output(path)
        encoded = [text.encode("utf-8") for text in self.texts]
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([len(item) for item in encoded])
        meta = {
            "format": INDEX_FORMAT,
            "model_fingerprint": self.model_fingerprint,
            "source": self.source,
            "source_sha256": self.source_sha256,
            "sentences": len(self.texts),
            "dim": int(self.vectors.shape[1]),
        }
        arrays = {
            "vectors": self.vectors,
            "text_bytes": np.frombuffer(b"".join(encoded), dtype=np.uint8),
            "text_offsets": offsets,
            "meta": np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8),
        }

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as handle:  # a handle, so numpy does not append a second suffix
                np.savez(handle, **arrays)  # type: ignore[arg-type]  # numpy's stub mistypes **kwds

        atomic_write(path, write)

    @classmethod
    def load(cls, path: Path) -> VectorIndex:
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as arrays:
                meta: dict[str, Any] = json.loads(arrays["meta"].tobytes().decode("utf-8"))
                vectors = arrays["vectors"]
                text_bytes, offsets = arrays["text_bytes"].tobytes(), arrays["text_offsets"]
        except FileNotFoundError:
            raise TextaeError(f"{path}: no such file") from None
        except (KeyError, ValueError, OSError, zipfile.BadZipFile, UnicodeDecodeError) as exc:
            raise TextaeError(f"{path}: not a textae index ({exc}); build one with `textae index MODEL FILE --out {path.name}`") from None
        if meta.get("format") != INDEX_FORMAT:
            raise TextaeError(f"{path}: index format {meta.get('format')!r} is not supported (this textae reads {INDEX_FORMAT}); rebuild it")
        texts = [text_bytes[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(len(offsets) - 1)]
        if vectors.ndim != 2 or len(vectors) != len(texts):
            raise TextaeError(f"{path}: damaged index ({vectors.shape} vectors for {len(texts)} sentences)")
        return cls(vectors.astype(np.float32, copy=False), texts, meta["model_fingerprint"], meta["source"], meta["source_sha256"])


def check_index_output(path: Path) -> None:
    if path.suffix != INDEX_SUFFIX:
        raise TextaeError(f"{path}: an index file must end in {INDEX_SUFFIX}")
    if not path.parent.is_dir():
        raise TextaeError(f"{path.parent}: output folder does not exist")
    if path.is_dir():
        raise TextaeError(f"{path}: is a folder")


def open_corpus(model: TextAE, corpus: Path) -> VectorIndex:
    """An index file (.npz, checked against the model) or a text file embedded now."""
    corpus = Path(corpus)
    if corpus.suffix == INDEX_SUFFIX:
        index = VectorIndex.load(corpus)
        index.check_model(model, str(corpus))
        return index
    return VectorIndex.build(model, corpus)


def similar_sentences(model: TextAE, corpus: Path, queries: list[str], top_k: int = 10) -> list[list[Neighbour]]:
    """The top_k corpus sentences most similar to each query (cosine of their vectors), best first."""
    if not queries:
        raise TextaeError("no query sentences given")
    index = open_corpus(model, corpus)
    return index.search(model.embed(queries), top_k)
