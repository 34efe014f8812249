"""`exporter devices`: the shipped SoC profiles, or the phones connected over adb."""

from __future__ import annotations

import click

from .. import output
from .options import adb_option, json_option


@click.command("devices")
@click.option("--connected", is_flag=True, help="List phones attached over adb with their detected SoC and profile.")
@click.option("--serial", default=None, help="With --connected: only this phone.")
@adb_option
@json_option
def devices(connected: bool, serial: str | None, adb_path, as_json: bool) -> None:
    """List the SoC profiles (one line each), or with --connected the phones attached over adb."""
    if connected:
        from ..api import connected_devices
        from ..device.detect import connected_rows

        devs = connected_devices(serial, adb=adb_path)
        if as_json:
            output.print_json([d.to_dict() for d in devs])
            return
        if not devs:
            output.info("no phone connected (`adb devices -l` lists none): plug one in with USB debugging on")
            return
        columns, rows = connected_rows(devs)
        output.print_table("Connected phones", columns, rows)
        for dev in devs:
            for warning in dev.warnings:
                output.warn(f"{dev.serial}: {warning}")
        return

    from ..api import list_profiles

    profiles = list_profiles()
    if as_json:
        output.print_json([p.to_dict() for p in profiles])
        return
    rows = []
    for p in profiles:
        cores = " + ".join(f"{c.count}x {c.core.replace('cortex-', '')}@{c.max_ghz:g}" for c in reversed(p.clusters))
        rows.append(
            (p.id, p.name, cores, ",".join(p.isa), f"{p.memory.typical_ram_gb:g} GB {p.memory.lpddr}",
             f"{p.memory.bandwidth_gbps:g}", p.recipe.label(), f"{p.default_seq_len}/{p.max_seq_len}",
             f"{p.threads} on {','.join(map(str, p.cpu_set))}")
        )
    output.print_table(
        "Device profiles",
        ("id", "SoC", "CPU", "ISA", "RAM", "GB/s", "recipe", "ctx default/max", "threads"),
        rows,
    )
