"""The export folder's contract: file names, graph signatures and the manifest `textae.json` (stdlib only).

`textae.export` writes a folder and its manifest; `textae.runtime` refuses to load a folder whose
manifest is missing, from an unknown format version, or whose files do not match their recorded
size and sha256. Both sides import the names below, so they cannot drift apart.

    EXPORT_DIR/
      textae.json                 this manifest
      tokenizer.json              the run's tokenizer
      encoder.onnx                input_ids (B, T), lengths (B,) -> sentence_embedding (B, Z), features (B, F)
      decoder_greedy.onnx         sentence_embedding (B, Z), max_length () -> token_ids (B, L), one Loop
      decoder_score.onnx          input_ids (B, T), lengths (B,) -> score (B,): mean token NLL
      decoder_init.onnx           sentence_embedding (B, Z) -> state (S, N, B, H)
      decoder_step.onnx           input_ids (B,), sentence_embedding (B, Z), state -> logits (B, V), next_state
      *.int8.onnx                 the same graphs with int8 weights (unless `--quantize none`)
      weights.bin                 (version 2) the weights of every graph, each distinct tensor once
      decoder_tables.onnx         (version 2) () -> token_gates (V, G*H): the folded table that
                                  decoder_greedy and decoder_step receive at load (manifest "tables")
      latent_mean.npy             (Z,) float32: mean of the run's validation vectors      } the manifest's
      latent_covariance.npy       (Z, Z) float32: their covariance (for generation)       } "calibration"

"precision" names the precision a reader loads for everything; "job_precisions" (absent in exports
made before it existed) names one per job: {"embed": the encoder behind `embed`, "text": the graphs
behind reconstruct, score and generate, encoder included}, each decided by its own int8 gate (the
"quantization" report says with which figures, on which CPU). "precision" is "int8" only where
both jobs are, so a reader that knows no jobs is never given a graph that failed its gate.

The optional "calibration" section (absent in exports made before it existed, which still load):
{"source", "sentences", "method", "score_percentiles": {precision: {"50": score, ..., "99.9": score}},
"unsupported_percentiles": ["99.9", ...], "latent_mean", "latent_covariance"}: the anomaly-score
distribution of in-domain sentences the model never trained on, and the file names of the latent
statistics (listed in "files" too). "method" "conformal" (textae/conformal.py): each stored score is
an order statistic that an unseen in-domain sentence exceeds with probability at most 1 - p/100, and
a percentile the sample is too small for is named in "unsupported_percentiles" instead of stored.
Exports made before "method" existed interpolated percentiles (np.percentile) and store all seven.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from textae.config import ModelConfig, from_dict, load_json, save_json, to_dict
from textae.conformal import METHOD, sentences_needed
from textae.cpu import CpuInfo, cpu_from_dict, this_cpu
from textae.errors import TextaeError

FORMAT_VERSION = 2  # bump when a reader of the previous version could misread the folder
# Version 2 (one bump for all of these, none released apart): the lean folder (one shared
# weights.bin, the folded decoder table computed at load by decoder_tables.onnx, listed under
# "tables"), the encoder's second output `features` (F = 2 * directions * hidden: masked mean and
# max of the top layer's states) in every precision, and the optional "calibration" section. A
# version-1 reader would fail on these graphs; with the bump it says why. This version still reads
# version-1 folders: each graph self-contained, no features, no calibration.
# What `features` pools is the model section's `feature_source` (vector+tokens, tokens, states or
# states+tokens; `ModelConfig.feature_dim` its width); a manifest without that key pooled the
# states. Readers before the key refuse such a manifest as an unknown ModelConfig field, and readers
# before vector+tokens refuse it as an unknown feature_source, so neither needs a bump.
READABLE_FORMAT_VERSIONS = (1, 2)
MANIFEST_FILE = "textae.json"
WEIGHTS_FILE = "weights.bin"
TABLES_FILE = "decoder_tables.onnx"
TOKEN_GATES = "token_gates"  # the table's name in decoder_tables' output and in the graphs using it
COMPUTED_LOCATION = "computed-at-load"  # external-data location of a table the runtime computes
PRECISIONS = ("fp32", "int8")
JOBS = ("embed", "text")  # what a precision is chosen for: the sentence vectors, and everything that decodes
DEFAULT_OPSET = 17  # ONNX opset `textae export` writes by default

# graph name -> (input names, output names); the export names every graph's inputs and outputs this way
GRAPH_SIGNATURES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "encoder": (("input_ids", "lengths"), ("sentence_embedding", "features")),
    "decoder_greedy": (("sentence_embedding", "max_length"), ("token_ids",)),
    "decoder_score": (("input_ids", "lengths"), ("score",)),
    "decoder_init": (("sentence_embedding",), ("state",)),
    "decoder_step": (("input_ids", "sentence_embedding", "state"), ("logits", "next_state")),
}
GRAPHS = tuple(GRAPH_SIGNATURES)
# format version -> graph -> the outputs it had then, where they differ from GRAPH_SIGNATURES
EARLIER_GRAPH_OUTPUTS: dict[int, dict[str, tuple[str, ...]]] = {1: {"encoder": ("sentence_embedding",)}}
# percentiles of the validation sentences' anomaly scores that an export stores (`score --flag-percentile`)
CALIBRATION_PERCENTILES = (50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9)
LATENT_MEAN_FILE = "latent_mean.npy"
LATENT_COVARIANCE_FILE = "latent_covariance.npy"
POSTPROCESS_OUTPUTS = ("sentence_embedding", "features")  # encoder outputs a "postprocess" entry may name
POSTPROCESS_FILE_KEYS = ("mean", "transform")


def postprocess_file_name(output: str, key: str) -> str:
    """whiten_features_transform.npy: the file of one array of one output's whitening."""
    return f"whiten_{output}_{key}.npy"

