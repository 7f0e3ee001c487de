"""Fetching an item's image from a URL the client gave, without becoming a proxy into the server's network.

A write request may name its image by URL; the server fetches it. Left unguarded, that lets any client
make the server request ``http://169.254.169.254/`` (cloud credentials), ``http://127.0.0.1:5432`` or an
intranet host (SSRF). So, for the URL and again for every redirect:

- only ``http``/``https``, no user:password in the URL;
- the host name is resolved ONCE, every address it resolves to must be public (not private, loopback,
  link-local, multicast, reserved, unspecified, CGNAT, IPv4-mapped forms of those...) unless it lies in a
  network the operator allowed (``MMSEARCH_FETCH_ALLOW_NETWORKS``), and the connection goes to that very
  address (the Host header and TLS SNI/certificate check still use the name), so a second DNS answer
  cannot swap in another address (DNS rebinding);
- at most ``MMSEARCH_FETCH_MAX_REDIRECTS`` redirects, one overall time budget (``MMSEARCH_FETCH_TIMEOUT``),
  at most ``MMSEARCH_MAX_UPLOAD_BYTES`` read (declared or streamed), and an ``image/*`` content type;
  the bytes are then decoded like an upload (the content decides the format).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Callable, Sequence
from urllib.parse import urljoin, urlsplit

import httpx

from mmsearch.errors import ImageFetchError

log = logging.getLogger(__name__)

Resolver = Callable[[str, int], Sequence[str]]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class FetchPolicy:
    allow_networks: tuple[Network, ...] = ()
    timeout: float = 10.0
    max_redirects: int = 3
    max_bytes: int = 20 * 1024 * 1024


def parse_networks(text: str) -> tuple[Network, ...]:
    """``MMSEARCH_FETCH_ALLOW_NETWORKS``: comma-separated addresses or CIDR networks."""
    networks = []
    for part in (p.strip() for p in (text or "").split(",")):
        if part:
            networks.append(ipaddress.ip_network(part, strict=False))
    return tuple(networks)


_RESOLVERS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="mmsearch-resolve")
RESOLVE_TIMEOUT = 5.0  # getaddrinfo has no timeout of its own: a lookup runs on a helper thread, waited for this long


def system_resolver(host: str, port: int) -> list[str]:
    lookup = _RESOLVERS.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
    try:
        infos = lookup.result(timeout=RESOLVE_TIMEOUT)
    except FutureTimeout as exc:
        raise ImageFetchError(f"image_url host {host!r} did not resolve within {RESOLVE_TIMEOUT:g}s") from exc
    except (OSError, UnicodeError) as exc:
        raise ImageFetchError(f"image_url host {host!r} cannot be resolved") from exc
    return list(dict.fromkeys(info[4][0] for info in infos))


def address_refused(address: str, allow: Sequence[Network]) -> bool:
    """True unless the address is public, or inside a network the operator allowed."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    if any(ip in net for net in allow):
        return False
    return not ip.is_global or ip.is_multicast


@dataclass(frozen=True)
class _Target:
    url: str
    scheme: str
    host: str
    port: int


def _target(url: str) -> _Target:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ImageFetchError(f"image_url is not a valid URL: {exc}") from exc
    if parts.scheme not in ("http", "https"):
        raise ImageFetchError("image_url must be an http:// or https:// URL")
    if not parts.hostname:
        raise ImageFetchError("image_url has no host")
    if parts.username is not None or parts.password is not None:
        raise ImageFetchError("image_url must not carry a user name or password")
    return _Target(url, parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80))


def _checked_address(target: _Target, policy: FetchPolicy, resolve: Resolver) -> str:
    addresses = resolve(target.host, target.port)
    if not addresses:
        raise ImageFetchError(f"image_url host {target.host!r} cannot be resolved")
    refused = [a for a in addresses if address_refused(a, policy.allow_networks)]
    if refused:
        log.warning("refused to fetch %s: it resolves to the non-public address %s", target.url, refused[0])
        raise ImageFetchError(f"image_url host {target.host!r} resolves to a private, loopback or otherwise non-public address; refused")
    return addresses[0]


def fetch_image_bytes(url: str, policy: FetchPolicy, resolve: Resolver = system_resolver) -> tuple[bytes, str]:
    """-> (the body, the final URL). Raises ImageFetchError with a reason a client may see."""
    deadline = time.monotonic() + policy.timeout
    with httpx.Client(trust_env=False, follow_redirects=False, verify=True) as client:
        for _hop in range(policy.max_redirects + 1):
            target = _target(url)
            address = _checked_address(target, policy, resolve)
            location = _get(client, target, address, policy, deadline)
            if isinstance(location, bytes):
                return location, url
            url = urljoin(url, location)
    raise ImageFetchError(f"image_url redirected more than {policy.max_redirects} times")


def _remaining(deadline: float, policy: FetchPolicy) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise ImageFetchError(f"image_url took longer than {policy.timeout:g}s")
    return left


def _get(client: httpx.Client, target: _Target, address: str, policy: FetchPolicy, deadline: float) -> bytes | str:
    """One request to ``address`` for ``target``: the body (bytes) or a redirect's Location (str)."""
    pinned = httpx.URL(target.url).copy_with(host=address)
    default_port = target.port == (443 if target.scheme == "https" else 80)
    host_header = target.host if ":" not in target.host else f"[{target.host}]"
    headers = {"Host": host_header if default_port else f"{host_header}:{target.port}", "Accept": "image/*"}
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    try:
        request = client.build_request("GET", pinned, headers=headers, extensions=extensions,
                                       timeout=httpx.Timeout(_remaining(deadline, policy)))
        response = client.send(request, stream=True)
        try:
            return _body_or_location(response, policy, deadline)
        finally:
            response.close()
    except httpx.TimeoutException as exc:
        raise ImageFetchError(f"image_url took longer than {policy.timeout:g}s") from exc
    except httpx.HTTPError as exc:
        raise ImageFetchError(f"image_url could not be fetched: {type(exc).__name__}") from exc


def _body_or_location(response: httpx.Response, policy: FetchPolicy, deadline: float) -> bytes | str:
    if response.is_redirect:
        location = response.headers.get("location")
        if not location:
            raise ImageFetchError(f"image_url answered {response.status_code} without a Location")
        return location
    if response.status_code != 200:
        raise ImageFetchError(f"image_url answered HTTP {response.status_code}")
    content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if not content_type.startswith("image/"):
        raise ImageFetchError(f"image_url is not an image (content type {content_type or 'missing'!r})")
    declared = response.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > policy.max_bytes:
        raise ImageFetchError(f"image_url is larger than {policy.max_bytes} bytes")
    return _read_capped(response, policy, deadline)


def _read_capped(response: httpx.Response, policy: FetchPolicy, deadline: float) -> bytes:
    body = bytearray()
    for chunk in response.iter_bytes(64 * 1024):
        body += chunk
        if len(body) > policy.max_bytes:
            raise ImageFetchError(f"image_url is larger than {policy.max_bytes} bytes")
        _remaining(deadline, policy)
    if not body:
        raise ImageFetchError("image_url returned an empty body")
    return bytes(body)
