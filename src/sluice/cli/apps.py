"""`sluice app`: register, list, show, change and remove applications.

Balsam's form works as it did: `sluice app --name myapp --desc "my application" --exec myapp.py`.
"""

from __future__ import annotations

import dataclasses
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from sluice.cli import render
from sluice.cli.common import CONTEXT, open_ws, parse_kv
from sluice.errors import UserError

F = TypeVar("F", bound=Callable[..., Any])
POLICY = click.Choice(["retry", "fail"])


def exec_command(value: str) -> str:
    """Balsam's --exec: a .py file runs with this Python (absolute path); anything else is the command."""
    if value.endswith(".py") and len(shlex.split(value)) == 1:
        p = Path(value).expanduser().resolve()
        if not p.is_file():
            raise UserError(f"--exec {value}: no such file {p}; give an existing script or a command")
        return escape_braces(shlex.join([sys.executable, str(p)]))
    return value


def escape_braces(text: str) -> str:
    """Literal text as a command template (no placeholders)."""
    return text.replace("{", "{{").replace("}", "}}")


def app_options(f: F) -> F:
    opts = [
        click.option("--desc", "--description", "description", metavar="TEXT", help="What the app does."),
        click.option("--env", "--envs", "env", multiple=True, metavar="K=V",
                     help="Default environment for its jobs. Repeatable."),
        click.option("--preprocess", metavar="CMD", help="Runs in the job's directory before the job."),
        click.option("--postprocess", metavar="CMD", help="Runs in the job's directory after a good run."),
        click.option("--error-handler", metavar="CMD", help="Runs after a failed run."),
        click.option("--timeout-handler", metavar="CMD", help="Runs after a run that timed out."),
        click.option("--on-error", type=POLICY, help="After a failed run: retry (within the job's budget) or fail."),
        click.option("--on-timeout", type=POLICY, help="After a timed-out run: retry or fail."),
        click.option("--shell/--no-shell", default=None,
                     help="Run the command through /bin/sh (parameters are quoted); default: argv, no shell."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def app_fields(kw: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {k: kw.get(k) for k in ("description", "preprocess", "postprocess", "error_handler",
                                                   "timeout_handler", "on_error", "on_timeout", "shell")}
    env = parse_kv(kw.get("env") or (), "--env")
    out["environment"] = env or None
    return {k: v for k, v in out.items() if v is not None}


@click.group(context_settings=CONTEXT, invoke_without_command=True,
             epilog='Example: sluice app add sim --command "simulate --temp {temp}" --desc "MD run"\n\n'
                    'Balsam form: sluice app --name myapp --desc "my application" --exec myapp.py')
@click.option("--name", "balsam_name", metavar="NAME", help="Balsam form: the app to add.")
@click.option("--exec", "--executable", "balsam_exec", metavar="CMD",
              help="Balsam form: the command; a .py file runs with this Python.")
@click.option("--desc", "--description", "balsam_desc", metavar="TEXT", help="Balsam form: description.")
@click.option("--preprocess", "balsam_pre", metavar="CMD", help="Balsam form: preprocess command.")
@click.option("--postprocess", "balsam_post", metavar="CMD", help="Balsam form: postprocess command.")
@click.option("--envs", "balsam_env", multiple=True, metavar="K=V", help="Balsam form: environment.")
@click.pass_context
def app(ctx: click.Context, balsam_name: str | None, balsam_exec: str | None, balsam_desc: str | None,
        balsam_pre: str | None, balsam_post: str | None, balsam_env: tuple[str, ...]) -> None:
    """Register and manage applications.

    An app is a command template; each job fills its {placeholders} with its own --param values.
    """
    given = any([balsam_name, balsam_exec, balsam_desc, balsam_pre, balsam_post, balsam_env])
    if ctx.invoked_subcommand is not None:
        if given:
            raise click.UsageError(f"give either `sluice app --name ... --exec ...` or `sluice app "
                                   f"{ctx.invoked_subcommand} ...`, not both")
        return
    if not given:
        click.echo(ctx.get_help())
        return
    if not balsam_name or not balsam_exec:
        raise UserError("adding an app needs --name NAME and --exec COMMAND (or use `sluice app add`)")
    ws = open_ws(ctx)
    a = ws.add_app(balsam_name, exec_command(balsam_exec), balsam_desc or "",
                   environment=parse_kv(balsam_env, "--envs") or None, preprocess=balsam_pre,
                   postprocess=balsam_post)
    click.echo(f"added app {a.name!r}: {a.command}")


@app.command("add", context_settings=CONTEXT,
             epilog="Example: sluice app add sim --command 'simulate --temp {temp} --out {out}' --desc 'MD run'")
@click.argument("name")
@click.option("--command", "-c", "command", metavar="TEMPLATE",
              help="The command; {name} placeholders are filled from each job's --param name=VALUE.")
@click.option("--exec", "executable", metavar="CMD", help="Like Balsam's --exec: a .py file runs with this Python.")
@app_options
def add(name: str, command: str | None, executable: str | None, **kw: Any) -> None:
    """Register an application under NAME."""
    if command and executable:
        raise UserError("give --command or --exec, not both")
    if not command and not executable:
        raise UserError("an app needs a command, e.g. --command 'simulate --temp {temp}'")
    ws = open_ws()
    cmd = command if command else exec_command(str(executable))
    fields = app_fields(kw)
    a = ws.add_app(name, cmd, fields.pop("description", ""), **fields)
    params = ", ".join(a.parameters) or "none"
    click.echo(f"added app {a.name!r}: {a.command}  (parameters: {params})")


def app_dict(a: Any) -> dict[str, Any]:
    d = dataclasses.asdict(a)
    d["parameters"] = a.parameters
    return d


@app.command("ls", context_settings=CONTEXT, epilog="Example: sluice app ls --json")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def ls_apps(as_json: bool) -> None:
    """List the registered applications."""
    apps = open_ws().apps()
    if as_json:
        render.print_json([app_dict(a) for a in apps])
        return
    if not apps:
        click.echo("no apps yet; add one with `sluice app add NAME --command '...'`", err=True)
        return
    render.table(["name", "command", "parameters", "description"],
                 [(a.name, a.command, ", ".join(a.parameters), a.description) for a in apps])


@app.command("show", context_settings=CONTEXT, epilog="Example: sluice app show sim")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show_app(name: str, as_json: bool) -> None:
    """Show every field of one application."""
    a = open_ws().app(name)
    d = app_dict(a)
    if as_json:
        render.print_json(d)
        return
    d["created_at"] = render.when(a.created_at)
    render.key_values(d.items())


@app.command("rm", context_settings=CONTEXT, epilog="Example: sluice app rm sim")
@click.argument("name")
def rm_app(name: str) -> None:
    """Remove an application that no job uses."""
    open_ws().remove_app(name)
    click.echo(f"removed app {name!r}")


@app.command("modify", context_settings=CONTEXT,
             epilog="Example: sluice app modify sim --command 'simulate -T {temp}' --on-error fail")
@click.argument("name")
@click.option("--command", "-c", "command", metavar="TEMPLATE", help="A new command template.")
@app_options
def modify_app(name: str, command: str | None, **kw: Any) -> None:
    """Change fields of an application (jobs already added keep their parameters)."""
    changes = app_fields(kw)
    if command is not None:
        changes["command"] = command
    if not changes:
        raise UserError("nothing to change; give e.g. --command, --desc, --env K=V (see --help)")
    a = open_ws().modify_app(name, **changes)
    click.echo(f"changed app {a.name!r}: {', '.join(sorted(changes))}")
