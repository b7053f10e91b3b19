"""``tincay profiles``: list, show and check certificate profiles. These read only the profile
files, never the database or the HSM."""
from __future__ import annotations

from pathlib import Path

import click

from cli.output import emit, emit_one
from cli.shell import app_context, json_option


@click.group(name="profiles")
def profiles_group() -> None:
    """Certificate profiles (profiles/*.yaml)."""


@profiles_group.command(name="list")
@json_option
def profiles_list(as_json: bool) -> None:
    """List the profiles an operator can issue from."""
    rows = [{"name": p.name, "description": p.description, "extends": p.extends,
             "keys": [str(k) for k in p.key_algorithms], "max_days": p.validity.max_days}
            for p in app_context().profiles]
    emit(rows, ["name", "extends", "max_days", "description"], as_json)


@profiles_group.command(name="show")
@click.argument("name")
@json_option
def profiles_show(name: str, as_json: bool) -> None:
    """Show a resolved profile (inheritance applied) as YAML, or JSON."""
    import yaml

    from ca.profiles import profile_as_dict

    data = profile_as_dict(app_context().profiles.get(name, allow_abstract=True))
    if as_json:
        emit_one(data, True)
    else:
        click.echo(yaml.safe_dump(data, allow_unicode=True, sort_keys=False).rstrip())


@profiles_group.command(name="check")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def profiles_check(path: Path) -> None:
    """Validate a profile file against the installed profiles (for its extends:)."""
    from ca.profiles import check_profile_file

    profile = check_profile_file(path, app_context().profiles)
    click.echo(f"{path}: profile {profile.name} is valid")
