"""The ``bench`` command line. Heavy imports (torch, pandas) happen inside commands only."""

from __future__ import annotations

import json
import os
import sys
from functools import cached_property
from typing import Any

import click

from bench.errors import BenchError
from bench.plugin.kinds import KEYS as KIND_CHOICES


class Session:
    """Plugin options from the group; plugins load on first use (so ``--help`` stays fast)."""

    def __init__(self, modules: tuple[str, ...], dirs: tuple[str, ...], strict: bool) -> None:
        from bench.plugin.loading import env_list

        self.modules = list(modules) + (env_list("BENCH_PLUGINS") or [])
        self.dirs = list(dirs) + (env_list("BENCH_PLUGINS_DIR", os.pathsep) or [])
        self.strict = strict or os.environ.get("BENCH_STRICT_PLUGINS", "") not in ("", "0")

    @cached_property
    def report(self):
        from bench.plugin import loading as plugins

        return plugins.load(
            modules=self.modules,
            dirs=self.dirs,
            strict=self.strict,
            allow=plugins.env_list("BENCH_LOAD_PLUGINS"),
        )

    @property
    def registry(self):
        return self.report.registry


class BenchGroup(click.Group):
    """:class:`BenchError` → one clear line on stderr and exit 2; Ctrl-C → exit 130."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.NoSuchOption as exc:
            raise self._misplaced(ctx, exc) from None
        except BenchError as exc:
            error = click.ClickException(str(exc))
            error.exit_code = 2
            raise error from None
        except KeyboardInterrupt:
            self._interrupted()
        except Exception:
            from bench.run import interrupts

            if interrupts.received():  # Ctrl-C that third-party code turned into another error
                self._interrupted()
            raise

    def _misplaced(self, ctx: click.Context, exc: click.NoSuchOption) -> click.UsageError:
        """An option of ``bench`` itself (``-p``) given after a command: say where it goes."""
        for param in self.params:
            if exc.option_name in param.opts + param.secondary_opts and param.expose_value:
                flag = getattr(param, "is_flag", False)
                usage = exc.option_name if flag else f"{exc.option_name} {param.metavar}"
                command = exc.ctx.info_name if exc.ctx else "COMMAND"
                return click.UsageError(
                    f"No such option {exc.option_name!r} for {command!r}: it belongs to "
                    f"{ctx.info_name!r} and goes before the command: "
                    f"{ctx.info_name} {usage} {command} ...",
                    ctx=exc.ctx,
                )
        return exc

    @staticmethod
    def _interrupted() -> None:
        from bench.run.interrupts import forget_interrupt

        forget_interrupt()
        click.echo("\ninterrupted", err=True)
        raise click.exceptions.Exit(130) from None


@click.group(cls=BenchGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-p",
    "--plugin",
    "modules",
    multiple=True,
    metavar="MODULE_OR_FILE",
    help="Load a plugin module or .py file (repeatable; also BENCH_PLUGINS=a,b).",
)
@click.option(
    "--plugins-dir",
    "dirs",
    multiple=True,
    metavar="DIR",
    help="Load every *.py in DIR as a plugin (repeatable; also BENCH_PLUGINS_DIR).",
)
@click.option(
    "--strict-plugins",
    "strict",
    is_flag=True,
    help="A third-party plugin that fails to load is fatal (also BENCH_STRICT_PLUGINS=1).",
)
@click.version_option(package_name="sde-bench", prog_name="sde-bench")
@click.pass_context
def cli(ctx: click.Context, modules: tuple[str, ...], dirs: tuple[str, ...], strict: bool) -> None:
    """Benchmark the samplers of score-based generative models (Song et al. 2021).

    \b
    Examples:
      bench run                                   # default sweep on the exact-score 2-D ring
      bench run --predictors euler,reverse_diffusion --correctors langevin
      bench list predictors
      bench plugins --json
    """
    from bench.run import interrupts

    interrupts.install()
    ctx.obj = Session(modules, dirs, strict)


@cli.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--hook", default=None, metavar="NAME", help="Only plugins implementing this hook.")
@click.option("--check", is_flag=True, help="Exit 1 if any plugin failed to load.")
@click.pass_obj
def plugins_command(session: Session, as_json: bool, hook: str | None, check: bool) -> None:
    """List every plugin with its source, distribution, version, hooks and status."""
    from bench.results.textui import table

    records = [p for p in session.report.plugins if hook is None or hook in p.hooks]
    rows = [p.as_dict() for p in records]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        for r in rows:
            r["status"] = r["status"] if r["status"] == "ok" else f"{r['status']}: {r['error']}"
        click.echo(table(rows, ["name", "source", "dist", "version", "hooks", "status"]))
    if check and session.report.failures:
        sys.exit(1)


@cli.command("list")
@click.argument("kind", type=click.Choice(KIND_CHOICES))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def list_command(session: Session, kind: str, as_json: bool) -> None:
    """List the registered components of one KIND with a one-line summary."""
    from bench.core.options import options_of
    from bench.results.textui import table

    registry = session.registry
    rows = []
    for name in registry.names(kind):
        entry = registry.entries[kind][name]
        rows.append(
            {
                "name": name,
                "aliases": list(entry.aliases),
                "plugin": entry.provider.plugin,
                "summary": entry.summary,
                "options": {k: v for k, v in options_of(entry.obj).items()},
            }
        )
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
    else:
        click.echo(table(rows, ["name", "aliases", "plugin", "summary"]))


# Subcommands live in their own modules; none imports torch at import time.
from bench.cli.fidelity import (  # noqa: E402
    fid_floor_command,
    fid_weights_command,
    train_classifier_command,
)
from bench.cli.likelihood import likelihood_command  # noqa: E402
from bench.cli.order import order_command  # noqa: E402
from bench.cli.profile import profile_command  # noqa: E402
from bench.cli.report import compare_command, report_command  # noqa: E402
from bench.cli.run import run_command  # noqa: E402
from bench.cli.train import train_command  # noqa: E402
from bench.cli.tune import tune_snr_command  # noqa: E402

for command in (
    run_command,
    report_command,
    compare_command,
    train_command,
    profile_command,
    train_classifier_command,
    fid_floor_command,
    fid_weights_command,
    likelihood_command,
    tune_snr_command,
    order_command,
):
    cli.add_command(command)
