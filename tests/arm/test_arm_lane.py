"""The emulated arm64 lane (`pytest -m arm`, after `bash scripts/setup.sh --arm`): the linux-arm64 harness bundle
(real ExecuTorch Arm kernels: XNNPACK/KleidiAI, cross-built) run under qemu with phone-class CPU models, against
the x86 host harness on the same .pte; and the bench through stand-in adb phones that are emulated arm64 phones.
Every test here skips, saying why, when the set-up has not been run. Emulation says nothing about speed.

One module on purpose: a second conftest.py here would shadow tests/conftest.py for `from conftest import`."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.arm

MAX_SEQ_LEN = 48
PROMPT_LEN, GEN_LEN = 8, 20  # >= 16 greedy decode steps compared

# qemu CPU model -> (phone class, ISA features the harness must see, features it must not see)
CPU_MODELS = {
    "neoverse-n1": ("dotprod only: Snapdragon 865/888 class", {"asimd", "asimddp"}, {"i8mm", "sve", "sme"}),
    "cortex-a76": ("dotprod only: Snapdragon 855/865 class", {"asimd", "asimddp"}, {"i8mm", "sve", "sme"}),
    "cortex-a710": ("i8mm + SVE2: Snapdragon 8 Gen 1+ / Dimensity 9000+ class", {"asimddp", "i8mm", "sve2", "bf16"},
                    {"sme"}),
    "neoverse-n2": ("i8mm + SVE2: Armv9.0 server sibling of the A710", {"asimddp", "i8mm", "sve2"}, {"sme"}),
}
# Every model runs in CI: a tiny model takes well under a second per run under qemu.
CI_CPUS = tuple(CPU_MODELS)


def _lane():
    from exporter.device.cross import arm_lane_ready, load_arm_env

    why = arm_lane_ready()
    if why is not None:
        pytest.skip(f"arm64 lane not set up: {why}")
    return load_arm_env()


@pytest.fixture(scope="session")
def arm_env():
    return _lane()


@pytest.fixture(scope="session")
def arm_bundle(arm_env):
    """The linux-arm64 harness and its bundle, built once (CMake caches the build under build/)."""
    from exporter.device.cross import build_bundle

    return build_bundle(jobs=2)


def _tiny_lm(quant: str):
    import torch
    from torch import nn
    from transformers import LlamaConfig, LlamaForCausalLM

    from exporter.build.lower import export_program, lower_to_executorch, runner_metadata
    from exporter.build.model import build_static_lm

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # random init gives near-uniform logits: scale up so argmax means something
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(4.0)
    lm = build_static_lm(model, MAX_SEQ_LEN)
    if quant == "8da4w":
        from torchao.quantization import quantize_

        from exporter.build.recipes import linear_config

        quantize_(lm, linear_config("8da4w", 32), filter_fn=lambda m, fqn: isinstance(m, nn.Linear))
    return lower_to_executorch(export_program(lm), runner_metadata(lm, bos_id=1, eos_ids=[2])).buffer


@pytest.fixture(scope="session")
def tiny_ptes(arm_env, tmp_path_factory) -> dict[str, Path]:
    """A random-weight 2-layer Llama through the exporter's own pipeline (model.py + lower.py): fp32 and 8da4w."""
    folder = tmp_path_factory.mktemp("arm_tiny")
    out = {}
    for quant in ("fp32", "8da4w"):
        out[quant] = folder / f"tiny-{quant}.pte"
        out[quant].write_bytes(_tiny_lm(quant))
    return out


