"""The ``xaimed`` command: a thin typer layer over the library.

Decisions live in the library; this module parses options, chooses how progress is shown and
turns XaimedError into one printed line and an exit status:

- 0: every case and method succeeded;
- 1: the run completed but some case or method failed (see the manifest);
- 2: nothing could run: invalid config, unusable model, missing input.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from xaimed import __version__

EXIT_OK, EXIT_FAILED_CASES, EXIT_UNUSABLE = 0, 1, 2

app = typer.Typer(
    name="xaimed",
    help="Explain what 3D medical-imaging models look at.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)
out = Console()

ConfigOption = Annotated[
    Path,
    typer.Option("--config", "-c", help="YAML config (see `xaimed init`).", show_default=False),
]


DeviceOption = Annotated[
    str | None, typer.Option(help="Override runtime.device: auto, cpu, cuda, cuda:N.")
]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="Print errors only.")]


def _setup_logging(quiet: bool) -> None:
    logging.basicConfig(
        level=logging.WARNING if quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )


def _version(value: bool) -> None:
    if value:
        out.print(f"xaimed {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Explain what 3D medical-imaging models look at."""


def _print_problems(exc: Exception) -> None:
    from xaimed.errors import ConfigError

    if isinstance(exc, ConfigError) and len(exc.problems) > 1:
        err.print(f"[red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        for problem in exc.problems:
            err.print(f"  - {escape(problem)}", highlight=False, soft_wrap=True)
    else:
        problem = exc.problems[0] if isinstance(exc, ConfigError) else str(exc)
        err.print(f"[red]error:[/] {escape(problem)}", highlight=False, soft_wrap=True)


@app.command()
def explain(
    input: Annotated[
        Path, typer.Argument(help="A NIfTI or DICOM file, or a folder.", show_default=False)
    ],
    config: ConfigOption,
    out_dir: Annotated[
        Path, typer.Option("--out", "-o", help="Output folder.", show_default=False)
    ],
    method: Annotated[
        list[str] | None,
        typer.Option(
            "--method", "-m", help="Run this method at default parameters instead (repeatable)."
        ),
    ] = None,
    device: DeviceOption = None,
    quiet: QuietOption = False,
) -> None:
    """Write attribution maps, sidecars, pictures and a manifest for every case."""
    from xaimed.errors import XaimedError
    from xaimed.pipeline import explain as run_explain
    from xaimed.progress import LogReporter, RichReporter

    _setup_logging(quiet)
    reporter = RichReporter() if (err.is_terminal and not quiet) else LogReporter()
    try:
        result = run_explain(
            input, config, out_dir, methods=method, device=device, reporter=reporter
        )
    except XaimedError as exc:
        reporter.finish()
        _print_problems(exc)
        raise typer.Exit(EXIT_UNUSABLE) from None
    failed = result.failed
    ok = len(result.rows) - len(failed)
    # Warnings (methods that failed published sanity checks, ...) once per method, after the
    # progress display, so they are not lost among progress lines.
    for method_id, warning in dict.fromkeys(
        (row["method"], row["warning"]) for row in result.rows if row.get("warning")
    ):
        err.print(f"[yellow]warning:[/] {escape(method_id)}: {escape(warning)}", soft_wrap=True)
    # A case that cannot be read fails every method with the same reason: say it once.
    for message in dict.fromkeys(row["error"] for row in failed):
        err.print(f"[red]failed:[/] {escape(message)}", highlight=False, soft_wrap=True)
    if not quiet or failed:
        err.print(
            f"{ok} map(s) written, {len(failed)} failed; manifest: {result.manifest}",
            highlight=False,
        )
    raise typer.Exit(EXIT_FAILED_CASES if failed else EXIT_OK)


@app.command()
def evaluate(
    run_dir: Annotated[
        Path, typer.Argument(help="Folder an explain run wrote (--out).", show_default=False)
    ],
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="Config with an `evaluate` section (default: run's)."),
    ] = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out", "-o", help="Where to write; default: the run folder.")
    ] = None,
    metric: Annotated[
        list[str] | None,
        typer.Option("--metric", "-m", help="Compute only this kind of metric (repeatable)."),
    ] = None,
    device: DeviceOption = None,
    quiet: QuietOption = False,
) -> None:
    """Evaluate a run's maps: localisation, faithfulness, sanity, robustness, agreement."""
    from xaimed.errors import XaimedError
    from xaimed.evaluate.runner import evaluate as run_evaluate

    _setup_logging(quiet)
    try:
        result = run_evaluate(run_dir, config, out_dir=out_dir, metrics=metric, device=device)
    except XaimedError as exc:
        _print_problems(exc)
        raise typer.Exit(EXIT_UNUSABLE) from None
    for method_id, warning in result.summary.get("warnings", {}).items():
        err.print(f"[yellow]warning:[/] {escape(method_id)}: {escape(warning)}", soft_wrap=True)
    verdicts_shown = {} if quiet else result.summary.get("verdicts", {})
    for method_id, verdicts in verdicts_shown.items():
        for test, v in verdicts.items():
            err.print(
                f"{escape(method_id)}: {test}: {v['pass']} pass, {v['fail']} fail, "
                f"{v['undetermined']} undetermined ({escape(v['rule'])})",
                highlight=False, soft_wrap=True,
            )  # fmt: skip
    for message in result.failures:
        err.print(f"[red]failed:[/] {escape(message)}", highlight=False, soft_wrap=True)
    if not quiet or result.failures:
        err.print(
            f"{len(result.rows)} value(s) written, {len(result.failures)} failed; "
            f"metrics: {result.metrics_csv}",
            highlight=False,
        )
    raise typer.Exit(EXIT_FAILED_CASES if result.failures else EXIT_OK)


