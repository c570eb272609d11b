"""The `sluice` group: global options, lazy registration of the verbs, and the one-line error handling.

Nothing heavy is imported here: each verb's module is imported only when that verb runs (or when help lists
it), and those modules import `sluice.api` (SQLAlchemy) inside their functions, so `sluice --help` stays fast.
Every user error becomes exactly one line on stderr, `sluice: error: <message>`, and exit code 2.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import click

from sluice.environ import WORKSPACE as ENV_WORKSPACE

# verb -> (module, attribute). Order is the order `sluice --help` lists them in.
COMMANDS: dict[str, tuple[str, str]] = {
    "init": ("sluice.cli.workspace", "init"),
    "db": ("sluice.cli.workspace", "db"),
    "app": ("sluice.cli.apps", "app"),
    "job": ("sluice.cli.jobs", "job"),
    "qsub": ("sluice.cli.jobs", "qsub"),
    "dep": ("sluice.cli.jobs", "dep"),
    "mkchild": ("sluice.cli.jobs", "mkchild"),
    "modify": ("sluice.cli.jobs", "modify"),
    "rm": ("sluice.cli.jobs", "rm"),
    "killjob": ("sluice.cli.jobs", "killjob"),
    "retry": ("sluice.cli.jobs", "retry"),
    "ls": ("sluice.cli.query", "ls"),
    "show": ("sluice.cli.query", "show"),
    "history": ("sluice.cli.query", "history"),
    "submit": ("sluice.cli.submit", "submit"),
    "watch": ("sluice.cli.watch", "watch"),
    "wait": ("sluice.cli.wait", "wait"),
    "launcher": ("sluice.cli.launcher", "launcher"),
    "service": ("sluice.cli.service", "service"),
    "queue": ("sluice.cli.service", "queue"),
    "report": ("sluice.cli.report", "report"),
}
# Modules written elsewhere that may not exist yet; every click command defined at their top level is added
# (or those a module-level `COMMANDS` list names, as attribute names or command objects).
OPTIONAL_MODULES = ("sluice.cli.dbserver", "sluice.cli.web")

EXIT_USER_ERROR = 2
"""The user's mistake: a bad flag, field or file (sluice.errors.UserError)."""
EXIT_FAULT = 3
"""The environment failed: database unreachable, scheduler down, disk full (sluice.errors.Fault)."""


def _optional_commands() -> dict[str, click.Command]:
    found: dict[str, click.Command] = {}
    for mod_name in OPTIONAL_MODULES:
        try:
            if importlib.util.find_spec(mod_name) is None:
                continue
        except (ImportError, ValueError):
            continue
        try:
            mod = importlib.import_module(mod_name)
        except Exception as e:  # a broken optional module must not take the other verbs down with it
            click.echo(f"sluice: warning: cannot load {mod_name}: {type(e).__name__}: {e}", err=True)
            continue
        listed = getattr(mod, "COMMANDS", None)
        if isinstance(listed, list | tuple):  # names of (or the) commands to add
            objs = [getattr(mod, x, None) if isinstance(x, str) else x for x in listed]
        else:
            objs = list(vars(mod).values())
        for obj in objs:
            if isinstance(obj, click.Command) and obj.name and obj.name not in COMMANDS:
                found.setdefault(obj.name, obj)
    return found


class SluiceGroup(click.Group):
    """A group whose verbs are imported on first use, and whose errors are one line each."""

    _optional: dict[str, click.Command] | None = None

    def _extra(self) -> dict[str, click.Command]:
        if self._optional is None:
            self._optional = _optional_commands()
        return self._optional

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*COMMANDS, *sorted(self._extra())]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in COMMANDS:
            mod, attr = COMMANDS[cmd_name]
            cmd = getattr(importlib.import_module(mod), attr)
            assert isinstance(cmd, click.Command)
            return cmd
        return self._extra().get(cmd_name)

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True, **extra: Any) -> Any:
        try:
            rv = super().main(args, prog_name or "sluice", complete_var, standalone_mode=False, **extra)
        except click.exceptions.Abort:
            click.echo("\nsluice: aborted", err=True)
            sys.exit(1)
        except click.exceptions.NoArgsIsHelpError as e:  # bare `sluice` or a bare group: its help, exit 0
            click.echo(e.ctx.get_help() if e.ctx else str(e))
            sys.exit(0)
        except click.UsageError as e:
            hint = f" (see `{e.ctx.command_path} --help`)" if e.ctx is not None else ""
            fail(e.format_message() + hint)
        except click.ClickException as e:
            fail(e.format_message())
        except Exception as e:
            msg = user_message(e)
            if msg is not None:
                fail(msg)
            msg = fault_message(e)
            if msg is None:
                raise
            fail(msg, EXIT_FAULT)
        if not standalone_mode:
            return rv
        sys.exit(rv if isinstance(rv, int) else 0)


def fail(message: str, code: int = EXIT_USER_ERROR) -> NoReturn:
    """Print the one line every error gets, and exit: 2 for the user's mistakes, 3 for faults."""
    one = " ".join(str(message).split()) or "unknown error"
    click.echo(f"sluice: error: {redact(one)}", err=True)
    sys.exit(code)


def redact(text: str) -> str:
    """Passwords out of URLs and driver messages."""
    text = re.sub(r"(://[^:/@\s]*):[^@\s]*@", r"\1:***@", text)
    return re.sub(r"(password\s*=\s*)\S+", r"\1***", text, flags=re.I)


def user_message(e: BaseException) -> str | None:
    """The one-line message for errors a user can fix (exit 2); None for anything else."""
    from sluice.errors import UserError

    return str(e) if isinstance(e, UserError) else None


def fault_message(e: BaseException) -> str | None:
    """The one-line message of an environmental fault (exit 3): the database or the scheduler failed, the disk
    is full. None for bugs, which keep their traceback."""
    from sluice.errors import Fault, one_line

    if isinstance(e, Fault):
        return str(e)
    sa_exc = sys.modules.get("sqlalchemy.exc")
    if sa_exc is not None and isinstance(e, sa_exc.DBAPIError | sa_exc.OperationalError):
        orig = getattr(e, "orig", None)
        return f"database error: {one_line(orig if orig is not None else e)}"
    return None


CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(cls=SluiceGroup, context_settings=CONTEXT,
             epilog="Example: sluice init ~/campaign && cd ~/campaign && sluice ls --summary")
@click.option("--workspace", "-w", "workspace", metavar="PATH", envvar=ENV_WORKSPACE,
              help="The workspace to use (default: $SLUICE_WORKSPACE, else the current directory or a parent).")
@click.version_option(package_name="sluice", prog_name="sluice")
@click.pass_context
def cli(ctx: click.Context, workspace: str | None) -> None:
    """sluice manages HPC campaigns: apps, jobs and their dependencies in a database, run by launchers."""
    ctx.obj = {"workspace": workspace}


def main(argv: Sequence[str] | None = None) -> None:
    """The console script `sluice` and `python -m sluice`."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="sluice")


if __name__ == "__main__":  # pragma: no cover
    main()