# what `textae info` says the features hold, per ModelConfig.feature_source
FEATURE_CONTENTS = {"vector+tokens": "the sentence vector, and the mean, max and min of the token embeddings",
                    "tokens": "mean and max of the token embeddings", "states": "mean and max of the top layer's states",
                    "states+tokens": "mean and max of the top layer's states and of the token embeddings"}  # fmt: skip
_REQUIRED_FIELDS = ("format_version", "model", "special_tokens", "graphs", "precision", "files", "tokenizer")


def graph_file_name(graph: str, precision: str) -> str:
    return f"{graph}.onnx" if precision == "fp32" else f"{graph}.{precision}.onnx"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_record(path: Path) -> dict[str, Any]:
    """What the manifest stores per file: enough to refuse a truncated, replaced or edited file."""
    return {"bytes": Path(path).stat().st_size, "sha256": sha256_file(path)}


def graph_signature(graph: str, format_version: int = FORMAT_VERSION) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(input names, output names) of a graph in a folder of the given format version."""
    inputs, outputs = GRAPH_SIGNATURES[graph]
    return inputs, EARLIER_GRAPH_OUTPUTS.get(format_version, {}).get(graph, outputs)


def percentile_key(percentile: float) -> str:
    """99.0 -> "99", 99.9 -> "99.9": how a percentile is named in the manifest's JSON."""
    return f"{float(percentile):g}"


def calibration_files(calibration: dict[str, Any] | None) -> list[str]:
    """The data files a manifest's calibration section names (none for exports made before it existed)."""
    calibration = calibration if isinstance(calibration, dict) else {}
    return [calibration[key] for key in ("latent_mean", "latent_covariance") if isinstance(calibration.get(key), str)]


def postprocess_files(postprocess: dict[str, Any] | None) -> list[str]:
    """The data files a manifest's postprocess section names (none for exports made before it existed)."""
    postprocess = postprocess if isinstance(postprocess, dict) else {}
    entries = [entry for entry in postprocess.values() if isinstance(entry, dict)]
    return [entry[key] for entry in entries for key in POSTPROCESS_FILE_KEYS if isinstance(entry.get(key), str)]


def _check_postprocess(postprocess: Any, files: dict[str, Any], where: str) -> None:
    if postprocess is None:
        return
    if not isinstance(postprocess, dict):
        raise TextaeError(f"{where}: field 'postprocess' must be a JSON object")
    for output, entry in postprocess.items():
        if output not in POSTPROCESS_OUTPUTS:
            raise TextaeError(f"{where}: postprocess names unknown output {output!r} (known: {', '.join(POSTPROCESS_OUTPUTS)})")
        if not isinstance(entry, dict) or entry.get("method") != "whiten":
            raise TextaeError(f"{where}: postprocess of {output} must be an object with method 'whiten'")
        for key in ("dim", "input_dim"):
            value = entry.get(key)
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value < 1 << 20:
                raise TextaeError(f"{where}: postprocess of {output} needs a positive integer {key!r}")
        for key in POSTPROCESS_FILE_KEYS:
            if not isinstance(entry.get(key), str) or entry[key] not in files:
                raise TextaeError(f"{where}: postprocess file {entry.get(key)!r} of {output} has no checksum in 'files'")


