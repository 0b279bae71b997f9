"""Which push endpoints tidings may reach: only public addresses, unless
``web_push.allow_private_endpoints`` says otherwise.

A page chooses the endpoint it registers, so without this check a page could make tidings
post to its own network (server-side request forgery). The host is judged twice: when the
subscription is registered (a clear refusal for the page) and by the resolver of every
request, so a name that later resolves elsewhere (DNS rebinding) is still refused.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

__all__ = ["ForbiddenAddress", "GuardedResolver", "check_host", "is_public"]


class ForbiddenAddress(OSError):
    """A push endpoint's host resolved to an address tidings may not reach."""


def is_public(address: str) -> bool:
    """Whether ``address`` is a globally routable unicast address (not loopback, private,
    link-local, shared, reserved, multicast or unspecified; an IPv4-mapped IPv6 address is
    judged as its IPv4 address)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


async def check_host(host: str, port: int) -> str | None:
    """Why ``host`` may not be reached; None when every address it resolves to is public."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return f"the endpoint's host {host!r} does not resolve"
    for info in infos:
        if not is_public(str(info[4][0])):
            return f"the endpoint's host {host!r} is not a public address"
    return None


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver, refusing a host any of whose addresses is not public."""

    def __init__(self) -> None:
        self._inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        for result in results:
            if not is_public(result["host"]):
                raise ForbiddenAddress(f"push endpoint host {host!r} is not a public address")
        return results

    async def close(self) -> None:
        await self._inner.close()
