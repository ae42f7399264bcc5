"""The production runtime: embed, reconstruct, decode and score text with onnxruntime, never torch.

Imports only numpy, onnxruntime, tokenizers, the standard library and torch-free textae modules, so
it runs in an install without torch (a test imports it with torch blocked).

    model = TextAE.load("export/my-run")
    vectors = model.embed(["the cat sat on the mat.", "a dog ran in the park."])  # (2, dim) float32, whitened
    model.decode((vectors[:1] + vectors[1:]) / 2)  # text from the point halfway between them
    model.score(["the cat sat on the mat."])       # mean token NLL: higher is more anomalous
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from textae.batching import DEFAULT_BATCH_SIZE, cut_at_eos, length_sorted_batches, pad_batch, unit_rows
from textae.conformal import sentences_needed
from textae.errors import TextaeError
from textae.manifest import (
    GRAPH_SIGNATURES,
    JOBS,
    MANIFEST_FILE,
    PRECISIONS,
    Manifest,
    graph_signature,
    int8_is_exact_on,
    percentile_key,
)
from textae.runtime.beam import beam_search, check_beam_size
from textae.runtime.generate import (
    SPREAD_AROUND_THE_DISTRIBUTION,
    SPREAD_NEAR_A_SENTENCE,
    LatentDistribution,
    check_generate_options,
)
from textae.runtime.postprocess import Whitening
from textae.tokenizer import decode_batch, encode_batch, load_tokenizer, special_token_ids

DECODE_METHODS = ("loop", "step")
STATE_BATCH_AXIS = 2  # decoder_init's and decoder_step's state: (states, layers, batch, hidden)
EMBED_OUTPUTS = ("sentence_embedding", "features")  # the encoder's outputs embed() can return
# run_graph's job for each graph: the encoder alone serves `embed`; every graph that decodes serves `text`
GRAPH_JOBS = {graph: "embed" if graph == "encoder" else "text" for graph in GRAPH_SIGNATURES}


class TextAE:
    """A loaded export folder. Safe to share between threads: after load nothing changes except the
    lazily created onnxruntime sessions, which are created under a lock and are thread-safe to run.

    Each job runs at its own precision (`precisions`): "embed" (embed, the vectors) and "text"
    (reconstruct, score, decode, generate: the encoder inside them too, so text is fp32 or int8 from
    end to end), as the export's gates chose them unless `load` is told one precision for both.

    embed applies the post-processing the export stores for each output (a whitening, see
    `textae.runtime.postprocess`) unless called with raw=True, and decode undoes it, so the vectors
    embed returns are the ones decode takes (raw=True on both for the encoder's own); score,
    reconstruct, generate and the latent distribution work on raw vectors inside."""

    def __init__(
        self, folder: Path, manifest: Manifest, tokenizer: Tokenizer, precisions: dict[str, str], num_threads: int | None
    ) -> None:
        self.folder = folder
        self.manifest = manifest
        self.config = manifest.model
        self.tokenizer = tokenizer
        self.precisions = dict(precisions)  # job -> "fp32" or "int8"
        self.num_threads = num_threads
        self._sessions: dict[tuple[str, str], ort.InferenceSession] = {}  # (graph, precision) -> session
        self._sessions_lock = threading.Lock()
        self._tables: dict[str, ort.OrtValue] = {}  # computed at load, shared by the sessions that read them
        self._latent: LatentDistribution | None = None
        self._postprocess: dict[str, Whitening] = {}  # encoder output -> its stored whitening, read at load

    @classmethod
    def load(cls, path: str | Path, num_threads: int | None = None, precision: str | None = None) -> TextAE:
        """Open an export folder after checking every file against its manifest.

        num_threads sets onnxruntime's intra-op threads (default: one per physical core); precision
        picks fp32 or int8 graphs for every job (default: per job, what the export's gates chose;
        fp32 where an older export's 8-bit int8 weights would saturate on this CPU).
        """
        folder = Path(path)
        manifest = Manifest.load(folder)
        available = manifest.precisions
        if precision is not None:
            if precision not in PRECISIONS or precision not in available:
                raise TextaeError(f"{folder}: precision {precision!r} not available; this export has {', '.join(available)}")
            precisions = dict.fromkeys(JOBS, precision)
        else:
            exact = int8_is_exact_on(manifest)  # reads the CPU only for an older, 8-bit export
            precisions = {job: _usable(manifest.job_precision(job), available, exact) for job in JOBS}
        if num_threads is not None and (not isinstance(num_threads, int) or num_threads < 1):
            raise TextaeError(f"num_threads must be a positive integer, got {num_threads!r}")
        tokenizer = load_tokenizer(folder / manifest.tokenizer)
        ids = special_token_ids(tokenizer, where=str(folder / manifest.tokenizer))
        if ids != manifest.special_tokens:
            raise TextaeError(f"{folder}: tokenizer special token ids {ids} differ from {MANIFEST_FILE} {manifest.special_tokens}")
        model = cls(folder, manifest, tokenizer, precisions, num_threads)
        model._postprocess = _load_postprocess(folder, manifest)
        model._session("encoder", "embed")  # fail at load, not at the first call, when the runtime cannot read the graph
        return model

    @property
    def precision(self) -> str:
        """The precision for display: "int8" or "fp32" when both jobs share it, else "int8 embed, fp32 text"."""
        embed, text = (self.precisions[job] for job in JOBS)
        return embed if embed == text else f"{embed} embed, {text} text"

    @property
    def dim(self) -> int:
        """Width of embed(...): the stored whitening's, else latent_dim (`raw_dim`)."""
        whitening = self._postprocess.get("sentence_embedding")
        return whitening.dim if whitening else self.raw_dim

    @property
    def raw_dim(self) -> int:
        """Width of the encoder's sentence vector (latent_dim): embed(..., raw=True), and what decode reads."""
        return self.config.latent_dim

    # --- public API ---------------------------------------------------------------------------

    @property
    def feature_dim(self) -> int:
        """Width of embed(..., output="features"): the stored whitening's, else `raw_feature_dim`."""
        whitening = self._postprocess.get("features")
        return whitening.dim if whitening else self.raw_feature_dim

    @property
    def raw_feature_dim(self) -> int:
        """Width of the encoder's features (`ModelConfig.feature_dim`): embed(..., output="features", raw=True)."""
        return self.config.feature_dim

    def postprocessing(self, output: str = "sentence_embedding") -> Whitening | None:
        """The whitening embed applies to output by default, or None (raw vectors: an export without one)."""
        self._check_output(output)
        return self._postprocess.get(output)

    @property
    def has_features(self) -> bool:
        """Whether the encoder has the `features` output (exports of format version 1 have not)."""
        return "features" in graph_signature("encoder", self.manifest.format_version)[1]

    def embed(
        self,
        sentences: Sequence[str],
        batch_size: int = DEFAULT_BATCH_SIZE,
        normalize: bool = False,
        output: str = "sentence_embedding",
        raw: bool = False,
    ) -> np.ndarray:
        """Sentence vectors (N, dim) float32, in input order; with output="features", the
        encoder's features (N, feature_dim), what the export's `config.feature_source` names
        (vector+tokens: the sentence vector, and the mean, max and min over each sentence's token
        embeddings, each block whitened on its own by default; tokens, states, states+tokens: the
        mean and max of the token embeddings, of the top layer's states, or of both).

        By default the export's stored post-processing of that output is applied (a whitening
        fitted on the run's training sentences: `postprocessing`); raw=True returns the encoder's
        own vectors (N, raw_dim or raw_feature_dim), the ones decode reads. normalize scales the
        final vectors to unit length.

        Sentences are stripped, tokenized, truncated to the model's max_length and run in batches of
        similar length. An empty (or blank) sentence has zero tokens: the encoder reads one <pad>
        instead, exactly as the torch model does.
        """
        sentences = _check_sentences(sentences)
        _check_batch_size(batch_size)
        self._check_output(output)
        return self.embed_ids(self.tokenize(sentences), batch_size=batch_size, normalize=normalize, output=output, raw=raw)

    def embed_ids(
        self,
        token_ids: Sequence[Sequence[int]],
        width: int | None = None,
        output: str = "sentence_embedding",
        *,
        batch_size: int | None = None,
        normalize: bool = False,
        raw: bool = False,
    ) -> np.ndarray:
        """embed() for sentences already tokenized (as `tokenize` returns them): (N, dim)
        float32, or (N, feature_dim) with output="features"; raw=True as in embed.

        batch_size=None runs them in ONE onnxruntime call; a number runs length-sorted batches of at
        most that many. width pads each call to at least that many columns: a caller that batches
        can keep the number of distinct input shapes small. The encoder reads `lengths`, so padding
        never changes a vector, and the whitening is computed row by row, so neither does batching.
        """
        column = self._check_output(output)
        if batch_size is None:
            vectors = self._encode(token_ids, width, output, "embed")
        else:
            _check_batch_size(batch_size)
            vectors = np.zeros((len(token_ids), self.raw_dim if column == 0 else self.raw_feature_dim), dtype=np.float32)
            for rows in length_sorted_batches([len(ids) for ids in token_ids], batch_size):
                vectors[rows] = self._encode([token_ids[row] for row in rows], width, output, "embed")
        whitening = None if raw else self._postprocess.get(output)
        if whitening is not None:
            vectors = whitening.apply(vectors)
        return unit_rows(vectors) if normalize else vectors

    def score(self, sentences: Sequence[str], batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
        """Anomaly score (N,) float32: each sentence's mean per-token negative log-likelihood (tokens
        and <eos>) under the decoder, given the sentence's own vector. Higher is more unusual."""
        sentences = _check_sentences(sentences)
        _check_batch_size(batch_size)
        return self.score_ids(self.tokenize(sentences), batch_size=batch_size)

    def score_ids(self, token_ids: Sequence[Sequence[int]], width: int | None = None, *, batch_size: int | None = None) -> np.ndarray:
        """score() for sentences already tokenized (N,) float32; batch_size and width as in embed_ids."""
        if batch_size is None:
            return self._score(token_ids, width)
        _check_batch_size(batch_size)
        scores = np.zeros(len(token_ids), dtype=np.float32)
        for rows in length_sorted_batches([len(ids) for ids in token_ids], batch_size):
            scores[rows] = self._score([token_ids[row] for row in rows], width)
        return scores

    def score_percentiles(self) -> dict[float, float]:
        """Percentile -> anomaly score of the run's in-domain validation sentences, for the text precision
        (stored at export: {50.0: ..., 99.0: ..., 99.9: ...}); empty for exports made before."""
        calibration = self.manifest.calibration or {}
        stored = (calibration.get("score_percentiles") or {}).get(self.precisions["text"]) or {}
        return {float(key): float(value) for key, value in stored.items()}

    def anomaly_threshold(self, percentile: float) -> float:
        """The score an unseen in-domain sentence exceeds with probability at most 1 - percentile/100
        (conformal, from the validation sentences; interpolated in exports made before)."""
        stored = self.score_percentiles()
        if not stored:
            raise TextaeError(f"{self.folder}: this export has no calibrated score percentiles (exported before "
                              "textae stored them); re-export the run with `textae export`")  # fmt: skip
        calibration = self.manifest.calibration or {}
        if percentile_key(percentile) in (calibration.get("unsupported_percentiles") or []):
            raise TextaeError(
                f"percentile {percentile_key(percentile)} needs at least {sentences_needed(float(percentile)):,} in-domain "
                f"validation sentences and this export was calibrated on {calibration.get('sentences', 0):,}; its "
                f"supported percentiles are {', '.join(percentile_key(p) for p in sorted(stored))} (or train with "
                "--valid FILE holding more unseen in-domain text)"
            )
        if float(percentile) not in stored:
            raise TextaeError(f"percentile must be one of {', '.join(percentile_key(p) for p in sorted(stored))} "
                              f"(the ones this export supports), got {percentile_key(percentile)}")  # fmt: skip
        return stored[float(percentile)]

    def latent_distribution(self) -> LatentDistribution:
        """Mean and covariance of the run's validation vectors, read from the export once."""
        if self._latent is None:
            calibration = self.manifest.calibration or {}
            if not calibration.get("latent_mean") or not calibration.get("latent_covariance"):
                raise TextaeError(f"{self.folder}: this export has no latent statistics (exported before textae "
                                  "stored them); re-export the run with `textae export`")  # fmt: skip
            mean, covariance = (
                _load_array(self.folder / calibration[key]) for key in ("latent_mean", "latent_covariance")
            )
            self._latent = LatentDistribution(mean, covariance)
        return self._latent

    def generate(
        self,
        count: int,
        *,
        near: str | None = None,
        spread: float | None = None,
        seed: int | None = None,
        max_length: int | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> list[str]:
        """count new sentences, greedily decoded from sampled vectors.

        Without `near`: vectors from a Gaussian with the mean and covariance of the run's validation
        vectors, its spread scaled by `spread` (default 1.0). With `near`: vectors around that
        sentence's own, each dimension moved by `spread` (default 0.8) times the dimension's
        standard deviation over the validation vectors. `seed` makes the draw repeatable.
        """
        check_generate_options(count, spread)
        if near is not None and not isinstance(near, str):
            raise TextaeError(f"near must be a sentence (str), got a {type(near).__name__}")
        distribution = self.latent_distribution()
        rng = np.random.default_rng(seed)
        if near is None:
            vectors = distribution.sample(count, rng, SPREAD_AROUND_THE_DISTRIBUTION if spread is None else spread)
        else:
            centre = self._encode(self.tokenize([near]), None, "sentence_embedding", "text")[0]
            vectors = distribution.sample_near(centre, count, rng, SPREAD_NEAR_A_SENTENCE if spread is None else spread)
        return self.decode(vectors, batch_size=batch_size, max_length=max_length, raw=True)

    def reconstruct(
        self, sentences: Sequence[str], batch_size: int = DEFAULT_BATCH_SIZE, max_length: int | None = None, beam_size: int = 1
    ) -> list[str]:
        """Encode each sentence and decode it: what the model remembers of it. beam_size 1 decodes
        greedily; more keeps that many hypotheses per sentence (`decode_ids`)."""
        sentences = _check_sentences(sentences)
        _check_batch_size(batch_size)
        check_beam_size(beam_size)
        token_ids = self.tokenize(sentences)
        texts = [""] * len(sentences)
        # similar input lengths give similar output lengths, so the Loop's early exit wastes less
        for rows in length_sorted_batches([len(ids) for ids in token_ids], batch_size):
            vectors = self._encode([token_ids[row] for row in rows], None, "sentence_embedding", "text")
            for row, text in zip(rows, self._decode_texts(vectors, max_length, beam_size)):
                texts[row] = text
        return texts

    def decode(
        self,
        vectors: np.ndarray,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_length: int | None = None,
        *,
        raw: bool = False,
        beam_size: int = 1,
    ) -> list[str]:
        """Text for each row of vectors as embed returns them (N, dim), or a point between two:
        the export's whitening is undone first (decode(embed(x)) reconstructs x). raw=True takes the
        encoder's raw vectors (N, raw_dim), as embed(..., raw=True) gives them. Greedy unless
        beam_size > 1."""
        vectors = self._raw_vectors(vectors) if not raw else self._check_vectors(vectors)
        _check_batch_size(batch_size)
        check_beam_size(beam_size)
        texts: list[str] = []
        for start in range(0, len(vectors), batch_size):
            texts.extend(self._decode_texts(vectors[start : start + batch_size], max_length, beam_size))
        return texts

    def decode_ids(self, vectors: np.ndarray, max_length: int | None = None, beam_size: int = 1) -> list[list[int]]:
        """Token ids per row of raw vectors, up to and without <eos>: `greedy_ids` for a beam of 1,
        else a beam search of that width over the one-step graph (`textae.runtime.beam`), which
        costs about beam_size times the greedy decode's arithmetic and one onnxruntime call a token."""
        check_beam_size(beam_size)
        if beam_size == 1:
            return self.greedy_ids(vectors, max_length)
        vectors = self._check_vectors(vectors)
        max_length = self._check_max_length(max_length)
        if len(vectors) == 0:
            return []
        (state,) = self.run_graph("decoder_init", sentence_embedding=vectors)

        # the graphs' state is (states, layers, B, H); the search reorders hypotheses along axis 0
        def step(input_ids: np.ndarray, sentence_embedding: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            state = np.ascontiguousarray(np.moveaxis(rows, 0, STATE_BATCH_AXIS))
            logits, next_state = self.run_graph("decoder_step", input_ids=input_ids, sentence_embedding=sentence_embedding, state=state)
            return logits, np.moveaxis(next_state, STATE_BATCH_AXIS, 0)

        config = self.config
        return beam_search(
            step, vectors, np.moveaxis(state, STATE_BATCH_AXIS, 0), bos_id=config.bos_id, eos_id=config.eos_id,
            pad_id=config.pad_id, beam_size=beam_size, max_length=max_length,
        )  # fmt: skip

    def greedy_ids(self, vectors: np.ndarray, max_length: int | None = None, method: str = "loop") -> list[list[int]]:
        """Greedy token ids per row, up to and without <eos>.

        method "loop" runs the whole decode in one onnxruntime call (the graph's Loop stops when every
        row has produced <eos>); "step" drives the one-step graph from Python, one call per token.
        Both give the same ids; "step" exists as a fallback and to measure what the Loop saves.
        """
        vectors = self._check_vectors(vectors)
        max_length = self._check_max_length(max_length)
        if len(vectors) == 0:
            return []
        if method == "loop":
            (token_ids,) = self.run_graph("decoder_greedy", sentence_embedding=vectors, max_length=np.array(max_length, dtype=np.int64))
        elif method == "step":
            token_ids = self._step_loop(vectors, max_length)
        else:
            raise TextaeError(f"method must be one of {', '.join(DECODE_METHODS)}; got {method!r}")
        return [cut_at_eos(row, self.config.eos_id) for row in token_ids]

    def tokenize(self, sentences: Sequence[str]) -> list[list[int]]:
        """Token ids as the graphs read them: stripped (as every line of a training corpus is, so
        " text " and "text" get the same vector), no special tokens, at most max_length ids."""
        return encode_batch(self.tokenizer, [sentence.strip() for sentence in sentences], self.config.max_length)

    def tokenize_with_truncation(self, sentences: Sequence[str]) -> tuple[list[list[int]], list[bool]]:
        """`tokenize`, and for each sentence whether it had more than max_length tokens and was cut,
        so a caller (the HTTP server) can report or refuse truncation instead of hiding it."""
        limit = self.config.max_length
        full = encode_batch(self.tokenizer, [sentence.strip() for sentence in sentences], sys.maxsize)
        return [ids[:limit] for ids in full], [len(ids) > limit for ids in full]

    def run_graph(self, graph: str, **inputs: np.ndarray) -> list[np.ndarray]:
        """Run one graph of the export on raw arrays, at the precision of its job (GRAPH_JOBS: the
        encoder at embed's, the others at text's); the manifest lists each graph's inputs and shapes."""
        if graph not in GRAPH_SIGNATURES:
            raise TextaeError(f"no graph {graph!r}; the export has {', '.join(GRAPH_SIGNATURES)}")
        return self._session(graph, GRAPH_JOBS[graph]).run(None, inputs)

    # --- internals ----------------------------------------------------------------------------

    def _encode(self, token_ids: Sequence[Sequence[int]], width: int | None, output: str, job: str) -> np.ndarray:
        """One encoder call at job's precision, asking for the one output wanted, so onnxruntime
        skips the other one's pooling."""
        input_ids, lengths = self._pad_to(token_ids, width)
        return self._session("encoder", job).run([output], {"input_ids": input_ids, "lengths": lengths})[0]

    def _score(self, token_ids: Sequence[Sequence[int]], width: int | None) -> np.ndarray:
        input_ids, lengths = self._pad_to(token_ids, width)
        return self._session("decoder_score", "text").run(None, {"input_ids": input_ids, "lengths": lengths})[0]

    def _decode_texts(self, vectors: np.ndarray, max_length: int | None, beam_size: int = 1) -> list[str]:
        return decode_batch(self.tokenizer, self.decode_ids(vectors, max_length, beam_size))

    def _step_loop(self, vectors: np.ndarray, max_length: int) -> np.ndarray:
        """The greedy decode of model.greedy_decode, one onnxruntime call per generated token."""
        pad_id, eos_id = self.config.pad_id, self.config.eos_id
        (state,) = self.run_graph("decoder_init", sentence_embedding=vectors)  # text graphs: the text precision
        input_ids = np.full(len(vectors), self.config.bos_id, dtype=np.int64)
        finished = np.zeros(len(vectors), dtype=bool)
        steps = []
        for _ in range(max_length):
            logits, state = self.run_graph("decoder_step", input_ids=input_ids, sentence_embedding=vectors, state=state)
            input_ids = np.where(finished, pad_id, logits.argmax(axis=1)).astype(np.int64)
            steps.append(input_ids)
            finished |= input_ids == eos_id
            if finished.all():
                break
        return np.stack(steps, axis=1)

    def _check_output(self, output: str) -> int:
        """The encoder output's position, after checking the name and that this export has it."""
        if output not in EMBED_OUTPUTS:
            raise TextaeError(f"output must be one of {', '.join(EMBED_OUTPUTS)}; got {output!r}")
        if output == "features" and not self.has_features:
            raise TextaeError(f"{self.folder}: this export's encoder has no features output (exported before textae "
                              "added it); re-export the run with `textae export` to get them")  # fmt: skip
        return EMBED_OUTPUTS.index(output)

    def _pad_to(self, token_ids: Sequence[Sequence[int]], width: int | None) -> tuple[np.ndarray, np.ndarray]:
        if len(token_ids) == 0:
            raise TextaeError("expected at least one tokenized sentence")
        return pad_batch(token_ids, self.config.pad_id, min_width=width or 1)

    def _raw_vectors(self, vectors: np.ndarray) -> np.ndarray:
        """embed's default vectors -> the raw vectors the decoder reads (the same, without a whitening)."""
        whitening = self._postprocess.get("sentence_embedding")
        if whitening is None:
            return self._check_vectors(vectors)
        if not whitening.invertible:
            raise TextaeError(f"this export whitens sentence vectors to {whitening.dim} of {whitening.input_dim} dimensions, "
                              "which decode cannot undo: decode raw vectors (embed(..., raw=True)) with raw=True")  # fmt: skip
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != whitening.dim or not np.isfinite(vectors).all():
            self._check_vectors(vectors)  # its message names the shape or the NaN
        unwhitened = whitening.undo(vectors)
        if not np.isfinite(unwhitened).all():
            raise TextaeError("vectors too large to undo the export's whitening (beyond float32); "
                              "decode raw vectors (embed(..., raw=True)) with raw=True")  # fmt: skip
        return self._check_vectors(unwhitened)

    def _check_vectors(self, vectors: np.ndarray) -> np.ndarray:
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.raw_dim:
            raise TextaeError(f"expected vectors of shape (N, {self.raw_dim}) (sentence vectors, as embed gives them), got {vectors.shape}")
        if not np.isfinite(vectors).all():
            raise TextaeError("vectors contain NaN or infinity")
        return np.ascontiguousarray(vectors)

    def _check_max_length(self, max_length: int | None) -> int:
        if max_length is None:
            return self.config.max_length + 1  # room for every token and <eos>, as in training
        if not isinstance(max_length, int) or max_length < 1:
            raise TextaeError(f"max_length must be a positive integer, got {max_length!r}")
        return max_length

    def _session(self, graph: str, job: str) -> ort.InferenceSession:
        key = (graph, self.precisions[job])
        session = self._sessions.get(key)
        if session is None:
            with self._sessions_lock:
                session = self._sessions.get(key)
                if session is None:
                    session = self._sessions[key] = self._create_session(*key)
        return session

    def _table(self, name: str, entry: dict[str, Any]) -> ort.OrtValue:
        """A table computed at load; called under the sessions lock, so each is computed once."""
        if name not in self._tables:
            self._tables[name] = ort.OrtValue.ortvalue_from_numpy(_compute_table(self.folder / entry["file"], name))
        return self._tables[name]

    def _create_session(self, graph: str, precision: str) -> ort.InferenceSession:
        path = self.manifest.graph_path(self.folder, graph, precision)
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.num_threads or 0  # 0: onnxruntime's default, one per core
        options.inter_op_num_threads = 1  # the graphs are chains: no independent branches to overlap
        options.log_severity_level = 3  # errors only: the int8 graphs trigger harmless shape warnings
        # Each session has its own worker threads, which by default spin for a while after a call
        # returns. reconstruct() runs the encoder and then the decoder, so the encoder's spinning
        # workers took the cores the decoder needed (docs/benchmarks.md, runtime). Spinning still
        # speeds the many small ops inside one call, so stop it only when a call ends.
        options.add_session_config_entry("session.force_spinning_stop", "1")
        # The memory pattern caches an allocation plan per input shape, so RSS grew with every new
        # batch shape, at no gain in speed (benchmarks/bench_serve.py's arena probe; onnxruntime #11627).
        options.enable_mem_pattern = False
        # format 2: tables the export does not store (the folded token-gates table) are computed
        # once by their own small graph and given to each session that reads them
        tables = {name: entry for name, entry in (self.manifest.tables or {}).items() if graph in entry["used_by"]}
        if tables:
            options.add_external_initializers(list(tables), [self._table(name, entry) for name, entry in tables.items()])
        try:
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types for unreadable graphs
            raise TextaeError(f"{path}: onnxruntime cannot load this graph ({str(exc).splitlines()[0][:200]})") from None
        inputs, outputs = graph_signature(graph, self.manifest.format_version)
        found = (tuple(i.name for i in session.get_inputs()), tuple(o.name for o in session.get_outputs()))
        if found != (inputs, outputs):
            raise TextaeError(f"{path}: graph has inputs/outputs {found}, expected {(inputs, outputs)}")
        return session


def _compute_table(path: Path, name: str) -> np.ndarray:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        (value,) = session.run([name], {})
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise TextaeError(f"{path}: onnxruntime cannot compute {name} ({str(exc).splitlines()[0][:200]})") from None
    return np.ascontiguousarray(value)


def _load_postprocess(folder: Path, manifest: Manifest) -> dict[str, Whitening]:
    """The whitening of each output the manifest lists, checked against the model's widths."""
    widths = {"sentence_embedding": manifest.model.latent_dim, "features": manifest.model.feature_dim}
    loaded = {}
    for output, entry in (manifest.postprocess or {}).items():
        mean, transform = (_load_array(folder / entry[key]).astype(np.float64) for key in ("mean", "transform"))
        expected = (widths[output], entry["dim"])
        if mean.shape != expected[:1] or transform.shape != expected or entry["input_dim"] != widths[output]:
            raise TextaeError(f"{folder / entry['transform']}: whitening of {output} has shapes {mean.shape} and "
                              f"{transform.shape}, expected ({expected[0]},) and {expected}")  # fmt: skip
        if not (np.isfinite(mean).all() and np.isfinite(transform).all()):
            raise TextaeError(f"{folder / entry['transform']}: whitening of {output} contains NaN or infinity")
        loaded[output] = Whitening(mean, transform)
    return loaded


def _load_array(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False).astype(np.float32)
    except (OSError, ValueError) as exc:
        raise TextaeError(f"{path}: not a readable .npy array ({str(exc).splitlines()[0][:200]})") from None


def _check_sentences(sentences: Sequence[str]) -> list[str]:
    if isinstance(sentences, str):
        raise TextaeError("expected a list of sentences, got a single string; wrap it in a list")
    sentences = list(sentences)
    for index, sentence in enumerate(sentences):
        if not isinstance(sentence, str):
            raise TextaeError(f"sentence {index} is a {type(sentence).__name__}, not a str")
    return sentences


def _check_batch_size(batch_size: int) -> None:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise TextaeError(f"batch_size must be a positive integer, got {batch_size!r}")


def _usable(precision: str, available: Sequence[str], int8_exact: bool) -> str:
    """A job's default precision as loaded here: int8 only where the folder has it and its integer
    arithmetic is exact on this CPU."""
    if precision == "int8" and (not int8_exact or "int8" not in available):
        return "fp32"
    return precision if precision in available else "fp32"
