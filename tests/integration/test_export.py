"""End to end: tiny models of each supported family exported to .pte and run with the ExecuTorch runtime."""

from __future__ import annotations

import json
import os
import pytest
import torch

from conftest import decode_like_the_runner
from exporter.artifact import PTE
from exporter.build.candidates import count_bytes
from exporter.build.export import run_export
from exporter.build.plan import build_plan
from exporter.verification import PteDecoder, run_stock_runner

pytestmark = pytest.mark.slow


def _eager_static(folder, max_seq_len, recipe=None):
    """The exporter's own eager decoder (optionally torchao-quantized exactly as the export does)."""
    from exporter.build.model import build_static_lm
    from exporter.build.recipes import apply_recipe, collect_importance
    from exporter.build.source import load_model, load_tokenizer, resolve_source
    from exporter.build.source import sample_text
    from exporter.build.export import CALIBRATION_TOKENS

    src = resolve_source(str(folder))
    hf = load_model(src)
    lm = build_static_lm(hf, max_seq_len)
    if recipe is not None:
        ids = load_tokenizer(src)(sample_text(), add_special_tokens=False)["input_ids"][:CALIBRATION_TOKENS]
        apply_recipe(lm, recipe, collect_importance(hf, ids))
    return hf, lm


def _pte_vs(lm, pte, tokens, prefill=6):
    dec = PteDecoder(pte)
    return dec.score(tokens, prefill), decode_like_the_runner(lm, tokens, prefill)


@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen3", "phi3"])
def test_fp32_pte_matches_eager_transformers(tiny_models, tmp_path, family):
    out = tmp_path / "out"
    plan = build_plan(str(tiny_models[family]), "sm8650", out, quant="none", embedding_quant="none", max_seq_len=64)
    manifest = run_export(plan).manifest
    assert manifest.model.architecture == family
    hf, _ = _eager_static(tiny_models[family], 64)
    tokens = [5, 17, 42, 99, 3, 250, 7, 8, 13, 21, 34, 55]
    dec = PteDecoder(out / PTE)
    got = dec.score(tokens, 6)[:-1]
    with torch.no_grad():
        want = hf(torch.tensor([tokens])).logits[0, 5:-1]
    assert torch.allclose(got, want, atol=1e-4, rtol=1e-4), (got - want).abs().max()


@pytest.mark.parametrize("family", ["llama", "qwen3"])
def test_quantized_pte_matches_eager_quantized_model(tiny_models, tmp_path, family):
    out = tmp_path / "out"
    plan = build_plan(str(tiny_models[family]), "sm8650", out, max_seq_len=64)
    manifest = run_export(plan).manifest
    assert manifest.recipe.label == "8da4w-g32+emb4w-g64"
    assert manifest.recipe.applied.scale_search == "activation-weighted mse"
    assert manifest.export.delegated_calls > 0
    _, lm = _eager_static(tiny_models[family], 64, plan.recipe)
    # the roofline's weight bytes are those of the decoder quantized exactly as exported
    assert manifest.weight_bytes_per_token == count_bytes(lm, 64).read_per_token
    tokens = [5, 17, 42, 99, 3, 250, 7, 8, 13, 21, 34, 55]
    got, want = _pte_vs(lm, out / PTE, tokens)
    cos = torch.nn.functional.cosine_similarity(got, want, dim=-1)
    # Not bit-exact: XNNPACK and torchao round the int8 dynamic activations differently, and the tiny
    # models' inflated weights amplify that. A wrong kernel or layout scores far lower (0.3 was seen).
    assert cos.mean() > 0.98, cos
    assert (got.argmax(-1) == want.argmax(-1)).float().mean() >= 0.7


