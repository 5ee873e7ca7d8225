"""Every command has help with an Example and is documented in the README, flags included."""

from pathlib import Path

import click
import pytest

from vramplan.cli import cli

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
COMMANDS = sorted(cli.commands)


@pytest.mark.parametrize("name", COMMANDS)
def test_command_has_example_and_readme_section(name):
    command = cli.commands[name]
    assert command.help and "Example:" in command.help
    assert f"vramplan {name}" in README


@pytest.mark.parametrize("name", COMMANDS)
def test_every_flag_is_in_the_readme(name):
    missing = []
    for param in cli.commands[name].params:
        if isinstance(param, click.Option):
            for flag in param.opts + param.secondary_opts:
                if flag.startswith("--") and flag not in README:
                    missing.append(flag)
    assert not missing, f"vramplan {name}: flags not in README: {missing}"
