"""`exporter push` and `exporter bench`: an export folder onto phones, and its latency measured there."""

from __future__ import annotations

from pathlib import Path

import click

from .. import output
from .options import INT_LIST, adb_option, json_option, transfer_printer

_FOLDER = click.Path(file_okay=False, path_type=Path)


@click.command()
@click.argument("folder", type=_FOLDER)
@click.option("--serial", "-s", help="Phone to push to (needed when several are connected).")
@click.option("--remote-dir", help="Folder on the phone (default: /data/local/tmp/<folder name>).")
@adb_option
@json_option
def push(folder: Path, serial: str | None, remote_dir: str | None, adb_path: Path | None, as_json: bool) -> None:
    """Copy an export folder to a phone; files already there (same sha256) are skipped, so re-running resumes."""
    from ..api import push as push_folder

    result = push_folder(folder, serial, adb=adb_path, remote_dir=remote_dir, progress=transfer_printer(),
                         say=output.info)
    if as_json:
        output.print_json(result.to_dict())
        return
    output.print_table(f"{result.serial}:{result.remote_dir}", ["file", "bytes", "sha256", "action"],
                       [(f.name, f.bytes, f.sha256[:16], f.action) for f in result.files])


@click.command()
@click.argument("folder", type=_FOLDER)
@click.option("--serial", "-s", "serials", multiple=True, help="Phone(s) to bench; repeat for several (in parallel).")
@click.option("--all", "all_devices", is_flag=True, help="Bench every connected phone.")
@click.option("--host", is_flag=True, help="Run the harness on this machine instead of a phone.")
@click.option("--prompt-lengths", "-p", type=INT_LIST, default="64", show_default=True,
              help="Prompt lengths, comma-separated (one test each).")
@click.option("--gen", "-n", "gen_lengths", type=INT_LIST, default="128", show_default=True,
              help="Tokens to generate, comma-separated (one test each).")
@click.option("--threads", "-t", type=INT_LIST, default=None,
              help="Thread counts, comma-separated (default: the manifest's).")
@click.option("--repeat", "-r", "reps", type=click.IntRange(min=1), default=5, show_default=True, help="Measured runs.")
@click.option("--warmup", type=click.IntRange(min=0), default=1, show_default=True, help="Warm-up runs before each measurement.")
@click.option("--cooldown-temp", type=float, default=45.0, show_default=True,
              help="Before each run, wait until the hottest CPU zone is under this (deg C).")
@click.option("--cooldown-timeout", type=click.FloatRange(min=0), default=120.0, show_default=True,
              help="Longest wait for cooling (s).")
@click.option("--no-cooldown", is_flag=True, help="Do not wait between runs (one runner process per test).")
@click.option("--runner", type=click.Choice(["harness", "llama_main"]), default="harness", show_default=True,
              help="exporter's harness, or the stock ExecuTorch llama_main runner.")
@click.option("--prefill-chunk", type=click.IntRange(min=1), default=None,
              help="Harness: prefill the prompt in calls of at most N tokens (default: one call, as ExecuTorch's "
                   "runners do with an exporter .pte).")
@click.option("--harness", "harness_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Runner binary to push (Android arm64 harness, or llama_main with --runner llama_main); "
                   "with --host: a host harness binary (default: build it).")
@click.option("--tokenizer", type=click.Path(dir_okay=False, path_type=Path),
              help="Tokenizer to push for llama_main (default: the export's tokenizer.json).")
@click.option("--remote-dir", help="Folder on the phone (default: /data/local/tmp/<folder name>).")
@click.option("--host-bandwidth-gbps", type=click.FloatRange(min=0, min_open=True),
              help="--host: memory bandwidth for the roofline (default: measured once per machine and thread "
                   "count, cached in ~/.cache/exporter/bandwidth.json).")
@adb_option
@json_option
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, path_type=Path), help="Also write the rows as CSV.")
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Write results.json, results.csv, results.md and a plot here.")
def bench(folder: Path, serials: tuple[str, ...], all_devices: bool, host: bool, prompt_lengths: tuple[int, ...],
          gen_lengths: tuple[int, ...], threads: tuple[int, ...] | None, reps: int, warmup: int, cooldown_temp: float,
          cooldown_timeout: float, no_cooldown: bool, runner: str, prefill_chunk: int | None, harness_path: Path | None,
          tokenizer: Path | None,
          remote_dir: str | None, host_bandwidth_gbps: float | None, adb_path: Path | None, as_json: bool,
          csv_path: Path | None, out_dir: Path | None) -> None:
    """Measure prefill and decode tokens/s of an export folder on phones (or on this machine with --host).

    One test per combination of --threads x --prompt-lengths x --gen, llama-bench style."""
    from ..api import bench as run
    from ..errors import OutputError
    from ..report import to_csv, to_json, to_markdown, write_report

    report = run(folder, serials=serials, all_devices=all_devices, host=host, prompt_lengths=prompt_lengths,
                 gen_lengths=gen_lengths, threads=threads or (), reps=reps, warmup=warmup,
                 cooldown_temp_c=None if no_cooldown else cooldown_temp, cooldown_timeout_s=cooldown_timeout,
                 runner=runner, prefill_chunk=prefill_chunk, harness=harness_path, tokenizer=tokenizer, remote_dir=remote_dir,
                 host_bandwidth_gbps=host_bandwidth_gbps, adb=adb_path, say=output.info, warn=output.warn)
    output.print_text(to_json(report.rows) if as_json else to_markdown(report.rows))
    try:
        if csv_path:
            csv_path.write_text(to_csv(report.rows))
            output.info(f"wrote {csv_path}")
        if out_dir:
            written = write_report(report.rows, out_dir, warn=output.warn)
            output.info("wrote " + ", ".join(str(p) for p in written.values()))
    except OSError as err:
        raise OutputError(f"could not write the results: {err.strerror or err}") from err
    report.raise_for_failures()
