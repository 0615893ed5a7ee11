"""Validation helpers for configuration objects: one error shape naming field, value and fix."""

from __future__ import annotations

from typing import Any

from itemvec.util.errors import ConfigError


def require(ok: bool, name: str, rule: str, value: Any, fix: str = "") -> None:
    """Raise ``ConfigError("<name> <rule>, got <value>; <fix>")`` unless ``ok``."""
    if not ok:
        tail = f"; {fix}" if fix else ""
        raise ConfigError(f"{name} {rule}, got {value!r}{tail}")


def choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    """``value`` must be one of ``choices``; the error lists them."""
    require(value in choices, name, f"must be one of {', '.join(choices)}", value)
