"""Text that is safe to store: the string types every input schema uses."""

from __future__ import annotations

import unicodedata
from typing import Annotated

from pydantic import AfterValidator, StringConstraints


def _storable(value: str) -> str:
    # PostgreSQL cannot store NUL in text, and a lone surrogate cannot be encoded as UTF-8:
    # both must be a validation error here, not a database error later.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("must be valid Unicode text (no unpaired surrogates)") from exc
    return value


def _nfkc(value: str) -> str:
    return unicodedata.normalize("NFKC", value)


StorableStr = Annotated[str, AfterValidator(_storable)]
"""Any text we store: no NUL characters, no unpaired surrogates."""

Username = Annotated[
    str,
    AfterValidator(_storable),
    AfterValidator(_nfkc),
    StringConstraints(min_length=3, max_length=150, pattern=r"^[\w.@+-]+$"),
]
"""3 to 150 letters, digits and `.@+-_`, in Unicode normal form NFKC."""
