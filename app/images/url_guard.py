"""The pure half of the URL check: which URLs are well formed, and which addresses the
server may contact. No I/O here, so every rule is tested without sending a packet."""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NewType

import httpx

from app.images.errors import ImageUrlInvalid
from app.images.schemas import MAX_URL_LENGTH

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_PORTS = {"http": 80, "https": 443}

# A URL that `normalise_image_url` accepted: the type says it need not be judged again.
NormalisedUrl = NewType("NormalisedUrl", httpx.URL)

# Not globally reachable, whatever `ipaddress.is_global` says in this Python version (its
# tables changed between patch releases). From the IANA special-purpose address registries.
BLOCKED_IPV4_NETWORKS: tuple[ipaddress.IPv4Network, ...] = tuple(
    ipaddress.IPv4Network(network)
    for network in (
        "0.0.0.0/8",  # "this network", includes the unspecified 0.0.0.0
        "10.0.0.0/8",  # private
        "100.64.0.0/10",  # carrier-grade NAT
        "127.0.0.0/8",  # loopback
        "169.254.0.0/16",  # link-local, includes the cloud metadata 169.254.169.254
        "172.16.0.0/12",  # private
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # documentation (TEST-NET-1)
        "192.88.99.0/24",  # deprecated 6to4 relay anycast
        "192.168.0.0/16",  # private
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",  # documentation (TEST-NET-2)
        "203.0.113.0/24",  # documentation (TEST-NET-3)
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, includes broadcast 255.255.255.255
    )
)

# Global unicast IPv6 is allocated from 2000::/3 only; everything outside it (::, ::1,
# ::/96, 100::/64, fc00::/7 ULA, fe80::/10 link-local, fec0::/10, ff00::/8 multicast...)
# is refused, after the IPv4-embedding forms below have been judged by their IPv4 address.
IPV6_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
BLOCKED_IPV6_NETWORKS: tuple[ipaddress.IPv6Network, ...] = tuple(
    ipaddress.IPv6Network(network)
    for network in (
        "2001::/23",  # IETF protocol assignments: Teredo, benchmarking 2001:2::/48, ORCHID...
        "2001:db8::/32",  # documentation
        "3fff::/20",  # documentation (RFC 9637)
        "5f00::/16",  # SRv6 SIDs
    )
)
IPV4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
SIX_TO_FOUR = ipaddress.IPv6Network("2002::/16")

_HOST_LABEL = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$")
_MAX_HOST_LENGTH = 253
_DIGITS = {8: "01234567", 10: "0123456789", 16: "0123456789abcdefABCDEF"}


def _ipv4_number(part: str) -> int:
    """One part of a WHATWG IPv4 address: decimal, 0x-hex or 0-octal. ValueError if none."""
    radix = 10
    if part[:2] in ("0x", "0X"):
        radix, part = 16, part[2:]
    elif len(part) > 1 and part.startswith("0"):
        radix, part = 8, part[1:]
    if part == "":
        return 0
    if not all(digit in _DIGITS[radix] for digit in part):
        raise ValueError(f"not a base-{radix} number")
    return int(part, radix)


def _ends_in_a_number(host: str) -> bool:
    parts = host.split(".")
    if parts[-1] == "":
        if len(parts) == 1:
            return False
        parts.pop()
    last = parts[-1]
    if last and last.isascii() and last.isdigit():
        return True
    try:
        _ipv4_number(last)
    except ValueError:
        return False
    return last[:2] in ("0x", "0X")


def parse_ipv4_literal(host: str) -> ipaddress.IPv4Address | None:
    """The IPv4 address a URL host means, in every spelling a browser accepts (WHATWG URL):
    `2130706433`, `0x7f000001`, `0177.0.0.1`, `127.1`. None for a host name; ValueError for a
    host that ends in a number yet is no valid address (`1.2.3.999`)."""
    if not _ends_in_a_number(host):
        return None
    parts = host.split(".")
    if parts[-1] == "":
        parts.pop()
    if len(parts) > 4 or any(part == "" for part in parts):
        raise ValueError("not an IPv4 address")
    numbers = [_ipv4_number(part) for part in parts]
    if any(number > 255 for number in numbers[:-1]) or numbers[-1] >= 256 ** (5 - len(numbers)):
        raise ValueError("IPv4 address part out of range")
    value = numbers[-1]
    for index, number in enumerate(numbers[:-1]):
        value += number * 256 ** (3 - index)
    return ipaddress.IPv4Address(value)


