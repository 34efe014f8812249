"""Faults and hostile input (issue 8): each ends in one clear line and its own exit code, never a traceback,
and nothing half-written. Most go through the real CLI entry point (`main`, or `python -m exporter`)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import StandIn, fake_export
from exporter.cli import main
from exporter.errors import EXIT_CODES, ExporterError

ROOT = Path(__file__).resolve().parents[2]
S24 = "R5CX10S24"


def run_main(capsys, *argv) -> tuple[int, str, str]:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in argv])
        raise SystemExit(0)
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def run_entry(*argv, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "exporter", *map(str, argv)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout, cwd=ROOT)


def one_clear_line(err: str) -> None:
    assert "Traceback" not in err
    assert len([ln for ln in err.splitlines() if ln.startswith("error: ")]) == 1, err


# ---------------------------------------------------------------------------------- output destination


def test_output_whose_parent_is_a_file_fails_before_any_work(capsys, tiny_models, tmp_path, monkeypatch):
    import exporter.build.export as export_mod

    monkeypatch.setattr(export_mod, "run_export", lambda *a, **k: pytest.fail("the export ran"))
    (tmp_path / "afile").write_text("x")
    code, out, err = run_main(capsys, "export", "--model", tiny_models["llama"], "--device", "sm8650",
                              "--max-seq-len", "32", "-o", tmp_path / "afile" / "out")
    assert code == 10 and "is not a folder" in err and out == ""
    one_clear_line(err)


def test_output_where_nothing_can_be_written_fails_before_any_work(capsys, tiny_models, monkeypatch):
    import exporter.build.export as export_mod

    monkeypatch.setattr(export_mod, "run_export", lambda *a, **k: pytest.fail("the export ran"))
    # /proc refuses new folders even to root (a chmod 555 folder would not stop root, who runs CI)
    code, _, err = run_main(capsys, "export", "--model", tiny_models["llama"], "--device", "sm8650",
                            "--max-seq-len", "32", "-o", "/proc/exporter-test/out")
    assert code == 10 and "cannot write in /proc" in err
    one_clear_line(err)


def test_disk_full_while_saving_the_tokenizer_is_one_clear_error(tmp_path):
    from exporter.build.export import _save_tokenizer
    from exporter.errors import OutputError

    class FullDisk:
        def save_pretrained(self, folder):  # what the Rust tokenizers library raises: a plain Exception
            raise Exception("No space left on device (os error 28)")

    class Plan:
        output = tmp_path / "out"

    with pytest.raises(OutputError, match="disk full") as err:
        _save_tokenizer(FullDisk(), tmp_path, Plan())
    assert "free disk space" in err.value.hint


def test_a_second_export_to_the_same_output_is_refused_while_the_first_runs(capsys, tiny_models, tmp_path):
    from exporter.artifact import output_lock

    out = tmp_path / "out"
    with output_lock(out):  # what a concurrent export holds for its whole run
        code, _, err = run_main(capsys, "export", "--model", tiny_models["llama"], "--device", "sm8650",
                                "--max-seq-len", "32", "-o", out)
    assert code == 10 and "another export is writing" in err
    assert not out.exists()


def test_staged_output_follows_the_umask(tmp_path):
    from exporter.artifact import staged_output

    old = os.umask(0o027)
    try:
        with staged_output(tmp_path / "o", force=False) as stage:
            (stage / "f").write_text("x")
    finally:
        os.umask(old)
    assert (tmp_path / "o").stat().st_mode & 0o777 == 0o750


# ---------------------------------------------------------------------------------- markup and control chars


def test_clean_escapes_control_and_bidi_characters():
    from exporter.output import clean

    assert clean("a\x1b[2Jb\x00c\u202ed") == "a\\x1b[2Jb\\x00c\\u202ed"
    assert clean("[/bold] [red]x[/red]") == "[/bold] [red]x[/red]"


def test_markup_in_a_path_is_printed_as_text(capsys, tmp_path):
    bad = tmp_path / "[/x]" / "[bold]p.yaml"
    code, _, err = run_main(capsys, "export", "--device", bad, "-o", tmp_path / "o")
    assert code == 3 and "[/x]" in err and "[bold]p.yaml" in err
    one_clear_line(err)


def test_hostile_phone_strings_are_printed_as_text(tmp_path):
    phone = yaml.safe_load((ROOT / "tests/standin_adb/phones/galaxy_s24_sm8650/phone.yaml").read_text())
    props = {**phone["props"], "ro.product.model": "SM-[/x]\x1b[2J\x00Evil", "ro.product.manufacturer": "[bold]acme"}
    s = StandIn.phones(tmp_path, S24, **{S24: {"override": {"props": props}}})
    for argv in (("devices", "--connected"), ("devices", "--connected", "--json")):
        p = run_entry(*argv, env={**s.env, "COLUMNS": "400"})
        assert p.returncode == 0, p.stderr
        assert "\x1b" not in p.stdout and "\x00" not in p.stdout
        assert "SM-[/x]" in p.stdout
    assert json.loads(p.stdout)[0]["model"] == "SM-[/x]\x1b[2J\x00Evil"  # JSON keeps the value, escaped by JSON


def test_no_phone_connected_says_so(tmp_path):
    s = StandIn(tmp_path, [])
    p = run_entry("devices", "--connected", env=s.env)
    assert p.returncode == 0 and p.stdout == "" and "no phone connected" in p.stderr


# ---------------------------------------------------------------------------------- verify trusts nothing


@pytest.mark.parametrize("manifest, message", [
    (b"{}", "missing required field 'schema_version'"),
    (b"[1, 2]", "holds list, not a manifest object"),
    (b"\xff\xfe{}", "is not UTF-8 text"),
    (b'{"schema_version": 2', "is not valid JSON"),
    (b"[" * 5000 + b"]" * 5000, "nested too deeply"),
])
def test_verify_refuses_a_broken_manifest(capsys, tmp_path, manifest, message):
    folder = fake_export(tmp_path / "e")
    (folder / "manifest.json").write_bytes(manifest)
    code, out, err = run_main(capsys, "verify", folder)
    assert code == 11 and message in err and out == ""
    one_clear_line(err)


def test_verify_refuses_random_bytes_instead_of_a_program(tmp_path):
    # through a subprocess: before the header check, ExecuTorch's loader aborted the whole process (exit 134)
    folder = fake_export(tmp_path / "e", pte=os.urandom(4096))
    p = run_entry("verify", folder)
    assert p.returncode == 11 and "not an ExecuTorch program" in p.stderr and p.stdout == ""
    one_clear_line(p.stderr)


def test_verify_refuses_files_that_do_not_match_the_manifest(capsys, tmp_path):
    folder = fake_export(tmp_path / "e", payload=b"\1" * 4096)
    data = bytearray((folder / "model.pte").read_bytes())
    data[-1] ^= 1
    (folder / "model.pte").write_bytes(bytes(data))
    code, _, err = run_main(capsys, "verify", folder)
    assert code == 11 and "does not match its manifest" in err
    (folder / "tokenizer.json").unlink()
    code, _, err = run_main(capsys, "verify", folder)
    assert code == 11 and "tokenizer.json is missing" in err


def test_partial_utf8_tokens_are_decoded_across_token_boundaries():
    from exporter.verification import decode_runner_output

    # "é" and "😀" arrive split over several tokens, as byte-level BPE models emit them
    raw = b"caf" + b"\xc3" + b"\xa9 " + b"\xf0\x9f" + b"\x98\x80" + b"\nPyTorchObserver " + json.dumps(
        {"generated_tokens": 5}).encode() + b"\n"
    assert decode_runner_output(raw) == ("café 😀", True)
    text, ok = decode_runner_output(b"\xc3")  # a truncated sequence at the very end: replaced, not a crash
    assert text == "\ufffd" and not ok


# ---------------------------------------------------------------------------------- exit codes


def test_every_expected_failure_has_its_own_documented_code():
    import exporter.errors as errors

    classes = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, ExporterError)
               and c is not ExporterError]
    assert {c.exit_code for c in classes} == set(EXIT_CODES) - {0, 1}
    assert all(c.exit_code != 1 for c in classes)
    raised_base = subprocess.run(["grep", "-rnE", r"raise ExporterError\(", str(ROOT / "exporter")],
                                 capture_output=True, text=True).stdout
    assert raised_base == ""
    readme = (ROOT / "README.md").read_text()
    table = dict(re.findall(r"^\| `?(\d+)`? \| (.+?) \|$", readme, flags=re.M))
    assert {int(k) for k in table} == set(EXIT_CODES)


def test_an_unexpected_crash_exits_1_with_a_bug_hint(capsys, monkeypatch):
    import exporter.api as api

    def crash():
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(api, "list_profiles", crash)
    code, _, err = run_main(capsys, "devices")
    assert code == 1 and "bug" in err and "EXPORTER_DEBUG" in err and "Traceback" not in err


def test_interrupt_while_verifying_marks_the_export_interrupted(capsys, tmp_path, monkeypatch):
    import exporter.build.export as export_mod
    import exporter.build.plan as plan_mod
    import exporter.verification as verification
    from exporter.artifact import Artifact

    folder = tmp_path / "out"

    class Plan:
        output, notices = folder, ()

    monkeypatch.setattr(plan_mod, "build_plan", lambda *a, **k: Plan())
    monkeypatch.setattr(export_mod, "run_export", lambda plan, **k: Artifact.open(fake_export(folder)))

    def ctrl_c(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(verification, "verify_folder", ctrl_c)
    code, _, err = run_main(capsys, "export", "--device", "sm8650", "-o", folder)
    assert code == 130 and "complete but unverified" in err
    assert json.loads((folder / "manifest.json").read_text())["verification"]["status"] == "interrupted"
    Artifact.open(folder).check_hashes()  # the rewritten manifest still describes the files


# ---------------------------------------------------------------------------------- fuzzing the two input formats

PROFILE_KEYS = ["schema_version", "id", "name", "vendor", "extends", "cpu", "memory", "context", "runtime", "recipe",
                "detect", "clusters", "isa", "threads", "default", "max", "linear", "group_size", "typical_ram_gb"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                    st.text(max_size=20), st.sampled_from(["sm8650", "8da4w", "i8mm", "0xd81", "1e400"]))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.one_of(st.sampled_from(PROFILE_KEYS), st.text(max_size=8)),
                                                 inner, max_size=5)), max_leaves=25)
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(doc=st.one_of(values.map(lambda v: yaml.safe_dump(v, allow_unicode=True)), st.text(max_size=200),
                     st.dictionaries(st.sampled_from(PROFILE_KEYS), values, max_size=8).map(yaml.safe_dump)))
def test_fuzzed_profile_yaml_never_crashes(capsys, tmp_path, doc):
    path = tmp_path / "fuzz.yaml"
    path.write_text(doc, encoding="utf-8", errors="surrogatepass")
    # --model points nowhere: a profile that happens to be valid stops at the model (4), never exports
    code, _, err = run_main(capsys, "export", "--device", path, "--model", tmp_path / "missing", "-o", tmp_path / "o")
    assert code in (3, 4), err
    one_clear_line(err)


@FUZZ
@given(doc=st.one_of(values.map(json.dumps), st.binary(max_size=64),
                     st.dictionaries(st.sampled_from(["schema_version", "model", "pte", "tokenizer", "profile",
                                                      "recipe", "max_seq_len", "context"]), values,
                                     max_size=8).map(json.dumps)))
def test_fuzzed_manifest_never_crashes(capsys, tmp_path, doc):
    folder = fake_export(tmp_path / "e")
    (folder / "manifest.json").write_bytes(doc if isinstance(doc, bytes) else doc.encode())
    code, _, err = run_main(capsys, "verify", folder)
    assert code == 11, err
    one_clear_line(err)
