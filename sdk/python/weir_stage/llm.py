"""Model calls through the host's own LLM step.

A call made by a stage goes through the route's cache, budget and fallbacks and counts against
the request's limit on LLM calls and the stage's own (past either: ``llm_calls_exceeded``).
None may be made while the host loads the stage (``describe``).

.. code-block:: python

    question = weir.llm.request("gpt-4o-mini", [weir.Message.user("Is this toxic? ...")])
    try:
        answer = weir.llm.complete(question)
    except weir.LlmError as err:
        weir.reject(err.status, err.code, err.message)
    verdict = weir.text_of(answer.choices[0].message)
"""

from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple, Union

from componentize_py_types import Err, Ok
from wit_world.imports import host, types

__all__ = ["LlmError", "MAX_COMPLETE_ALL", "request", "complete", "complete_all", "embed"]

#: The most requests one :func:`complete_all` takes (the host's limit).
MAX_COMPLETE_ALL = 16


class LlmError(Exception):
    """Why a model call failed: the HTTP ``status`` the host would have answered, a
    machine-readable ``code`` (``budget_exceeded``, ``upstream_error``, ...) and a ``message``.

    Pass it on to the client with ``weir.reject(err.status, err.code, err.message)``.
    """

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message

    @classmethod
    def _from_wit(cls, err: types.LlmError) -> "LlmError":
        return cls(err.status, err.code, err.message)


def request(
    model: str,
    messages: Sequence[types.Message],
    *,
    temperature: Optional[float] = None,
    top_p: Optional[float] = None,
    max_tokens: Optional[int] = None,
    user: Optional[str] = None,
    metadata: Sequence[Tuple[str, str]] = (),
    extra: str = "{}",
) -> types.ChatRequest:
    """A chat request for ``model`` with ``messages``; everything else unset unless given
    (``extra`` is a JSON object of other OpenAI fields, passed through verbatim)."""
    return types.ChatRequest(
        model=model,
        messages=list(messages),
        temperature=temperature,
        top_p=top_p,
        max_tokens=max_tokens,
        stream=False,
        user=user,
        metadata=list(metadata),
        extra=extra,
    )


def complete(chat_request: types.ChatRequest) -> types.ChatResponse:
    """Sends ``chat_request`` through the host's LLM step and returns the response.

    Raises :class:`LlmError` when the call fails.
    """
    try:
        return host.complete(chat_request)
    except Err as err:
        raise LlmError._from_wit(err.value) from None


def complete_all(
    requests: Sequence[types.ChatRequest], deadline: Optional[float] = None
) -> List[Union[types.ChatResponse, LlmError]]:
    """Sends every request at once and returns, in order, each response or :class:`LlmError`,
    when the last one ends or ``deadline`` seconds pass (capped by the stage call's own
    deadline; a call still running then is a 504 ``deadline_exceeded``). At most
    :data:`MAX_COMPLETE_ALL` requests."""
    deadline_ms = None
    if deadline is not None:
        deadline_ms = min(max(math.ceil(deadline * 1000), 0), 2**32 - 1)
    results = host.complete_all(list(requests), deadline_ms)
    return [
        r.value if isinstance(r, Ok) else LlmError._from_wit(r.value) for r in results
    ]


def embed(model: str, inputs: Sequence[str]) -> List[List[float]]:
    """Embeds each of ``inputs`` with ``model``; one vector per input, in order.

    Raises :class:`LlmError` when the call fails.
    """
    try:
        return host.embed(model, list(inputs))
    except Err as err:
        raise LlmError._from_wit(err.value) from None
