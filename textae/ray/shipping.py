"""Getting an export folder to Ray workers: through the object store, or by a path every node sees.

The driver checks the folder (every checksum) and ships it one of two ways:

- through Ray's object store (the default): the folder's files, a few MB to a few tens of MB, go
  in one object; each node writes them once to a cache under its temporary folder, named by the
  fingerprint, and every actor on the node loads that copy. Nothing needs to be shared but Ray.
- by path (`shared_storage=True`): every node reads the folder at the driver's absolute path (NFS,
  a mounted bucket, or a copy at the same place on every machine).

Either way each actor loads its folder with `TextAE.load`, which checks every file against the
manifest, and first compares the folder's textae.json with the driver's (its sha256, the
fingerprint), so a node with another or a damaged copy refuses to run instead of giving other answers.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray

from textae.errors import TextaeError
from textae.manifest import MANIFEST_FILE, Manifest
from textae.runtime.model import TextAE

# where each node keeps its copies of shipped exports: content-addressed, so a later job with the
# same export reuses the copy and a new export never overwrites an old one
CACHE_FOLDER = "textae-ray-exports"


@dataclass(frozen=True)
class ShippedExport:
    """An export folder as the driver hands it to Ray workers (pass it to TextAEMapper)."""

    name: str  # the folder as the driver named it, for messages
    fingerprint: str  # sha256 of the driver's textae.json, which holds every other file's sha256
    path: str | None = None  # shared storage: the absolute path every node reads the folder at ...
    files: Any = None  # ... or a ray.ObjectRef to {file name: bytes}, the folder in the object store


def ship_export(folder: str | os.PathLike[str], *, shared_storage: bool = False) -> ShippedExport:
    """Check an export folder on the driver and make it reachable from every Ray worker.

    Needs a connected Ray (ray.init) unless shared_storage is set."""
    folder = Path(folder)
    manifest = Manifest.load(folder)  # every checksum, before anything is sent anywhere
    manifest_bytes = (folder / MANIFEST_FILE).read_bytes()
    fingerprint = hashlib.sha256(manifest_bytes).hexdigest()
    if shared_storage:
        return ShippedExport(str(folder), fingerprint, path=str(folder.absolute()))
    files = {MANIFEST_FILE: manifest_bytes, **{name: (folder / name).read_bytes() for name in manifest.files}}
    return ShippedExport(str(folder), fingerprint, files=ray.put(files))


def open_export(
    model: str | os.PathLike[str] | ShippedExport, *, precision: str | None = None, num_threads: int | None = None
) -> TextAE:
    """Load a model on a worker: a ShippedExport (checked against the driver's fingerprint), or a path."""
    if not isinstance(model, ShippedExport):
        return TextAE.load(model, num_threads=num_threads, precision=precision)
    if model.path is not None:
        folder = Path(model.path)
        _check_fingerprint(folder, model)
        return TextAE.load(folder, num_threads=num_threads, precision=precision)
    folder = _cached_copy(model)
    try:
        _check_fingerprint(folder, model)
        return TextAE.load(folder, num_threads=num_threads, precision=precision)
    except TextaeError:
        # the node's cached copy was damaged since it was written (a temp cleaner, a full disk):
        # write it again from the object store; a fresh copy that fails too is refused
        folder = _cached_copy(model, replace=True)
        _check_fingerprint(folder, model)
        return TextAE.load(folder, num_threads=num_threads, precision=precision)


def cache_root() -> Path:
    return Path(tempfile.gettempdir()) / CACHE_FOLDER


def _check_fingerprint(folder: Path, shipped: ShippedExport) -> None:
    path = folder / MANIFEST_FILE
    try:
        found = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        found = None
    if found != shipped.fingerprint:
        raise TextaeError(
            f"{folder}: not the export the driver shipped ({shipped.name}): its {MANIFEST_FILE} "
            f"{'is missing' if found is None else 'differs'}; every node must see the same export folder"
        )


def _cached_copy(shipped: ShippedExport, *, replace: bool = False) -> Path:
    """This node's copy of a shipped export, written from the object store if missing (or if replace)."""
    root = cache_root()
    target = root / shipped.fingerprint
    if target.is_dir() and not replace:
        return target
    root.mkdir(parents=True, exist_ok=True)
    incoming = Path(tempfile.mkdtemp(prefix=".incoming-", dir=root))
    try:
        for name, data in ray.get(shipped.files).items():
            (incoming / name).write_bytes(data)
        if replace:
            stale = root / f".stale-{uuid.uuid4().hex}"
            try:
                os.rename(target, stale)  # an open file of another actor stays readable until it closes it
            except FileNotFoundError:  # another actor of this node is replacing it too
                pass
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.rename(incoming, target)  # atomic: other actors see all of the folder or none of it
        except OSError:
            if not target.is_dir():  # not another actor of this node that got there first
                raise
    finally:
        shutil.rmtree(incoming, ignore_errors=True)
    return target
