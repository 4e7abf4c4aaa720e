"""What the calibration scripts share: print a finished Markdown table, and save it if asked."""

from __future__ import annotations


def emit(lines: list[str], out: str | None) -> None:
    """Print the table ``lines`` (header rows first) as one block; also write it to ``out``."""
    table = "\n".join(lines)
    print("\n" + table)
    if out:
        with open(out, "w") as f:
            f.write(table + "\n")
