"""`exporter push` and `exporter bench`: an export folder onto phones, and its latency measured there."""

from __future__ import annotations

from pathlib import Path

import click

from .. import output

ADB_OPTION = click.option("--adb", "adb_path", type=click.Path(dir_okay=False, path_type=Path),
                          help="adb client to run (default: $EXPORTER_ADB, else adb on PATH, else the adbutils one).")


def _int_list(value: str) -> tuple[int, ...]:
    try:
        out = tuple(int(v) for v in value.replace(" ", "").split(",") if v)
    except ValueError as err:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}") from err
    if not out:
        raise click.BadParameter("give at least one prompt length")
    return out


def _progress_printer():
    last: dict[str, int] = {}

    def progress(remote: str, done: int, total: int) -> None:
        pct = 100 * done // total if total else 100
        if last.get(remote) != pct and (pct in (0, 100) or pct - last.get(remote, 0) >= 10):
            last[remote] = pct
            output.info(f"  {remote}: {pct}% of {total / 2**20:.1f} MiB")

    return progress


@click.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--serial", "-s", help="Phone to push to (needed when several are connected).")
@click.option("--remote-dir", help="Folder on the phone (default: /data/local/tmp/<folder name>).")
@ADB_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def push(folder: Path, serial: str | None, remote_dir: str | None, adb_path: Path | None, as_json: bool) -> None:
    """Copy an export folder to a phone; files already there (same sha256) are skipped, so re-running resumes."""
    from ..device.adb import Adb, pick_serials
    from ..device.push import push_artifact

    chosen = pick_serials([serial] if serial else [], adb_path=adb_path)[0]
    result = push_artifact(Adb(chosen, adb_path), folder, remote_dir, progress=_progress_printer(),
                           say=output.info)
    if as_json:
        output.print_json(result.to_dict())
        return
    output.print_table(f"{chosen}:{result.remote_dir}", ["file", "bytes", "sha256", "action"],
                       [(f.name, f.bytes, f.sha256[:16], f.action) for f in result.files])


@click.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--serial", "-s", "serials", multiple=True, help="Phone(s) to bench; repeat for several (in parallel).")
@click.option("--all", "all_devices", is_flag=True, help="Bench every connected phone.")
@click.option("--host", is_flag=True, help="Run the harness on this machine instead of a phone.")
@click.option("--prompt-lengths", "-p", default="64", show_default=True, help="Prompt lengths, comma-separated.")
@click.option("--gen", "gen_len", type=click.IntRange(min=1), default=128, show_default=True, help="Tokens to generate.")
@click.option("--repeat", "-r", "reps", type=click.IntRange(min=1), default=5, show_default=True, help="Measured runs.")
@click.option("--warmup", type=click.IntRange(min=0), default=1, show_default=True, help="Warm-up runs before each measurement.")
@click.option("--threads", "-t", type=click.IntRange(min=1), help="Threads (default: the manifest's / profile's).")
@click.option("--cooldown-temp", type=float, default=45.0, show_default=True,
              help="Before each run, wait until the hottest CPU zone is under this (deg C).")
@click.option("--cooldown-timeout", type=float, default=120.0, show_default=True, help="Longest wait for cooling (s).")
@click.option("--no-cooldown", is_flag=True, help="Do not wait between runs (one runner process per prompt length).")
@click.option("--runner", type=click.Choice(["harness", "llama_main"]), default="harness", show_default=True,
              help="exporter's harness, or the stock ExecuTorch llama_main runner.")
@click.option("--harness", "harness_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Android arm64 harness binary to push (or the llama_main binary with --runner llama_main); "
                   "with --host: a host harness binary (default: build it).")
@click.option("--tokenizer", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Tokenizer to push for llama_main (default: the export's tokenizer.json).")
@click.option("--remote-dir", help="Folder on the phone (default: /data/local/tmp/<folder name>).")
@click.option("--host-bandwidth-gbps", type=float,
              help="--host: memory bandwidth for the roofline (default: measured with a numpy memcpy).")
@ADB_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print the JSON report on stdout instead of the table.")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, path_type=Path), help="Also write the rows as CSV.")
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Write results.json, results.csv, results.md and a plot here.")
def bench(folder: Path, serials: tuple[str, ...], all_devices: bool, host: bool, prompt_lengths: str, gen_len: int,
          reps: int, warmup: int, threads: int | None, cooldown_temp: float, cooldown_timeout: float,
          no_cooldown: bool, runner: str, harness_path: Path | None, tokenizer: Path | None, remote_dir: str | None,
          host_bandwidth_gbps: float | None, adb_path: Path | None, as_json: bool, csv_path: Path | None,
          out_dir: Path | None) -> None:
    """Measure prefill and decode tokens/s of an export folder on phones (or on this machine with --host)."""
    from ..device.adb import pick_serials
    from ..device.bench import (
        BenchSpec,
        ExportInfo,
        PhoneOptions,
        raise_for_failures,
        run_bench,
    )
    from ..report import build_rows, to_csv, to_json, to_markdown, write_report

    if host and (serials or all_devices):
        raise click.UsageError("--host runs on this machine: drop --serial/--all")
    spec = BenchSpec(prompt_lengths=_int_list(prompt_lengths), gen_len=gen_len, reps=reps, warmup=warmup,
                     threads=threads, cooldown_temp_c=None if (no_cooldown or host) else cooldown_temp,
                     cooldown_timeout_s=cooldown_timeout, runner=runner)
    chosen: list[str] = []
    if not host:
        chosen = pick_serials(serials, all_devices=all_devices, adb_path=adb_path)
    opts = PhoneOptions(harness=harness_path if runner == "harness" else None,
                        runner_binary=harness_path if runner == "llama_main" else None,
                        tokenizer=tokenizer, remote_dir=remote_dir, adb_path=str(adb_path) if adb_path else None)
    results = run_bench(folder, spec, serials=chosen, host=host, opts=opts,
                        host_binary=harness_path if host else None, host_bandwidth_gbps=host_bandwidth_gbps,
                        say=output.info, warn=output.warn)
    rows = build_rows(results, ExportInfo.load(folder))
    if as_json:
        click.echo(to_json(rows), nl=False)
    else:
        click.echo(to_markdown(rows), nl=False)
    if csv_path:
        csv_path.write_text(to_csv(rows))
        output.info(f"wrote {csv_path}")
    if out_dir:
        written = write_report(rows, out_dir, warn=output.warn)
        output.info("wrote " + ", ".join(str(p) for p in written.values()))
    raise_for_failures(results)

