"""An error as one line of a message: the failures the pipeline raises quote the error they come
from by its first line, so a message stays one line whatever the library wrote."""

from __future__ import annotations


def first_line(error: BaseException | None, text: str | None = None) -> str:
    """The first non-empty line of ``text`` (by default the error's own text, a Failure's
    description), or the error's type name when that has none: never an empty quote, never an
    ``IndexError`` in place of the failure being described."""
    if text is None:
        description = getattr(error, "description", None)
        text = description if isinstance(description, str) and description.strip() else str(error)
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return type(error).__name__ if error is not None else ""
