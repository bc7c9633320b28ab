"""What every settings module shares: the mesh's process names and ports, ``ConfigError`` and
the parsers of durations, sizes, counts and choices (each error names the setting it read)."""

from __future__ import annotations

import re
from typing import Any

SERVICES: tuple[str, ...] = ("coordinator", "warehouse", "inventory", "allocation", "logistics", "notify")
DEFAULT_PORTS: dict[str, int] = {name: 50050 + i for i, name in enumerate(SERVICES)}
METRICS_PORT_OFFSET = 1000
PARTICIPANTS: tuple[str, ...] = tuple(name for name in SERVICES if name != "coordinator")


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names it and its source."""


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: Any, *, name: str = "duration") -> float:
    """Seconds from ``1.5``, ``"500ms"``, ``"1s"``, ``"3m"`` or ``"1h"``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value)) if not isinstance(value, bool) else None
        if not match:
            raise ConfigError(f"{name}: expected a duration like 30s or 5m, got {value!r}")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds <= 0:
        raise ConfigError(f"{name}: must be positive, got {value!r}")
    return seconds


def parse_choice(value: Any, choices: tuple[str, ...], *, name: str) -> str:
    text = str(value).strip().lower()
    if text not in choices:
        raise ConfigError(f"{name}: expected one of {', '.join(choices)}, got {value!r}")
    return text


def parse_positive_int(value: Any, *, name: str) -> int:
    try:
        number = int(str(value))
    except ValueError:
        raise ConfigError(f"{name}: expected a whole number, got {value!r}") from None
    if number <= 0:
        raise ConfigError(f"{name}: must be positive, got {value!r}")
    return number


def parse_port(value: Any, *, name: str) -> int:
    number = parse_positive_int(value, name=name)
    if number > 65535:
        raise ConfigError(f"{name}: not a TCP port: {value!r}")
    return number


_BYTES = re.compile(r"^\s*(\d+)\s*(B|KiB|MiB|GiB|KB|MB|GB)?\s*$", re.IGNORECASE)
_BYTE_UNITS = {"b": 1, "kib": 1024, "mib": 1024**2, "gib": 1024**3, "kb": 1000, "mb": 1000**2, "gb": 1000**3}


def parse_bytes(value: Any, *, name: str) -> int:
    """Bytes from ``1048576``, ``"64KiB"``, ``"1MiB"`` or ``"2GB"``; positive."""
    match = _BYTES.match(str(value)) if not isinstance(value, bool) else None
    if not match:
        raise ConfigError(f"{name}: expected a size like 65536, 64KiB or 1MiB, got {value!r}")
    number = int(match.group(1)) * _BYTE_UNITS[(match.group(2) or "b").lower()]
    if number <= 0:
        raise ConfigError(f"{name}: must be positive, got {value!r}")
    return number