def parse_ip_literal(host: str) -> IPAddress | None:
    """The address an URL host spells literally (IPv6 without brackets, or IPv4 in any
    spelling), or None for a host name. ValueError for a malformed literal."""
    if ":" in host:
        return ipaddress.IPv6Address(host)
    return parse_ipv4_literal(host)


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for: IPv4-mapped, NAT64 or 6to4."""
    if address in IPV4_MAPPED:
        return address.ipv4_mapped
    if address in NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address in SIX_TO_FOUR:
        return address.sixtofour
    return None


def is_forbidden_address(address: IPAddress, exempt: Sequence[IPNetwork] = ()) -> bool:
    """Whether the server must not contact `address`: anything not globally routable,
    judged through IPv4-embedding IPv6 forms, unless an `exempt` network holds it."""
    if isinstance(address, ipaddress.IPv6Address) and address in IPV4_MAPPED:
        # The same destination as the IPv4 address it maps.
        address = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if any(address.version == network.version and address in network for network in exempt):
        return False
    if isinstance(address, ipaddress.IPv4Address):
        return (
            any(address in network for network in BLOCKED_IPV4_NETWORKS)
            or address.is_multicast
            or not address.is_global
        )
    if address.scope_id:
        return True
    embedded = embedded_ipv4(address)
    if embedded is not None:
        # NAT64 and 6to4 gateways deliver to the embedded IPv4 address: judge that.
        return is_forbidden_address(embedded, exempt)
    if address not in IPV6_GLOBAL_UNICAST:
        return True
    return any(address in network for network in BLOCKED_IPV6_NETWORKS) or address.is_multicast


def effective_port(url: httpx.URL) -> int:
    """The port a URL connects to, with the scheme's default filled in."""
    return url.port if url.port is not None else DEFAULT_PORTS[url.scheme]


@dataclass(frozen=True)
class UrlPolicy:
    """What the operator allows: networks exempt from the block, and the ports allowed."""

    exempt_networks: tuple[IPNetwork, ...] = ()
    allowed_ports: frozenset[int] = frozenset()

    @classmethod
    def build(cls, exempt_networks: Iterable[str], allowed_ports: Iterable[int]) -> UrlPolicy:
        networks = tuple(ipaddress.ip_network(network, strict=False) for network in exempt_networks)
        return cls(exempt_networks=networks, allowed_ports=frozenset(allowed_ports))

    def port_allowed(self, url: httpx.URL) -> bool:
        """Every port is allowed when no list is configured."""
        return not self.allowed_ports or effective_port(url) in self.allowed_ports

    def address_allowed(self, address: IPAddress) -> bool:
        return not is_forbidden_address(address, self.exempt_networks)


def _rewrite_ipv4_host(text: str) -> str:
    """Spell an IPv4 host canonically before httpx parses the URL: httpx refuses some
    spellings browsers accept (`0177.0.0.1`), and each must be judged by what it means."""
    try:
        parts = urllib.parse.urlsplit(text)
    except ValueError:
        return text
    netloc = parts.netloc
    if parts.scheme.lower() not in DEFAULT_PORTS or "@" in netloc or netloc.startswith("["):
        return text
    host, colon, port = netloc.partition(":")
    try:
        address = parse_ipv4_literal(host.lower())
    except ValueError as exc:
        raise ImageUrlInvalid("The image URL's host is not a valid IP address.") from exc
    if address is None:
        return text
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{address}{colon}{port}"))


def _too_long() -> ImageUrlInvalid:
    return ImageUrlInvalid(f"The image URL is longer than {MAX_URL_LENGTH} characters.")


def normalise_image_url(raw: str) -> NormalisedUrl:
    """Parse and normalise a user's URL, or refuse it: http(s) only, a host, no user name or
    password, at most 2048 characters; IDNA host names, IP literals spelt canonically,
    default ports and fragments dropped."""
    text = raw.strip()
    if len(text) > MAX_URL_LENGTH:
        raise _too_long()
    text = _rewrite_ipv4_host(text)
    try:
        url = httpx.URL(text)
    except (httpx.InvalidURL, ValueError, TypeError) as exc:
        raise ImageUrlInvalid() from exc
    if url.scheme not in DEFAULT_PORTS or not url.raw_host:
        raise ImageUrlInvalid()
    if url.userinfo:
        raise ImageUrlInvalid("The image URL must not contain a user name or password.")
    if url.port is not None and not 0 < url.port < 65536:
        raise ImageUrlInvalid("The image URL's port must be between 1 and 65535.")
    host = url.raw_host.decode("ascii").lower()
    try:
        literal = parse_ip_literal(host)
    except ValueError as exc:
        raise ImageUrlInvalid("The image URL's host is not a valid IP address.") from exc
    if isinstance(literal, ipaddress.IPv6Address) and literal.scope_id:
        raise ImageUrlInvalid("The image URL's host must not carry an IPv6 zone.")
    if literal is not None:
        url = url.copy_with(host=str(literal))
    elif len(host) > _MAX_HOST_LENGTH or not all(
        _HOST_LABEL.match(label) for label in host.removesuffix(".").split(".")
    ):
        raise ImageUrlInvalid("The image URL's host name is not valid.")
    if "#" in text:  # copy_with parses the URL again: only when there is a fragment to drop
        url = url.copy_with(fragment=None)
    if len(str(url)) > MAX_URL_LENGTH:
        raise _too_long()
    return NormalisedUrl(url)
