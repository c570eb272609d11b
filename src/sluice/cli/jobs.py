"""Verbs that add, link, change and remove jobs: job, qsub, dep, mkchild, modify, rm, killjob."""

from __future__ import annotations

import hashlib
import os
import re
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from sluice.cli import render
from sluice.cli.common import (
    CONTEXT,
    any_filter,
    build_filters,
    build_spec,
    filter_options,
    job_spec_options,
    open_ws,
    parse_json,
    resolve_all,
    split_args,
)
from sluice.errors import UserError
from sluice.schema import INT_FIELDS, JOB_COLUMNS, JSON_FIELDS

if TYPE_CHECKING:
    from sluice.api import Job, Workspace


def report_new(job: Job, as_json: bool) -> None:
    if as_json:
        render.print_json(job.to_dict())
    else:
        click.echo(job.id)


# ---------------------------------------------------------------------------------------------- job
@click.command(context_settings=CONTEXT,
               epilog="Example: sluice job --name myjob --workflow balsam_tutorial --application myapp "
                      "--wall-min 60 --num-nodes 1 --ranks-per-node 1")
@click.option("--name", required=True, metavar="NAME", help="The job's name.")
@click.option("--application", "--app", "app", required=True, metavar="APP", help="The app it runs.")
@job_spec_options
def job(name: str, app: str, as_json: bool, yes: bool, **kw: Any) -> None:
    """Add one job and print its id."""
    ws = open_ws()
    spec = build_spec(ws, kw)
    report_new(ws.add_job(name, app, **spec), as_json)


@click.command(context_settings=CONTEXT,
               epilog="Example: sluice mkchild 42 --name analyse --application ana --param input=out.dat")
@click.argument("parent")
@click.option("--name", required=True, metavar="NAME", help="The new job's name.")
@click.option("--application", "--app", "app", required=True, metavar="APP", help="The app it runs.")
@job_spec_options
def mkchild(parent: str, name: str, app: str, as_json: bool, yes: bool, **kw: Any) -> None:
    """Add a job that runs after PARENT, and print its id.

    It takes the options of `sluice job`; its workflow is the parent's unless --workflow says otherwise.
    """
    ws = open_ws()
    spec = build_spec(ws, kw)
    pid = ws.resolve(parent)
    parents = [pid, *(p for p in spec.pop("parents", []) if p != pid)]
    spec.setdefault("workflow", ws.job(pid).workflow)
    report_new(ws.add_job(name, app, parents=parents, **spec), as_json)


# --------------------------------------------------------------------------------------------- qsub
SHELL_CHARS = re.compile(r"[|&;<>()$`*?\[\]~!#\n{}'\"\\]")


def qsub_app(ws: Workspace, command: str, shell: bool) -> str:
    """The implicit app of a one-line job: `qsub-<hash>`, created on first use and reused after."""
    template = command.replace("{", "{{").replace("}", "}}")
    digest = hashlib.sha1(f"{shell}:{command}".encode()).hexdigest()[:10]
    name = f"qsub-{digest}"
    try:
        existing = ws.app(name)
    except UserError:
        try:
            ws.add_app(name, template, f"qsub: {command[:200]}", shell=shell)
        except UserError:  # added by a concurrent qsub of the same command
            existing = ws.app(name)
        else:
            return name
    if existing.command != template or existing.shell != shell:
        raise UserError(f"app {name} exists with a different command; remove it with `sluice app rm {name}`")
    return name


@click.command(context_settings={**CONTEXT, "ignore_unknown_options": True, "allow_interspersed_args": False},
               epilog="Example: sluice qsub --name hello -n 2 --wall-min 10 echo hello world\n\n"
                      "Example: sluice qsub --script run.sh --name run1\n\n"
                      "Example: sluice qsub 'grep -c x in.txt > count.txt'   (shell syntax: runs via /bin/sh)")