@app.command()
def validate(config: Annotated[Path, typer.Argument(help="YAML config to check.")]) -> None:
    """Report every problem in a config, each with its YAML key path."""
    from xaimed.config import load_config
    from xaimed.errors import ConfigError

    try:
        load_config(config)
    except ConfigError as exc:
        _print_problems(exc)
        raise typer.Exit(EXIT_UNUSABLE) from None
    out.print(f"{config}: valid")


@app.command()
def init(
    path: Annotated[Path, typer.Argument(help="Where to write the config.")] = Path("xaimed.yaml"),
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Write a commented config template that validates as it is."""
    from xaimed.templates import render_template

    if path.exists() and not force:
        err.print(
            f"[red]error:[/] {path} exists; use --force to overwrite it.",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(EXIT_UNUSABLE)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_template(), encoding="utf-8")
    out.print(f"wrote {path}; edit the model section, then run `xaimed validate {path}`.")


@app.command()
def methods() -> None:
    """List the attribution methods: family, what each needs, cost in passes."""
    from rich.table import Table

    from xaimed.methods import registry

    table = Table(title="xaimed methods", show_lines=False)
    table.add_column("method", no_wrap=True)
    table.add_column("family", no_wrap=True)
    for column in ("needs", "cost (default params)", "what it computes"):
        table.add_column(column, overflow="fold")
    for info in registry.all_methods():
        summary = info.summary + (" [yellow](failed sanity checks)[/]" if info.warning else "")
        table.add_row(
            info.name,
            info.family,
            ", ".join(info.needs) or "-",
            info.cost(info.params_model()),
            summary,
        )
    out.print(table)


@app.command()
def layers(
    config: Annotated[Path, typer.Argument(help="YAML config naming the model.")],
    size: Annotated[
        str | None,
        typer.Option(help="Dummy input size X,Y,Z when model.input_size is unset."),
    ] = None,
) -> None:
    """List the model's layers with their output shapes (one dry forward pass)."""
    import torch
    from rich.table import Table

    from xaimed.config import load_config
    from xaimed.errors import XaimedError
    from xaimed.methods.layers import feature_layer, trace_layers
    from xaimed.model import load_model

    try:
        cfg = load_config(config)
        shape = cfg.model.input_size or (tuple(int(n) for n in size.split(",")) if size else None)
        if shape is None or len(shape) != 3:
            raise XaimedError(
                "model.input_size is unset; give the dummy input size as --size X,Y,Z."
            )
        model = load_model(cfg.model, torch.device("cpu"))
        dummy = torch.zeros(1, cfg.model.in_channels, *shape)
        seen = trace_layers(model.module, dummy)
        auto = feature_layer(model.module, dummy)
    except XaimedError as exc:
        _print_problems(exc)
        raise typer.Exit(EXIT_UNUSABLE) from None
    table = Table(title=f"layers of {type(model.module).__name__} for input {tuple(dummy.shape)}")
    table.add_column("layer", no_wrap=True)
    table.add_column("type", no_wrap=True)
    table.add_column("output shape", no_wrap=True)
    table.add_column("note")
    for info in seen:
        note = "auto (features entering global pooling)" if info.name == auto else ""
        table.add_row(info.name, info.type, str(info.output_shape or "-"), note)
    out.print(table)


if __name__ == "__main__":  # pragma: no cover
    app()
