"""textae.manifest: the typed Manifest reads textae.json key for key and refuses malformed ones."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from textae.config import ModelConfig
from textae.errors import TextaeError
from textae.manifest import GRAPHS, MANIFEST_FILE, Manifest, describe_manifest


def test_manifest_round_trips_the_json_the_export_wrote(random_export: Path) -> None:
    written = json.loads((random_export / MANIFEST_FILE).read_text(encoding="utf-8"))
    manifest = Manifest.load(random_export)
    assert manifest.to_dict() == written
    assert isinstance(manifest.model, ModelConfig) and manifest.model.eos_id == manifest.special_tokens["eos_id"]
    assert manifest.precisions == ["fp32", "int8"] and manifest.precision == manifest.quantization["default"]  # the gate's choice
    assert manifest.job_precisions == {job: verdict["precision"] for job, verdict in manifest.quantization["jobs"].items()}
    assert set(GRAPHS) <= set(manifest.graphs)
    assert manifest.graph_path(random_export, "encoder", "fp32") == random_export / "encoder.onnx"
    assert [t.name for t in manifest.graphs["encoder"].inputs] == ["input_ids", "lengths"]
    rows = dict(describe_manifest(random_export, manifest))
    assert "sizes and sha256 verified" in rows["files"] and "int8 vs fp32" in rows


def test_a_field_added_to_manifest_is_written_and_read_with_no_other_change(random_export: Path, tmp_path: Path) -> None:
    """Manifest is the one owner of textae.json's fields: to_dict and from_dict follow its fields."""
    from dataclasses import dataclass, replace

    @dataclass(frozen=True)
    class ManifestWithNote(Manifest):
        note: str | None = None  # a field a later version might add

    noted = replace(ManifestWithNote.from_dict(Manifest.load(random_export).to_dict()), note="hello")
    noted.save(tmp_path)
    assert json.loads((tmp_path / MANIFEST_FILE).read_text(encoding="utf-8"))["note"] == "hello"
    again = ManifestWithNote.from_dict(json.loads((tmp_path / MANIFEST_FILE).read_text(encoding="utf-8")))
    assert again.note == "hello" and again == noted and "note" not in again.other
    assert Manifest.from_dict(noted.to_dict()).other == {"note": "hello"}  # a reader that lacks the field keeps it


def test_keys_this_reader_does_not_know_survive_a_round_trip(random_export: Path) -> None:
    data = {**json.loads((random_export / MANIFEST_FILE).read_text(encoding="utf-8")), "added_later": {"x": 1}}
    assert Manifest.from_dict(data).to_dict() == data


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.pop("graphs"), "missing field"),
        (lambda d: d["graphs"].pop("decoder_step"), "no 'decoder_step' graph listed"),
        (lambda d: d["graphs"]["encoder"].pop("inputs"), "malformed 'graphs' or 'files' entry"),
        (lambda d: d.update(files=[]), "field 'files' must be a JSON object"),
        (lambda d: d["files"].pop("tokenizer.json"), "tokenizer file tokenizer.json has no checksum"),
        (lambda d: d["model"].update(colour="blue"), "unknown ModelConfig field"),
    ],
)
def test_a_malformed_manifest_is_a_one_line_error(random_export: Path, edit: Callable[[dict[str, Any]], object], message: str) -> None:
    data = json.loads((random_export / MANIFEST_FILE).read_text(encoding="utf-8"))
    edit(data)
    with pytest.raises(TextaeError, match=message):
        Manifest.from_dict(data)
