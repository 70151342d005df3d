"""`mdl decompose` and `mdl demo`."""

from __future__ import annotations

import argparse


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this package's subcommands to `mdl`."""
    from mdl_lang.modular.demo import add_demo_command

    add_demo_command(commands)
