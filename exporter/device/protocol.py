"""The harness protocol: the command line that runs a benchmark, and the one schema of a latency run.

The native harness prints one JSON object per measured run (RUN_FIELDS); the Android benchmark activity
writes the same objects; ExecuTorch's stock `llama_main` prints a `PyTorchObserver {json}` line that
parse_observer maps onto the same fields.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

from ..errors import HarnessError

# name -> (python types accepted, unit/meaning). Order is the column order of reports.
RUN_FIELDS: dict[str, tuple[tuple[type, ...], str]] = {
    "run": ((int,), "0-based repetition index; warm-up runs are not printed"),
    "threads": ((int,), "worker threads used by the runtime"),
    "cpu_set": ((list,), "CPU ids the process was pinned to (empty: not pinned)"),
    "prompt_tokens": ((int,), "tokens in the prefill call"),
    "gen_tokens": ((int,), "decode steps run after the prefill"),
    "model_load_ms": ((int, float), "Module load + method load, milliseconds"),
    "prefill_ms": ((int, float), "wall time of the prefill call"),
    "prefill_tps": ((int, float), "prompt_tokens / prefill seconds"),
    "ttft_ms": ((int, float), "time to first token: prefill + argmax of its logits"),
    "decode_ms": ((int, float), "wall time of all decode steps"),
    "decode_tps": ((int, float), "gen_tokens / decode seconds"),
    "token_ms_p50": ((int, float), "median per-token decode latency"),
    "token_ms_p90": ((int, float), "90th percentile per-token decode latency"),
    "token_ms_p99": ((int, float), "99th percentile per-token decode latency"),
    "peak_rss_kb": ((int,), "VmHWM of the process after the run, KiB"),
}


class RunSchemaError(ValueError):
    pass


def validate_run(obj: Any) -> dict:
    """Check one run object against RUN_FIELDS; extra keys are allowed (kept as provenance)."""
    if not isinstance(obj, dict):
        raise RunSchemaError(f"run record is {type(obj).__name__}, expected an object")
    for name, (types, _) in RUN_FIELDS.items():
        if name not in obj:
            raise RunSchemaError(f"run record lacks '{name}'")
        value = obj[name]
        if isinstance(value, bool) or not isinstance(value, types):
            raise RunSchemaError(f"run record field '{name}' is {value!r}, expected {'/'.join(t.__name__ for t in types)}")
    return obj


def harness_argv(
    binary: str,
    pte: str,
    *,
    prompt_len: int,
    gen_len: int,
    reps: int,
    warmup: int,
    threads: int,
    cpu_set: Sequence[int] = (),
    prefill_chunk: int | None = None,
) -> list[str]:
    """The command line of one harness invocation (also used on the phone through adb shell)."""
    argv = [
        str(binary), "--pte", str(pte),
        "--prompt-len", str(int(prompt_len)), "--gen-len", str(int(gen_len)),
        "--reps", str(int(reps)), "--warmup", str(int(warmup)), "--threads", str(int(threads)),
    ]
    if cpu_set:
        argv += ["--cpu-set", ",".join(str(int(c)) for c in cpu_set)]
    if prefill_chunk is not None:
        argv += ["--prefill-chunk", str(int(prefill_chunk))]
    return argv


def parse_runs(stdout: str) -> list[dict]:
    """The harness's JSON lines as validated run dicts; other lines are ignored. Raises if there is none."""
    runs = []
    for number, line in enumerate(stdout.splitlines(), 1):
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue
        try:
            runs.append(validate_run(obj))
        except RunSchemaError as err:
            raise HarnessError(f"harness output line {number} is not a valid run: {err}") from err
    if not runs:
        raise HarnessError("the harness printed no run", hint=f"its output began with: {stdout[:300]!r}")
    return runs


def parse_observer(text: str) -> dict[str, Any]:
    """The last `PyTorchObserver {json}` line of llama_main -> the run schema (missing keys -> None)."""
    stats = None
    for line in text.splitlines():
        idx = line.find("PyTorchObserver")
        if idx >= 0:
            try:
                stats = json.loads(line[idx + len("PyTorchObserver"):].strip())
            except json.JSONDecodeError:
                continue
    if stats is None:
        raise HarnessError("llama_main printed no 'PyTorchObserver {...}' stats line")
    scale = stats.get("SCALING_FACTOR_UNITS_PER_SECOND") or 1000
    to_ms = 1000.0 / scale

    def span(a: str, b: str) -> float | None:
        if stats.get(a) is None or stats.get(b) is None:
            return None
        return (stats[b] - stats[a]) * to_ms

    prompt = stats.get("prompt_tokens")
    gen = stats.get("generated_tokens")
    prefill_ms = span("inference_start_ms", "prompt_eval_end_ms")
    decode_ms = span("prompt_eval_end_ms", "inference_end_ms")
    return {
        "prompt_tokens": prompt, "gen_tokens": gen,
        "model_load_ms": span("model_load_start_ms", "model_load_end_ms"),
        "prefill_ms": prefill_ms,
        "prefill_tps": prompt / (prefill_ms / 1000) if prompt and prefill_ms else None,
        "ttft_ms": span("inference_start_ms", "first_token_ms"),
        "decode_ms": decode_ms,
        "decode_tps": gen / (decode_ms / 1000) if gen and decode_ms else None,
        "token_ms_p50": None, "token_ms_p90": None, "token_ms_p99": None, "peak_rss_kb": None,
        "observer": stats,
    }


def llama_prompt(n_tokens: int) -> str:
    """About n_tokens tokens of plain text (llama_main takes text; it reports the exact count it used)."""
    return " ".join(["hello"] * max(1, n_tokens - 1))


def llama_main_argv(binary: str, pte: str, tokenizer: str, *, prompt_len: int, gen_len: int, threads: int,
                    warmup: bool) -> list[str]:
    """The command line of ExecuTorch's stock `llama_main` runner for one run."""
    argv = [str(binary), "--model_path", str(pte), "--tokenizer_path", str(tokenizer), "--prompt", llama_prompt(prompt_len),
            "--seq_len", str(int(prompt_len) + int(gen_len)), "--cpu_threads", str(int(threads)), "--temperature", "0"]
    if warmup:
        argv.append("--warmup")
    return argv
