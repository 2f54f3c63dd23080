"""weir-stage: write weir pipeline stages in Python.

A stage is a WebAssembly component that the weir host runs for every request of a route,
sandboxed with fuel, a deadline and a memory cap. This package is a thin layer over the bindings
that ``componentize-py`` generates from ``wit/stage.wit`` (the ``weir:stage`` world, the single
source of truth) at build time, mirroring the Rust ``weir-sdk``:

1. subclass :class:`Stage` and override ``on_request``, ``on_response`` and/or
   ``on_response_chunk``;
2. export it with ``Handler = weir.export(MyStage)`` in the app module;
3. build with ``weir build`` (``componentize-py -d wit -w weir:stage/stage@0.2.0 componentize
   -p <this dir> -p . app -o stage.wasm``) and point the host config at ``stage.wasm``.

.. code-block:: python

    import weir_stage as weir

    class CodenameGuard(weir.Stage):
        \"\"\"Refuses requests that mention a project name taken from the stage config.\"\"\"

        name = "codename-guard"
        version = "0.1.0"

        def on_request(self, ctx, request):
            codename = weir.config.get("codename", "bluebird")
            if any(codename in weir.text_of(m) for m in request.messages):
                weir.log.warn(f"refused a request naming {codename}")
                weir.reject(403, "codename", "that project is confidential")
            return weir.next(request)

    Handler = weir.export(CodenameGuard)

Modules: :mod:`weir_stage.config` (the stage's config table), :mod:`weir_stage.log` (the host
log), :mod:`weir_stage.cache` (a key-value cache private to the stage, kept across requests) and
:mod:`weir_stage.llm` (model calls through the host's LLM step). The WIT types are re-exported
here (``weir.ChatRequest``, ``weir.ChatResponse``, ``weir.Text``, ...).

:func:`export` creates a fresh stage object for each request. When ``on_request`` returns, its
attributes are pickled into the state the host keeps for the request (the component targets
``weir:stage@0.2.0``: no instance waits on the model), and ``on_response`` /
``on_response_chunk`` run on the object unpickled from it: keep per-request state in ``self``
(picklable values), cross-request state in :mod:`weir_stage.cache`.
"""

from __future__ import annotations

import dataclasses
import pickle
from typing import List, NoReturn, Optional, Union

try:
    from componentize_py_types import Err
    from wit_world.exports import handler
    from wit_world.imports import host, types
except ImportError as _missing:  # pragma: no cover
    raise ImportError(
        "weir_stage needs the bindings componentize-py generates for the weir:stage@0.2.0 world "
        "(modules `wit_world` and `componentize_py_types`): build with `weir build`, or, to run "
        "outside wasm, generate them with `componentize-py -d wit -w weir:stage/stage@0.2.0 "
        "bindings DIR` and put DIR on sys.path"
    ) from _missing

from . import cache, config, llm, log, service
from .llm import LlmError

__all__ = [
    # authoring
    "Stage", "export", "next", "respond", "reject", "fail", "StageFailure",
    # helpers
    "Message", "text_of", "set_text", "last_user_text", "response_with_text",
    "count_tokens", "retry_response",
    # modules
    "config", "log", "cache", "llm", "LlmError", "service",
    # WIT types
    "ChatRequest", "ChatResponse", "Choice", "Content", "ContentPart", "Text", "Parts",
    "Usage", "RequestContext", "RequestOutcome", "StageInfo", "Phases", "TextDelta", "types",
]

# -- The WIT types, under shorter names -------------------------------------------------------

ChatRequest = types.ChatRequest
ChatResponse = types.ChatResponse
Choice = types.Choice
Usage = types.Usage
ContentPart = types.ContentPart
Content = types.Content
#: Plain-text content: ``Text("hello")`` (``"content": "hello"``); the text is in ``.value``.
Text = types.Content_Text
#: Multimodal content: ``Parts([ContentPart(...), ...])``; the parts are in ``.value``.
Parts = types.Content_Parts
RequestContext = types.RequestContext
RequestOutcome = types.RequestOutcome
StageInfo = handler.StageInfo
Phases = handler.Phases
#: One choice's new text in a streamed chunk (``choice``, ``text``, ``last``).
TextDelta = handler.TextDelta


