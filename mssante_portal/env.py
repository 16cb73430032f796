"""Strict parsers for settings read from the environment.

Every setting of the portal comes from an environment variable (``.env.example`` lists them).
A malformed value stops the process at start with a message naming the variable, rather than
being silently replaced by a default. An empty value means "use the default", as an absent one
does: ``.env.example`` copied as it is leaves every default in force.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path


class EnvError(ValueError):
    """A variable is present but malformed, or required and missing."""


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def env_str(name: str, default: str | None = None, *, required: bool = False) -> str:
    """The variable's value, or the content of the file named by ``<name>_FILE`` (secrets)."""
    file_var = os.environ.get(f"{name}_FILE")
    if file_var:
        try:
            return Path(file_var).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise EnvError(f"{name}_FILE={file_var!r} cannot be read: {exc}") from exc
    value = os.environ.get(name)
    if value is None or not value.strip():
        if required:
            raise EnvError(f"{name} is required")
        return default if default is not None else ""
    return value


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    lowered = raw.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise EnvError(f"{name}={raw!r} is not a boolean (use true/false)")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise EnvError(f"{name}={raw!r} is not an integer") from exc
    if minimum is not None and value < minimum:
        raise EnvError(f"{name}={value} is below {minimum}")
    return value


def env_list(name: str, default: list[str] | None = None) -> list[str]:
    """Comma-separated list; empty items are dropped."""
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return list(default or [])
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = (os.environ.get(name) or "").strip().lower() or default
    if value not in choices:
        raise EnvError(f"{name}={value!r} must be one of {', '.join(choices)}")
    return value


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def env_networks(name: str, default: list[str] | None = None) -> list[Network]:
    """Comma-separated addresses or CIDR networks (``10.0.0.0/8, ::1``)."""
    networks = []
    for item in env_list(name, default):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError as exc:
            raise EnvError(f"{name}: {item!r} is not an IP address or network") from exc
    return networks
