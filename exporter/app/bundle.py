"""`exporter bundle`: copy the Android demo app (android_demo/) to a folder and wire an export folder into it.

The app reads one generated file at start, app/src/main/assets/exporter_config.json (CONFIG_ASSET); its keys are
read in android_demo/.../ExporterConfig.kt and tests compare the two sides. The model's Jinja chat template is
rendered here, on the host, into three plain strings (prefix, suffix, separator) so the app needs no Jinja.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import tomllib

from ..device.push import default_remote_dir
from ..artifact import Artifact
from ..errors import AppError

TEMPLATE_DIR = Path(__file__).resolve().parents[2] / "android_demo"
APP_PACKAGE = "dev.exporter.demo"
CONFIG_ASSET = "app/src/main/assets/exporter_config.json"
EMBED_ASSET_DIR = "app/src/main/assets/model"
VERSIONS_FILE = "gradle/libs.versions.toml"
CONFIG_SCHEMA_VERSION = 1
# Above this an embedded model makes Gradle builds and `installDebug` slow, and Play refuses APKs over 150 MB
# (4 GB is the hard APK limit); pushing to /data/local/tmp is the better path for big models.
EMBED_WARN_BYTES = 512 * 2**20
DEFAULT_TEMPERATURE = 0.7
DEFAULT_MAX_NEW_TOKENS = 256
# Copied from the template never: build outputs, IDE state, the SDK location, and the generated files.
_IGNORE = shutil.ignore_patterns(".gradle", "build", ".idea", ".kotlin", "local.properties", "*.iml",
                                 "exporter_config.json")


@dataclass(frozen=True)
class ChatParts:
    """A chat template rendered with placeholder messages and cut around them."""

    prefix: str  # before the first user message
    suffix: str  # after a user message, up to where the answer starts (the generation prompt)
    separator: str  # after an answer, up to the next user message
    exact: bool  # True when prefix+u1+suffix+a1+separator+u2+suffix reproduces the real two-turn rendering


@dataclass(frozen=True)
class BundleResult:
    app_dir: Path
    config: dict[str, Any]
    embedded_files: tuple[str, ...]
    embedded_bytes: int
    warnings: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {"app_dir": str(self.app_dir), "config_file": str(self.app_dir / CONFIG_ASSET),
                "config": self.config, "embedded_files": list(self.embedded_files),
                "embedded_bytes": self.embedded_bytes, "warnings": list(self.warnings)}


def app_versions(template_dir: Path = TEMPLATE_DIR) -> dict[str, str]:
    """[versions] of the app's version catalog (demoApp is the versionName `app-bench` expects)."""
    path = Path(template_dir) / VERSIONS_FILE
    try:
        return dict(tomllib.loads(path.read_text())["versions"])
    except (OSError, KeyError, tomllib.TOMLDecodeError) as err:
        raise AppError(f"cannot read the app's version catalog {path}: {err}") from err


