"""`exporter bundle`: template copy, generated config, chat-template rendering, --embed-model, --force."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import fake_export

from exporter.app import bundle
from exporter.cli import cli
from exporter.errors import AppError, ArtifactError

CHATML = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
          "{{ '<|im_start|>system\\nYou are a helpful AI assistant.<|im_end|>\\n' }}{% endif %}"
          "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
LLAMA3 = ("{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
          "{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
          "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")


def make_export(folder: Path, *, chat_template: str | None = CHATML, pte_bytes: int = 4096) -> Path:
    """A fabricated `exporter export` folder: fake model.pte, a small tokenizer.json, manifest.json."""
    tokenizer = {"version": "1.0", "added_tokens": [
        {"id": 0, "content": "<|begin_of_text|>", "special": True},
        {"id": 1, "content": "<|im_end|>", "special": True}],
        "model": {"type": "BPE", "vocab": {"<|begin_of_text|>": 0, "<|im_end|>": 1, "a": 2}, "merges": []}}
    return fake_export(folder, payload=bytes(range(256)) * (pte_bytes // 256), tokenizer=tokenizer,
                       chat_template=chat_template, threads=4, cpu_set=[4, 5, 6, 7], max_seq_len=512,
                       **{"model.id": "HuggingFaceTB/SmolLM2-135M-Instruct"})


def test_bundle_copies_template_and_writes_config(tmp_path):
    export = make_export(tmp_path / "smollm2")
    result = bundle.bundle_app(export, tmp_path / "app")
    app = tmp_path / "app"
    for rel in ("settings.gradle.kts", "app/build.gradle.kts", "gradle/libs.versions.toml",
                "gradle/wrapper/gradle-wrapper.properties", "app/src/main/AndroidManifest.xml",
                "app/src/main/java/dev/exporter/demo/BenchmarkActivity.kt"):
        assert (app / rel).is_file(), rel
    cfg = json.loads((app / bundle.CONFIG_ASSET).read_text())
    assert cfg == result.config
    assert cfg["model_dir"] == "/data/local/tmp/smollm2"
    assert cfg["model_id"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert (cfg["bos_id"], cfg["eos_ids"], cfg["threads"], cfg["max_seq_len"]) == (0, [1], 4, 512)
    assert cfg["chat_template"] == CHATML
    assert (cfg["profile_id"], cfg["recipe"], cfg["embedded"]) == ("sm8650", "8da4w-g32+emb4w-g64", False)
    assert cfg["pte_sha256"] == json.loads((export / "manifest.json").read_text())["pte"]["sha256"]
    assert not (app / bundle.EMBED_ASSET_DIR).exists()
    assert result.warnings == ()


def test_chatml_parts_reproduce_the_template():
    parts = bundle.render_chat_parts(CHATML)
    assert parts.prefix == "<|im_start|>system\nYou are a helpful AI assistant.<|im_end|>\n<|im_start|>user\n"
    assert parts.suffix == "<|im_end|>\n<|im_start|>assistant\n"
    assert parts.separator == "<|im_end|>\n<|im_start|>user\n"
    assert parts.exact


def test_bos_token_text_comes_from_the_tokenizer(tmp_path):
    export = make_export(tmp_path / "llama", chat_template=LLAMA3)
    cfg = bundle.bundle_app(export, tmp_path / "app").config
    assert cfg["chat_prefix"] == "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n"
    assert cfg["chat_suffix"] == "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    assert cfg["chat_separator"] == "<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n"


def test_no_template_means_raw_prompts(tmp_path):
    export = make_export(tmp_path / "base", chat_template=None)
    result = bundle.bundle_app(export, tmp_path / "app")
    assert (result.config["chat_prefix"], result.config["chat_suffix"]) == ("", "")
    assert any("no chat template" in w for w in result.warnings)


def test_broken_template_is_an_app_error(tmp_path):
    export = make_export(tmp_path / "bad", chat_template="{% for m in messages %}{{ m.content ")
    with pytest.raises(AppError, match="does not render"):
        bundle.bundle_app(export, tmp_path / "app")
    ok = bundle.bundle_app(export, tmp_path / "app2", use_chat_template=False)
    assert ok.config["chat_template"] is None


def test_refuses_non_empty_folder_without_force(tmp_path):
    export = make_export(tmp_path / "m")
    app = tmp_path / "app"
    app.mkdir()
    (app / "notes.txt").write_text("mine")
    with pytest.raises(AppError, match="not empty") as err:
        bundle.bundle_app(export, app)
    assert err.value.exit_code == 9
    assert not (app / "settings.gradle.kts").exists()
    bundle.bundle_app(export, app, force=True)
    assert (app / "settings.gradle.kts").is_file() and (app / "notes.txt").read_text() == "mine"


def test_embed_model_copies_files_and_warns_when_large(tmp_path):
    export = make_export(tmp_path / "m", pte_bytes=8192)
    result = bundle.bundle_app(export, tmp_path / "app", embed_model=True, embed_warn_bytes=1024)
    embed = tmp_path / "app" / bundle.EMBED_ASSET_DIR
    assert sorted(p.name for p in embed.iterdir()) == ["manifest.json", "model.pte", "tokenizer.json"]
    assert (embed / "model.pte").read_bytes() == (export / "model.pte").read_bytes()
    assert result.config["embedded"] is True
    assert any("embedding" in w for w in result.warnings)
    # re-bundling without --embed-model drops the old copy
    again = bundle.bundle_app(export, tmp_path / "app", force=True)
    assert not embed.exists() and again.config["embedded"] is False


def test_small_embed_does_not_warn(tmp_path):
    export = make_export(tmp_path / "m")
    result = bundle.bundle_app(export, tmp_path / "app", embed_model=True)
    assert not any("embedding" in w for w in result.warnings)


def test_missing_files_are_reported(tmp_path):
    export = make_export(tmp_path / "m")
    (export / "tokenizer.json").unlink()
    with pytest.raises(ArtifactError, match="tokenizer.json is missing"):
        bundle.bundle_app(export, tmp_path / "app")
    with pytest.raises(ArtifactError, match="no manifest.json"):
        bundle.bundle_app(tmp_path, tmp_path / "app")


@pytest.mark.parametrize("name", ["../../x", "/etc/passwd", "..", "sub/tokenizer.json", ".hidden", "a\x00b"])
def test_manifest_paths_never_leave_the_folder(tmp_path, name):
    """Fault: --embed-model followed tokenizer.file from the manifest, so ../../x wrote outside --app-dir."""
    export = make_export(tmp_path / "m")
    doc = json.loads((export / "manifest.json").read_text())
    doc["tokenizer"]["file"] = name
    (export / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(ArtifactError, match="not a plain file name"):
        bundle.bundle_app(export, tmp_path / "app", embed_model=True)
    assert not (tmp_path / "app").exists()


def test_build_outputs_are_not_copied(tmp_path):
    template = tmp_path / "template"
    import shutil
    shutil.copytree(bundle.TEMPLATE_DIR, template, ignore=shutil.ignore_patterns("build", ".gradle"))
    (template / "app" / "build").mkdir()
    (template / "app" / "build" / "junk.apk").write_text("x")
    (template / "local.properties").write_text("sdk.dir=/home/me/Android")
    bundle.bundle_app(make_export(tmp_path / "m"), tmp_path / "app", template_dir=template)
    assert not (tmp_path / "app" / "app" / "build").exists()
    assert not (tmp_path / "app" / "local.properties").exists()


def test_cli_bundle_and_exit_code(tmp_path):
    export = make_export(tmp_path / "m")
    runner = CliRunner()
    res = runner.invoke(cli, ["bundle", str(export), "--app-dir", str(tmp_path / "app"), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["config"]["model_dir"] == "/data/local/tmp/m"
    from exporter.cli import main
    with pytest.raises(SystemExit) as exit_:
        main(["bundle", str(export), "--app-dir", str(tmp_path / "app")])
    assert exit_.value.code == 9
