"""The export folder, and the only module that reads or writes one: model.pte, tokenizer and manifest.json.

`Manifest` (pydantic) is the schema of manifest.json (published as docs/schemas/manifest.schema.json).
`Artifact.open(folder)` reads a folder as untrusted input: the manifest is validated, every file it names must
be a plain name inside the folder, exist and have the recorded size; `check_hashes()` compares sha256 too,
and each file is hashed at most once per Artifact. Writing goes through `staged_output` (a temp folder beside
the target, renamed into place at the end, under a lock), so an interrupted or failed export leaves nothing
at the destination.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Iterator, Literal

from pydantic import AfterValidator, Field, ValidationError, field_validator, model_validator

from .build.recipes import QuantReport, Recipe
from .errors import ArtifactError, OutputError, OutputExistsError
from .schema import Bool, Int, Model, NonEmptyStr, Number, file_schema, first_problem

MANIFEST = "manifest.json"
PTE = "model.pte"
MANIFEST_SCHEMA_VERSION = 2
MAX_MANIFEST_BYTES = 16 << 20  # a manifest is a few KB; a chat template may add some
# ExecuTorch programs are flatbuffers whose file identifier (bytes 4..8) is "ET" and two digits ("ET12" in 1.x).
_PTE_IDENTIFIER = re.compile(rb"ET\d\d")


_PLAIN_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"


def _plain_name(name: str) -> str:
    """A file name inside the export folder: no directories, no '..', nothing hidden, no odd characters."""
    if not re.fullmatch(_PLAIN_NAME, name):
        raise ValueError(f"{name!r} is not a plain file name inside the export folder")
    return name


# The pattern is for the published JSON Schema; the validator gives the message people read.
FileName = Annotated[str, AfterValidator(_plain_name), Field(json_schema_extra={"pattern": _PLAIN_NAME})]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
Count = Annotated[int, Field(ge=0, strict=True)]


class ModelRecord(Model):
    id: NonEmptyStr
    kind: Literal["builtin", "gguf", "folder", "hub"]
    architecture: NonEmptyStr
    weights_sha256: Sha256
    parameters: Count


class ProfileRecord(Model):
    id: NonEmptyStr
    name: NonEmptyStr
    vendor: NonEmptyStr


class RecipeRecord(Model):
    """The recipe as asked, its label, and what quantization actually did."""

    spec: Recipe
    label: NonEmptyStr
    applied: QuantReport

    @model_validator(mode="after")
    def _label_matches(self) -> "RecipeRecord":
        if self.label != self.spec.label():
            raise ValueError(f"field 'recipe.label': {self.label!r} is not the label of recipe.spec ({self.spec.label()!r})")
        return self


class ContextRecord(Model):
    requested: Int = Field(ge=1, description="context length asked for (profile default or --max-seq-len)")
    model_limit: Int | None = Field(None, ge=1, description="the model's max_position_embeddings")
    capped: Bool = Field(description="true when `requested` was above the model's limit and was lowered to it")


class DimsRecord(Model):
    """The decoder's shape: what the KV cache a decode step reads follows from (exporter/roofline.py), and what
    `exporter plan`'s predictions need of the model (planner.ModelShape)."""

    hidden: Int = Field(ge=1, description="hidden size (embedding width)")
    n_heads: Int = Field(ge=1)
    n_kv_heads: Int = Field(ge=1)
    head_dim: Int = Field(ge=1)
    intermediate: Int = Field(ge=1, description="MLP inner width (gate, up and down projections)")
    windows: tuple[Int | None, ...] = Field(description="per layer: sliding-window length, null for full attention")

    @property
    def n_layers(self) -> int:
        return len(self.windows)

    @classmethod
    def of(cls, spec) -> "DimsRecord":
        """The record of a build/families.DecoderSpec."""
        return cls(hidden=spec.hidden, n_heads=spec.n_heads, n_kv_heads=spec.n_kv_heads, head_dim=spec.head_dim,
                   intermediate=spec.intermediate, windows=spec.windows)


