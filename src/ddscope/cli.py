"""Command line: thin glue over config, sweep, store and report.

Exit codes (docs/design.md §4): 0 every trial done; 1 some trial of the sweep failed (its data and
the report are still written); 2 bad input — one line on stderr, nothing stored changed; 130 /
143 interrupted by SIGINT / SIGTERM (finished trials stored, the sweep resumes).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sys
from pathlib import Path

import click

from .catalogue import JAC_OUTPUTS, PATHS, SPLITS
from .config import DEVICES, MAX_GROUP, METRIC_GROUPS, PROGRESS_INTERVAL_S
from .errors import UserError, as_user_error, check_writable, one_line

DEMO_PRESET = "mnist1d-mlp"
EXIT_FAILED, EXIT_USER_ERROR, EXIT_UNFINISHED = 1, 2, 3


def _console():
    from rich.console import Console

    return Console(stderr=True)


def _make_report(run_dir: Path, out: Path | None = None, *, quiet: bool = False, **ranking) -> Path:
    from .report import build_report

    # only a report that is slow says what it is doing (its lines carry their own times)
    return build_report(run_dir, out, progress=None if quiet else _slow_lines("report", timed=False), **ranking)


REPORT_QUIET_S = 2.0  # a report (or a measurement) faster than this prints only its result


def _slow_lines(what: str, *, timed: bool = True):
    """``say(line)`` that prints ``what: line`` (``timed``: with the seconds so far) on stderr once
    the work has taken REPORT_QUIET_S: progress lines for a long report or measurement, silence
    for a quick one."""
    import time

    t0 = time.perf_counter()

    def say(line: str) -> None:
        if time.perf_counter() - t0 >= REPORT_QUIET_S:
            click.echo(f"{what}: {line}" + (f" ({time.perf_counter() - t0:.0f} s)" if timed else ""), err=True)

    return say


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ddscope")
def cli() -> None:
    """ddscope: double descent through the smoothness of the learned function."""


def _run(config: str, *, overrides: tuple[str, ...], out: str | None, executor: str, workers: int | None,
         address: str | None, gpus_per_trial: float, partition: str | None, time_limit: int, cpus_per_trial: int,
         retry_failed: bool, resume: bool, report: bool,
         quiet: bool, group: bool, max_group: int, progress_interval: float) -> None:
    """``ddscope sweep`` / ``demo``: the Python API's driver (:func:`ddscope.api.run`), with the
    header line, signals, the report and the exit codes of a command."""
    from .api import run

    _check_out(out)
    con = _console()
    started: dict = {}

    def announce(sweep, run_dir: Path) -> None:
        started.update(sweep=sweep, run_dir=run_dir)
        n = len(sweep.trials())
        axes = ", ".join(f"{k} × {len(v)}" for k, v in sweep.grid.items()) or "one trial"
        con.print(f"[bold]ddscope[/] sweep [cyan]{sweep.name}[/]: {n} trials ({axes}) → {run_dir}")

    # the Slurm settings have defaults of their own: given only to the executors that take them
    slurm = ({"time_limit_min": time_limit, "cpus_per_trial": cpus_per_trial}
             if executor in ("slurm", "submitit-local") else {})
    with _stop_signals() as stopped_by:
        try:
            done = run(config, list(overrides), out, executor=executor, workers=workers, retry_failed=retry_failed,
                       group=group, max_group=max_group, progress=not quiet, resume=resume, console=con,
                       progress_interval=progress_interval, on_start=announce, address=address,
                       gpus_per_trial=gpus_per_trial, partition=partition, **slurm)
        except KeyboardInterrupt:
            code = 128 + stopped_by.get("signal", signal.SIGINT)
            if not started:  # stopped while checking, before anything was written
                con.print("[yellow]interrupted[/] before the sweep started: nothing was written")
                sys.exit(code)
            run_dir, sweep = started["run_dir"], started["sweep"]
            if report and _all_finished(run_dir, sweep):  # the stop came after the last trial
                con.print("[yellow]interrupted[/] after every trial finished: writing the report")
                click.echo(f"report: {_make_report(run_dir, quiet=quiet)}")
            con.print(f"[yellow]interrupted[/]: finished trials are stored; rerun the same command to resume ({run_dir})")
            sys.exit(code)
    run_dir, outcome = done.run_dir, done.outcome
    c = outcome.counts
    con.print(f"trials: {c['done']} done, {c['failed']} failed, {c['pending']} pending, {c['running']} running (this run: {outcome.ran})")
    for tid, why in outcome.failed:
        con.print(f"[red]failed[/] {tid}: {why}")
    if report:
        path = _make_report(run_dir, quiet=quiet)  # says on its first lines that the sweep is not finished, when it is not
        click.echo(f"report: {path}")
    if c["pending"] or c["running"]:
        # Another process on the same run folder still holds trials: this one is done, the sweep is not.
        con.print(f"[yellow]the sweep is not finished[/]: {c['running']} trial(s) still running and {c['pending']} "
                  f"pending in another process on {run_dir}; `ddscope status {run_dir}` follows them, and the "
                  "report is marked unfinished")
        sys.exit(EXIT_UNFINISHED)
    if c["failed"]:
        # Data and report are written; the exit code lets a script or a scheduler notice.
        con.print(f"[red]{c['failed']} trial(s) failed[/]: `ddscope status {run_dir}` lists them; "
                  "--retry-failed runs them again")
        sys.exit(EXIT_FAILED)


def _check_out(out: str | None) -> None:
    """``--out ''`` (or blanks) names nothing: refused rather than taken as the default."""
    if out is not None and not str(out).strip():
        raise UserError("--out is empty; name a folder or file, or leave --out out for the default")


@contextlib.contextmanager
def _stop_signals():
    """SIGINT (Ctrl-C) and SIGTERM (a scheduler's preemption, ``kill``) stop a sweep or a report
    cleanly: the first one raises KeyboardInterrupt (running trials are handed back and resume
    from their checkpoints); later ones only say that the stop is under way, so a second Ctrl-C
    never leaves a traceback from half-run cleanup or atexit callbacks. Yields ``{"signal": n}``
    once a signal came. Installed explicitly, so a sweep started with SIGINT ignored (a
    background job) still stops on ``kill -INT``."""
    seen: dict = {}

    def handler(signum, frame):
        if seen:
            os.write(2, b"ddscope: stopping, please wait (finished trials are already stored)\n")
            return
        seen["signal"] = signum
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield seen
    finally:
        for sig, h in previous.items():
            # After a stop, the process is on its way out: later signals are ignored (a Python
            # handler would be reset to the default one while the interpreter shuts down, and a
            # late Ctrl-C would then kill it instead of letting it exit with its code).
            signal.signal(sig, signal.SIG_IGN if seen else h)


def _all_finished(run_dir: Path, sweep) -> bool:
    """Whether every trial of ``sweep`` is done or failed in ``run_dir``'s store."""
    from .runs.store import Store

    try:
        store = Store.open(run_dir)
    except UserError:
        return False
    try:
        states = {t["trial_id"]: t["status"] for t in store.trials()}
    finally:
        store.close()
    return all(states.get(t.trial_id) in ("done", "failed") for t in sweep.trials())


class Finite(click.ParamType):
    """A finite number in [lo, hi] (``lo_open``: lo itself excluded): nan, inf and out-of-range
    values are usage errors, one line; ``integer`` asks for a whole number."""

    def __init__(self, lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
                 integer: bool = False):
        self.lo, self.hi, self.lo_open, self.integer = lo, hi, lo_open, integer
        self.name = "integer" if integer else "number"

    def convert(self, value, param, ctx):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            v = value
        else:
            try:
                v = int(str(value).strip()) if self.integer else float(str(value).strip())
            except ValueError:
                self.fail(f"{value!r} is not {'a whole number' if self.integer else 'a number'}", param, ctx)
        if isinstance(v, float) and not math.isfinite(v):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        below = self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo)
        if below or (self.hi is not None and v > self.hi):
            lo = "" if self.lo is None else f"{'>' if self.lo_open else '>='} {self.lo:g}"
            hi = "" if self.hi is None else f"<= {self.hi:g}"
            self.fail(f"{value} is not {' and '.join(x for x in (lo, hi) if x)}", param, ctx)
        return v