@dataclass(frozen=True)
class TensorInfo:
    """One graph input or output as the export recorded it; a str dimension is a dynamic axis."""

    name: str
    dtype: str
    shape: tuple[str | int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


@dataclass(frozen=True)
class GraphEntry:
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    files: dict[str, str]  # precision -> file name in the folder

    def to_dict(self) -> dict[str, Any]:
        return {"inputs": [t.to_dict() for t in self.inputs], "outputs": [t.to_dict() for t in self.outputs], "files": dict(self.files)}


@dataclass(frozen=True)
class FileRecord:
    bytes: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    """textae.json as a typed, checked object: what the runtime, `textae info` and search read.

    The one owner of textae.json's fields: `textae.export` builds a Manifest and writes it with
    `save` (through `to_dict`), the runtime reads it with `load`. Keys this version does not know are
    kept in `other`, so a round trip loses nothing.
    """

    format_version: int
    model: ModelConfig
    special_tokens: dict[str, int]  # pad_id, bos_id, eos_id, unk_id
    graphs: dict[str, GraphEntry]  # graph name -> signature and file per precision
    precision: str  # the precision TextAE.load picks by default
    files: dict[str, FileRecord]  # every file of the folder but the manifest itself
    tokenizer: str  # file name of the tokenizer
    textae_version: str | None = None
    created: str | None = None  # ISO 8601, UTC
    opset: int | None = None
    producer: dict[str, Any] | None = None  # versions of torch, onnx, onnxruntime that wrote it
    training: dict[str, Any] | None = None  # run name, step, metrics and summary of the exported run
    quantization: dict[str, Any] | None = None  # the int8 vs fp32 report, when int8 graphs exist
    calibration: dict[str, Any] | None = None  # validation score percentiles, latent statistics' files (format 2)
    tables: dict[str, Any] | None = None  # table name -> {"file", "used_by"}: tables computed at load (format 2)
    job_precisions: dict[str, str] | None = None  # job -> precision its gate chose; None: `precision` for all
    postprocess: dict[str, Any] | None = None  # encoder output -> the whitening embed applies by default; None: raw
    other: dict[str, Any] = field(default_factory=dict)  # keys this version does not read

    @property
    def precisions(self) -> list[str]:
        """Precisions every graph of the folder exists in (each graph lists the same ones)."""
        return sorted(self.graphs["encoder"].files)

    def graph_path(self, folder: Path, graph: str, precision: str) -> Path:
        return Path(folder) / self.graphs[graph].files[precision]

    def job_precision(self, job: str) -> str:
        """The precision the runtime loads for job ("embed" or "text") unless told otherwise."""
        return (self.job_precisions or {}).get(job, self.precision)

    def with_files(self, folder: Path, precisions: Sequence[str], extra_files: Sequence[str] = ()) -> Manifest:
        """This manifest with each graph's file per precision and the size and sha256 of every file
        it names (tokenizer, graphs, extra_files, calibration and postprocess data) as they are in folder now."""
        graphs = {
            graph: replace(entry, files={precision: graph_file_name(graph, precision) for precision in precisions})
            for graph, entry in self.graphs.items()
        }
        names = [self.tokenizer, *extra_files, *calibration_files(self.calibration), *postprocess_files(self.postprocess)]
        names += [name for entry in graphs.values() for name in entry.files.values()]
        files = {name: FileRecord(**file_record(Path(folder) / name)) for name in sorted(set(names))}
        return replace(self, graphs=graphs, files=files)

    def save(self, folder: Path) -> None:
        """Write textae.json into folder (atomically)."""
        save_json(Path(folder) / MANIFEST_FILE, self.to_dict())

    @classmethod
    def load(cls, folder: Path, *, verify_files: bool = True) -> Manifest:
        """Read textae.json and check the folder against it; any mismatch is a one-line TextaeError."""
        folder = Path(folder)
        if not folder.exists():
            raise TextaeError(f"{folder}: model folder not found")
        if not folder.is_dir():
            raise TextaeError(f"{folder}: not a folder; a textae model is a folder written by `textae export`")
        path = folder / MANIFEST_FILE
        if not path.is_file():
            raise TextaeError(f"{folder}: not a textae export folder (no {MANIFEST_FILE}); create one with `textae export RUN_DIR`")
        manifest = cls.from_dict(load_json(path), where=str(path))
        if verify_files:
            for name, record in manifest.files.items():
                _verify_file(folder, name, record)
        return manifest

    @classmethod
    def from_dict(cls, data: Any, *, where: str = MANIFEST_FILE) -> Manifest:
        """Check a parsed textae.json: version, required fields, and a checksum for every listed file."""
        if not isinstance(data, dict):
            raise TextaeError(f"{where}: expected a JSON object")
        version = data.get("format_version")
        if version not in READABLE_FORMAT_VERSIONS:
            raise TextaeError(
                f"{where}: format_version {version!r} is not supported (this textae reads "
                f"{', '.join(map(str, READABLE_FORMAT_VERSIONS))}); re-export the model with this version of textae"
            )
        missing = [name for name in _REQUIRED_FIELDS if name not in data]
        if missing:
            raise TextaeError(f"{where}: missing field(s) {', '.join(missing)}")
        _check_shapes(data, where)
        try:
            files = {name: FileRecord(record.get("bytes"), record.get("sha256")) for name, record in data["files"].items()}
            graphs = {}
            for graph in GRAPHS:
                entry = data["graphs"].get(graph)
                if entry is None:
                    raise TextaeError(f"{where}: no '{graph}' graph listed")
                for precision, name in entry["files"].items():
                    if name not in files:
                        raise TextaeError(f"{where}: {graph} {precision} file {name} has no checksum in 'files'")
            for graph, entry in data["graphs"].items():
                inputs, outputs = (tuple(TensorInfo(t["name"], t["dtype"], tuple(t["shape"])) for t in entry[side]) for side in ("inputs", "outputs"))
                graphs[graph] = GraphEntry(inputs, outputs, dict(entry["files"]))
        except (AttributeError, KeyError, TypeError):
            raise TextaeError(f"{where}: malformed 'graphs' or 'files' entry") from None
        if data["tokenizer"] not in files:
            raise TextaeError(f"{where}: tokenizer file {data['tokenizer']} has no checksum in 'files'")
        tables = data.get("tables")
        if tables is not None and (
            not isinstance(tables, dict)
            or not all(isinstance(entry, dict) and entry.get("file") in files and isinstance(entry.get("used_by"), list)
                       and set(entry["used_by"]) <= set(GRAPHS) for entry in tables.values())
        ):  # fmt: skip
            raise TextaeError(f"{where}: a table in 'tables' names a file without checksum or an unknown graph")
        calibration = data.get("calibration")
        if calibration is not None and not isinstance(calibration, dict):
            raise TextaeError(f"{where}: field 'calibration' must be a JSON object")
        for name in calibration_files(calibration):
            if name not in files:
                raise TextaeError(f"{where}: calibration file {name} has no checksum in 'files'")
        _check_postprocess(data.get("postprocess"), files, where)
        for graph, entry in graphs.items():
            if graph in GRAPH_SIGNATURES and tuple(t.name for t in entry.outputs) != graph_signature(graph, version)[1]:
                raise TextaeError(f"{where}: graph '{graph}' lists outputs {[t.name for t in entry.outputs]}, "
                                  f"expected {list(graph_signature(graph, version)[1])} in format version {version}")  # fmt: skip
        job_precisions = data.get("job_precisions")
        if job_precisions is not None and (
            not isinstance(job_precisions, dict) or not set(job_precisions) <= set(JOBS)
            or not all(isinstance(value, str) and value in PRECISIONS for value in job_precisions.values())
        ):  # fmt: skip
            raise TextaeError(f"{where}: field 'job_precisions' must map {' and '.join(JOBS)} to one of {', '.join(PRECISIONS)}")
        model = from_dict(ModelConfig, data["model"], where=where)
        try:
            model.validate()  # an edited manifest must not reach numpy as a shape
        except (TextaeError, TypeError, ValueError) as exc:
            raise TextaeError(f"{where}: model config is not valid ({str(exc)[:200]})") from None
        checked = {
            "format_version": version, "model": model, "special_tokens": dict(data["special_tokens"]), "graphs": graphs,
            "precision": data["precision"], "files": files, "tokenizer": data["tokenizer"], "calibration": calibration,
            "tables": tables, "job_precisions": dict(job_precisions) if job_precisions is not None else None,
        }  # fmt: skip
        # every other field is plain JSON, read as it was written: a field added to the class is
        # read (and written by to_dict) with no other change
        plain = {f.name: data.get(f.name) for f in fields(cls) if f.name not in checked and f.name != "other" and f.name in data}
        known = {f.name for f in fields(cls)}
        return cls(**checked, **plain, other={k: v for k, v in data.items() if k not in known})

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of textae.json: every field, in JSON form, and the keys kept in `other`.
        A field that is None and marked OMITTED_WHEN_NONE is left out (older folders never had it)."""
        data: dict[str, Any] = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name == "other" or (value is None and item.name in OMITTED_WHEN_NONE):
                continue
            data[item.name] = _json_value(value)
        return {**data, **self.other}


OMITTED_WHEN_NONE = ("tables", "calibration", "job_precisions", "postprocess")  # absent in folders written before each existed


def _json_value(value: Any) -> Any:
    """A manifest field's value as JSON: configs and records become objects, the rest is already JSON."""
    if isinstance(value, ModelConfig):
        return to_dict(value)
    if isinstance(value, FileRecord):
        return {"bytes": value.bytes, "sha256": value.sha256}
    if isinstance(value, (TensorInfo, GraphEntry)):
        return value.to_dict()
    if isinstance(value, dict):
        return {key: _json_value(item) for key, item in value.items()}
    return value


def _check_shapes(manifest: dict[str, Any], path: Path | str) -> None:
    """The JSON types every reader relies on, so an edited or hostile manifest is one clear error."""
    expected = {"model": dict, "special_tokens": dict, "graphs": dict, "files": dict, "precision": str, "tokenizer": str}
    for name, kind in expected.items():
        if not isinstance(manifest[name], kind):
            raise TextaeError(f"{path}: field '{name}' must be a JSON {'object' if kind is dict else 'string'}")
    for graph, entry in manifest["graphs"].items():
        if not isinstance(entry, dict) or not isinstance(entry.get("files"), dict):
            raise TextaeError(f"{path}: graph '{graph}' must be an object with a 'files' object")
    for name, record in manifest["files"].items():
        if not isinstance(record, dict):
            raise TextaeError(f"{path}: the record of file {name!r} must be an object with 'bytes' and 'sha256'")
    if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 1 << 31 for v in manifest["special_tokens"].values()):
        raise TextaeError(f"{path}: special_tokens must map names to non-negative integer ids")


