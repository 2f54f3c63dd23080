"""example-python: the example stage of /tmp/poly/SPEC.md, written with weir-stage.

Request phase, on the text of the last user message:
  contains "forbidden"  -> reject 403 forbidden_word
  "/count..."           -> answer "count: <n>" (a counter kept in the stage cache for 60 s)
  "/summarize <text>"   -> answer "summary: <one line from the model>"
  "/search"             -> query the granted service `search` (a Chroma v2 query of one
                           vector for one result): "search: <status> <first passage>", or
                           "search: error <kind>"
  "/spin"               -> compute forever (the host's fuel / deadline stops it)
  "/hog"                -> allocate forever (the host's memory cap stops it)
  anything else         -> put the configured greeting first, log, continue
Response phase: when the request was greeted, append the configured suffix to every
plain-text choice.

Config (all optional): greeting (default "Be brief."), suffix (default " [checked]"),
summary_model (default: the request's own model).
"""

import weir_stage as weir

# The query `/search` sends to the `search` service: a Chroma v2 query path.
SEARCH_PATH = "/api/v2/tenants/default_tenant/databases/default_database/collections/docs/query"


def _count_from(raw):
    """The counter stored in the cache: a UTF-8 decimal; 0 when absent or unparsable."""
    if raw is None:
        return 0
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return 0
    return int(text) if text.isascii() and text.isdigit() else 0


class Example(weir.Stage):
    name = "example-python"
    version = "0.1.0"
    # A misspelled key (`greting`) is refused when the host loads the config.
    config_keys = ["greeting", "suffix", "summary_model"]

    def __init__(self):
        # Per-request state: set in on_request, read in on_response of the same request.
        self.greeted = False

    def on_request(self, ctx, request):
        # SPEC: the text parts of a multimodal message are concatenated as they are.
        text = weir.last_user_text(request, sep="")

        if "forbidden" in text.lower():
            weir.reject(403, "forbidden_word", "the word 'forbidden' is not allowed")

        if text.startswith("/count"):
            n = _count_from(weir.cache.get("count")) + 1
            weir.cache.set("count", str(n).encode("utf-8"), ttl=60)
            return weir.respond(
                weir.response_with_text(request.model, f"count: {n}", id="example-count")
            )

        if text.startswith("/summarize "):
            model = weir.config.get("summary_model", request.model)
            question = weir.llm.request(
                model,
                [
                    weir.Message.system("Summarize in one line."),
                    weir.Message.user(text[len("/summarize "):]),
                ],
            )
            try:
                answer = weir.llm.complete(question)
            except weir.LlmError as err:
                weir.reject(err.status, err.code, err.message)
            summary = weir.text_of(answer.choices[0].message) if answer.choices else ""
            return weir.respond(
                weir.response_with_text(request.model, f"summary: {summary}", id="example-summary")
            )

        if text == "/search":
            query = {"query_embeddings": [[1.0]], "n_results": 1}
            try:
                answer = weir.service.post_json("search", SEARCH_PATH, query)
                try:
                    first = answer.json()["documents"][0][0]
                except (ValueError, KeyError, IndexError, TypeError):
                    first = ""
                said = f"search: {answer.status} {first}"
            except weir.service.ServiceError as err:
                said = f"search: error {err.kind}"
            return weir.respond(
                weir.response_with_text(request.model, said, id="example-search")
            )

        if text == "/spin":
            n = 0
            while True:  # pure computation, no host calls
                n = (n * 31 + 7) % 1_000_003

        if text == "/hog":
            chunks = []
            while True:  # ~1 MiB at a time, every byte written, all kept
                chunks.append(bytearray(b"\xa5") * (1 << 20))

        request.messages.insert(0, weir.Message.system(weir.config.get("greeting", "Be brief.")))
        weir.log.info(f"greeted {ctx.request_id}")
        self.greeted = True
        return weir.next(request)

    def on_response(self, ctx, request, response):
        if self.greeted:
            suffix = weir.config.get("suffix", " [checked]")
            for choice in response.choices:
                if isinstance(choice.message.content, weir.Text):
                    choice.message.content.value += suffix
        return response


Handler = weir.export(Example)