@click.option("--name", metavar="NAME", help="Job name (default: the command's program name).")
@click.option("--script", type=click.Path(dir_okay=False), metavar="FILE", help="Run this script as the job.")
@job_spec_options
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def qsub(name: str | None, script: str | None, command: tuple[str, ...], as_json: bool, yes: bool,
         **kw: Any) -> None:
    """Add a one-line command or a script as a job (no app to register).

    \b
    Options go before the command; everything after its first word belongs to the command.
    A single quoted argument with shell syntax (pipes, redirection, $VARS) runs through /bin/sh;
    otherwise the words run as given, with no shell.
    """
    if script and command:
        raise UserError("give a COMMAND or --script FILE, not both")
    if script:
        p = Path(script).expanduser().resolve()
        if not p.is_file():
            raise UserError(f"--script {script}: no such file {p}")
        with p.open("rb") as fh:
            shebang = fh.read(2) == b"#!"
        argv = [str(p)] if shebang and os.access(p, os.X_OK) else ["/bin/sh", str(p)]
        line, shell, default_name = shlex.join(argv), False, p.stem
    elif command:
        if len(command) == 1 and SHELL_CHARS.search(command[0]):
            line, shell = command[0].strip(), True
            words = command[0].split()
        else:
            words = list(command)
            if len(words) == 1:
                words = split_args(words[0]) or []
            line, shell = shlex.join(words), False
        if not line.strip():
            raise UserError("give a command to run, e.g. `sluice qsub echo hello`")
        default_name = Path(words[0]).name if words else "qsub"
    else:
        raise UserError("give a command to run (e.g. `sluice qsub echo hello`) or --script FILE")
    ws = open_ws()
    spec = build_spec(ws, kw)
    if spec.get("params"):
        raise UserError("qsub jobs take no --param; put the values in the command")
    app_name = qsub_app(ws, line, shell)
    report_new(ws.add_job(name or default_name, app_name, **spec), as_json)


# ---------------------------------------------------------------------------------------------- dep
@click.command(context_settings=CONTEXT, epilog="Example: sluice dep 41 42   (job 42 waits for job 41)")
@click.argument("parent")
@click.argument("child")
def dep(parent: str, child: str) -> None:
    """Make CHILD wait for PARENT to finish.

    Self-dependencies and cycles are refused; a CHILD that was ready goes back to waiting.
    """
    ws = open_ws()
    p, c = ws.resolve(parent), ws.resolve(child)
    ws.add_dependency(p, c)
    click.echo(f"job {c} now waits for job {p}")


# ------------------------------------------------------------------------------------------- modify
NULLABLE = frozenset(c.name for c in JOB_COLUMNS if c.user and c.null and c.kind != "json")
ALIASES = {"wall_min": "wall_time_min", "wall_time": "wall_time_min", "nodes": "num_nodes", "app_args": "args",
           "env": "environment", "workflow_name": "workflow"}


def parse_field(field: str, value: str) -> tuple[str, Any]:
    """`--set field=value`: the value as the field wants it (int, minutes, JSON, list, or text)."""
    key = field.strip().lower().replace("-", "_")
    key = ALIASES.get(key, key)
    if key in INT_FIELDS:
        try:
            return key, int(value)
        except ValueError:
            raise UserError(f"{key.replace('_', '-')} must be a whole number, got {value!r}") from None
    if key in NULLABLE and value.strip() in ("", "null", "none", "None"):
        return key, None
    if key == "args":
        if value.lstrip().startswith("["):
            return key, parse_json(value, "--set args")
        return key, split_args(value)
    if key in JSON_FIELDS:
        return key, parse_json(value, f"--set {key}")
    return key, value


@click.command(context_settings=CONTEXT,
               epilog="Example: sluice modify 42 --set num_nodes=4 --set wall_time_min=01:30:00 "
                      "--set 'params={\"temp\": 310}'\n\n"
                      "Example: sluice modify --workflow scan --state FAILED --set max_retries=5 --yes")