MAX_WORKERS = 4096  # more parallel trials than any machine or cluster allocation this tool targets

_sweep_options = [
    click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                 help="Override a config key, e.g. --set model.width=[4,8] --set optim.epochs=50."),
    click.option("--out", type=click.Path(file_okay=False), default=None, help="Run directory (default runs/<sweep name>)."),
    click.option("--executor", type=click.Choice(["local", "inprocess", "ray", "slurm", "submitit-local"]), default="local",
                 show_default=True, help="Where trials run: a local process pool, this process, a Ray cluster, Slurm jobs "
                 "through submitit, or submitit's local processes."),
    click.option("--workers", type=Finite(1, MAX_WORKERS, integer=True), default=None, help="Parallel trials (default: all cores; Ray: cluster CPUs)."),
    click.option("--address", default=None, help="Ray cluster address (executor ray)."),
    click.option("--gpus-per-trial", type=Finite(0, 1024), default=0.0, show_default=True,
                 help="GPU request per Ray task or Slurm job."),
    click.option("--partition", default=None, help="Slurm partition (executor slurm)."),
    click.option("--time-limit", "time_limit", type=Finite(1, 60 * 24 * 365, integer=True), default=60, show_default=True, metavar="MINUTES",
                 help="Slurm job time limit; a job near it is requeued and resumes from its checkpoints."),
    click.option("--cpus-per-trial", type=Finite(1, 1024, integer=True), default=1, show_default=True,
                 help="CPUs per Slurm job (slurm, submitit-local)."),
    click.option("--retry-failed", is_flag=True, help="Run failed trials again."),
    click.option("--resume", is_flag=True,
                 help="Require an existing run directory and continue it (rerunning without the flag resumes too)."),
    click.option("--report/--no-report", default=True, show_default=True, help="Write the report at the end."),
    click.option("--quiet", is_flag=True, help="No progress bars or progress lines."),
    click.option("--progress-interval", type=Finite(0, 86400, lo_open=True), default=PROGRESS_INTERVAL_S, show_default=True,
                 metavar="SECONDS", help="When stderr is not a terminal (a batch job's log): a plain progress line "
                 "this often, and one whenever a trial finishes."),
    click.option("--group/--no-group", default=True, show_default=True,
                 help="Train trials that can share a step (MLP widths at one seed; seeds/noise draws of one "
                      "architecture and width) as one vectorised model; every trial keeps its own checkpoints."),
    click.option("--max-group", type=Finite(1, 4096, integer=True), default=MAX_GROUP, show_default=True,
                 help="At most this many trials per vectorised group."),
]


