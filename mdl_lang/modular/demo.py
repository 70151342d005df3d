"""`mdl demo`: the digits walk-through, end to end."""

from __future__ import annotations

import argparse


def add_demo_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `mdl demo` to `mdl`."""
