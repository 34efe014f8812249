"""The export folder: model.pte, tokenizer files and manifest.json, written all at once or not at all."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

from .errors import ExportError, OutputExistsError, VerificationError

MANIFEST = "manifest.json"
PTE = "model.pte"
MANIFEST_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Manifest:
    """Everything needed to know what a .pte is without opening it. The folder name is a convenience; this is the truth."""

    model: dict  # id, kind, architecture, weights_sha256, parameters
    profile: dict  # id, name, vendor
    recipe: dict  # linear, group_size, embedding, embedding_group_size, output, label, applied
    max_seq_len: int
    pte: dict  # file, bytes, sha256
    bf16_bytes: int
    size_reduction: float  # bf16_bytes / pte bytes
    tokenizer: dict  # file, bos_id, eos_ids
    chat_template: str | None
    threads: int
    cpu_set: list[int]
    vocab_size: int
    n_layers: int
    versions: dict
    export: dict  # wall_s, peak_rss_bytes, stage seconds, delegation summary
    overrides: dict = field(default_factory=dict)
    schema_version: int = MANIFEST_SCHEMA_VERSION

    def to_dict(self) -> dict:
        return asdict(self)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(folder: Path) -> dict:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise VerificationError(f"{folder} is not an export folder (no {MANIFEST})", hint="run 'exporter export' first")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise VerificationError(f"{path} is not valid JSON: {err}") from err


def check_output_free(output: Path, force: bool) -> None:
    if output.exists() and (not output.is_dir() or any(output.iterdir())) and not force:
        raise OutputExistsError(f"output {output} already exists", hint="pass --force to replace it, or choose another --output")


@contextmanager
def staged_output(output: Path, force: bool) -> Iterator[Path]:
    """Yield a temp folder beside `output`; on success it replaces `output` in one rename.

    On any failure (exception, Ctrl-C, disk full) the temp folder is removed and `output` is untouched, so a
    half-written model.pte never sits at the final path.
    """
    check_output_free(output, force)
    output.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{output.name}.partial-", dir=output.parent))
    try:
        yield stage
        if output.exists():
            backup = output.with_name(f".{output.name}.old-{os.getpid()}")
            output.rename(backup)
            stage.rename(output)
            shutil.rmtree(backup, ignore_errors=True) if backup.is_dir() else backup.unlink()
        else:
            stage.rename(output)
    except OSError as err:
        shutil.rmtree(stage, ignore_errors=True)
        raise ExportError(f"could not write {output}: {err.strerror or err}", hint="check free disk space and permissions") from err
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


def write_bytes_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
