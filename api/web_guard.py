"""The outermost layer of the server: which host names it answers to, which browser origins may
change anything, and the protective headers on every response.

Why each rule:
- **Host.** A web page the user merely visits can point its own host name at 127.0.0.1 (DNS
  rebinding) and then talk to Atelier with the browser's same-origin rights: generate, change
  settings, install an extension (which runs code). The browser still sends the attacker's name
  in `Host`, so the server answers only names it knows: `localhost` and loopback addresses; with
  `--listen` also any IP address (rebinding needs a name, so an address in `Host` is always a
  direct connection) and this machine's host name; and the names given with `--allowed-hosts`.
- **Origin.** A page on another site can still send a form POST straight to 127.0.0.1. Browsers
  add `Origin` to every such request, so a state-changing request (any method but GET, HEAD and
  OPTIONS, and every WebSocket) that carries one must come from this server's own origin or from
  an allowed host name. Clients that are not browsers send no `Origin` and are not affected.
- **Headers.** Frame protection (clickjacking: the UI inside a hostile page's invisible frame),
  `nosniff` (an uploaded file served back must not be run as script) and `Referrer-Policy:
  same-origin` (prompts in URLs stay on this server).

It is plain ASGI wrapped around the whole app, so it sees every route: the page, Gradio's event
and file routes, `/sdapi/v1`, `/controlnet`, the docs, and the server's own error pages.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOCAL_NAMES = frozenset({"localhost"})
PROTECTIVE_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-frame-options", b"SAMEORIGIN"),
    (b"content-security-policy", b"frame-ancestors 'self'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
)
_OURS = frozenset(name for name, _ in PROTECTIVE_HEADERS)
ALLOWED_HOSTS_FLAG = "--allowed-hosts"


def split_host(value: str) -> str | None:
    """The host name of a `Host` header or an origin's netloc, lower-case, without port or IPv6
    brackets; None when it is not a well-formed host[:port]."""
    value = value.strip().lower()
    if not value or any(c in value for c in "/@?#\\ \t"):
        return None
    if value.startswith("["):  # [::1]:7860
        end, rest = value.find("]"), value[value.find("]") + 1 :]
        if end < 0 or (rest and not rest.startswith(":")):
            return None
        host, port = value[1:end], rest[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return None
    else:
        host, _, port = value.partition(":")
        if ":" in port:
            return None
    if port and not port.isdigit():
        return None
    return host.rstrip(".") or None


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def machine_names() -> set[str]:
    """This machine's own names (what a browser on the network may type after `--listen`)."""
    names = set()
    for name in (socket.gethostname(), socket.getfqdn()):
        if name:
            names.add(name.lower().rstrip("."))
    return names


@dataclass(frozen=True)
class HostPolicy:
    """Which `Host` values the server answers and which `Origin`s may change state."""

    listen: bool = False
    allowed: frozenset[str] = frozenset()  # --allowed-hosts: exact names, and "*.suffix" patterns
    machine: frozenset[str] = field(default_factory=frozenset)  # host names, with --listen

    @classmethod
    def from_flags(cls, *, listen: bool, allowed_hosts: Iterable[str] = ()) -> HostPolicy:
        allowed = frozenset(h.strip().lower().rstrip(".") for h in allowed_hosts if h.strip())
        return cls(
            listen=listen, allowed=allowed, machine=frozenset(machine_names()) if listen else frozenset()
        )

    @property
    def allows_any(self) -> bool:
        return "*" in self.allowed

    def _named(self, host: str) -> bool:
        """`host` is one of the --allowed-hosts names (or matches a `*.suffix` pattern)."""
        if self.allows_any or host in self.allowed:
            return True
        return any(p.startswith("*.") and host.endswith(p[1:]) for p in self.allowed)

    def host_allowed(self, header: str | None) -> bool:
        host = split_host(header or "")
        if host is None:
            return self.allows_any
        if self._named(host) or host in LOCAL_NAMES:
            return True
        address = _ip(host)
        if address is not None:
            return self.listen or address.is_loopback
        return self.listen and host in self.machine

    def origin_allowed(self, origin: str, host_header: str | None) -> bool:
        """A browser's `Origin` for a state-changing request: this server's own origin (the same
        host and port the request was sent to) or a host named with --allowed-hosts."""
        if origin.strip().lower() == "null":  # sandboxed frames, file:// pages: never ours
            return self.allows_any
        parts = urlsplit(origin.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return False
        host = split_host(parts.netloc)
        if host is None:
            return False
        if self._named(host):
            return True
        return host_header is not None and parts.netloc.lower() == host_header.strip().lower()


class WebGuard:
    """ASGI middleware: refuses unknown hosts and foreign origins with a 403 JSON body, and adds
    the protective headers to every HTTP response."""

    def __init__(self, app: Any, policy: HostPolicy):
        self.app, self.policy = app, policy

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)  # lifespan
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}
        refusal = self.refusal(scope, headers)
        if refusal is not None:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008, "reason": refusal[:120]})
            else:
                await _forbidden(send, refusal)
            return
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                kept = [(k, v) for k, v in message.get("headers", ()) if k.lower() not in _OURS]
                message = {**message, "headers": [*kept, *PROTECTIVE_HEADERS]}
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def refusal(self, scope: dict, headers: dict[str, str]) -> str | None:
        """Why this request is refused, or None."""
        host = headers.get("host")
        if not self.policy.host_allowed(host):
            shown = (host or "")[:100]
            name = split_host(shown) or "NAME"
            return (
                f"Atelier does not answer requests for the host name {shown!r}. Open it as "
                "http://127.0.0.1 or http://localhost, or, when other machines should reach it, "
                f"start it with --listen and name the host with {ALLOWED_HOSTS_FLAG} {name}"
            )
        origin = headers.get("origin")
        state_changing = scope["type"] == "websocket" or scope.get("method", "GET") not in SAFE_METHODS
        if origin is not None and state_changing and not self.policy.origin_allowed(origin, host):
            return (
                f"cross-site request refused: a page from {origin[:100]!r} may not change anything "
                f"here (allow its host name with {ALLOWED_HOSTS_FLAG})"
            )
        return None


async def _forbidden(send: Any, message: str) -> None:
    body = json.dumps({"error": "Forbidden", "detail": message}).encode("utf-8")
    await send(
        {
            "type": "http.response.start",
            "status": 403,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *PROTECTIVE_HEADERS,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