class FileRecord(Model):
    file: FileName
    bytes: Count
    sha256: Sha256


class TokenizerRecord(FileRecord):
    bos_id: Int | None
    eos_ids: tuple[Int, ...]


class ExportRecord(Model):
    wall_s: Number = Field(ge=0)
    peak_rss_bytes: Count
    stages_s: dict[str, Number]
    delegated_calls: Count
    non_delegated_ops: dict[str, Count]


class VerificationRecord(Model):
    """Whether `exporter export` verified the folder on the host, and what it found."""

    status: Literal["passed", "failed", "not_run", "interrupted"]
    top1_agreement: Number | None = None
    mean_kl: Number | None = None
    ppl_eager: Number | None = None
    ppl_pte: Number | None = None
    runner_ok: Bool | None = None
    error: str | None = None


class PlanCandidate(Model):
    label: NonEmptyStr
    weight_bytes: Count
    memory_bytes: Count
    fits: Bool
    perplexity: Number
    decode_tps: Number
    prefill_tps: Number
    verdict: str


class PlanRecord(Model):
    """`--recipe auto`: the plan (exporter plan) whose choice this export is, and why it was chosen."""

    chosen: NonEmptyStr
    reason: NonEmptyStr
    unquantized_perplexity: Number
    evaluation: dict[str, Any]
    prediction: dict[str, Any]
    candidates: tuple[PlanCandidate, ...]


