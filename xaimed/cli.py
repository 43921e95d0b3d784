"""The ``xaimed`` command: a thin typer layer over the library.

Decisions live in the library; this module parses options, chooses how progress is shown and
turns XaimedError into one printed line and an exit status:

- 0: every case and method succeeded;
- 1: the run completed but some case or method failed (see the manifest);
- 2: nothing could run: invalid config, unusable model, missing input;
- 75: SIGTERM or SIGINT stopped the run; the same command resumes it (``EXIT_INTERRUPTED``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

from xaimed import __version__
from xaimed.run.options import RunOptions

if TYPE_CHECKING:
    from xaimed.config.schema import Config

EXIT_OK, EXIT_FAILED_CASES, EXIT_UNUSABLE = 0, 1, 2

app = typer.Typer(
    name="xaimed",
    help="Explain what 3D medical-imaging models look at.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
err = Console(stderr=True)
out = Console()

ConfigOption = Annotated[
    Path,
    typer.Option("--config", "-c", help="YAML config (see `xaimed init`).", show_default=False),
]


DeviceOption = Annotated[
    str | None,
    typer.Option(metavar="DEVICE", help="Override runtime.device: auto, cpu, cuda, cuda:N."),
]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="Print errors only.")]


def _setup_logging(quiet: bool, log_format: str = "text") -> None:
    from xaimed.errors import XaimedError
    from xaimed.run.logs import LogSetup

    if log_format not in ("text", "json"):
        _print_problems(XaimedError(f"--log-format {log_format!r}: use 'text' or 'json'."))
        raise typer.Exit(EXIT_UNUSABLE)
    LogSetup(logging.WARNING if quiet else logging.INFO, log_format).apply()  # type: ignore[arg-type]


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


LogFormatOption = Annotated[
    str, typer.Option("--log-format", help="Log lines as plain 'text' or 'json' (one object each).")
]


@app.command()
def explain(
    input: Annotated[
        Path,
        typer.Argument(
            help="A NIfTI or DICOM file, a folder (searched recursively) or a CSV/TSV case list.",
            show_default=False,
        ),
    ],
    config: ConfigOption,
    out_dir: Annotated[
        Path, typer.Option("--out", "-o", help="Output folder.", show_default=False)
    ],
    method: Annotated[
        list[str] | None,
        typer.Option(
            "--method",
            "-m",
            metavar="NAME",
            help="Run this method at default parameters instead (repeatable).",
        ),
    ] = None,
    device: DeviceOption = None,
    shard: Annotated[
        str | None,
        typer.Option(
            help="Take every N-th case starting at I (I from 0), e.g. 0/4; default: the Slurm "
            "array task's share when SLURM_ARRAY_TASK_ID is set, else all.",
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List this shard's cases and what would run.")
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Redo work an earlier run finished.")
    ] = False,
    fail_fast: Annotated[
        bool, typer.Option("--fail-fast", help="Stop at the first case that fails.")
    ] = False,
    executor: Annotated[
        str, typer.Option(help="'local' (this machine) or 'dask' (a Dask cluster, --scheduler).")
    ] = "local",
    scheduler: Annotated[
        str | None, typer.Option(help="Dask scheduler address for --executor dask.")
    ] = None,
    devices: Annotated[
        str | None,
        typer.Option(help="One worker process per device, e.g. cuda:0,cuda:1 (default: all GPUs)."),
    ] = None,
    log_format: LogFormatOption = "text",
    quiet: QuietOption = False,
) -> None:
    """Write attribution maps, sidecars, pictures and a manifest for every case."""
    from xaimed.config.loading import load_config, with_overrides
    from xaimed.errors import XaimedError
    from xaimed.run.logs import LogSetup, detach_run_handlers, run_log_path
    from xaimed.run.outdir import check_out_dir
    from xaimed.run.shard import resolve_shard
    from xaimed.run.signals import StopFlag, stop_on_signals

    _setup_logging(quiet, log_format)
    try:
        if executor not in ("local", "dask"):
            raise XaimedError(f"--executor {executor!r}: use 'local' or 'dask'.")
        # The whole config, with --method and --device, is validated before anything else,
        # then the output folder is checked: a run that cannot start says so in one sentence
        # (exit 2) and leaves nothing behind. SIGTERM meanwhile stops at once (default action).
        run_config = with_overrides(load_config(config), methods=method, device=device)
        if not dry_run:
            check_out_dir(out_dir)
        options = RunOptions(
            shard=resolve_shard(shard),
            overwrite=overwrite,
            fail_fast=fail_fast,
            dry_run=dry_run,
            executor=executor,  # type: ignore[arg-type]
            scheduler=scheduler,
            devices=[d.strip() for d in devices.split(",") if d.strip()] if devices else None,
        )
    except XaimedError as exc:
        _print_problems(exc)
        raise typer.Exit(EXIT_UNUSABLE) from None
    log_file = None
    if not dry_run:
        log_file = run_log_path(out_dir, options.shard.suffix)
        level = logging.WARNING if quiet else logging.INFO
        options.logs = LogSetup(level, log_format, log_file, str(options.shard))  # type: ignore[arg-type]
        options.logs.apply()
    # Caught from here on, so a signal during discovery or model loading also ends with 75.
    options.stop = StopFlag()
    try:
        with stop_on_signals(options.stop):
            _explain_and_report(input, run_config, out_dir, options, log_file, quiet,
                                log_format)  # fmt: skip
    finally:
        detach_run_handlers()


def _explain_and_report(
    input: Path,
    config: Config,
    out_dir: Path,
    options: RunOptions,
    log_file: Path | None,
    quiet: bool,
    log_format: str,
) -> None:
    from xaimed.errors import XaimedError
    from xaimed.pipeline import explain as run_explain
    from xaimed.progress import LogReporter, RichReporter
    from xaimed.run.signals import EXIT_INTERRUPTED

    dry_run = options.dry_run
    fancy = err.is_terminal and not quiet and log_format == "text" and not dry_run
    reporter = RichReporter() if fancy else LogReporter()
    try:
        result = run_explain(input, config, out_dir, reporter=reporter, options=options)
    except XaimedError as exc:
        reporter.finish()
        _print_problems(exc)
        raise typer.Exit(EXIT_UNUSABLE) from None
    except OSError as exc:
        # The run's own files (manifest, records, logs) could not be written: nothing can go
        # on. Per-case write failures are failed rows, not this.
        reporter.finish()
        _print_problems(_write_failure(exc, out_dir))
        raise typer.Exit(EXIT_UNUSABLE) from None
    if dry_run:
        _print_plan(result.plan, str(options.shard))
        raise typer.Exit(EXIT_OK)
    failed = [r for r in result.failed if r["status"] == "failed"]
    ok = sum(1 for r in result.rows if r["status"] == "ok")
    resumed = sum(1 for r in result.rows if r.get("resumed"))
    # Warnings (methods that failed published sanity checks, ...) once per method, after the
    # progress display, so they are not lost among progress lines.
    say = _Summary(log_format == "json")
    for method_id, warning in dict.fromkeys(
        (row["method"], row["warning"]) for row in result.rows if row.get("warning")
    ):
        say(logging.WARNING, "warning", f"{method_id}: {warning}")
    # A case that cannot be read fails every method with the same reason: say it once.
    for message in dict.fromkeys(row["error"] for row in failed):
        say(logging.ERROR, "failed", message)
    if not quiet or failed or result.interrupted:
        # Resumed rows count as ok but wrote nothing in this run.
        done_before = f", {resumed} done earlier and skipped" if resumed else ""
        say(
            logging.WARNING if failed else logging.INFO,
            "",
            f"{ok - resumed} map(s) written{done_before}, {len(failed)} failed; manifest: "
            f"{result.manifest}; log: {log_file}",
        )
    if result.interrupted:
        say(
            logging.WARNING,
            "interrupted",
            "stopped before all work was done; run the same command again to resume "
            f"(exit status {EXIT_INTERRUPTED}).",
        )
        raise typer.Exit(EXIT_INTERRUPTED)
    raise typer.Exit(EXIT_FAILED_CASES if result.failed else EXIT_OK)


def _write_failure(exc: OSError, out_dir: Path) -> Exception:
    from xaimed.errors import OutputError

    return OutputError(
        f"{exc.filename or out_dir}: cannot write the run's files ({exc.strerror or exc}); "
        "check the output folder (space, permissions) and run again."
    )


_SUMMARY_STYLE = {"warning": "yellow", "failed": "red", "interrupted": "yellow"}


class _Summary:
    """End-of-run lines: printed for people (and copied to the run's log file), or, with
    ``--log-format json``, logged so that stderr stays one JSON object per line."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    def __call__(self, level: int, kind: str, text: str) -> None:
        line = f"{kind}: {text}" if kind else text
        if self.as_json:
            logging.getLogger("xaimed").log(level, line)
            return
        logging.getLogger("xaimed.file").log(level, line)
        label = f"[{_SUMMARY_STYLE[kind]}]{kind}:[/] " if kind else ""
        err.print(label + escape(text), highlight=False, soft_wrap=True)


def _print_plan(plan: list[dict], shard: str) -> None:
    from rich.table import Table

    table = Table(title=f"dry run: shard {shard}, {len(plan)} case(s)")
    table.add_column("case", no_wrap=True)
    table.add_column("source", overflow="fold")
    table.add_column("would run", overflow="fold")
    table.add_column("would skip (done)", overflow="fold")
    for item in plan:
        table.add_row(
            item["case_id"], item["source"], ", ".join(item["run"]) or "-",
            ", ".join(item["skip"]) or "-",
        )  # fmt: skip
    out.print(table)
    runs = sum(len(item["run"]) for item in plan)
    skips = sum(len(item["skip"]) for item in plan)
    out.print(f"{runs} case x method to run, {skips} done earlier and skipped")


@app.command()
def merge(
    run_dir: Annotated[
        Path, typer.Argument(help="The --out folder the shards wrote to.", show_default=False)
    ],
) -> None:
    """Merge shard manifests into manifest.csv and summarise: ok, failed, skipped, slowest."""
    from rich.table import Table

    from xaimed.errors import XaimedError
    from xaimed.run.merge import merge_manifests

    try:
        summary = merge_manifests(run_dir)
    except XaimedError as exc:
        _print_problems(exc)
        raise typer.Exit(EXIT_UNUSABLE) from None
    table = Table(
        title=f"{run_dir}: {len(summary.shards)} shard manifest(s), {len(summary.cases)} case(s)"
    )
    table.add_column("cases")
    table.add_column("count", justify="right")
    for state in ("ok", "skipped", "failed", "interrupted", "pending", "not_run"):
        table.add_row(state, str(summary.count(state)))
    table.add_row("compute time", f"{summary.total_seconds:.1f} s")
    out.print(table)
    slow = Table(title="slowest cases")
    slow.add_column("case")
    slow.add_column("seconds", justify="right")
    for case_id, seconds in summary.slowest():
        slow.add_row(case_id, f"{seconds:.1f}")
    out.print(slow)
    for index in summary.missing_shards:
        err.print(f"[red]missing:[/] no manifest for shard {index}; run it, then merge again.")
    out.print(f"wrote {summary.manifest}")
    unfinished = sum(summary.count(s) for s in ("failed", "interrupted", "pending", "not_run"))
    raise typer.Exit(EXIT_FAILED_CASES if unfinished or summary.missing_shards else EXIT_OK)


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
        typer.Option(
            "--metric", "-m", metavar="KIND", help="Compute only this kind of metric (repeatable)."
        ),
    ] = None,
    device: DeviceOption = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Redo cases and metrics an earlier run recorded.")
    ] = False,
    log_format: LogFormatOption = "text",
    quiet: QuietOption = False,
) -> None:
    """Evaluate a run's maps: localisation, faithfulness, sanity, robustness, agreement."""
    from xaimed.errors import XaimedError
    from xaimed.evaluate.runner import evaluate as run_evaluate
    from xaimed.progress import LogReporter, RichReporter
    from xaimed.run.logs import LogSetup, detach_run_handlers, run_log_path
    from xaimed.run.outdir import check_out_dir
    from xaimed.run.signals import EXIT_INTERRUPTED, StopFlag, stop_on_signals

    _setup_logging(quiet, log_format)
    target = out_dir or run_dir
    log_file = run_log_path(target, "", "evaluate") if run_dir.is_dir() else None
    level = logging.WARNING if quiet else logging.INFO
    LogSetup(level, log_format, log_file).apply()  # type: ignore[arg-type]
    fancy = err.is_terminal and not quiet and log_format == "text"
    reporter = RichReporter() if fancy else LogReporter(eta_of="")  # no shards in evaluate
    stop = StopFlag()
    try:
        with stop_on_signals(stop):
            if out_dir is not None:
                check_out_dir(out_dir)
            result = run_evaluate(
                run_dir, config, out_dir=out_dir, metrics=metric, device=device,
                overwrite=overwrite, reporter=reporter, stop=stop,
            )  # fmt: skip
    except XaimedError as exc:
        reporter.finish()
        _print_problems(exc)
        raise typer.Exit(EXIT_UNUSABLE) from None
    except OSError as exc:
        reporter.finish()
        _print_problems(_write_failure(exc, target))
        raise typer.Exit(EXIT_UNUSABLE) from None
    finally:
        detach_run_handlers()
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
    if not quiet:
        for kind, cost in result.summary.get("cost", {}).items():
            err.print(
                f"{kind}: {cost['seconds_per_case']:.1f} s per case ({cost['cases']} case(s))",
                highlight=False,
            )
    for message in result.failures:
        err.print(f"[red]failed:[/] {escape(message)}", highlight=False, soft_wrap=True)
    if not quiet or result.failures or result.interrupted:
        skipped = f", {result.skipped} case x metric(s) done earlier and skipped"
        err.print(
            f"{len(result.rows)} value(s) written{skipped if result.skipped else ''}, "
            f"{len(result.failures)} failed; metrics: {result.metrics_csv}; log: {log_file}",
            highlight=False, soft_wrap=True,
        )  # fmt: skip
    if result.interrupted:
        err.print(
            "[yellow]interrupted:[/] metrics.csv holds the cases done so far; run the same "
            f"command again to resume (exit status {EXIT_INTERRUPTED}).",
            highlight=False, soft_wrap=True,
        )  # fmt: skip
        raise typer.Exit(EXIT_INTERRUPTED)
    raise typer.Exit(EXIT_FAILED_CASES if result.failures else EXIT_OK)


