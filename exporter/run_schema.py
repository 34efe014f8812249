"""The one schema of a latency run: what the native harness prints (one JSON object per line, per run)
and what the Android benchmark activity writes. Both sides are checked against RUN_FIELDS."""

from __future__ import annotations

from typing import Any

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
