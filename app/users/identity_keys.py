"""The keys that make a username or an email unique: what two accounts may not share.

A username's key is the Unicode TR39 confusable skeleton of its NFKC case-folded form
(computed by the `disarm` library from Unicode's confusables table), so names that look
alike collide: `r\u043e\u043et` (with Cyrillic `o`), `ROOT`, `r00t` and `rOOt` are all `root`. The
skeleton is for comparison only; the name is shown as it was typed.
"""

from __future__ import annotations

import unicodedata
from typing import Annotated

from disarm import skeleton_key
from pydantic import AfterValidator

from app.text import Username as UsernameText

# The length of users.username_key: a key longer than its column must be a 422, not a
# database error (NFKC and case folding can make a name longer: `ß` is `ss`, one `ﷺ` is 18).
USERNAME_KEY_MAX_LENGTH = 150


def _nfkc(value: str) -> str:
    return unicodedata.normalize("NFKC", value)


def fold_username(username: str) -> str:
    """NFKC, then case-folded (NFKC again, as case folding can leave a string that is not
    normalised)."""
    return _nfkc(_nfkc(username).casefold())


def username_key(username: str) -> str:
    """The form username uniqueness is judged on: the TR39 skeleton of the folded name, with
    TR39's digit classes (`0` is `o`, `1` is `l`)."""
    return skeleton_key(fold_username(username), digit_policy="tr39")


def email_key(email: str) -> str:
    """The form email uniqueness is judged on."""
    return email.strip().casefold()


def _key_fits(username: str) -> str:
    if len(username_key(username)) > USERNAME_KEY_MAX_LENGTH:
        raise ValueError(
            f"is too long once normalised for comparison (more than {USERNAME_KEY_MAX_LENGTH}"
            " characters)"
        )
    return username


Username = Annotated[UsernameText, AfterValidator(_key_fits)]
"""A username as every input schema takes it: the format of `app.text.Username`, and a key
that fits its column."""
