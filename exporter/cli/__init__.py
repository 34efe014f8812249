"""The `exporter` command line: a thin click layer over the Python API. The only place that prints errors and exits."""

from __future__ import annotations

import importlib
import os
import sys
import traceback

import click

from .. import __version__
from ..errors import ExporterError

# command name -> "module:attribute". Imported lazily so `exporter --help` stays fast
# (torch and executorch take seconds to import).
COMMANDS: dict[str, str] = {
    "devices": ".devices:devices",
    "export": ".export:export_cmd",
    "verify": ".export:verify_cmd",
    "bundle": ".app:bundle",
    "app-bench": ".app:app_bench",
    "harness": ".harness:harness",
    "push": ".phone:push",
    "bench": ".phone:bench",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        return getattr(importlib.import_module(module, __package__), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="exporter")
def cli() -> None:
    """Put a Hugging Face causal LM on a specific Android phone as an ExecuTorch .pte, and prove how fast it runs."""


def _quiet_known_noise() -> None:
    """Silence warnings that EXECUTORCH_NOTES.md lists as harmless, so real messages stay visible."""
    import logging
    import warnings

    if os.environ.get("EXPORTER_DEBUG"):
        return
    for category in (FutureWarning, DeprecationWarning):
        warnings.filterwarnings("ignore", category=category)
    warnings.filterwarnings("ignore", message=".*_check_is_size.*")
    warnings.filterwarnings("ignore", message=".*mutated buffer.*")
    logging.getLogger("torchao").setLevel(logging.ERROR)  # "Failed to load ... _C_mxfp8 / _C_cutlass_90a"
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)  # register_constant deprecation


def main(argv: list[str] | None = None) -> None:
    _quiet_known_noise()
    try:
        cli.main(args=argv, prog_name="exporter", standalone_mode=False)
    except ExporterError as err:
        click.echo(f"error: {err}", err=True)
        if err.hint:
            click.echo(f"hint: {err.hint}", err=True)
        if os.environ.get("EXPORTER_DEBUG"):
            traceback.print_exc()
        else:
            click.echo("(set EXPORTER_DEBUG=1 for the full traceback)", err=True)
        sys.exit(err.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)
    except click.exceptions.Exit as err:
        sys.exit(err.exit_code)
