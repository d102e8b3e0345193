"""BENCHMARKS.md as a set of sections, each owned by the script that writes it."""
from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Sequence


def command_line(command: str, argv: Sequence[str]) -> str:
    """The shell command that reran a benchmark: `command` and its arguments, each quoted as the
    shell needs (a BENCHMARKS.md section quotes it to be pasted)."""
    return " ".join([command, *map(shlex.quote, argv)])


def write_section(path: Path, heading: str, section: str) -> None:
    """Puts `section` (a Markdown block starting with the level-2 `heading` line) into the
    file `path`, replacing an earlier section with that heading and keeping every other
    section; creates the file with a "# Benchmarks" title if missing."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(heading)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section.rstrip("\n") + "\n\n", text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text.rstrip("\n") + "\n")
