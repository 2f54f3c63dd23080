// Types of weir-stage: the WIT types of the `weir:stage@0.1.0` world (wit/stage.wit) in the
// representation of jco's componentizers, and the SDK's own API. See index.js for the docs of
// each function.

// -- The WIT types ------------------------------------------------------------------------------

/**
 * A WIT `option<T>`: none is `null` under the QuickJS backend and `undefined` under
 * StarlingMonkey, so test it with `== null` / `!= null`. Both accept either on the way out.
 */
export type Option<T> = T | null | undefined;

/** One part of a multimodal message (OpenAI's `content: [...]` form). */
export interface ContentPart {
  /** The part's `type`: `text`, `image_url`, `input_audio`, `file`, ... */
  kind: string;
  /** The text of a `text` part; none for every other kind. */
  text: Option<string>;
  /** A JSON object with every other field of the part, verbatim; `"{}"` when there is none. */
  extra: string;
}

/** What a message says: plain text, or a list of parts. */
export type Content =
  | { tag: 'text'; val: string }
  | { tag: 'parts'; val: ContentPart[] };

/** One message of a conversation. */
export interface Message {
  /** `system`, `developer`, `user`, `assistant` or `tool`. */
  role: string;
  /** The content; none when the JSON had `null` or no content. */
  content: Option<Content>;
  /** The optional `name` of the participant. */
  name: Option<string>;
  /** A JSON object with every other field (`tool_calls`, ...), verbatim; `"{}"` when none. */
  extra: string;
}

/** An OpenAI-style chat completion request. */
export interface ChatRequest {
  /** The model the client asked for (the route's alias) or, after routing, the upstream model. */
  model: string;
  /** The conversation, oldest first. */
  messages: Message[];
  /** Sampling temperature, when the client set one. */
  temperature: Option<number>;
  /** Nucleus sampling, when the client set it. */
  topP: Option<number>;
  /** `max_tokens` (or `max_completion_tokens`) when the client set one. */
  maxTokens: Option<number>;
  /** Whether the client asked for a server-sent-events stream. */
  stream: boolean;
  /** The end-user identifier the client passed as `user`. */
  user: Option<string>;
  /** The request's `metadata`, as `[key, value]` pairs in the client's order. */
  metadata: Array<[string, string]>;
  /** A JSON object with every request field weir does not model, verbatim; `"{}"` when none. */
  extra: string;
}

/** Token counts reported by the provider. */
export interface Usage {
  promptTokens: number;
  completionTokens: number;
  totalTokens: number;
  /** Of the prompt tokens, those served from the provider's prompt cache. */
  cachedTokens: number;
}

/** One alternative of a completion. */
export interface Choice {
  index: number;
  message: Message;
  /** `stop`, `length`, `tool_calls`, `content_filter`, ... when known. */
  finishReason: Option<string>;
  /** A JSON object with every other field of the choice, verbatim; `"{}"` when none. */
  extra: string;
}

/** An OpenAI-style chat completion response. */
export interface ChatResponse {
  /** The completion id (`chatcmpl-...`). */
  id: string;
  /** The model that answered. */
  model: string;
  /** Unix seconds at creation (a `number` with the QuickJS backend, a `bigint` with StarlingMonkey). */
  created: number | bigint;
  choices: Choice[];
  /** Token usage, when known. */
  usage: Option<Usage>;
  /** A JSON object with every other response field, verbatim; `"{}"` when none. */
  extra: string;
}

/** What the host tells a stage about the request it is running for. */
export interface RequestContext {
  /** The request id (the client's `x-request-id`, or one the host generated). */
  requestId: string;
  /** The route (model alias) the request came in on. */
  route: string;
  /** This stage's name in the pipeline. */
  stage: string;
}

/** The phases a stage implements (the WIT `phases` flags of `weir:stage/handler@0.2.0`). */
export interface Phases {
  request: boolean;
  response: boolean;
  responseChunk: boolean;
}

/** What a stage says about itself (`describe()`). */
export interface StageInfo {
  name: string;
  version: string;
  phases: Phases;
  deterministic: boolean;
}

/** One choice's new text in a streamed chunk; `last` on the choice's final text. */
export interface TextDelta {
  choice: number;
  text: string;
  last: boolean;
}

/** A deliberate refusal: the client gets this status (400..=599) and code. */
export interface Rejection {
  status: number;
  code: string;
  message: string;
}

/** The WIT `stage-error`: a rejection for the client, or a failure of the stage itself. */
export type StageErrorValue =
  | { tag: 'reject'; val: Rejection }
  | { tag: 'fail'; val: string };

/** What `onRequest` decided. */
export type RequestOutcome =
  | { tag: 'next'; val: ChatRequest }
  | { tag: 'respond'; val: ChatResponse };

/** Severity of a host log line. */
export type LogLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error';

// -- Defining a stage ---------------------------------------------------------------------------

