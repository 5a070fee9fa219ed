"""Who may read /metrics: callers from METRICS_ALLOWED_IPS (addresses or networks), or with
`Authorization: Bearer <METRICS_TOKEN>`. With neither set, /metrics does not exist (404).

Read by settings.py, so only the standard library here."""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Mapping, Sequence

from controlplane.environment import ConfigurationError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

TOKEN_MIN_LENGTH = 16


def metrics_networks(env: Mapping[str, str]) -> list[Network]:
    """METRICS_ALLOWED_IPS: comma-separated addresses or networks (10.0.0.0/8, ::1)."""
    networks: list[Network] = []
    for part in env.get("METRICS_ALLOWED_IPS", "").split(","):
        text = part.strip()
        if not text:
            continue
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ConfigurationError(
                f"METRICS_ALLOWED_IPS: {text!r} is not an IP address or network"
            ) from None
    return networks


def metrics_token(env: Mapping[str, str]) -> str:
    """METRICS_TOKEN: a bearer token for the scraper, at least TOKEN_MIN_LENGTH characters."""
    token = env.get("METRICS_TOKEN", "").strip()
    if token and len(token) < TOKEN_MIN_LENGTH:
        raise ConfigurationError(
            f"METRICS_TOKEN: at least {TOKEN_MIN_LENGTH} characters, got {len(token)}"
        )
    return token


def metrics_allowed(
    *, remote_addr: str, authorization: str, networks: Sequence[Network], token: str
) -> bool:
    if token:
        scheme, _, given = authorization.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip(), token):
            return True
    if networks and remote_addr:
        try:
            address = ipaddress.ip_address(remote_addr)
        except ValueError:
            return False
        return any(address in network for network in networks)
    return False
