"""The `genq` CLI's shape: one module per command group, no module-level state."""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

import click
from rich.console import Console

from genq.producer import cli as cli_package
from genq.producer.cli import cli, main

GROUPS = {
    "jobs": {"run", "tail", "status", "cancel"},
    "batches": {"submit", "wait", "results"},
    "processes": {"worker", "relay", "flower", "serve"},
    "registry": {"models", "workers", "make-tiny-model"},
    "keys": {"keys"},
}
MODULES = [*GROUPS, "output", "options"]


def test_each_command_lives_in_the_module_of_its_group() -> None:
    found: dict[str, set[str]] = {}
    for name, command in cli.commands.items():
        module = command.callback.__module__ if command.callback else ""
        found.setdefault(module.removeprefix("genq.producer.cli."), set()).add(name)
    assert found == GROUPS


def test_no_module_of_the_cli_holds_a_console() -> None:
    for name in ["", *(f".{module}" for module in MODULES)]:
        module = importlib.import_module(f"genq.producer.cli{name}")
        consoles = [key for key, value in vars(module).items() if isinstance(value, Console)]
        assert consoles == [], f"genq.producer.cli{name}"


def test_console_script_is_the_packages_main() -> None:
    [script] = [ep for ep in entry_points(group="console_scripts") if ep.name == "genq"]
    assert script.value == "genq.producer.cli:main"
    assert script.load() is main is cli_package.main
    assert isinstance(cli, click.Group)