/**
 * A stage: its name and version, optional flags, and the phases it implements. The phases
 * `describe()` reports are inferred from which of `onRequest` / `onResponse` are present.
 * `S` is the type of the per-request state (from `state()`, else `{}`).
 */
export interface StageDefinition<S = Record<string, any>> {
  /** A short name, for logs and headers. */
  name: string;
  /** The stage's own version string (free form); default `"0.1.0"`. */
  version?: string;
  /** `onRequest` depends only on its input and the stage config: the host may cache it. */
  deterministic?: boolean;
  /**
   * Every key the stage's config table may have: the host then refuses a config that sets any
   * other key for this stage (a misspelling) when it loads, naming the file and line. Default:
   * any key is accepted.
   */
  configKeys?: string[];
  /**
   * Makes the per-request state, once per request (default: `{}`). It travels from `onRequest`
   * to the response phase as JSON, so keep it JSON-serialisable.
   */
  state?: () => S;
  /**
   * The request phase: return `next(request)`, `respond(response)`, a bare request or
   * response, or nothing (= `next` with `request` as changed in place); or throw with
   * `reject` / `fail`. Must not be `async`.
   */
  onRequest?: (
    ctx: RequestContext,
    request: ChatRequest,
    state: S,
  ) => RequestOutcome | ChatRequest | ChatResponse | void;
  /**
   * The response phase, for the same request as the `onRequest` that saw the same `state`:
   * return the (possibly rewritten) response, or nothing (= `response` as changed in place);
   * or throw with `reject` / `fail`. Must not be `async`.
   */
  onResponse?: (
    ctx: RequestContext,
    request: ChatRequest,
    response: ChatResponse,
    state: S,
  ) => ChatResponse | void;
  /**
   * The response phase on one chunk of a streamed answer: return the deltas to send now (or
   * nothing: the ones given); keep in `state` what must wait, and return it at the latest
   * with the delta marked `last`. Must not be `async`.
   */
  onResponseChunk?: (ctx: RequestContext, deltas: TextDelta[], state: S) => TextDelta[] | void;
}

/** The `weir:stage/handler@0.2.0` interface a stage exports. */
export interface StageHandler {
  describe(): StageInfo;
  onRequest(ctx: RequestContext, request: ChatRequest): { outcome: RequestOutcome; state: Uint8Array };
  onResponse(ctx: RequestContext, state: Uint8Array, request: ChatRequest, response: ChatResponse): ChatResponse;
  onResponseChunk(ctx: RequestContext, state: Uint8Array, deltas: TextDelta[]): { deltas: TextDelta[]; state: Uint8Array };
}

/** Defines a stage; export what it returns: `export const handler = defineStage({ ... })`. */
export function defineStage<S = Record<string, any>>(definition: StageDefinition<S>): StageHandler;

// -- Outcomes and errors ------------------------------------------------------------------------

/** `onRequest` outcome: continue with `request` (possibly rewritten). */
export function next(request: ChatRequest): RequestOutcome;
/** `onRequest` outcome: answer now with `response`. */
export function respond(response: ChatResponse): RequestOutcome;
/** Refuses the request with HTTP `status` (400..=599), `code` and `message`. Throws. */
export function reject(status: number, code: string, message: string): never;
/** Fails the stage (the host applies its `on_error` policy). Throws. */
export function fail(message: string): never;

/** The exception `reject` and `fail` throw; `payload` is the WIT `stage-error`. */
export class StageError extends Error {
  constructor(payload: StageErrorValue);
  readonly payload: StageErrorValue;
}

/** Why a model call made by the stage failed (the WIT `llm-error`). */
export class LlmError extends Error {
  constructor(status: number, code: string, message: string);
  /** The HTTP status the host would have answered (429, 502, ...). */
  readonly status: number;
  /** A machine-readable code (`budget_exceeded`, `upstream_error`, `llm_calls_exceeded`, ...). */
  readonly code: string;
}

/** A config value that is set but does not parse as the stage expects. */
export class ConfigError extends Error {
  constructor(key: string, expected: string, value: string, reason?: string);
  readonly key: string;
  readonly expected: string;
  readonly value: string;
  readonly reason: string;
}

// -- Helpers ------------------------------------------------------------------------------------

/** Builders of messages with plain-text content. */
export const Message: {
  of(role: string, text: string, options?: { name?: string | null; extra?: string }): Message;
  system(text: string): Message;
  user(text: string): Message;
  assistant(text: string): Message;
};

/** The content string, or the text parts joined by `"\n"`; `""` when there is no text. */
export function textOf(message: Message, sep?: string): string;
/** Replaces the content with plain text (dropping non-text parts). */
export function setText(message: Message, text: string): void;
/** Rewrites every piece of text in place (content string or each text part). */
export function mapText(message: Message, f: (text: string) => string): void;
/** The text of the last `user` message; `""` when there is none. */
export function lastUserText(request: ChatRequest, sep?: string): string;
/** The value of metadata `key`, or `undefined`. */
export function metadataOf(request: ChatRequest, key: string): string | undefined;
/** A one-choice assistant response with `text` (`finishReason` `stop`, no usage, created 0). */
export function responseWithText(
  model: string,
  text: string,
  options?: { id?: string; created?: number; usage?: Usage | null },
): ChatResponse;
/** The text of the first choice; `""` when there is none. */
export function responseText(response: ChatResponse): string;