@click.argument("jobs", nargs=-1)
@filter_options
@click.option("--set", "sets", multiple=True, required=True, metavar="FIELD=VALUE",
              help="A field to change (JSON for params, data, tags, environment, stage_in, stage_out). Repeatable.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask before changing several jobs.")
@click.option("--json", "as_json", is_flag=True, help="Print the changed job as JSON (one job only).")
def modify(jobs: tuple[str, ...], sets: tuple[str, ...], yes: bool, as_json: bool, **kw: Any) -> None:
    """Change fields of jobs, or their state, all in one transaction.

    Jobs are named by id, or selected with the filters of `ls`. Values are read as the field needs: whole
    numbers, minutes or HH:MM:SS, JSON for params, data, tags, environment, stage_in and stage_out, text
    otherwise. A state changes only by a legal transition. One job that cannot change, and none does.
    """
    ws = open_ws()
    changes: dict[str, Any] = {}
    for item in sets:
        field, sep, value = item.partition("=")
        if not sep or not field.strip():
            raise UserError(f"bad --set {item!r}: write it as FIELD=VALUE, e.g. --set num_nodes=4")
        k, v = parse_field(field, value)
        changes[k] = v
    ids = selected(ws, jobs, kw, "modify")
    confirm(f"Change {', '.join(sorted(changes))} of {len(ids)} job(s)?", ids, jobs, yes)
    if len(ids) == 1:
        j = ws.modify(ids[0], **changes)
        if as_json:
            render.print_json(j.to_dict())
            return
    else:
        ws.modify_jobs(ids, **changes)
    click.echo(f"changed {', '.join(sorted(changes))} of {_count(ids)}")


def selected(ws: Workspace, refs: tuple[str, ...], kw: dict[str, Any], verb: str) -> list[int]:
    """The jobs a bulk verb acts on: those named, and those the filters select."""
    if not refs and not any_filter(kw):
        raise UserError(f"say which jobs to {verb}: give ids or names, or filters (--state, --workflow, --app, "
                        "--tag, --name, --id)")
    ids = set(resolve_all(ws, refs))
    if any_filter(kw):
        ids.update(ws.ids(**build_filters(ws, kw)))
    if not ids:
        raise UserError(f"no jobs match; nothing to {verb} (see `sluice ls` with the same filters)")
    return sorted(ids)


def confirm(question: str, ids: list[int], refs: tuple[str, ...], yes: bool) -> None:
    """Ask before touching several jobs (or any selected by filters) unless --yes."""
    if not (yes or (len(ids) == 1 and len(refs) == 1)):
        ask(question, "nothing changed")


def ask(question: str, refused: str) -> None:
    """Ask on the terminal; a no (or no terminal to answer) exits 1 saying that nothing was done."""
    try:
        ok = click.confirm(question, default=False, err=True)
    except click.Abort:
        click.echo("", err=True)
        ok = False
    if not ok:
        click.echo(f"{refused} (pass --yes to skip this question)", err=True)
        raise SystemExit(1)


def _count(ids: list[int]) -> str:
    shown = ", ".join(map(str, ids[:10])) + (" ..." if len(ids) > 10 else "")
    return f"{len(ids)} job(s): {shown}"


# ----------------------------------------------------------------------------------------------- rm
RM_CHUNK = 10_000
"""`rm` of more jobs than this removes them in transactions of this many, with a progress bar on a terminal."""


@click.command(context_settings=CONTEXT,
               epilog="Example: sluice rm jobs --id 42 --id 43\n\n"
                      "Example: sluice rm --workflow scan --state FAILED --yes\n\n"
                      "Example: sluice rm apps --name myapp")
