"""HTTP calls to the services the host grants this stage (``services = ["search"]``).

A stage names a service, never a URL: the host sends the request to one of that service's
upstreams under its policy (timeouts, retries, breaker, cache, price). A service not granted
fails with :class:`ServiceError` of kind ``denied`` and nothing is sent. When every upstream
fails, the host answers with an ordinary 5xx (or 429) response whose body is an OpenAI-shaped
error (see :meth:`ServiceResponse.error_message`), so check the status.

The calls go through weir's ``weir:stage/services`` import: a whole batch in one host call.

.. code-block:: python

    answer = weir.service.post_json("search", "/query", {"q": "refunds"})
    if answer.is_success():
        hits = answer.json()
    else:
        weir.log.warn(f"search answered {answer.status}: {answer.error_message()}")
"""

from __future__ import annotations

import json as _json
from typing import Any, Iterable, List, Optional, Sequence, Tuple, Union

from componentize_py_types import Ok
from wit_world.imports import services

__all__ = [
    "MAX_RESPONSE_BODY", "ServiceError", "ServiceResponse", "Call",
    "get", "post_json", "send", "send_all",
]

#: The most bytes of an answer's body a call reads unless told otherwise: 4 MiB.
MAX_RESPONSE_BODY = 4 << 20

_KINDS = {
    services.ErrorKind.DENIED: "denied",
    services.ErrorKind.TRANSPORT: "transport",
    services.ErrorKind.BODY_TOO_LARGE: "body_too_large",
    services.ErrorKind.INVALID_REQUEST: "invalid_request",
}


class ServiceError(Exception):
    """A call that got no answer: ``kind`` is ``denied`` (not granted; nothing sent),
    ``transport`` (the request could not be sent), ``body_too_large`` (the answer's body is
    over the call's limit) or ``invalid_request`` (a bad method, path or header)."""

    def __init__(self, kind: str, service: str, detail: str) -> None:
        super().__init__(f"service `{service}` {kind}: {detail}")
        self.kind = kind
        self.service = service
        self.detail = detail


class ServiceResponse:
    """A service's answer, whatever its status: ``status``, ``headers`` (a list of
    ``(name, bytes)``, names lower case) and ``body`` (bytes)."""

    def __init__(self, status: int, headers: List[Tuple[str, bytes]], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def is_success(self) -> bool:
        """True for a 2xx status."""
        return 200 <= self.status < 300

    def json(self) -> Any:
        """The body parsed as JSON (``ValueError`` when it is not JSON)."""
        return _json.loads(self.body)

    def text(self) -> str:
        """The body as text, invalid UTF-8 replaced."""
        return self.body.decode("utf-8", errors="replace")

    def header(self, name: str) -> Optional[bytes]:
        """The first value of header ``name`` (any case)."""
        name = name.lower()
        return next((value for key, value in self.headers if key.lower() == name), None)

    def error_message(self) -> Optional[str]:
        """The ``error.message`` of an OpenAI-shaped error body, else ``None``."""
        try:
            message = self.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            return None
        return message if isinstance(message, str) else None


#: One call of :func:`send_all`: ``(method, service, path, headers, body)``; ``headers`` is a
#: sequence of ``(name, value)`` and ``body`` bytes, a string or ``None``.
Call = Tuple[str, str, str, Sequence[Tuple[str, Union[str, bytes]]], Optional[Union[str, bytes]]]


def _bytes(value: Union[str, bytes, bytearray]) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


def send_all(calls: Iterable[Call], limit: int = MAX_RESPONSE_BODY) -> List[Union[ServiceResponse, ServiceError]]:
    """Sends every call at once and returns, in order, each :class:`ServiceResponse` or
    :class:`ServiceError` (bodies up to ``limit`` bytes): the host runs them concurrently, so
    retrieving from two indexes takes as long as the slower one."""
    calls = list(calls)
    requests = [
        services.ServiceRequest(
            service=service,
            method=method.upper(),
            path=path,
            headers=[(name, _bytes(value)) for name, value in headers],
            body=None if body is None else _bytes(body),
            max_body=min(max(int(limit), 0), 2**32 - 1),
        )
        for method, service, path, headers, body in calls
    ]
    answers = services.call(requests)
    out: List[Union[ServiceResponse, ServiceError]] = []
    for (_, service, _, _, _), answer in zip(calls, answers):
        if isinstance(answer, Ok):
            value = answer.value
            out.append(ServiceResponse(value.status, list(value.headers), bytes(value.body)))
        else:
            err = answer.value
            out.append(ServiceError(_KINDS.get(err.kind, "transport"), service, err.detail))
    return out


def send(
    method: str,
    service: str,
    path: str,
    headers: Sequence[Tuple[str, Union[str, bytes]]] = (),
    body: Optional[Union[str, bytes]] = None,
    limit: int = MAX_RESPONSE_BODY,
) -> ServiceResponse:
    """``method http://<service><path>`` (``path`` starts with ``/``); raises
    :class:`ServiceError` when the call got no answer."""
    answer = send_all([(method, service, path, headers, body)], limit)[0]
    if isinstance(answer, ServiceError):
        raise answer
    return answer


def get(service: str, path: str, limit: int = MAX_RESPONSE_BODY) -> ServiceResponse:
    """``GET http://<service><path>``."""
    return send("GET", service, path, limit=limit)


def post_json(service: str, path: str, body: Any, limit: int = MAX_RESPONSE_BODY) -> ServiceResponse:
    """``POST http://<service><path>`` with ``body`` as JSON."""
    return send(
        "POST", service, path, [("content-type", "application/json")], _json.dumps(body), limit
    )
