"""Lines in the host log, tagged by the host with the stage name, version and request id.

.. code-block:: python

    weir.log.info(f"dropped {dropped} turns")

``print()`` works too (the host logs a stage's stdout and stderr), but without a level. The
host truncates very long lines and drops lines past its per-call limit.
"""

from __future__ import annotations

from wit_world.imports import host, types

__all__ = ["trace", "debug", "info", "warn", "error"]


def trace(message: str) -> None:
    """Writes ``message`` to the host log at ``trace`` level."""
    host.log(types.LogLevel.TRACE, str(message))


def debug(message: str) -> None:
    """Writes ``message`` to the host log at ``debug`` level."""
    host.log(types.LogLevel.DEBUG, str(message))


def info(message: str) -> None:
    """Writes ``message`` to the host log at ``info`` level."""
    host.log(types.LogLevel.INFO, str(message))


def warn(message: str) -> None:
    """Writes ``message`` to the host log at ``warn`` level."""
    host.log(types.LogLevel.WARN, str(message))


def error(message: str) -> None:
    """Writes ``message`` to the host log at ``error`` level."""
    host.log(types.LogLevel.ERROR, str(message))