def run_dump(argv: list[str], dump: Path, timeout: float = 300) -> tuple[dict, dict]:
    """Run a harness command line with --dump-logits; (its JSON row, the dump)."""
    proc = subprocess.run([*argv, "--dump-logits", str(dump)], capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(rows) == 1, proc.stdout
    return rows[0], json.loads(dump.read_text())


def harness_args(pte: Path, prompt_len: int = PROMPT_LEN, gen_len: int = GEN_LEN) -> list[str]:
    return ["--pte", str(pte), "--prompt-len", str(prompt_len), "--gen-len", str(gen_len), "--reps", "1",
            "--warmup", "0", "--threads", "1"]


def arm_argv(bundle, cpu: str, args: list[str]) -> list[str]:
    """The bundle's own loader and libraries, under qemu with CPU model `cpu` (what a phone runs, minus qemu)."""
    from exporter.device.cross import bundle_argv, qemu_argv

    return qemu_argv(cpu, bundle_argv(str(bundle.folder), args))





@pytest.fixture(scope="module")
def host_dumps(harness_binary, tiny_ptes, tmp_path_factory):
    folder = tmp_path_factory.mktemp("host_dumps")
    return {q: run_dump([str(harness_binary), *harness_args(pte)], folder / f"{q}.json")[1]
            for q, pte in tiny_ptes.items()}


def test_harness_is_an_aarch64_elf(arm_bundle):
    from exporter.device.cross import EM_AARCH64, elf_machine

    assert elf_machine(arm_bundle.binary) == EM_AARCH64
    if shutil.which("file"):
        out = subprocess.run(["file", "-L", str(arm_bundle.binary)], capture_output=True, text=True).stdout
        assert "ARM aarch64" in out, out
        assert "ARM aarch64" in subprocess.run(["file", "-L", str(arm_bundle.loader)], capture_output=True,
                                               text=True).stdout


def test_bundle_carries_every_library_it_needs(arm_bundle):
    """Closed under DT_NEEDED: nothing is looked up on the phone (only the kernel is shared)."""
    from exporter.device.cross import LOADER, elf_needed, open_bundle

    names = {p.name for p in arm_bundle.libs}
    for elf in (arm_bundle.binary, *arm_bundle.libs):
        assert set(elf_needed(elf)) - {LOADER} <= names, elf
    assert {"libexecutorch.so", "libexecutorch_backend_xnnpack.so", "libc.so.6", "libstdc++.so.6"} <= names
    assert "libtorch" not in " ".join(names) and "python" not in " ".join(names)
    assert open_bundle(arm_bundle.folder).binary == arm_bundle.binary  # the manifest's hashes hold


def _compare(host: dict, arm: dict) -> tuple[float, float]:
    assert arm["prompt_tokens"] == host["prompt_tokens"]
    assert len(host["decode_tokens"]) >= 16
    assert arm["decode_tokens"] == host["decode_tokens"]
    a, b = torch.tensor(host["logits"]), torch.tensor(arm["logits"])
    assert a.shape == b.shape and a.shape[0] == GEN_LEN + 1
    return (a - b).abs().max().item(), torch.nn.functional.cosine_similarity(a, b, dim=-1).min().item()


@pytest.mark.parametrize("quant", ["fp32", "8da4w"])
@pytest.mark.parametrize("cpu", CI_CPUS)
def test_same_tokens_and_logits_as_host(arm_bundle, tiny_ptes, host_dumps, tmp_path, cpu, quant):
    row, dump = run_dump(arm_argv(arm_bundle, cpu, harness_args(tiny_ptes[quant])), tmp_path / "arm.json")
    max_diff, cosine = _compare(host_dumps[quant], dump)
    if quant == "fp32":
        assert max_diff <= 1e-4, (cpu, max_diff)
    else:
        assert cosine >= 0.999, (cpu, cosine)
    # the harness reports the features the (emulated) core gives it: the model in the matrix, not the host's
    _, want, absent = CPU_MODELS[cpu]
    assert want <= set(row["cpu_features"]), row["cpu_features"]
    assert not absent & set(row["cpu_features"]), row["cpu_features"]


def test_a_wrong_kernel_would_be_caught(arm_bundle, tiny_ptes, host_dumps, tmp_path):
    """The comparison is not vacuous: another prompt through the Arm harness differs from the host's dump."""
    args = harness_args(tiny_ptes["fp32"]) + ["--seed", "99"]
    _, dump = run_dump(arm_argv(arm_bundle, CI_CPUS[0], args), tmp_path / "other.json")
    with pytest.raises(AssertionError):
        _compare(host_dumps["fp32"], dump)


# ------------------------------------------------------------------------- stand-in phones that are arm64

S21, S22 = "R5CR21S21A", "R5CT22S22A"  # tests/standin_adb: neoverse-n1 (dotprod) and cortex-a710 (i8mm) phones


def _export_folder(folder: Path, pte: Path, profile: tuple[str, str]) -> Path:
    """An export folder around a real tiny .pte (manifest built and validated by artifact.Manifest)."""
    import hashlib

    from conftest import fake_export

    data = pte.read_bytes()
    fake_export(folder, **{"pte.bytes": len(data), "pte.sha256": hashlib.sha256(data).hexdigest(),
                           "max_seq_len": MAX_SEQ_LEN, "vocab_size": 128, "profile.id": profile[0],
                           "profile.name": profile[1], "threads": 4, "cpu_set": [4, 5, 6, 7]})
    (folder / "model.pte").write_bytes(data)
    return folder


def test_detection_reads_emulated_arm_phones(arm_env, standin):
    from exporter.device.detect import describe_connected

    s = standin(S21, S22)
    devs = {d.serial: d for d in describe_connected(adb_path=s.adb)}
    s21, s22 = devs[S21], devs[S22]
    assert (s21.machine, s22.machine) == ("aarch64", "aarch64")
    assert s21.emulated and s22.emulated
    assert (s21.profile_id, s22.profile_id) == ("sm8350", "sm8450")
    assert "i8mm" not in s21.isa and "dotprod" in s21.isa
    assert {"dotprod", "i8mm", "bf16"} <= set(s22.isa)
    for d in (s21, s22):
        assert any("emulated" in w for w in d.warnings)
        assert not any("expects" in w for w in d.warnings), d.warnings  # each matches its own profile


def test_detection_warns_when_the_profile_isa_is_missing(arm_env, standin):
    """A dotprod-only phone that claims to be an SM8450 (i8mm) phone: detection says what is missing."""
    from exporter.device.detect import describe_connected

    s = standin(S21, **{S21: {"override": {"props": {"ro.soc.model": "SM8450", "ro.kernel.qemu": "1",
                                                     "ro.product.model": "SM-G991U"}}}})
    (dev,) = describe_connected(adb_path=s.adb)
    assert dev.profile_id == "sm8450"
    assert any("profile sm8450 expects i8mm, bf16 but the phone does not report it" in w for w in dev.warnings), \
        dev.warnings


def test_bench_on_emulated_arm_phones(arm_bundle, tiny_ptes, standin, tmp_path):
    """exporter bench --serial on two arm64 stand-in phones: the bundle is pushed and runs under qemu with each
    phone's CPU model; the rows are valid, marked emulated, and carry no roofline."""
    import exporter.api as api
    from exporter.report import ROW_FIELDS, to_csv, to_json, to_markdown

    folder = _export_folder(tmp_path / "exp", tiny_ptes["8da4w"], ("sm8450", "Snapdragon 8 Gen 1"))
    s = standin(S21, S22)
    warnings: list[str] = []
    report = api.bench(folder, serials=[S21, S22], adb=s.adb, prompt_lengths=(8,), gen_lengths=(8,), threads=(1,),
                       reps=1, warmup=0, cooldown_temp_c=None, warn=warnings.append)
    report.raise_for_failures()
    rows = {r["serial"]: r for r in report.rows}
    assert set(rows) == {S21, S22}
    types = {"bool": bool, "dict": dict, "float": (int, float), "int": int, "list": list, "str": str}
    for serial, row in rows.items():
        assert list(ROW_FIELDS) == [k for k in row if k in ROW_FIELDS]
        for name, (kind, _) in ROW_FIELDS.items():
            assert row[name] is None or isinstance(row[name], types[kind]), (name, row[name])
        assert row["status"] == "ok" and row["emulated"] is True and row["host"] is False
        assert row["roofline_decode_tps"] is None and row["roofline_fraction"] is None
        assert row["decode_tps_mean"] > 0 and row["n_runs"] == 1
        assert row["runner"] == "harness"
    # what the Arm harness saw: each phone's emulated core, not the host's x86 one
    assert "i8mm" not in rows[S21]["samples"][0]["cpu_features"]
    assert "i8mm" in rows[S22]["samples"][0]["cpu_features"]
    assert "EMULATED" in s.log(S21) and "-cpu neoverse-n1" in s.log(S21)
    assert "-cpu cortex-a710" in s.log(S22)
    assert (s.root(S21) / "data/local/tmp/exp/exporter_harness_linux-arm64/libexecutorch.so").is_file()
    # the .pte was made for sm8450 (i8mm); the S21 lacks it: said once, by the bench
    assert any(S21 in w and "expects i8mm, bf16" in w for w in warnings), warnings
    doc = json.loads(to_json(report.rows))
    assert all(r["emulated"] is True for r in doc["rows"])
    header, *lines = to_csv(report.rows).splitlines()
    col = header.split(",").index("emulated")
    assert all(line.split(",")[col] == "true" for line in lines)
    assert to_markdown(report.rows).count("(emulated)") == 2


def test_arm_phone_refuses_an_x86_harness(arm_env, harness_binary, tiny_ptes, standin, tmp_path):
    import exporter.api as api
    from exporter.errors import HarnessError

    folder = _export_folder(tmp_path / "exp", tiny_ptes["fp32"], ("sm8350", "Snapdragon 888"))
    s = standin(S21)
    with pytest.raises(HarnessError, match="wrong architecture: x86-64, the device is aarch64"):
        api.bench(folder, serials=[S21], adb=s.adb, harness=harness_binary, prompt_lengths=(4,), gen_lengths=(4,),
                  threads=(1,), reps=1, warmup=0, cooldown_temp_c=None)


def test_standin_arm_phone_cannot_execute_x86(arm_env, harness_binary, standin):
    """The stand-in is no x86 shell in disguise: an x86 ELF fails on its arm64 phones as on a phone."""
    import subprocess as sp

    s = standin(S21)
    sp.run([s.adb, "-s", S21, "push", str(harness_binary), "/data/local/tmp/x86_main"], check=True,
           capture_output=True, env={**__import__("os").environ, **s.env})
    proc = sp.run([s.adb, "-s", S21, "shell", "/data/local/tmp/x86_main --help"], capture_output=True, text=True,
                  env={**__import__("os").environ, **s.env})
    assert proc.returncode == 126 and "not executable" in proc.stderr