@dataclasses.dataclass
class Message(types.Message):
    """A chat message (the WIT ``message`` record) with defaults and builders.

    Messages the host passes in are plain ``types.Message`` values with the same fields; both
    kinds can be mixed freely in ``request.messages``. For example
    ``weir.Message.system("Be brief.")`` or ``weir.Message(role="user", content=weir.Text("hi"))``.
    """

    role: str
    content: Optional[types.Content] = None
    name: Optional[str] = None
    extra: str = "{}"

    @classmethod
    def new(cls, role: str, text: str) -> "Message":
        """A message with ``role`` and plain-text content ``text``."""
        return cls(role=role, content=types.Content_Text(text))

    @classmethod
    def system(cls, text: str) -> "Message":
        """A ``system`` message with plain-text content."""
        return cls.new("system", text)

    @classmethod
    def user(cls, text: str) -> "Message":
        """A ``user`` message with plain-text content."""
        return cls.new("user", text)

    @classmethod
    def assistant(cls, text: str) -> "Message":
        """An ``assistant`` message with plain-text content."""
        return cls.new("assistant", text)


# -- Helpers on messages, requests and responses ----------------------------------------------


def text_of(message: types.Message, sep: str = "\n") -> str:
    """All the text of ``message``: its content string, or its text parts joined by ``sep``.

    ``""`` when it has no text (no content, or only non-text parts). With the default ``sep``
    it is ``Message::text`` of the Rust SDK.
    """
    content = message.content
    if content is None:
        return ""
    if isinstance(content, types.Content_Text):
        return content.value
    return sep.join(part.text for part in content.value if part.text is not None)


def set_text(message: types.Message, text: str) -> None:
    """Replaces the content of ``message`` with plain text (dropping any non-text parts)."""
    message.content = types.Content_Text(text)


def last_user_text(request: types.ChatRequest, sep: str = "\n") -> str:
    """The text (see :func:`text_of`) of the last ``user`` message; ``""`` when there is none."""
    for message in reversed(request.messages):
        if message.role == "user":
            return text_of(message, sep)
    return ""


def response_with_text(
    model: str,
    text: str,
    id: str = "chatcmpl-weir-stage",
    *,
    created: int = 0,
    usage: Optional[types.Usage] = None,
) -> types.ChatResponse:
    """A one-choice assistant response with ``text``, as a stage answering on its own returns it.

    The choice has index 0, ``finish_reason`` ``"stop"``; ``usage`` is absent unless given.
    Return it with :func:`respond` from ``on_request``.
    """
    choice = types.Choice(
        index=0,
        message=Message.assistant(text),
        finish_reason="stop",
        extra="{}",
    )
    return types.ChatResponse(
        id=id, model=model, created=created, choices=[choice], usage=usage, extra="{}"
    )


def count_tokens(model: str, text: str) -> int:
    """Tokens ``text`` takes for ``model``, counted by the host with the model's tokenizer."""
    return host.count_tokens(model, text)


def retry_response(reason: str, feedback: Optional[str] = None) -> None:
    """From ``on_response``: this answer is not acceptable, have the host ask the model again.

    The host discards what this ``on_response`` returns (return the response unchanged), asks
    again with ``feedback`` (when given) appended as a user message, and runs the response phase
    again on the new answer, within the route's ``max_output_retries``; past them the client
    gets 502 ``invalid_model_output`` with ``reason``. Outside ``on_response`` it does nothing.
    """
    host.retry_response(reason, feedback)


# -- Outcomes and errors ----------------------------------------------------------------------


def next(request: types.ChatRequest) -> types.RequestOutcome:  # noqa: A001 (mirrors the WIT)
    """``on_request`` outcome: continue the pipeline with ``request`` (possibly rewritten)."""
    return types.RequestOutcome_Next(request)


def respond(response: types.ChatResponse) -> types.RequestOutcome:
    """``on_request`` outcome: answer now with ``response``; later stages and the model call are
    skipped (see :func:`response_with_text`)."""
    return types.RequestOutcome_Respond(response)


#: The exception :func:`reject` and :func:`fail` raise (the WIT ``stage-error``, in ``.value``).
StageFailure = Err


def reject(status: int, code: str, message: str) -> NoReturn:
    """Refuses the request: the client gets HTTP ``status`` (400..=599) with ``error.code`` =
    ``code`` and ``error.message`` = ``message``. Raises; never returns."""
    raise Err(types.StageError_Reject(types.Rejection(status=status, code=code, message=message)))


