"""The pure URL and address judge: every range, every spelling, no packets sent."""

from __future__ import annotations

import ipaddress

import pytest

from app.images.errors import ImageUrlInvalid
from app.images.url_guard import (
    UrlPolicy,
    is_forbidden_address,
    normalise_image_url,
    parse_ipv4_literal,
)


@pytest.mark.parametrize(
    "address",
    [
        # IPv4
        "0.0.0.0",  # noqa: S104 - unspecified, judged, never bound
        "0.1.2.3",  # "this network"
        "10.0.0.1",  # private
        "172.16.0.1",
        "172.31.255.254",
        "192.168.1.1",
        "100.64.0.1",  # carrier-grade NAT
        "100.127.255.254",
        "127.0.0.1",  # loopback
        "127.255.255.254",
        "169.254.169.254",  # link-local: cloud metadata
        "169.254.0.1",
        "192.0.0.8",  # IETF protocol assignments
        "192.0.2.10",  # documentation
        "198.51.100.7",
        "203.0.113.9",
        "198.18.0.1",  # benchmarking
        "198.19.255.254",
        "192.88.99.1",  # 6to4 relay anycast
        "224.0.0.1",  # multicast
        "239.255.255.250",
        "240.0.0.1",  # reserved
        "255.255.255.255",  # broadcast
        # IPv6
        "::",  # unspecified
        "::1",  # loopback
        "::7f00:1",  # IPv4-compatible (deprecated)
        "fd00::1",  # unique local
        "fc00::1",
        "fe80::1",  # link-local
        "fec0::1",  # site-local (deprecated)
        "ff02::1",  # multicast
        "ff0e::1",
        "100::1",  # discard-only
        "2001:db8::1",  # documentation
        "3fff::1",
        "2001:2::1",  # benchmarking
        "2001::1",  # Teredo
        "5f00::1",  # SRv6
        "4000::1",  # outside global unicast 2000::/3
        # IPv6 forms that embed a forbidden IPv4 address
        "::ffff:10.0.0.1",  # IPv4-mapped
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
        "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
        "64:ff9b:1::a00:1",  # local-use NAT64
        "2002:a00:1::",  # 6to4 of 10.0.0.1
        "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
        "2002:7f00:1::1",  # 6to4 of 127.0.0.1
    ],
)
def test_address_that_is_not_globally_routable_is_forbidden(address: str) -> None:
    assert is_forbidden_address(ipaddress.ip_address(address)) is True


@pytest.mark.parametrize(
    "address",
    [
        "8.8.8.8",
        "1.1.1.1",
        "93.184.215.14",
        "100.128.0.1",  # just past carrier-grade NAT
        "172.32.0.1",  # just past 172.16/12
        "2606:4700:4700::1111",
        "2a00:1450:4001:80b::200e",
        "::ffff:8.8.8.8",  # IPv4-mapped public address
        "64:ff9b::808:808",  # NAT64 of 8.8.8.8
        "2002:808:808::1",  # 6to4 of 8.8.8.8
    ],
)
def test_globally_routable_address_is_allowed(address: str) -> None:
    assert is_forbidden_address(ipaddress.ip_address(address)) is False


def test_scoped_ipv6_address_is_forbidden() -> None:
    assert is_forbidden_address(ipaddress.IPv6Address("2606:4700:4700::1111%eth0")) is True


def test_allowed_networks_exempt_exactly_what_they_hold() -> None:
    policy = UrlPolicy.build(["127.0.0.1/32", "fd00:1::/64"], [])
    assert policy.address_allowed(ipaddress.ip_address("127.0.0.1"))
    # The IPv4-mapped spelling reaches the same host, so the exemption covers it too.
    assert policy.address_allowed(ipaddress.ip_address("::ffff:127.0.0.1"))
    assert policy.address_allowed(ipaddress.ip_address("fd00:1::5"))
    assert not policy.address_allowed(ipaddress.ip_address("127.0.0.2"))
    assert not policy.address_allowed(ipaddress.ip_address("::1"))
    assert not policy.address_allowed(ipaddress.ip_address("fd00:2::5"))
    assert not policy.address_allowed(ipaddress.ip_address("169.254.169.254"))


