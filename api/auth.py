"""HTTP Basic authentication for the API (`--api-auth`), and the credential format it shares with
`--gradio-auth`: `user:password[,user2:password2]`.

Error messages name an entry by its position, never by its text: the text holds a password and
startup errors end up in logs and bug reports.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Callable, Iterable

from fastapi import HTTPException, Request

# Longer headers are not credentials anyone typed; refuse them before decoding.
_MAX_HEADER_LENGTH = 8192


def parse_credentials(text: str | None) -> list[tuple[str, str]]:
    """[(user, password), ...] from `user:pass[,user2:pass2]`; [] for None or blank text.

    A password may contain ':' (only the first one separates it from the user), not ','. Spaces
    around an entry are dropped, spaces inside it (even around the ':') are part of the user name
    or password. Empty entries, as left by a trailing comma or line break, are skipped.
    """
    if not text or not text.strip():
        return []
    credentials = []
    # Line breaks separate entries too, as in A1111's --gradio-auth-path files.
    for index, entry in enumerate(text.replace("\n", ",").split(","), start=1):
        entry = entry.strip()
        if not entry:
            continue
        user, colon, password = entry.partition(":")
        if not colon:
            raise ValueError(f"credential entry {index} is not in the form user:password")
        if not user:
            raise ValueError(f"credential entry {index} has an empty user name")
        credentials.append((user, password))
    return credentials


class BasicAuth:
    """Checks an `Authorization: Basic ...` header against a fixed list of users."""

    def __init__(self, credentials: Iterable[tuple[str, str]]):
        self._pairs = [(user.encode("utf-8"), password.encode("utf-8")) for user, password in credentials]
        if not self._pairs:
            # An empty list would lock every client out; the caller means "no auth" (None) instead.
            raise ValueError("BasicAuth needs at least one user:password pair")

    def check(self, authorization_header: str | None) -> bool:
        """True when the header carries one of the configured user/password pairs."""
        if not authorization_header or len(authorization_header) > _MAX_HEADER_LENGTH:
            return False
        scheme, _, token = authorization_header.strip().partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(token.strip(), validate=True)
        except (binascii.Error, ValueError):  # ValueError: non-ASCII characters
            return False
        # Compared as bytes: clients disagree on the charset (RFC 7617 says UTF-8, some send Latin-1),
        # and no decoding step can fail or normalise differently from the configured value.
        user, colon, password = decoded.partition(b":")
        if not colon:
            return False
        # Every pair is compared, user and password both, with no early exit: how long this takes
        # must not tell whether the user name exists or which pair came close.
        matched = False
        for known_user, known_password in self._pairs:
            user_ok = hmac.compare_digest(user, known_user)
            password_ok = hmac.compare_digest(password, known_password)
            matched |= user_ok & password_ok
        return matched


def require_basic_auth(auth: BasicAuth | None) -> Callable[[Request], None]:
    """A FastAPI dependency: `Depends(require_basic_auth(auth))`; lets everything through when
    `auth` is None (no --api-auth given)."""

    def dependency(request: Request) -> None:
        if auth is None:
            return
        if not auth.check(request.headers.get("Authorization")):
            # WWW-Authenticate makes browsers show their login prompt instead of a bare error.
            raise HTTPException(
                status_code=401,
                detail="Incorrect username or password",
                headers={"WWW-Authenticate": "Basic"},
            )

    return dependency
