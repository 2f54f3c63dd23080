"""A key-value cache private to the stage, kept by the host across requests.

Keys are namespaced by stage (and route), so two stages never see each other's entries. Values
are bytes; :func:`get_json` / :func:`set_json` store JSON values.

.. code-block:: python

    weir.cache.set("greeting", b"hello", ttl=60)
    weir.cache.get("greeting")            # b"hello", or None once expired
    weir.cache.set_json("counts", [1, 2, 3])
    weir.cache.get_json("counts")         # [1, 2, 3]
"""

from __future__ import annotations

import json
from typing import Any, Optional, Union

from wit_world.imports import host

__all__ = ["get", "set", "get_json", "set_json"]


def get(key: str) -> Optional[bytes]:
    """The value stored under ``key``, or ``None`` when absent or expired."""
    value = host.cache_get(key)
    return None if value is None else bytes(value)


def set(key: str, value: Union[bytes, bytearray, str], ttl: Optional[int] = None) -> None:  # noqa: A001
    """Stores ``value`` under ``key`` for at most ``ttl`` seconds (the host's default when
    ``None``). A ``str`` is stored as UTF-8. Values over the host's size limit are not stored."""
    data = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    host.cache_set(key, data, ttl)


def get_json(key: str, default: Any = None) -> Any:
    """The JSON value stored under ``key``; ``default`` when absent or not valid JSON."""
    value = get(key)
    if value is None:
        return default
    try:
        return json.loads(value)
    except ValueError:
        return default


def set_json(key: str, value: Any, ttl: Optional[int] = None) -> None:
    """Stores ``value`` as JSON under ``key`` (see :func:`set`)."""
    set(key, json.dumps(value, separators=(",", ":")).encode("utf-8"), ttl)