def _with_sweep_options(f):
    for opt in reversed(_sweep_options):
        f = opt(f)
    return f


@cli.command()
@click.argument("config")
@_with_sweep_options
def sweep(config, **opts):
    """Run the sweep CONFIG (a TOML file or a preset name); finished trials are skipped."""
    _run(config, **opts)


@cli.command()
@_with_sweep_options
def demo(**opts):
    """Run the embedded default: the mnist1d-mlp preset (MLP width sweep on MNIST-1D, 15 % label
    noise, 500 epochs, all metric groups), then write its report into runs/demo/report."""
    opts["out"] = opts["out"] or "runs/demo"
    _run(DEMO_PRESET, **opts)


@cli.command()
@click.argument("run_dir", type=click.Path())
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Report folder (default RUN_DIR/report).")
@click.option("--rank-epochs", type=click.Choice(["final", "all"]), default="final", show_default=True,
              help="Nets the measure ranking compares: each trial's last epoch, or every metric epoch (axis 'epoch').")
@click.option("--criterion", type=Finite(0, 1), default=None,
              help="Training error at most this for a net to enter the ranking (default: the papers' 1 %; 1 ranks "
                   "every net).")
def report(run_dir, out, rank_epochs, criterion):
    """Write the report (PNG/PDF figures, HTML page, CSV) of RUN_DIR from its store."""
    from .runs.store import Store

    _check_out(out)
    Store.open(run_dir, readonly=True).close()  # a missing or corrupted store: one line before any folder is made
    if out:
        check_writable(Path(out), "report folder")
    with _stop_signals() as stopped_by:
        try:
            given = {} if criterion is None else {"criterion": criterion}  # the default lives in report.ranking
            path = _make_report(Path(run_dir), Path(out) if out else None, rank_epochs=rank_epochs, **given)
        except KeyboardInterrupt:
            click.echo("ddscope: interrupted: the report was not replaced (any previous one is intact); "
                       f"rerun `ddscope report {run_dir}`", err=True)
            sys.exit(128 + stopped_by.get("signal", signal.SIGINT))
    click.echo(str(path))


