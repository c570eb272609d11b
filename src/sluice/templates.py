"""App command templates: `{param}` placeholders filled from a job's parameters, as an argv list.

The template is split like a shell line first and each word filled afterwards, so a parameter holding spaces
or quotes stays one argument and never reaches a shell (unless the app says `shell`, where values are quoted).
"""

from __future__ import annotations

import functools
import shlex
import string
from collections.abc import Mapping, Sequence
from typing import Any

from sluice.errors import UserError

_fmt = string.Formatter()


def fields(template: str) -> set[str]:
    """The placeholder names of a template; a malformed template is a user error."""
    names: set[str] = set()
    try:
        for _lit, name, _spec, _conv in _fmt.parse(template):
            if name is None:
                continue
            base = name.split(".")[0].split("[")[0]
            if not base.isidentifier():
                raise UserError(f"bad placeholder {{{name}}} in command {template!r}: use {{name}}")
            names.add(base)
    except ValueError as e:
        raise UserError(f"bad command template {template!r}: {e} (write a literal brace as {{{{ or }}}})") from None
    return names


def check_params(app_name: str, template: str, params: Mapping[str, Any]) -> None:
    """Missing or unknown parameters are errors, named with the app's expected set."""
    want = fields(template)
    missing = sorted(want - set(params))
    unknown = sorted(set(params) - want)
    if missing:
        raise UserError(
            f"app {app_name!r} needs parameter(s) {', '.join(missing)}; "
            f"give them with --param {missing[0]}=VALUE (expected: {', '.join(sorted(want)) or 'none'})"
        )
    if unknown:
        raise UserError(
            f"app {app_name!r} has no parameter(s) {', '.join(unknown)}; "
            f"its command takes: {', '.join(sorted(want)) or 'no parameters'}"
        )


def render(template: str, params: Mapping[str, Any], args: Sequence[str] = (), shell: bool = False) -> list[str]:
    """The argv for one job: template words filled in, then the job's extra args appended."""
    if shell:
        quoted = {k: shlex.quote(str(v)) for k, v in params.items()}
        line = template.format(**quoted)
        if args:
            line += " " + " ".join(shlex.quote(a) for a in args)
        return ["/bin/sh", "-c", line]
    words = _split(template)
    out = [w.format(**params) if "{" in w or "}" in w else w for w in words]
    return out + list(args) if args else out


@functools.lru_cache(maxsize=256)
def _split(template: str) -> tuple[str, ...]:
    """Split once per template: a launcher renders the same few templates thousands of times a second."""
    try:
        return tuple(shlex.split(template))
    except ValueError as e:
        raise UserError(f"cannot split command {template!r}: {e}") from None