def fail(message: str) -> NoReturn:
    """The stage itself failed: the host applies the stage's ``on_error`` policy (``fail``
    answers 500 ``stage_failed``). Raises; never returns.

    Any other exception escaping a phase is turned into ``fail`` with its type and text, so
    ``fail`` is for failures with a message meant for the operator."""
    raise Err(types.StageError_Fail(message))


# -- The Stage base class and its export glue -------------------------------------------------


class Stage:
    """Base class of a stage. Subclass it, set :attr:`name`, override the phases you need, and
    export it with :func:`export`.

    The phases a stage declares are inferred: a subclass that overrides only ``on_request``
    declares the request phase only (the host then never calls ``on_response``), and so on.

    One object is created (with no arguments) per request. ``on_response`` and
    ``on_response_chunk`` run on a copy of it: its attributes are pickled when ``on_request``
    returns (the host keeps the bytes, not the instance, while the model answers) and unpickled
    for the response phase, so ``__init__`` is the place to set up per-request state and every
    attribute must be picklable.
    """

    #: The stage's short name, for logs and headers (required).
    name: str = ""
    #: The stage's own version string, free form.
    version: str = "0.1.0"
    #: True when ``on_request`` depends only on its input and the stage config, so the host may
    #: cache its outcome by content.
    deterministic: bool = False
    #: Every key the stage's config table may have. When set, the host refuses a config that
    #: sets any other key for this stage (a misspelling) when it loads, naming the file and
    #: line; ``None`` (the default) accepts any key.
    config_keys: Optional[List[str]] = None

    def on_request(
        self, ctx: types.RequestContext, request: types.ChatRequest
    ) -> Union[types.RequestOutcome, types.ChatRequest, types.ChatResponse]:
        """The request phase: return ``weir.next(request)`` to continue (possibly rewritten),
        ``weir.respond(response)`` to answer without calling the model, or raise with
        :func:`reject` / :func:`fail`. Returning a bare ``ChatRequest`` means ``next`` and a
        bare ``ChatResponse`` means ``respond``."""
        return next(request)

    def on_response(
        self, ctx: types.RequestContext, request: types.ChatRequest, response: types.ChatResponse
    ) -> types.ChatResponse:
        """The response phase: return the (possibly rewritten) response, or raise with
        :func:`reject` / :func:`fail`. ``request`` is what this stage passed on in
        ``on_request``. A streamed answer is buffered for it unless the stage also overrides
        :meth:`on_response_chunk`."""
        return response

    def on_response_chunk(
        self, ctx: types.RequestContext, deltas: List[handler.TextDelta]
    ) -> List[handler.TextDelta]:
        """The response phase on one chunk of a streamed answer: ``deltas`` has each choice's
        new text (``last`` set on its final one). Return the text to send now; keep in ``self``
        what must wait for a later chunk and return it at the latest with ``last``."""
        return deltas

    @classmethod
    def info(cls) -> types.StageInfo:
        """What ``describe()`` reports: name, version, the inferred phases and the flags."""
        phases = Phases(0)
        if cls.on_request is not Stage.on_request:
            phases |= Phases.REQUEST
        if cls.on_response is not Stage.on_response:
            phases |= Phases.RESPONSE
        if cls.on_response_chunk is not Stage.on_response_chunk:
            phases |= Phases.RESPONSE_CHUNK
        return handler.StageInfo(
            name=cls.name,
            version=cls.version,
            phases=phases,
            deterministic=bool(cls.deterministic),
        )


_PACKAGE_DIR = __file__.rsplit("/", 1)[0] + "/"


def _failure(err: BaseException) -> Err:
    """Turns an unexpected exception into a stage ``fail``, naming its type and where it was
    raised; a compact traceback (no source lines, last 16 frames) goes to the host log at debug
    level. Kept cheap on purpose: it runs under the stage's fuel budget."""
    frames = []
    tb = err.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        frames.append((code.co_filename, tb.tb_lineno, code.co_name))
        tb = tb.tb_next
    # Point at the innermost frame of the stage's own code (not of this package).
    own = [f for f in frames if not f[0].startswith(_PACKAGE_DIR)] or frames
    where = ""
    if own:
        filename, lineno, function = own[-1]
        where = f" ({filename.rsplit('/', 1)[-1]}:{lineno}, in {function})"
    text = str(err)
    message = f"{type(err).__name__}: {text}" if text else type(err).__name__
    try:
        lines = [f'  File "{f}", line {n}, in {fn}' for f, n, fn in frames[-16:]]
        log.debug("\n".join(["Traceback (most recent call last):", *lines, message]))
    except Exception:  # the log is best effort
        pass
    return Err(types.StageError_Fail(message + where))


