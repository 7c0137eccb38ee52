"""What a command's ``--help`` must show: every option with a line of help (parsed from argparse's layout)."""
from __future__ import annotations

import re

_OPTION = re.compile(r"^  (-\S.*?)(?:\s{2,}(\S.*))?$")  # "  --flag METAVAR      its help", help optional
_CONTINUED = re.compile(r"^\s{3,}[^\s-]")  # argparse puts the help of a long option on the next line


def options_without_help(help_text: str) -> list[str]:
    """The options of ``--help`` output that have no help text."""
    lines = help_text.splitlines()
    missing = []
    for i, line in enumerate(lines):
        m = _OPTION.match(line)
        if m is None or m.group(2):
            continue
        if i + 1 < len(lines) and _CONTINUED.match(lines[i + 1]):
            continue
        missing.append(m.group(1).split(",")[-1].split()[0])
    return missing