def _verify_file(folder: Path, name: str, record: FileRecord) -> None:
    if Path(name).name != name or name in (".", ".."):
        # a manifest may only name files inside its own folder
        raise TextaeError(f"{folder / MANIFEST_FILE}: file name {name!r} points outside the model folder")
    path = folder / name
    if not path.is_file():
        raise TextaeError(f"{path}: missing (listed in {MANIFEST_FILE}); re-export or copy the whole folder")
    size = path.stat().st_size
    if size != record.bytes:
        raise TextaeError(f"{path}: {size} bytes, but {MANIFEST_FILE} records {record.bytes} (truncated or replaced)")
    if sha256_file(path) != record.sha256:
        raise TextaeError(f"{path}: sha256 does not match {MANIFEST_FILE} (the file changed after export)")


def describe_manifest(folder: Path, manifest: Manifest) -> list[tuple[str, str]]:
    """(field, value) rows that `textae info` prints for a verified export folder."""
    model = manifest.model
    total = sum(record.bytes for record in manifest.files.values())
    rows = [
        ("folder", str(folder)),
        ("format", f"version {manifest.format_version}, written by textae {manifest.textae_version} on {manifest.created}"),
        (
            "model",
            (
                f"{model.cell} x{model.num_layers}{' bidirectional' if model.bidirectional else ''}"
                f"{', reads back to front' if model.reverse_input else ''}, "
                f"pooling {model.pooling}, vocab {model.vocab_size}, embedding {model.embedding_dim}, "
                f"hidden {model.hidden_size}, sentence vector {model.latent_dim}, max_length {model.max_length}, "
                f"{'tied' if model.tie_embeddings else 'untied'} embeddings, "
                f"features {model.feature_dim} wide: {FEATURE_CONTENTS[model.feature_source]}"
            ),
        ),
        ("special tokens", ", ".join(f"{name} {value}" for name, value in manifest.special_tokens.items())),
        ("precisions", f"{', '.join(manifest.precisions)} (runtime loads "
         + ", ".join(f"{manifest.job_precision(job)} to {job}" for job in JOBS) + f"); opset {manifest.opset}"),
        ("files", f"{len(manifest.files)} files, {total / 1e6:.1f} MB, sizes and sha256 verified"),
    ]
    for graph, entry in manifest.graphs.items():
        signature = ", ".join(map(_describe_tensor, entry.inputs)) + " -> " + ", ".join(map(_describe_tensor, entry.outputs))
        rows.append((graph, signature))
    training = manifest.training or {}
    metrics = training.get("metrics") or {}
    shown = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in sorted(metrics.items()) if not isinstance(v, (dict, list)))
    rows.append(("training", f"run {training.get('run')}, step {training.get('step')}" + (f"; {shown}" if shown else "")))
    calibration = manifest.calibration
    if calibration:
        unsupported = calibration.get("unsupported_percentiles") or []
        for precision, percentiles in sorted(calibration["score_percentiles"].items()):
            shown = ", ".join([f"p{key} {value:.3f}" for key, value in percentiles.items()]
                              + [f"p{key} unsupported" for key in unsupported])  # fmt: skip
            rows.append((f"anomaly score percentiles ({precision})", shown))
        if calibration.get("method") == METHOD:
            method = "conformal thresholds (an unseen in-domain sentence exceeds p99 with probability <= 1 %)"
        else:
            method = "interpolated percentiles (exported before textae made conformal ones; re-export for honest flag rates)"
        rows.append(("flag thresholds", method))
        if unsupported:
            rows.append(("warning", f"{calibration['sentences']:,} calibration sentences cannot support "
                         + ", ".join(f"p{key} (needs {sentences_needed(float(key)):,})" for key in unsupported)
                         + "; train with --valid FILE holding more unseen in-domain text"))  # fmt: skip
        rows.append(
            (
                "calibrated on",
                (
                    f"{calibration['sentences']:,} {calibration['source']}; latent mean and covariance in "
                    f"{', '.join(calibration_files(calibration))}"
                ),
            )
        )
    else:
        rows.append(("calibration", "none (exported before textae stored it; re-export for --flag-percentile and generate)"))
    for output, entry in (manifest.postprocess or {}).items():
        shown = (f"whitened {entry['input_dim']} -> {entry['dim']} dims by default (raw with --raw), "
                 f"fitted on {entry.get('sentences', 0):,} {entry.get('source', 'sentences')}")  # fmt: skip
        rows.append((f"embed {output}", shown))
    if not manifest.postprocess:
        rows.append(("embed post-processing", "none: embed returns the encoder's raw vectors"))
    quantization = manifest.quantization
    if quantization:
        rows.append(
            (
                "int8 vs fp32",
                f"size x{quantization['size_ratio']:.2f}, speed x{quantization['speed_ratio']:.2f}, min cosine "
                f"{quantization['min_cosine']:.4f}, reconstructions identical {quantization['reconstructions_identical']}"
                + (f", batch-invariant: {quantization['batch_invariant']}" if "batch_invariant" in quantization else "")
                + f" ({quantization['sentences']} sentences from {quantization['source']})",
            )
        )
        for job, verdict in (quantization.get("jobs") or {}).items():
            verdict_text = "failed the gate" if verdict.get("reasons") else "passed the gate"
            rows.append((f"int8 gate, {job}", f"{verdict.get('precision')} ({verdict_text}): {verdict.get('figures', '')}"))
        if not quantization.get("jobs") and quantization.get("warning"):
            rows.append(("int8 gate", quantization["warning"]))
        measured_on = cpu_from_dict(quantization.get("cpu"))
        rows.append(("gate measured on", measured_on.describe() if measured_on else "an unrecorded CPU (exported before textae recorded it)"))
        here = this_cpu()
        rows.append(("this CPU", here.describe() + ("" if int8_is_exact_on(manifest, here) else
                     "; int8 weights of this export use 8 bits, whose products saturate without VNNI: "
                     "the runtime loads fp32 here unless asked for int8 (re-export to fix)")))  # fmt: skip
    return rows


INT8_WEIGHT_BITS = 7  # what textae's int8 weights keep, so that they are exact on every x86-64 CPU


def int8_is_exact_on(manifest: Manifest, cpu: CpuInfo | None = None) -> bool:
    """Whether the export's int8 graphs compute exact integer sums on cpu (default: this one, read
    only when it matters): always with 7-bit weights; with the 8-bit weights of older exports only
    where pairs of products cannot saturate."""
    if "int8" not in manifest.precisions:
        return True
    bits = (manifest.quantization or {}).get("weight_bits", 8)
    return bits <= INT8_WEIGHT_BITS or not (cpu or this_cpu()).int8_pairs_saturate


def _describe_tensor(tensor: TensorInfo) -> str:
    return f"{tensor.name} {tensor.dtype}[{', '.join(str(d) for d in tensor.shape)}]"