def _save(stage: Stage) -> bytes:
    """The state of ``stage`` for the host: its attributes, pickled (nothing when it has none)."""
    attributes = vars(stage)
    if not attributes:
        return b""
    try:
        return pickle.dumps(attributes, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as err:  # noqa: BLE001 (an unpicklable attribute is a stage `fail`)
        raise Err(types.StageError_Fail(
            f"cannot save the stage state ({type(stage).__name__}'s attributes must be "
            f"picklable): {type(err).__name__}: {err}"
        )) from None


def _load(stage_class: type, state: bytes) -> Stage:
    """The stage object ``state`` holds: a fresh one when it is empty (no request phase ran)."""
    stage = stage_class()
    if state:
        try:
            stage.__dict__.update(pickle.loads(state))
        except Exception as err:  # noqa: BLE001
            raise Err(types.StageError_Fail(
                f"cannot read the stage state: {type(err).__name__}: {err}"
            )) from None
    return stage


def export(stage_class: type) -> type:
    """Exports ``stage_class`` (a :class:`Stage` subclass) as the component's
    ``weir:stage/handler@0.2.0`` interface.

    Use it once, in the app module: ``Handler = weir.export(MyStage)``; componentize-py looks
    for the name ``Handler``. Checks the class when the module is imported, so a mistake fails
    the build rather than the first request.
    """
    if not (isinstance(stage_class, type) and issubclass(stage_class, Stage)):
        raise TypeError(f"weir.export expects a weir.Stage subclass, got {stage_class!r}")
    info = stage_class.info()
    if not isinstance(info.name, str) or not info.name:
        raise TypeError(f"{stage_class.__name__}.name must be a non-empty string")
    if not isinstance(info.version, str):
        raise TypeError(f"{stage_class.__name__}.version must be a string")

    def call(phase, *args):
        try:
            return phase(*args)
        except Err as err:
            if isinstance(err.value, (types.StageError_Reject, types.StageError_Fail)):
                raise
            raise _failure(err) from None  # an `Err` of some other WIT call, left uncaught
        except MemoryError:
            # Let the host see it as what it is: the instance ran into its memory cap.
            raise
        except Exception as err:  # noqa: BLE001 (any other failure is a stage `fail`)
            raise _failure(err) from None

    class Handler:
        """The generated ``Handler`` protocol, implemented for ``stage_class``."""

        def describe(self) -> handler.StageInfo:
            if stage_class.config_keys is not None:
                host.config_keys([str(key) for key in stage_class.config_keys])
            return stage_class.info()

        def on_request(self, ctx, request):
            stage = stage_class()
            outcome = call(stage.on_request, ctx, request)
            if isinstance(outcome, types.ChatRequest):
                outcome = types.RequestOutcome_Next(outcome)
            elif isinstance(outcome, types.ChatResponse):
                outcome = types.RequestOutcome_Respond(outcome)
            if isinstance(outcome, types.RequestOutcome_Respond):
                return handler.RequestDone(outcome=outcome, state=b"")
            if isinstance(outcome, types.RequestOutcome_Next):
                return handler.RequestDone(outcome=outcome, state=_save(stage))
            raise Err(types.StageError_Fail(
                f"{stage_class.__name__}.on_request returned {type(outcome).__name__}; "
                "return weir.next(request) or weir.respond(response)"
            ))

        def on_response(self, ctx, state, request, response):
            stage = _load(stage_class, state)
            result = call(stage.on_response, ctx, request, response)
            if isinstance(result, types.ChatResponse):
                return result
            raise Err(types.StageError_Fail(
                f"{stage_class.__name__}.on_response returned {type(result).__name__}; "
                "return the response"
            ))

        def on_response_chunk(self, ctx, state, deltas):
            stage = _load(stage_class, state)
            result = call(stage.on_response_chunk, ctx, deltas)
            if not isinstance(result, list):
                raise Err(types.StageError_Fail(
                    f"{stage_class.__name__}.on_response_chunk returned "
                    f"{type(result).__name__}; return a list of weir.TextDelta"
                ))
            return handler.ChunkDone(deltas=result, state=_save(stage))

    Handler.__qualname__ = Handler.__name__ = "Handler"
    return Handler