@app.command()
def report(
    run_dir: Annotated[
        Path, typer.Argument(help="Folder an explain run wrote (--out).", show_default=False)
    ],
    out_dir: Annotated[
        Path | None, typer.Option("--out", "-o", help="Where to write; default: RUN/report.")
    ] = None,
    evaluation: Annotated[
        Path | None,
        typer.Option(help="Where `xaimed evaluate` wrote (its --out); default: the run folder."),
    ] = None,
    identifiers: Annotated[
        bool | None,
        typer.Option(
            "--identifiers/--no-identifiers",
            help="Show source paths and DICOM identifiers (default: the run's report.identifiers).",
            show_default=False,
        ),
    ] = None,
    quiet: QuietOption = False,
) -> None:
    """Write the run's HTML report (index of cases x methods, a 3D viewer per case)."""
    from xaimed.errors import XaimedError
    from xaimed.report import build_report

    _setup_logging(quiet)
    try:
        result = build_report(run_dir, out_dir, evaluation_dir=evaluation, identifiers=identifiers)
    except XaimedError as exc:
        _print_problems(exc)
        raise typer.Exit(EXIT_UNUSABLE) from None
    for note in result.notes:
        err.print(f"[yellow]warning:[/] {escape(note)}", highlight=False, soft_wrap=True)
    if not quiet:
        err.print(
            f"report of {result.cases} case(s), {result.bytes_total / 2**20:.1f} MiB "
            f"({result.bytes_per_case / 2**20:.2f} MiB per case): {result.index}",
            highlight=False, soft_wrap=True,
        )  # fmt: skip


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
        typer.Option(
            help="Dummy input size X,Y,Z (X,Y for a 2D model) when model.input_size is unset."
        ),
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
        if cfg.model.slicewise is not None:
            raise XaimedError(
                "xaimed layers does not trace slice-wise models (model.slicewise); list the 2D "
                "network's layers with a config of that network alone (model.spatial_dims: 2)."
            )
        planar = cfg.model.spatial_dims == 2
        try:
            given = tuple(int(n) for n in size.split(",")) if size else None
        except ValueError:
            given = ()
        if given is not None and planar and len(given) == 2:
            given = (*given, 1)
        shape = cfg.model.input_size or given
        if shape is None or len(shape) != 3:
            form = "X,Y" if planar else "X,Y,Z"
            raise XaimedError(
                f"--size {size} is not a size; give it as --size {form} (whole numbers)."
                if size
                else f"model.input_size is unset; give the dummy input size as --size {form}."
            )
        model = load_model(cfg.model, torch.device("cpu"))
        # A 2D network takes its planes without the depth axis of 1.
        plane = shape[:2] if cfg.model.spatial_dims == 2 else shape
        dummy = torch.zeros(1, cfg.model.in_channels, *plane)
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