/** Tokens `text` takes for `model`, counted by the host. */
export function countTokens(model: string, text: string): number;
/** From `onResponse`: have the host ask the model again (see the WIT `retry-response`). */
export function retryResponse(reason: string, feedback?: string | null): void;

/** UTF-8 encoding (QuickJS has no TextEncoder). */
export function encodeUtf8(text: string): Uint8Array;
/** UTF-8 decoding; invalid sequences become U+FFFD. */
export function decodeUtf8(bytes: Uint8Array | ArrayLike<number>): string;

// -- Host capabilities --------------------------------------------------------------------------

/** The stage's own config table; values as the host renders them (strings; others as JSON). */
export const config: {
  get(key: string): string | undefined;
  get<T>(key: string, fallback: T): string | T;
  getInt(key: string): number | undefined;
  getInt<T>(key: string, fallback: T): number | T;
  getNumber(key: string): number | undefined;
  getNumber<T>(key: string, fallback: T): number | T;
  getBool(key: string): boolean | undefined;
  getBool<T>(key: string, fallback: T): boolean | T;
  getJson<T = unknown>(key: string, fallback?: T): T;
};

/** Lines in the host log; arguments joined with spaces, objects as JSON. */
export const log: {
  trace(...args: unknown[]): void;
  debug(...args: unknown[]): void;
  info(...args: unknown[]): void;
  warn(...args: unknown[]): void;
  error(...args: unknown[]): void;
};

/** A key-value cache private to the stage, kept by the host across requests. */
export const cache: {
  get(key: string): Uint8Array | undefined;
  set(key: string, value: Uint8Array | ArrayBuffer | ArrayLike<number> | string, ttlSeconds?: number): void;
  getText(key: string): string | undefined;
  setText(key: string, text: string, ttlSeconds?: number): void;
  getJson<T = unknown>(key: string, fallback?: T): T;
  setJson(key: string, value: unknown, ttlSeconds?: number): void;
};

/** Options of `llm.request` beyond the model and messages. */
export interface RequestOptions {
  temperature?: number | null;
  topP?: number | null;
  maxTokens?: number | null;
  user?: string | null;
  metadata?: Array<[string, string]>;
  /** A JSON object of other OpenAI fields (`response_format`, `seed`, ...), verbatim. */
  extra?: string;
}

/** Model calls through the host's LLM step (counted, budgeted, with the route's fallbacks). */
export const llm: {
  /** The most requests one `completeAll` takes. */
  readonly MAX_COMPLETE_ALL: 16;
  /** A chat request for `model` with `messages`, everything else unset unless given. */
  request(model: string, messages: Message[], options?: RequestOptions): ChatRequest;
  /** The response, or throws `LlmError`. */
  complete(request: ChatRequest): ChatResponse;
  /** Each response or `LlmError`, in order; at most `MAX_COMPLETE_ALL` requests. */
  completeAll(requests: ChatRequest[], options?: { deadlineMs?: number }): Array<ChatResponse | LlmError>;
  /** One vector per input, in order, or throws `LlmError`. */
  embed(model: string, inputs: string[]): number[][];
};

/** A service call that got no answer. */
export class ServiceError extends Error {
  readonly kind: 'denied' | 'transport' | 'body_too_large' | 'invalid_request';
  readonly service: string;
  readonly detail: string;
}

/** A service's answer, whatever its status. */
export interface ServiceResponse {
  readonly status: number;
  /** Names lower case. */
  readonly headers: [string, Uint8Array][];
  readonly body: Uint8Array;
  isSuccess(): boolean;
  text(): string;
  json(): any;
  header(name: string): Uint8Array | undefined;
  /** The `error.message` of an OpenAI-shaped error body. */
  errorMessage(): string | undefined;
}

/** One service call: `method http://<service><path>`. */
export interface ServiceCall {
  method?: string;
  service: string;
  /** Path and query, starting with `/`. */
  path: string;
  headers?: [string, string | Uint8Array][];
  body?: string | Uint8Array | null;
}

/** HTTP calls to the services the host grants this stage (`services = ["search"]`). */
export const service: {
  /** 4 MiB. */
  readonly MAX_RESPONSE_BODY: number;
  /** Every call at once; each answer or `ServiceError`, in order. */
  sendAll(calls: ServiceCall[], limit?: number): Array<ServiceResponse | ServiceError>;
  /** The answer, or throws `ServiceError`. */
  send(call: ServiceCall, limit?: number): ServiceResponse;
  get(service: string, path: string, limit?: number): ServiceResponse;
  postJson(service: string, path: string, body: any, limit?: number): ServiceResponse;
};