@click.argument("what", required=False, type=click.Choice(["jobs", "apps", "job", "app"]), default="jobs")
@filter_options
@click.option("--all", "all_jobs", is_flag=True, help="Remove every job (asks first unless --yes).")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--force", is_flag=True, help="Remove RUNNING jobs too (their launchers lose track of them).")
def rm(what: str, all_jobs: bool, yes: bool, force: bool, **kw: Any) -> None:
    """Remove jobs, or an app.

    Jobs matching the filters go (their history stays, as provenance) after you confirm how many.
    `rm apps --name NAME` removes an app no job uses.
    """
    ws = open_ws()
    if what in ("apps", "app"):
        name = kw.get("name")
        if not name:
            raise UserError("say which app: `sluice rm apps --name NAME`")
        ws.remove_app(name)
        click.echo(f"removed app {name!r}")
        return
    if not any_filter(kw) and not all_jobs:
        raise UserError("say which jobs to remove (--id, --state, --workflow, --app, --tag, --name) or pass --all")
    filters = {} if all_jobs and not any_filter(kw) else build_filters(ws, kw)
    n = ws.count(**filters)
    if n == 0:
        click.echo("no jobs match; nothing removed", err=True)
        return
    if not yes:
        ask(f"Remove {n} job(s)?", "nothing removed")
    ids = ws.ids(**filters)
    chunks = [ids[i : i + RM_CHUNK] for i in range(0, len(ids), RM_CHUNK)][::-1]  # children (later ids) first
    if len(chunks) <= 1 or (not force and ws.summary(**filters).get("RUNNING")):
        removed = ws.remove(ids, force=force)  # one transaction; the API refuses RUNNING jobs, naming them
    else:  # a bar on a terminal, one transaction a chunk (a job started meanwhile stops it there, by name)
        from sluice.cli.progressbar import progress

        removed = 0
        with progress("removing jobs", len(ids)) as step:
            for chunk in chunks:
                removed += ws.remove(chunk, force=force)
                step(len(chunk))
    click.echo(f"removed {removed} job(s)")


# ------------------------------------------------------------------------------------------ killjob
@click.command(context_settings=CONTEXT, epilog="Example: sluice killjob 42 --recursive\n\n"
                                                "Example: sluice killjob --workflow scan --state RUNNING --yes")
@click.argument("jobs", nargs=-1)
@filter_options
@click.option("--recursive", "-r", is_flag=True, help="Kill their descendants too.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask before killing several jobs.")
def killjob(jobs: tuple[str, ...], recursive: bool, yes: bool, **kw: Any) -> None:
    """Stop jobs: mark them USER_KILLED, all in one transaction.

    Jobs are named by id, or selected with the filters of `ls`. A launcher running one stops the process;
    children still waiting on a killed job fail, saying why.
    """
    ws = open_ws()
    ids = selected(ws, jobs, kw, "kill")
    confirm(f"Kill {len(ids)} job(s){' and their descendants' if recursive else ''}?", ids, jobs, yes)
    killed = ws.kill(ids[0], recursive=recursive) if len(ids) == 1 else ws.kill_jobs(ids, recursive=recursive)
    if killed:
        click.echo(f"killed {_count(killed)}")
    else:
        click.echo("nothing to kill: those jobs had already ended")


# -------------------------------------------------------------------------------------------- retry
@click.command(context_settings=CONTEXT, epilog="Example: sluice retry --workflow scan --state FAILED --yes")
@click.argument("jobs", nargs=-1)
@filter_options
@click.option("--yes", "-y", is_flag=True, help="Do not ask before retrying several jobs.")
def retry(jobs: tuple[str, ...], yes: bool, **kw: Any) -> None:
    """Run FAILED or killed jobs again, with a fresh retry budget, all in one transaction.

    Each goes back through its stage-in and preprocess (or waits for parents that have not finished), and
    its descendants that failed because of it wait for it again.
    """
    ws = open_ws()
    ids = selected(ws, jobs, kw, "retry")
    confirm(f"Retry {len(ids)} job(s)?", ids, jobs, yes)
    again = ws.retry_jobs(ids)
    extra = len(again) - len(ids)
    click.echo(f"retrying {_count(ids)}" + (f"; {extra} descendant(s) wait for them again" if extra else ""))

