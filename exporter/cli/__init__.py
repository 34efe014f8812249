"""The `exporter` command line: a thin click layer over the Python API. The only place that prints errors and exits."""

from __future__ import annotations

import importlib
import os
import sys
import traceback

import click

from .. import __version__
from ..errors import INTERRUPTED, ExporterError
from ..output import clean
from ..quiet import quiet_python_noise

# command name -> "module:attribute". Imported lazily so `exporter --help` stays fast
# (torch and executorch take seconds to import).
COMMANDS: dict[str, str] = {
    "devices": ".devices:devices",
    "export": ".export:export_cmd",
    "verify": ".export:verify_cmd",
    "plan": ".plan:plan_cmd",
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
@click.option("-v", "--verbose", is_flag=True, help="Also show other libraries' warnings and the ExecuTorch runtime's logs.")
def cli(verbose: bool) -> None:
    """Put a Hugging Face causal LM on a specific Android phone as an ExecuTorch .pte, and prove how fast it runs."""


def _fail(message: str, hint: str | None, code: int, *, traceback_hint: bool = True) -> None:
    click.echo(f"error: {clean(message)}", err=True)
    if hint:
        click.echo(f"hint: {clean(hint)}", err=True)
    if os.environ.get("EXPORTER_DEBUG"):
        traceback.print_exc()
    elif traceback_hint:
        click.echo("(set EXPORTER_DEBUG=1 for the full traceback)", err=True)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI. Every expected failure exits with its own code (errors.EXIT_CODES) after one clear line;
    exit code 1 means a bug in exporter."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] and args[0] in ("-v", "--verbose"):  # before anything is imported, so nothing is filtered
        os.environ["EXPORTER_VERBOSE"] = "1"
    quiet_python_noise()
    try:
        cli.main(args=args, prog_name="exporter", standalone_mode=False)
    except ExporterError as err:
        _fail(str(err), err.hint, err.exit_code, traceback_hint=False)
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("interrupted", err=True)
        sys.exit(INTERRUPTED)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)
    except click.exceptions.Exit as err:
        sys.exit(err.exit_code)
    except BrokenPipeError:  # `exporter ... | head`: the reader left; nothing more to say
        sys.stderr.close()
        sys.exit(0)
    except Exception as err:  # noqa: BLE001 - the one place that turns a bug into a report
        _fail(f"internal error: {type(err).__name__}: {err}",
              "this is a bug in exporter; please report it with the output of EXPORTER_DEBUG=1", 1)
