"""Click commands for the Android demo app: `exporter bundle` and `exporter app-bench`."""

from __future__ import annotations

from pathlib import Path

import click

from .. import output
from .options import adb_option, json_option

_EXPORT_DIR = click.Path(file_okay=False, path_type=Path)


@click.command()
@click.argument("export_dir", type=_EXPORT_DIR)
@click.option("--app-dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder to write the Gradle project to (must be empty unless --force).")
@click.option("--force", is_flag=True, help="Write into a non-empty folder, overwriting template files.")
@click.option("--embed-model", is_flag=True,
              help="Also copy model.pte, the tokenizer and manifest.json into the APK's assets.")
@click.option("--remote-dir", help="Model folder on the phone (default: /data/local/tmp/<export folder name>).")
@click.option("--temperature", type=click.FloatRange(0.0, 2.0), default=0.7, show_default=True,
              help="Default sampling temperature of the chat screen.")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=256, show_default=True,
              help="Default answer length of the chat screen.")
@click.option("--no-chat-template", is_flag=True, help="Send raw prompts even if the model has a chat template.")
@json_option
def bundle(export_dir: Path, app_dir: Path, force: bool, embed_model: bool, remote_dir: str | None,
           temperature: float, max_new_tokens: int, no_chat_template: bool, as_json: bool) -> None:
    """Write a ready Gradle project of the Android demo app with EXPORT_DIR's model wired in."""
    from ..api import bundle as write_bundle
    from ..app.bundle import CONFIG_ASSET

    result = write_bundle(export_dir, app_dir, force=force, embed_model=embed_model, remote_dir=remote_dir,
                        temperature=temperature, max_new_tokens=max_new_tokens,
                        use_chat_template=not no_chat_template)
    for w in result.warnings:
        output.warn(w)
    if as_json:
        output.print_json(result.to_dict())
        return
    cfg = result.config
    output.print_table(f"bundled {cfg['model_id']}", ["key", "value"], [
        ("app folder", result.app_dir),
        ("config", CONFIG_ASSET),
        ("model folder on phone", cfg["model_dir"]),
        ("embedded", f"{result.embedded_bytes / 2**20:.1f} MiB" if result.embedded_files else "no"),
        ("chat template", "yes" if cfg["chat_template"] else "no"),
        ("profile / threads", f"{cfg['profile_id']} / {cfg['threads']}"),
    ])
    output.info(f"next: cd {result.app_dir} && ./gradlew installDebug"
                + ("" if result.embedded_files else f"   (and: exporter push {export_dir})"))


@click.command("app-bench")
@click.argument("export_dir", type=_EXPORT_DIR)
@click.option("--serial", "-s", help="Phone to use (default: the only one connected).")
@adb_option
@click.option("--prompt-len", "-p", type=click.IntRange(min=1), default=128, show_default=True,
              help="Prompt length in tokens.")
@click.option("--prompt", help="A fixed prompt instead of --prompt-len filler tokens.")
@click.option("--gen", "gen_len", type=click.IntRange(min=1), default=64, show_default=True,
              help="Tokens to generate.")
@click.option("--repeat", "-r", "reps", type=click.IntRange(min=1), default=5, show_default=True,
              help="Measured runs.")
@click.option("--warmup", type=click.IntRange(min=0), default=1, show_default=True, help="Warm-up runs.")
@click.option("--remote-dir", help="Model folder on the phone (default: /data/local/tmp/<export folder name>).")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=1), default=600.0, show_default=True,
              help="Seconds to wait for the app's results.")
@json_option
def app_bench(export_dir: Path, serial: str | None, adb_path: Path | None, prompt_len: int, prompt: str | None,
              gen_len: int, reps: int, warmup: int, remote_dir: str | None, timeout_s: float, as_json: bool) -> None:
    """Run the demo app's benchmark activity on a phone and report it like `exporter bench`."""
    from ..api import app_bench as run
    from ..report import to_json, to_markdown

    with output.status("benchmark activity running on the phone"):
        report = run(export_dir, serial, adb=adb_path, prompt_len=prompt_len, gen_len=gen_len, reps=reps,
                     warmup=warmup, prompt=prompt, remote_dir=remote_dir, timeout_s=timeout_s, say=output.info,
                     warn=output.warn)
    output.print_text(to_json(report.rows) if as_json else to_markdown(report.rows))