def _token_text(tokenizer: Path, token_id: int | None) -> str:
    """The text of a special token, from tokenizer.json's added_tokens (empty when unknown)."""
    if token_id is None:
        return ""
    try:
        data = json.loads(tokenizer.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    if not isinstance(data, dict):
        return ""
    for tok in data.get("added_tokens") or []:
        if isinstance(tok, dict) and tok.get("id") == token_id:
            return str(tok.get("content", ""))
    vocab = (data.get("model") or {}).get("vocab")
    if isinstance(vocab, dict):
        for text, idx in vocab.items():
            if idx == token_id:
                return text
    return ""


def render_chat_parts(template: str | None, bos_token: str = "", eos_token: str = "") -> ChatParts | None:
    """Cut a Hugging Face chat template into the strings around user and assistant messages.

    Rendered like transformers' apply_chat_template (sandboxed Jinja, trim_blocks, lstrip_blocks). None when
    there is no template; AppError when it does not render or does not place the messages verbatim.
    """
    if not template:
        return None
    from jinja2 import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = lambda v, indent=None: json.dumps(v, ensure_ascii=False, indent=indent)
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    u1, a1, u2 = "\ue000USER-ONE\ue000", "\ue000ANSWER-ONE\ue000", "\ue000USER-TWO\ue000"

    def render(messages: list[dict]) -> str:
        try:
            return env.from_string(template).render(messages=messages, add_generation_prompt=True,
                                                    bos_token=bos_token, eos_token=eos_token)
        except Exception as err:  # Jinja raises many types (TemplateError, UndefinedError, TypeError ...)
            raise AppError(f"the model's chat template does not render: {err}",
                           hint="pass --no-chat-template to send raw prompts") from err

    one = render([{"role": "user", "content": u1}])
    if one.count(u1) != 1:
        raise AppError("the chat template does not put the user message in the prompt verbatim",
                       hint="pass --no-chat-template to send raw prompts")
    prefix, suffix = one.split(u1)
    two = render([{"role": "user", "content": u1}, {"role": "assistant", "content": a1},
                  {"role": "user", "content": u2}])
    if two.count(a1) != 1 or two.count(u2) != 1 or two.index(a1) > two.index(u2):
        # Some templates drop earlier answers (reasoning models); later turns then go without a separator.
        return ChatParts(prefix, suffix, "", exact=False)
    separator = two[two.index(a1) + len(a1):two.index(u2)]
    exact = two == prefix + u1 + suffix + a1 + separator + u2 + suffix
    return ChatParts(prefix, suffix, separator, exact)


def build_config(artifact: Artifact, *, remote_dir: str, embedded: bool,
                 temperature: float = DEFAULT_TEMPERATURE, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
                 use_chat_template: bool = True) -> tuple[dict[str, Any], list[str]]:
    """The exporter_config.json document and the warnings met while building it."""
    warnings: list[str] = []
    manifest = artifact.manifest
    tok = manifest.tokenizer
    eos_ids = list(tok.eos_ids)
    bos_id = tok.bos_id
    template = manifest.chat_template if use_chat_template else None
    parts = render_chat_parts(template, _token_text(artifact.tokenizer_path, bos_id),
                              _token_text(artifact.tokenizer_path, eos_ids[0] if eos_ids else None))
    if parts is None:
        warnings.append("no chat template: the app sends the user's text as the raw prompt")
    elif not parts.exact:
        warnings.append("the chat template renders multi-turn conversations differently from a plain "
                        "concatenation of turns; the app's follow-up turns are approximate")
    config = {
        "schema_version": CONFIG_SCHEMA_VERSION,
        "model_id": manifest.model.id,
        "model_dir": remote_dir,
        "model_file": manifest.pte.file,
        "tokenizer_file": tok.file,
        "embedded": embedded,
        "bos_id": -1 if bos_id is None else int(bos_id),
        "eos_ids": eos_ids,
        "chat_template": template,
        "chat_prefix": parts.prefix if parts else "",
        "chat_suffix": parts.suffix if parts else "",
        "chat_separator": parts.separator if parts else "",
        "threads": manifest.threads,
        "max_seq_len": manifest.max_seq_len,
        "temperature": float(temperature),
        "max_new_tokens": int(max_new_tokens),
        "profile_id": manifest.profile.id,
        "recipe": manifest.recipe.label,
        "pte_sha256": manifest.pte.sha256,
        "pte_bytes": manifest.pte.bytes,
    }
    return config, warnings


def bundle_app(export_dir: Path, app_dir: Path, *, force: bool = False, embed_model: bool = False,
               remote_dir: str | None = None, temperature: float = DEFAULT_TEMPERATURE,
               max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, use_chat_template: bool = True,
               template_dir: Path = TEMPLATE_DIR, embed_warn_bytes: int = EMBED_WARN_BYTES) -> BundleResult:
    """Copy the app template to `app_dir` and write the config (and, with embed_model, the model files)."""
    export_dir, app_dir, template_dir = Path(export_dir), Path(app_dir), Path(template_dir)
    if not (template_dir / "settings.gradle.kts").is_file():
        raise AppError(f"the Android app template is missing at {template_dir}",
                       hint="run from a source checkout of exporter (android_demo/ ships with the repository)")
    artifact = Artifact.open(export_dir)
    if embed_model:
        artifact.check_hashes()  # what goes into an APK must be the export the manifest describes
    if app_dir.exists() and not app_dir.is_dir():
        raise AppError(f"{app_dir} exists and is not a folder")
    if app_dir.is_dir() and any(app_dir.iterdir()) and not force:
        raise AppError(f"{app_dir} is not empty", hint="choose an empty folder, or pass --force to overwrite it")
    if app_dir.resolve() == template_dir.resolve() or template_dir.resolve() in app_dir.resolve().parents:
        raise AppError(f"{app_dir} is inside the app template {template_dir}", hint="bundle into another folder")
    remote = remote_dir or default_remote_dir(export_dir)
    config, warnings = build_config(artifact, remote_dir=remote, embedded=embed_model,
                                    temperature=temperature, max_new_tokens=max_new_tokens,
                                    use_chat_template=use_chat_template)

    shutil.copytree(template_dir, app_dir, ignore=_IGNORE, dirs_exist_ok=True)
    embed_dir = app_dir / EMBED_ASSET_DIR
    if embed_dir.exists():  # a model from an earlier --force bundle must not linger in the APK
        shutil.rmtree(embed_dir)
    embedded: list[str] = []
    embedded_bytes = 0
    if embed_model:
        embed_dir.mkdir(parents=True)
        for path in artifact.files():
            shutil.copy2(path, embed_dir / path.name)
            embedded.append(path.name)
            embedded_bytes += path.stat().st_size
        if embedded_bytes > embed_warn_bytes:
            warnings.append(f"embedding {embedded_bytes / 2**20:.0f} MiB of model files in the APK "
                            f"(over {embed_warn_bytes / 2**20:.0f} MiB): builds and installs get slow and app stores "
                            "refuse large APKs; `exporter push` + the default model folder avoids this")
    config_path = app_dir / CONFIG_ASSET
    config_path.parent.mkdir(parents=True, exist_ok=True)
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    return BundleResult(app_dir, config, tuple(embedded), embedded_bytes, tuple(warnings))