@cli.command()
@click.argument("run_dir", type=click.Path())
def status(run_dir):
    """Trials by state, ETA and failures with their reasons."""
    from .runs.status import status_text

    click.echo(status_text(Path(run_dir)))


@cli.command()
@click.argument("run_dir", type=click.Path())
@click.option("--format", "fmt", type=click.Choice(["csv", "parquet", "tensorboard", "mlflow"]), default="csv",
              show_default=True)
@click.option("--out", default=None, help="Output file (default RUN_DIR/table.<format>); tensorboard: a folder "
              "(default RUN_DIR/tensorboard); mlflow: a tracking URI or folder (default RUN_DIR/mlruns).")
def export(run_dir, fmt, out):
    """Export the tidy table (trial, axes, epoch, metric, value) to CSV or Parquet, or every trial
    as a TensorBoard or MLflow run (scalars per metric and epoch, the config axes as parameters)."""
    from .report.table import export as do_export

    from .runs.store import Store

    _check_out(out)
    Store.open(run_dir, readonly=True).close()  # a missing or corrupted store: one line before any folder is made
    if fmt in ("tensorboard", "mlflow"):
        from .runs.loggers import export_run

        target = out or str(Path(run_dir) / ("tensorboard" if fmt == "tensorboard" else "mlruns"))
        if "://" not in target:
            check_writable(Path(target), "export folder")
        click.echo(export_run(Path(run_dir), fmt, target))
        return
    path = Path(out) if out else Path(run_dir) / f"table.{fmt}"
    if path.is_dir():
        raise UserError(f"--out {path} is a folder; name the {fmt} file to write, e.g. {path / f'table.{fmt}'}")
    check_writable(path.parent, "export folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    click.echo(str(do_export(Path(run_dir), path, fmt)))


@cli.command()
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--groups", "groups", multiple=True, type=click.Choice(METRIC_GROUPS),
              help="Metric groups (repeat the option); default: every group on by default and every opt-in group "
                   "(spectrum, complexity, sharpness, volume) the trial's config names.")
@click.option("--samples", type=Finite(0, 10**9, integer=True), default=None,
              help="Samples per split for Jacobian norms and the Hessian (0 = all; default: the trial's).")
@click.option("--output", type=click.Choice(JAC_OUTPUTS), default=None,
              help="Jacobian of this output map (default: the trial's).")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
