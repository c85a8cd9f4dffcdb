"""Who the client is: one trust setting (TRUSTED_PROXIES) for every reader of the address.

The server runs without its own proxy-header handling (uvicorn's believes loopback by
default, whatever the app is told); this middleware is the only place `X-Forwarded-For`
and `X-Forwarded-Proto` are read, and it rewrites the request's client and scheme for
everything inside it: the rate limits, the access log and the /metrics network check.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from starlette.types import ASGIApp, Receive, Scope, Send

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_FORWARDED_SCHEMES = {"http": "http", "https": "https", "ws": "ws", "wss": "wss"}


def is_trusted(address: str, trusted: Sequence[Network]) -> bool:
    """Whether `address` is one of our proxies."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


def client_address(peer: str | None, forwarded_for: str | None, trusted: Sequence[Network]) -> str:
    """The address of the client: the peer itself, or, when the peer is a trusted proxy, the
    nearest untrusted address in `X-Forwarded-For` (read from the right, since only entries
    appended by our own proxies can be believed)."""
    address = peer or "unknown"
    if not trusted or not forwarded_for or not is_trusted(address, trusted):
        return address
    for hop in reversed([part.strip() for part in forwarded_for.split(",")]):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            # A malformed entry: nothing to its left can be trusted either.
            return address
        address = hop
        if not is_trusted(hop, trusted):
            return hop
    return address


class ProxyHeadersMiddleware:
    """Replace the peer with the forwarded client, and the scheme with the forwarded one,
    only when the peer is in TRUSTED_PROXIES; from anyone else the headers change nothing."""

    def __init__(self, app: ASGIApp, trusted: Sequence[Network]) -> None:
        self.app = app
        self.trusted = tuple(trusted)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.trusted and scope["type"] in ("http", "websocket"):
            scope = forwarded_scope(scope, self.trusted)
        await self.app(scope, receive, send)


def forwarded_scope(scope: Scope, trusted: Sequence[Network]) -> Scope:
    """`scope` with the forwarded client and scheme when its peer is a trusted proxy (a
    copy); otherwise `scope` itself. (The app's gateway middleware calls this.)"""
    peer = scope.get("client")
    if peer is None or not is_trusted(peer[0], trusted):
        return scope
    return scope_from_trusted_peer(scope, trusted)


def scope_from_trusted_peer(scope: Scope, trusted: Sequence[Network]) -> Scope:
    """`forwarded_scope` for a scope whose peer is already known to be a trusted proxy."""
    peer = scope["client"]
    forwarded_for_parts: list[bytes] = []
    forwarded_proto: bytes | None = None
    for name, value in scope["headers"]:
        if name == b"x-forwarded-for":
            forwarded_for_parts.append(value)
        elif name == b"x-forwarded-proto" and forwarded_proto is None:
            forwarded_proto = value
    if not forwarded_for_parts and forwarded_proto is None:
        return scope
    scope = dict(scope)
    forwarded_for = b",".join(forwarded_for_parts).decode("latin-1")
    if forwarded_for:
        address = client_address(peer[0], forwarded_for, trusted)
        if address != peer[0]:
            scope["client"] = (address, 0)
    if forwarded_proto:
        # The entry our own proxy appended is the rightmost one.
        last = forwarded_proto.decode("latin-1").rsplit(",", 1)[-1].strip().lower()
        scheme = _FORWARDED_SCHEMES.get(last)
        if scheme is not None:
            if scope["type"] == "websocket":
                scheme = {"http": "ws", "https": "wss"}.get(scheme, scheme)
            scope["scheme"] = scheme
    return scope