def test_manifest_and_folder_contents(tiny_models, tmp_path):
    out = tmp_path / "out"
    manifest = run_export(build_plan(str(tiny_models["llama"]), "sm8550", out, max_seq_len=48)).manifest
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk == json.loads(json.dumps(manifest.to_dict()))
    names = {p.name for p in out.iterdir()}
    assert {"manifest.json", "model.pte", "tokenizer.json", "tokenizer_config.json"} <= names
    assert names <= {"manifest.json", "model.pte", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json"}
    assert on_disk["pte"]["bytes"] == (out / PTE).stat().st_size
    from exporter.artifact import file_sha256

    assert on_disk["pte"]["sha256"] == file_sha256(out / PTE)
    assert on_disk["profile"]["id"] == "sm8550" and on_disk["max_seq_len"] == 48
    assert on_disk["context"] == {"requested": 48, "model_limit": 256, "capped": False}
    assert on_disk["verification"]["status"] == "not_run"  # run_export alone does not verify; the API records it
    mode = (out / PTE).stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask and mode == 0o666 & ~umask  # the user's umask, not 0700
    assert on_disk["tokenizer"]["bos_id"] == 0 and on_disk["tokenizer"]["eos_ids"] == [1]
    assert len(on_disk["model"]["weights_sha256"]) == 64
    assert on_disk["bf16_bytes"] > 0 and on_disk["size_reduction"] == pytest.approx(on_disk["bf16_bytes"] / on_disk["pte"]["bytes"], rel=1e-2)
    assert on_disk["overrides"] == {"max_seq_len": 48}
    for pkg in ("torch", "executorch", "torchao", "transformers", "exporter"):
        assert on_disk["versions"][pkg]


def test_stock_runner_generates_with_exported_tokenizer(tiny_models, tmp_path):
    out = tmp_path / "out"
    run_export(build_plan(str(tiny_models["qwen2"]), "sm8650", out, max_seq_len=64))
    text, ok = run_stock_runner(out / PTE, out / "tokenizer.json", 5, prompt="The harbour")
    assert ok, text


def test_verify_cli_reports_agreement_and_perplexity_as_clean_json(tiny_models, tmp_path, capfd):
    from exporter.cli import main

    out = tmp_path / "out"
    run_export(build_plan(str(tiny_models["llama"]), "sm8650", out, quant="none", embedding_quant="none", max_seq_len=128))
    capfd.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(["verify", str(out), "--chunks", "2", "--chunk-len", "64", "--prefill-len", "8", "--json"])
        raise SystemExit(0)
    assert exc.value.code == 0
    stdout, _ = capfd.readouterr()
    result = json.loads(stdout)  # the C++ runner's own prints must not leak into stdout
    assert result["top1_agreement"] == 1.0
    assert result["ppl_pte"] == pytest.approx(result["ppl_eager"], rel=1e-3)
    assert result["mean_kl"] < 1e-6
    assert result["scored_tokens"] == 2 * (64 - 8)
    assert result["runner_ok"] and result["host_decode_tps"] > 0


def test_interrupted_export_leaves_no_artifact(tiny_models, tmp_path, monkeypatch):
    import exporter.build.export as export_mod

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(export_mod, "write_bytes_synced", boom)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        run_export(build_plan(str(tiny_models["llama"]), "sm8650", out, max_seq_len=32))
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no .partial folder left behind


def test_disk_full_mid_write_is_clean_error(tiny_models, tmp_path, monkeypatch):
    import errno

    import exporter.build.export as export_mod
    from exporter.errors import OutputError

    def full(path, data):
        path.write_bytes(data[: len(data) // 2])  # half a file, then the disk fills up
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(export_mod, "write_bytes_synced", full)
    out = tmp_path / "out"
    with pytest.raises(OutputError, match="No space left"):
        run_export(build_plan(str(tiny_models["llama"]), "sm8650", out, max_seq_len=32))
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_export_refuses_a_tokenizer_that_grows_past_the_vocabulary_before_lowering(tmp_path, monkeypatch):
    from conftest import _tiny_tokenizer, tiny_family

    import exporter.build.lower as lower_mod
    from exporter.errors import ModelError

    folder = tmp_path / "qwen2"
    tiny_family("qwen2").save_pretrained(folder)  # 300 rows; Qwen2's tokenizer class adds <|endoftext|> as id 300
    _tiny_tokenizer(folder)
    monkeypatch.setattr(lower_mod, "lower_to_executorch", lambda *a, **k: pytest.fail("lowered a doomed export"))
    out = tmp_path / "out"
    with pytest.raises(ModelError, match="token ids up to 300 once saved, but the model's vocabulary has 300"):
        run_export(build_plan(str(folder), "sm8650", out, max_seq_len=32))
    assert not out.exists()


def test_force_replaces_existing_output(tiny_models, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    run_export(build_plan(str(tiny_models["llama"]), "sm8650", out, max_seq_len=32), force=True)
    assert (out / PTE).is_file() and not (out / "old.txt").exists()


def test_verify_refuses_a_folder_that_does_not_belong_to_its_model(tmp_path, capsys):
    """The manifest names the model by path; the model there has changed, then the tokenizer beside the .pte is
    another model's: both are found before anything runs, each with its own clear error and exit code."""
    from conftest import make_tiny_model
    from tokenizers import Tokenizer, models

    from exporter.cli import main

    model = make_tiny_model(tmp_path / "model", "llama", seed=0)
    out = tmp_path / "out"
    manifest = run_export(build_plan(str(model), "sm8650", out, quant="none", embedding_quant="none", max_seq_len=32)).manifest

    def verify_fails():
        capsys.readouterr()
        with pytest.raises(SystemExit) as exc:
            main(["verify", str(out), "--chunks", "1", "--chunk-len", "16", "--prefill-len", "4"])
        return exc.value.code, capsys.readouterr().err

    make_tiny_model(tmp_path / "model", "llama", seed=1)  # same path, other weights
    code, err = verify_fails()
    assert code == 5 and "is not the model" in err and "Traceback" not in err
    make_tiny_model(tmp_path / "model", "llama", seed=0)

    other = Tokenizer(models.WordLevel({f"t{i}": i for i in range(manifest.vocab_size + 40)}, unk_token="t0"))
    other.save(str(out / "tokenizer.json"))
    data = json.loads((out / "manifest.json").read_text())
    from exporter.artifact import file_sha256

    data["tokenizer"].update(bytes=(out / "tokenizer.json").stat().st_size, sha256=file_sha256(out / "tokenizer.json"))
    (out / "manifest.json").write_text(json.dumps(data))
    code, err = verify_fails()
    assert code == 5 and "not this model's tokenizer" in err and "Traceback" not in err


def test_cli_export_terminal_is_quiet_and_json_is_clean(tiny_models, tmp_path):
    """Through the real entry point: stdout is one JSON document; stderr holds only exporter's own progress
    (no library warnings, log lines or progress bars: those are behind -v)."""
    import re
    import subprocess
    import sys

    out = tmp_path / "out"
    p = subprocess.run([sys.executable, "-m", "exporter", "export", "--model", str(tiny_models["llama"]), "--device",
                        "sm8650", "--max-seq-len", "64", "-o", str(out), "--chunks", "1", "--chunk-len", "32", "--json"],
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["verify"]["runner_ok"] and doc["manifest"]["verification"]["status"] == "passed"
    foreign = [ln for ln in p.stderr.splitlines() if not re.match(r"^(\[\s*\d+\.\d+s\] |  done in \d)", ln)]
    assert foreign == []
    assert json.loads((out / "manifest.json").read_text())["verification"]["status"] == "passed"


def test_recipe_auto_exports_the_plans_choice_and_records_the_plan(tiny_models, tmp_path, monkeypatch):
    text = tmp_path / "eval.txt"
    text.write_text("It is a truth universally acknowledged, that a single man in possession of a good fortune, "
                    "must be in want of a wife. " * 12)
    monkeypatch.setenv("EXPORTER_EVAL_TEXT", str(text))
    out = tmp_path / "out"
    plan = build_plan(str(tiny_models["llama"]), "sm8650", out, recipe="auto", max_seq_len=32)
    assert plan.chosen_by is not None and plan.recipe.label() == plan.chosen_by["chosen"]
    manifest = run_export(plan).manifest
    assert manifest.plan.chosen == manifest.recipe.label and manifest.plan.reason
    assert len(manifest.plan.candidates) >= 6
    chosen = next(c for c in manifest.plan.candidates if c.verdict == "chosen")
    # the plan's exact weight bytes are the .pte's contents; the rest is the program and alignment
    assert 0 < manifest.pte.bytes - chosen.weight_bytes < 64 * 1024, (manifest.pte.bytes, chosen.weight_bytes)
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk["plan"]["chosen"] == manifest.recipe.label and on_disk["overrides"]["recipe"] == manifest.recipe.label