def test_ports_are_limited_only_when_configured() -> None:
    anything = UrlPolicy.build([], [])
    https_only = UrlPolicy.build([], [443])
    assert anything.port_allowed(normalise_image_url("http://example.com:8080/a.png"))
    assert https_only.port_allowed(normalise_image_url("https://example.com/a.png"))
    assert https_only.port_allowed(normalise_image_url("https://example.com:443/a.png"))
    assert not https_only.port_allowed(normalise_image_url("http://example.com/a.png"))
    assert not https_only.port_allowed(normalise_image_url("https://example.com:8443/a.png"))


@pytest.mark.parametrize(
    ("host", "meaning"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),  # one decimal number
        ("0x7f000001", "127.0.0.1"),  # one hex number
        ("0X7F000001", "127.0.0.1"),
        ("017700000001", "127.0.0.1"),  # one octal number
        ("0177.0.0.1", "127.0.0.1"),  # octal part
        ("0x7f.0.0.1", "127.0.0.1"),  # hex part
        ("127.1", "127.0.0.1"),  # short: the last part fills the rest
        ("127.0.1", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("127.0.0.1.", "127.0.0.1"),  # trailing dot
        ("169.254.43518", "169.254.169.254"),
        ("0xa9fea9fe", "169.254.169.254"),
        ("2852039166", "169.254.169.254"),
        ("012.0.0.1", "10.0.0.1"),
        ("167772161", "10.0.0.1"),
        ("0", "0.0.0.0"),  # noqa: S104
        ("0x", "0.0.0.0"),  # noqa: S104
    ],
)
def test_every_ipv4_spelling_means_its_address(host: str, meaning: str) -> None:
    assert parse_ipv4_literal(host) == ipaddress.IPv4Address(meaning)


@pytest.mark.parametrize("host", ["example.com", "images.example", "localhost", "a1.b2"])
def test_host_names_are_not_ipv4_literals(host: str) -> None:
    assert parse_ipv4_literal(host) is None


@pytest.mark.parametrize(
    "host", ["1.2.3.999", "1.2.3.4.5", "256.0.0.1", "0x100000000", "08.0.0.1", "foo.123", "1..2"]
)
def test_host_that_ends_in_a_number_but_is_no_address_is_refused(host: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - every malformed spelling, one error
        parse_ipv4_literal(host)


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("HTTP://Example.COM:80/a.png#frag", "http://example.com/a.png"),
        ("https://example.com:443/a.png", "https://example.com/a.png"),
        ("https://example.com:8443/a.png?x=1", "https://example.com:8443/a.png?x=1"),
        ("http://bücher.example/kitten.png", "http://xn--bcher-kva.example/kitten.png"),
        ("http://2130706433/a.png", "http://127.0.0.1/a.png"),
        ("http://0x7f000001:8080/a.png", "http://127.0.0.1:8080/a.png"),
        ("http://0177.0.0.1/a.png", "http://127.0.0.1/a.png"),
        ("http://127.1/a.png", "http://127.0.0.1/a.png"),
        ("http://127\u30020\u30020\u30021/a.png", "http://127.0.0.1/a.png"),
        ("http://[::FFFF:7F00:1]/a.png", "http://[::ffff:7f00:1]/a.png"),
        ("  https://example.com/a.png  ", "https://example.com/a.png"),
    ],
)
def test_urls_are_normalised_before_anything_else(raw: str, normal: str) -> None:
    assert str(normalise_image_url(raw)) == normal


@pytest.mark.parametrize(
    "raw",
    [
        "ftp://example.com/a.png",
        "file:///etc/passwd",
        "gopher://example.com/",
        "http:///a.png",
        "//example.com/a.png",
        "http://user:pass@example.com/a.png",
        "http://user@example.com/a.png",
        "http://example.com\\@127.0.0.1/a.png",
        "http://1.2.3.999/a.png",
        "http://foo.123/a.png",
        "http://%31%32%37.0.0.1/a.png",
        "http://exa mple.com/a.png",
        "http://[fe80::1%25eth0]/a.png",
        "http://example.com:0/a.png",
        "http://example.com:70000/a.png",
        "http://example.com/" + "a" * 2048,
    ],
)
def test_malformed_or_unsupported_urls_are_invalid(raw: str) -> None:
    with pytest.raises(ImageUrlInvalid):
        normalise_image_url(raw)