class Manifest(Model):
    """Everything needed to know what a .pte is without opening it. The folder name is a convenience; this is the truth."""

    schema_version: Int = Field(description=f"always {MANIFEST_SCHEMA_VERSION}")
    model: ModelRecord
    profile: ProfileRecord
    recipe: RecipeRecord
    max_seq_len: Int = Field(ge=2, description="positions the .pte's KV cache holds")
    context: ContextRecord
    pte: FileRecord
    tokenizer: TokenizerRecord
    bf16_bytes: Count
    size_reduction: Number = Field(gt=0, description="bf16_bytes / pte bytes")
    chat_template: str | None
    threads: Int = Field(ge=1)
    cpu_set: tuple[Count, ...]
    vocab_size: Int = Field(ge=1)
    n_layers: Int = Field(ge=1)
    kv_cache_bytes: Count | None = Field(
        default=None, description="bytes of the KV cache buffers the .pte allocates at run time "
        "(layers x 2 x max_seq_len x kv_heads x head_dim x dtype size, plus int8 scales and zero points); "
        "absent in manifests written before it was recorded")
    dims: DimsRecord | None = Field(None, description="decoder shape (null in manifests written before it was recorded)")
    weight_bytes_per_token: Count | None = Field(
        default=None, description="bytes of weights a decode step reads, counted on the quantized decoder "
        "(build/candidates.count_bytes): every linear's codes and scales, the output layer, norms and other "
        "constants, one embedding row, one RoPE position; the KV cache is not included. Absent in manifests "
        "written before it was recorded")
    versions: dict[str, NonEmptyStr]
    export: ExportRecord
    overrides: dict[str, str | int]
    verification: VerificationRecord = VerificationRecord(status="not_run")
    plan: PlanRecord | None = None

    @field_validator("schema_version", mode="before")
    @classmethod
    def _version(cls, v: Any) -> Any:
        if v != MANIFEST_SCHEMA_VERSION or isinstance(v, bool):
            older = isinstance(v, int) and v < MANIFEST_SCHEMA_VERSION
            raise ValueError(f"schema_version {v!r} is not supported (this exporter reads {MANIFEST_SCHEMA_VERSION})"
                             + ("; the folder was written by an older exporter: re-export it" if older else ""))
        return v

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def save(self, folder: Path) -> Path:
        """Write manifest.json into `folder` atomically (temp file, fsync, rename)."""
        path = Path(folder) / MANIFEST
        write_text_atomic(path, json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n")
        return path


def manifest_json_schema() -> dict[str, Any]:
    return file_schema(Manifest, title="exporter export manifest (manifest.json)")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def top_token_id(tokenizer) -> int:
    """The highest token id a tokenizer can produce, added (special) tokens included; -1 when empty.

    `tokenizer`: a tokenizer.json path, or a loaded `tokenizers.Tokenizer` (what such a file is written from).
    """
    from tokenizers import Tokenizer

    if not isinstance(tokenizer, Tokenizer):
        try:
            tokenizer = Tokenizer.from_file(str(tokenizer))
        except Exception as err:  # the Rust library raises plain Exception for a malformed file
            raise ArtifactError(f"{tokenizer} is not a tokenizer: {str(err)[:200]}",
                                hint="restore the export's tokenizer.json, or re-export") from None
    return max(tokenizer.get_vocab(with_added_tokens=True).values(), default=-1)


def load_manifest(folder: Path) -> Manifest:
    """The validated manifest of an export folder (ArtifactError, exit 11, for anything wrong with it)."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not folder.is_dir():
        raise ArtifactError(f"{folder} is not a folder", hint="pass the output folder of `exporter export`")
    if not path.is_file():
        raise ArtifactError(f"{folder} is not an export folder (no {MANIFEST})", hint="run 'exporter export' first")
    try:
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            raise ArtifactError(f"{path} is larger than {MAX_MANIFEST_BYTES >> 20} MiB; a manifest is a few KB")
        data = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as err:
        raise ArtifactError(f"{path} is not UTF-8 text (byte {err.start})") from None
    except json.JSONDecodeError as err:
        raise ArtifactError(f"{path} is not valid JSON: {err.msg} at line {err.lineno}, column {err.colno}") from None
    except RecursionError:
        raise ArtifactError(f"{path} is nested too deeply to be a manifest") from None
    except OSError as err:
        raise ArtifactError(f"cannot read {path}: {err.strerror or err}") from None
    if not isinstance(data, dict):
        raise ArtifactError(f"{path} holds {type(data).__name__}, not a manifest object",
                            hint="re-export the folder with `exporter export`")
    try:
        return Manifest.model_validate(data)
    except ValidationError as err:
        problem = first_problem(err, Manifest)
        raise ArtifactError(f"{path}: {problem.message}", hint=problem.hint or "re-export the folder with `exporter export`") from None


class Artifact:
    """An export folder whose manifest validated and whose files are where and as large as it says."""

    def __init__(self, folder: Path, manifest: Manifest):
        self.folder = Path(folder)
        self.manifest = manifest
        self._hashes: dict[str, str] = {}

    @classmethod
    def open(cls, folder: str | os.PathLike) -> "Artifact":
        art = cls(Path(folder), load_manifest(Path(folder)))
        for record in (art.manifest.pte, art.manifest.tokenizer):
            path = art.folder / record.file
            if path.is_symlink() or not path.is_file():
                raise ArtifactError(f"{path} is missing (the manifest names it)" if not path.exists() else
                                    f"{path} is not a regular file inside the export folder",
                                    hint="re-export, or restore the folder's files")
            size = path.stat().st_size
            if size != record.bytes:
                raise ArtifactError(f"{path} has {size} bytes, its manifest says {record.bytes}",
                                    hint="the file was changed or truncated: re-export, or restore the original")
        with open(art.pte_path, "rb") as fh:
            head = fh.read(8)
        if not _PTE_IDENTIFIER.fullmatch(head[4:8]):
            raise ArtifactError(f"{art.pte_path} is not an ExecuTorch program (no ET file identifier)",
                                hint="re-export, or restore the original model.pte")
        return art

    @property
    def pte_path(self) -> Path:
        return self.folder / self.manifest.pte.file

    @property
    def tokenizer_path(self) -> Path:
        return self.folder / self.manifest.tokenizer.file

    @property
    def manifest_path(self) -> Path:
        return self.folder / MANIFEST

    def sha256(self, path: Path) -> str:
        """sha256 of a file of this folder, computed once per Artifact."""
        key = str(path)
        if key not in self._hashes:
            self._hashes[key] = file_sha256(path)
        return self._hashes[key]

    def check_hashes(self) -> None:
        """ArtifactError unless model.pte and the tokenizer have the sha256 the manifest records."""
        for record in (self.manifest.pte, self.manifest.tokenizer):
            path = self.folder / record.file
            got = self.sha256(path)
            if got != record.sha256:
                raise ArtifactError(f"{path} does not match its manifest (sha256 {got[:12]}…, manifest "
                                    f"{record.sha256[:12]}…)", hint="re-export, or restore the original file")

    def files(self) -> list[Path]:
        """What makes up the export, manifest last (a copy that has the manifest is complete)."""
        return [self.pte_path, self.tokenizer_path, self.manifest_path]

    def record_verification(self, record: VerificationRecord) -> None:
        """Rewrite manifest.json (atomically) with the host verification's outcome."""
        self.manifest = self.manifest.model_copy(update={"verification": record})
        self.manifest.save(self.folder)


# --------------------------------------------------------------------------------------------- writing


def write_bytes_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write_bytes_synced(tmp, text.encode("utf-8"))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def check_output_free(output: Path, force: bool) -> None:
    """Before any work: the destination is free (or --force), its parent is a writable folder."""
    output = Path(output)
    if output.exists() and (not output.is_dir() or any(output.iterdir())) and not force:
        raise OutputExistsError(f"output {output} already exists", hint="pass --force to replace it, or choose another --output")
    if output.exists() and not output.is_dir():
        raise OutputError(f"output {output} exists and is not a folder", hint="choose another --output")
    parent = _existing_parent(output)
    if not parent.is_dir():
        raise OutputError(f"cannot create {output}: {parent} is not a folder", hint="choose another --output")
    try:  # the real test of writability (os.access is wrong for root and on some file systems)
        probe = tempfile.TemporaryDirectory(prefix=".exporter-write-test-", dir=parent)
        probe.cleanup()
    except OSError as err:
        raise OutputError(f"cannot write in {parent}: {err.strerror or err}",
                          hint="choose an --output in a folder you can write to") from None


def _existing_parent(output: Path) -> Path:
    parent = output.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    return parent


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def output_lock(output: Path) -> Iterator[None]:
    """Hold an exclusive lock on `output` (a `.NAME.lock` file beside it) for the whole export."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    lock_path = output.with_name(f".{output.name}.lock")
    fh = open(lock_path, "a+")
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputError(f"another export is writing {output} right now",
                              hint="wait for it to finish, or choose another --output") from None
        yield
    finally:
        fh.close()
        lock_path.unlink(missing_ok=True)


@contextmanager
def staged_output(output: Path, force: bool) -> Iterator[Path]:
    """Yield a temp folder beside `output`; on success it replaces `output` in one rename.

    On any failure (exception, Ctrl-C, disk full) the temp folder is removed and `output` is untouched, so a
    half-written model.pte never sits at the final path. The caller holds `output_lock(output)`.
    """
    check_output_free(output, force)
    output.parent.mkdir(parents=True, exist_ok=True)
    try:
        stage = Path(tempfile.mkdtemp(prefix=f".{output.name}.partial-", dir=output.parent))
        stage.chmod(0o777 & ~_umask())  # mkdtemp makes 0700; the result should follow the user's umask
    except OSError as err:
        raise OutputError(f"cannot create a folder beside {output}: {err.strerror or err}",
                          hint="check free disk space and permissions") from None
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
        raise OutputError(f"could not write {output}: {err.strerror or err}", hint="check free disk space and permissions") from err
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