@click.option("--data-root", default=None, help="Folder of real data sets (default: the trial's data.root).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def measure(checkpoint, groups, samples, output, device, data_root, as_json):
    """Measure a saved model: rebuild it from its checkpoint's config and compute the metric
    groups on its train (noisy labels), train_clean, train_noisy and test splits."""
    from .measure import measure_checkpoint

    if samples is not None and samples < 0:
        raise UserError(f"--samples must be >= 0 (0 = all), got {samples}")
    import warnings

    from .metrics.suite import MetricSkipped

    with warnings.catch_warnings():  # said once below, not as a warning per group
        warnings.simplefilter("ignore", MetricSkipped)
        out = measure_checkpoint(Path(checkpoint), list(groups) or None, samples=samples, output=output, device=device,
                                 data_root=data_root, progress=_slow_lines("measure"))
    for group, why in out["skipped"].items():
        click.echo(f"ddscope: metric group '{group}' skipped: {why}", err=True)
    for group, why in out.get("notes", {}).items():
        click.echo(f"ddscope: metric group '{group}': {why}", err=True)
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    from rich.console import Console

    console = Console()
    for table in _measure_tables(out):
        console.print(table)


@cli.command()
@click.argument("run_dir", type=click.Path(exists=True))
@click.option("--width", "widths", multiple=True, type=Finite(0, 10**9),
              help="Trials of this model.width (repeat the option); default: every done trial.")
@click.option("--epoch", "epochs", multiple=True, type=Finite(0, 10**9, integer=True),
              help="Checkpoint epochs (repeat; need checkpoint.epochs); default: the last (final.pt).")
@click.option("--samples", type=Finite(0, 10**9, integer=True), default=None, help="Training samples for the Hessian (0 = all; default: the trial's).")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
def spectrum(run_dir, widths, epochs, samples, device):
    """Add the Hessian's top eigenvalues and spectral density (SLQ) of chosen trials to a run's
    store, from their checkpoints; `ddscope report` then draws them."""
    from .runs.spectrum import add_spectrum

    if samples is not None and samples < 0:
        raise UserError(f"--samples must be >= 0 (0 = all), got {samples}")
    done = add_spectrum(Path(run_dir), widths=widths, epochs=epochs, samples=samples, device=device,
                        progress=lambda line: click.echo(line, err=True))
    for d in done:
        click.echo(f"trial {d['trial_id']} width {d['width']:g} epoch {d['epoch']}: {d['rows']} rows")


_SPLIT_COLUMNS = (*SPLITS, *PATHS)  # the catalogue's splits, then the paths between training points


def _measure_tables(out: dict):
    """Per-split metrics as one table (split × metric), everything else as metric | value."""
    from rich.table import Table

    by_split: dict[str, dict[str, float]] = {}
    other: dict[str, float] = {}
    for key, value in out["values"].items():
        name, _, split = key.rpartition("/")
        if split in _SPLIT_COLUMNS and not name.endswith("_se"):  # standard errors go below, one row each
            by_split.setdefault(split, {})[name] = value
        else:
            other[key] = value
    title = f"{out['checkpoint']}: trial {out['trial_id']}, epoch {out['epoch']} (θ⁰: {out['init']})"
    if by_split:
        names = list(dict.fromkeys(n for vals in by_split.values() for n in vals))
        t = Table(title=title)
        t.add_column("split", no_wrap=True)
        for n in names:
            t.add_column(n, justify="right")
        for split in (c for c in _SPLIT_COLUMNS if c in by_split):
            t.add_row(split, *(f"{by_split[split][n]:.5g}" if n in by_split[split] else "" for n in names))
        yield t
        title = None
    if other:
        t = Table(title=title)
        t.add_column("metric", no_wrap=True)
        t.add_column("value", justify="right")
        for key, value in other.items():
            t.add_row(key, f"{value:.6g}")
        yield t


@cli.command()
def presets():
    """List the presets with their model, data, widths and epochs."""
    from .config import list_presets, load_sweep

    for name in list_presets():
        s = load_sweep(name)
        b = s.base
        widths = s.grid.get("model.width", (b.model.width,))
        noise = s.grid.get("data.noise", (b.data.noise,))
        click.echo(
            f"{name:22s} model={b.model.name:9s} data={b.data.name:9s} widths={widths[0]}..{widths[-1]} "
            f"({len(widths)}) noise={','.join(str(x) for x in noise)} epochs={b.optim.epochs} trials={len(s.trials())}"
        )
        if s.description:
            click.echo(f"{'':22s} {s.description}")


@cli.command()
def keys():
    """List every config key with its default (the keys --set and a TOML config take)."""
    from .config import TrialConfig, all_keys, get_key

    base = TrialConfig()
    for key in all_keys():
        click.echo(f"{key:32s} {get_key(base, key)!r}")


def main(argv: list[str] | None = None) -> None:
    """Entry point: UserError → one line on stderr, exit code 2."""
    try:
        cli.main(args=argv, prog_name="ddscope", standalone_mode=False)
    except UserError as e:
        click.echo(f"ddscope: error: {one_line(str(e))}", err=True)
        sys.exit(EXIT_USER_ERROR)
    except click.exceptions.Abort:
        click.echo("ddscope: aborted", err=True)
        sys.exit(130)
    except click.UsageError as e:  # a bad option or argument: one line too, like every bad input
        if type(e).__name__ == "NoArgsIsHelpError":  # plain `ddscope`: the help, not an error
            click.echo(e.format_message())
            sys.exit(0)
        hint = f" ({e.ctx.command_path} --help)" if e.ctx is not None else ""
        click.echo(f"ddscope: error: {one_line(e.format_message())}{hint}", err=True)
        sys.exit(EXIT_USER_ERROR)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except Exception as e:  # a full or read-only disk is the user's to fix: one line, exit 2
        if (user := as_user_error(e)) is None:
            raise
        click.echo(f"ddscope: error: {one_line(str(user))}", err=True)
        sys.exit(EXIT_USER_ERROR)


if __name__ == "__main__":  # pragma: no cover
    main()
