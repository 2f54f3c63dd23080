// weir-stage: write weir pipeline stages in JavaScript or TypeScript.
//
// A stage is a WebAssembly component that the weir host runs for every request of a route,
// sandboxed with fuel, a deadline and a memory cap. This module is a thin layer over the host
// imports of the `weir:stage` WIT world (`wit/stage.wit`, the single source of truth), in the
// representation jco's componentizers use (records are objects with camelCase keys, variants
// are `{ tag, val }`, `option<T>` is the value or none: `null` under QuickJS, `undefined` under
// StarlingMonkey, hence the `== null` tests below), mirroring the Rust `weir-sdk`:
//
//   1. describe the stage with `defineStage({ name, version, onRequest, onResponse })`;
//   2. export what it returns as the `weir:stage/handler@0.2.0` interface:
//      `export const handler = defineStage(...)`;
//   3. bundle and componentize (see README.md) and point the host config at the `.wasm` file.
//
// Layout of this file: outcomes and errors; `defineStage` and its export glue; helpers on
// messages, requests and responses; `config`, `log`, `cache`, `llm`; tokens and retries;
// UTF-8 (QuickJS has no TextEncoder); value normalization for the way out.
//
// `defineStage` makes a per-request `state` object for `onRequest` and hands it to the host as
// JSON when `onRequest` returns (the component targets `weir:stage@0.2.0`: no instance waits
// while the model answers); `onResponse` and `onResponseChunk` get it back, parsed. Keep it
// JSON-serialisable; cross-request state belongs in `cache`.

import * as host from 'weir:stage/host@0.1.0';
import * as services from 'weir:stage/services@0.2.0';

// -- Outcomes and errors ----------------------------------------------------------------------

/**
 * `onRequest` outcome: continue the pipeline with `request` (possibly rewritten).
 * @param {import('./index').ChatRequest} request
 * @returns {import('./index').RequestOutcome}
 */
export function next(request) {
  return { tag: 'next', val: request };
}

/**
 * `onRequest` outcome: answer now with `response`; later stages and the model call are
 * skipped, and the response phase runs for the stages before this one.
 * @param {import('./index').ChatResponse} response
 * @returns {import('./index').RequestOutcome}
 */
export function respond(response) {
  return { tag: 'respond', val: response };
}

/**
 * The exception `reject` and `fail` throw. `payload` is the WIT `stage-error` value
 * (`{ tag: 'reject', val: { status, code, message } }` or `{ tag: 'fail', val: message }`)
 * that `defineStage` hands to the host.
 */
export class StageError extends Error {
  /** @param {import('./index').StageErrorValue} payload */
  constructor(payload) {
    super(payload.tag === 'reject' ? `${payload.val.status} ${payload.val.code}: ${payload.val.message}` : String(payload.val));
    this.name = 'StageError';
    /** The WIT `stage-error` value. */
    this.payload = payload;
  }
}

/**
 * Refuses the request: the client gets HTTP `status` (400..=599) with `error.code` = `code`
 * and `error.message` = `message`. Throws; never returns.
 * @param {number} status
 * @param {string} code
 * @param {string} message
 * @returns {never}
 */
export function reject(status, code, message) {
  throw new StageError({ tag: 'reject', val: { status, code: String(code), message: String(message) } });
}

/**
 * The stage itself failed: the host applies the stage's `on_error` policy (`fail` answers
 * 500 `stage_failed`, `skip` passes over the stage). Throws; never returns.
 *
 * Any other exception escaping a phase becomes `fail` with its name and message, so `fail` is
 * for failures with a message written for the operator.
 * @param {string} message
 * @returns {never}
 */
export function fail(message) {
  throw new StageError({ tag: 'fail', val: String(message) });
}

/**
 * Why a model call made by the stage failed (the WIT `llm-error`): `status`, `code` and
 * `message`. Pass it on to the client with `reject(err.status, err.code, err.message)`.
 */
export class LlmError extends Error {
  /**
   * @param {number} status the HTTP status the host would have answered (429, 502, ...)
   * @param {string} code a machine-readable code (`budget_exceeded`, `upstream_error`, ...)
   * @param {string} message a human-readable message
   */
  constructor(status, code, message) {
    super(message);
    this.name = 'LlmError';
    /** The HTTP status the host would have answered. */
    this.status = status;
    /** A machine-readable code. */
    this.code = code;
  }
}

/** A config value that is set but does not parse as the stage expects. */
export class ConfigError extends Error {
  /**
   * @param {string} key
   * @param {string} expected
   * @param {string} value
   * @param {string} [reason]
   */
  constructor(key, expected, value, reason) {
    super(`stage config \`${key}\`: expected ${expected}, got \`${value}\`${reason ? ` (${reason})` : ''}`);
    this.name = 'ConfigError';
    /** The key in the stage's config table. */
    this.key = key;
    /** What the stage expected. */
    this.expected = expected;
    /** The raw value as the host rendered it. */
    this.value = value;
    /** The parser's own message, when there is one. */
    this.reason = reason || '';
  }
}

// -- defineStage and its export glue ----------------------------------------------------------

/**
 * Defines a stage and returns the `weir:stage/handler@0.2.0` interface it exports. Use it once,
 * in the entry module:
 *
 * ```js
 * export const handler = defineStage({
 *   name: 'footer', version: '0.1.0',
 *   onResponse(ctx, request, response) { ...; return response; },
 * });
 * ```
 *
 * The phases `describe()` reports are inferred from which of `onRequest` / `onResponse` /
 * `onResponseChunk` the definition has; the host never calls a phase that is not listed (an
 * absent phase passes through). Each request gets a fresh `state` (from `definition.state()`,
 * else `{}`), passed to `onRequest`; when it returns, the state travels to the host as JSON and
 * comes back, parsed, to `onResponse` / `onResponseChunk` of the same request (so it must be
 * JSON-serialisable: no functions, `Map`s or cycles).
 *
 * `onRequest` returns `next(request)`, `respond(response)`, a bare request (means `next`), a
 * bare response (means `respond`) or nothing (means `next` with the request it was given,
 * possibly changed in place). `onResponse` returns the response, or nothing (the one it was
 * given). `onResponseChunk(ctx, deltas, state)` sees a streamed answer chunk by chunk: each
 * delta is `{ choice, text, last }`; it returns the deltas to send now (or nothing: the ones
 * given) and keeps in `state` what must wait for a later chunk, returning it at the latest with
 * `last`. A stage with `onResponse` and no `onResponseChunk` sees a stream whole. Phases are
 * synchronous: a returned Promise fails the stage. `reject()` / `fail()` end a phase with a
 * stage error; any other exception becomes `fail` with its message.
 *
 * Outgoing values are completed before they reach the host: a missing `extra` becomes `"{}"`,
 * missing options `null`, a string `content` becomes `{ tag: 'text', val }`, and so on.
 *
 * @template S
 * @param {import('./index').StageDefinition<S>} definition
 * @returns {import('./index').StageHandler}
 */
export function defineStage(definition) {
  if (definition === null || typeof definition !== 'object') {
    throw new TypeError('defineStage expects an object: { name, version, onRequest?, onResponse? }');
  }
  const { name, version = '0.1.0', onRequest, onResponse, onResponseChunk } = definition;
  if (typeof name !== 'string' || name === '') {
    throw new TypeError('defineStage: `name` must be a non-empty string');
  }
  if (typeof version !== 'string') {
    throw new TypeError('defineStage: `version` must be a string');
  }
  for (const [key, value] of [
    ['onRequest', onRequest], ['onResponse', onResponse], ['onResponseChunk', onResponseChunk],
    ['state', definition.state],
  ]) {
    if (value !== undefined && typeof value !== 'function') {
      throw new TypeError(`defineStage: \`${key}\` must be a function when given`);
    }
  }
  if (onRequest === undefined && onResponse === undefined && onResponseChunk === undefined) {
    throw new TypeError('defineStage: define onRequest, onResponse or both');
  }
  const info = {
    name,
    version,
    phases: {
      request: onRequest !== undefined,
      response: onResponse !== undefined,
      responseChunk: onResponseChunk !== undefined,
    },
    deterministic: Boolean(definition.deterministic),
  };
  const fresh = () => (definition.state ? definition.state() : {});

  const configKeys = definition.configKeys;
  if (configKeys !== undefined && !(Array.isArray(configKeys) && configKeys.every((k) => typeof k === 'string'))) {
    throw new TypeError('defineStage: `configKeys` must be an array of strings when given');
  }

  return {
    describe() {
      // The host refuses a config that sets any other key for this stage (a misspelling).
      if (configKeys !== undefined) host.configKeys([...configKeys]);
      return { ...info, phases: { ...info.phases } };
    },

    onRequest(ctx, request) {
      return guard(() => {
        if (onRequest === undefined) return { outcome: next(request), state: new Uint8Array(0) };
        const state = fresh();
        const outcome = toOutcome(onRequest(ctx, request, state), request);
        const kept = outcome.tag === 'next' ? saveState(state) : new Uint8Array(0);
        return { outcome, state: kept };
      });
    },

    onResponse(ctx, saved, request, response) {
      return guard(() => {
        if (onResponse === undefined) return response;
        const state = loadState(saved, fresh);
        const result = onResponse(ctx, request, response, state);
        if (result === undefined) return normalizeResponse(response);
        if (isThenable(result)) throw asyncPhase('onResponse');
        if (isResponse(result)) return normalizeResponse(result);
        throw new StageError({ tag: 'fail', val: `onResponse returned ${describeValue(result)}; return the response` });
      });
    },

    onResponseChunk(ctx, saved, deltas) {
      return guard(() => {
        if (onResponseChunk === undefined) return { deltas, state: saved };
        const state = loadState(saved, fresh);
        const result = onResponseChunk(ctx, deltas, state);
        if (isThenable(result)) throw asyncPhase('onResponseChunk');
        const out = result === undefined ? deltas : result;
        if (!Array.isArray(out)) {
          throw new StageError({
            tag: 'fail',
            val: `onResponseChunk returned ${describeValue(result)}; return an array of { choice, text, last }`,
          });
        }
        const normalized = out.map((d) => ({
          choice: Number(d.choice) >>> 0,
          text: String(d.text ?? ''),
          last: Boolean(d.last),
        }));
        return { deltas: normalized, state: saveState(state) };
      });
    },
  };
}

/** The per-request state as the bytes the host keeps: JSON, UTF-8. */
function saveState(state) {
  let json;
  try {
    json = JSON.stringify(state);
  } catch (err) {
    throw new StageError({ tag: 'fail', val: `cannot save the stage state (it must be JSON): ${safeString(err)}` });
  }
  return json === undefined ? new Uint8Array(0) : encodeUtf8(json);
}

/** The per-request state from the bytes the host kept; a fresh one when there are none. */
function loadState(saved, fresh) {
  if (saved == null || saved.length === 0) return fresh();
  try {
    return JSON.parse(decodeUtf8(saved));
  } catch (err) {
    throw new StageError({ tag: 'fail', val: `cannot read the stage state: ${safeString(err)}` });
  }
}

/** Runs a phase; turns whatever it throws into the WIT `stage-error` jco expects thrown. */
function guard(phase) {
  try {
    return phase();
  } catch (err) {
    // Both engines report a refused memory grow as a catchable exception (QuickJS an
    // `InternalError: out of memory`, SpiderMonkey the string "out of memory"). Let it escape
    // as what it is: the instance traps and the host, which saw the refused grow, reports
    // `memory_limit` rather than a stage failure of the stage's own making.
    if (isOutOfMemory(err)) throw err;
    throw toStageError(err);
  }
}

function isOutOfMemory(err) {
  if (err === 'out of memory') return true;
  return err instanceof Error && err.name === 'InternalError' && err.message === 'out of memory';
}

function toOutcome(outcome, request) {
  if (outcome === undefined) return next(normalizeRequest(request));
  if (isThenable(outcome)) throw asyncPhase('onRequest');
  if (outcome !== null && typeof outcome === 'object') {
    if (outcome.tag === 'next' && outcome.val !== null && typeof outcome.val === 'object') {
      return next(normalizeRequest(outcome.val));
    }
    if (outcome.tag === 'respond' && outcome.val !== null && typeof outcome.val === 'object') {
      return respond(normalizeResponse(outcome.val));
    }
    if (outcome.tag === undefined && Array.isArray(outcome.messages)) return next(normalizeRequest(outcome));
    if (outcome.tag === undefined && Array.isArray(outcome.choices)) return respond(normalizeResponse(outcome));
  }
  throw new StageError({
    tag: 'fail',
    val: `onRequest returned ${describeValue(outcome)}; return next(request) or respond(response)`,
  });
}

function asyncPhase(phase) {
  return new StageError({
    tag: 'fail',
    val: `${phase} returned a Promise: weir calls phases synchronously (no async functions, no await)`,
  });
}

/**
 * The WIT `stage-error` for anything a phase threw: `StageError` and bare `{ tag, val }`
 * stage errors as they are; anything else `fail` with its name, message and where it was
 * thrown (the whole stack goes to the host log at debug level).
 */
function toStageError(err) {
  if (err instanceof StageError) return checkedStageError(err.payload);
  if (err !== null && typeof err === 'object' && (err.tag === 'reject' || err.tag === 'fail') && 'val' in err) {
    return checkedStageError(err);
  }
  let message;
  if (err instanceof Error) {
    // The SDK's own errors say what went wrong; where the SDK threw them says nothing more.
    const where = err instanceof ConfigError || err instanceof LlmError ? '' : firstFrame(err.stack);
    const text = err instanceof LlmError ? `${err.status} ${err.code}: ${err.message}` : err.message;
    message = `${err.name || 'Error'}${text ? `: ${text}` : ''}${where ? ` (${where})` : ''}`;
    if (err.stack) {
      try { host.log('debug', `${err.name}: ${err.message}\n${err.stack}`); } catch (_) { /* best effort */ }
    }
  } else {
    message = `uncaught ${describeValue(err)}: ${safeString(err)}`;
  }
  return { tag: 'fail', val: message };
}

function checkedStageError(payload) {
  if (payload.tag === 'fail') return { tag: 'fail', val: safeString(payload.val) };
  const rejection = payload.val || {};
  const status = Number(rejection.status);
  if (!Number.isInteger(status) || status < 0 || status > 65535) {
    return { tag: 'fail', val: `reject() with an invalid status ${safeString(rejection.status)} (code ${safeString(rejection.code)})` };
  }
  return { tag: 'reject', val: { status, code: safeString(rejection.code), message: safeString(rejection.message) } };
}

function firstFrame(stack) {
  if (typeof stack !== 'string') return '';
  const line = stack.split('\n').find((l) => l.trim().startsWith('at '));
  return line ? line.trim().slice(3) : '';
}

function isThenable(value) {
  return value !== null && (typeof value === 'object' || typeof value === 'function') && typeof value.then === 'function';
}

function isResponse(value) {
  return value !== null && typeof value === 'object' && Array.isArray(value.choices);
}

function describeValue(value) {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'object') return value.tag !== undefined ? `a variant with tag ${safeString(value.tag)}` : 'an object';
  return `a ${typeof value}`;
}

function safeString(value) {
  try { return String(value); } catch (_) { return '<unprintable>'; }
}

// -- Helpers on messages, requests and responses ----------------------------------------------

/**
 * Builders of chat messages (the WIT `message` record) with plain-text content.
 */
export const Message = Object.freeze({
  /**
   * A message with `role` and plain-text content `text`.
   * @param {string} role `system`, `developer`, `user`, `assistant` or `tool`
   * @param {string} text
   * @param {{ name?: string | null, extra?: string }} [options]
   * @returns {import('./index').Message}
   */
  of(role, text, options = {}) {
    return { role, content: { tag: 'text', val: String(text) }, name: options.name ?? null, extra: options.extra ?? '{}' };
  },
  /** A `system` message. @param {string} text @returns {import('./index').Message} */
  system(text) { return Message.of('system', text); },
  /** A `user` message. @param {string} text @returns {import('./index').Message} */
  user(text) { return Message.of('user', text); },
  /** An `assistant` message. @param {string} text @returns {import('./index').Message} */
  assistant(text) { return Message.of('assistant', text); },
});

/**
 * All the text of `message`: its content string, or its text parts joined by `sep` (default
 * `"\n"`, as `Message::text` in the Rust SDK; the host itself joins with `""`); `""` when it
 * has none (no content, or only non-text parts).
 * @param {import('./index').Message} message
 * @param {string} [sep]
 * @returns {string}
 */
export function textOf(message, sep = '\n') {
  const content = message && message.content;
  if (content == null) return '';
  if (typeof content === 'string') return content;
  if (content.tag === 'text') return content.val;
  if (content.tag === 'parts') {
    return content.val.filter((part) => part.text != null).map((part) => part.text).join(sep);
  }
  return '';
}

/**
 * Replaces the content of `message` with plain text (dropping any non-text parts).
 * @param {import('./index').Message} message
 * @param {string} text
 */
export function setText(message, text) {
  message.content = { tag: 'text', val: String(text) };
}

/**
 * Rewrites every piece of text in `message` in place (the content string, or each text part)
 * with `f(text)`; non-text parts stay as they are. The way to change text without losing
 * images or other parts.
 * @param {import('./index').Message} message
 * @param {(text: string) => string} f
 */
export function mapText(message, f) {
  const content = message.content;
  if (content == null) return;
  if (content.tag === 'text') {
    content.val = String(f(content.val));
  } else if (content.tag === 'parts') {
    for (const part of content.val) {
      if (part.text != null) part.text = String(f(part.text));
    }
  }
}

/**
 * The text (see `textOf`, parts joined by `sep`) of the last `user` message of `request`; `""`
 * when there is none.
 * @param {import('./index').ChatRequest} request
 * @param {string} [sep]
 * @returns {string}
 */
export function lastUserText(request, sep = '\n') {
  const messages = request.messages;
  for (let i = messages.length - 1; i >= 0; i--) {
    if (messages[i].role === 'user') return textOf(messages[i], sep);
  }
  return '';
}

/**
 * The value of the request's metadata `key`, or `undefined` when the client did not send it.
 * @param {import('./index').ChatRequest} request
 * @param {string} key
 * @returns {string | undefined}
 */
export function metadataOf(request, key) {
  const found = request.metadata.find(([k]) => k === key);
  return found ? found[1] : undefined;
}

/**
 * A one-choice assistant response with `text`, as a stage answering on its own returns it:
 * choice index 0, `finishReason` `"stop"`, `usage` absent unless given, `created` 0 unless
 * given. Return it with `respond(...)` from `onRequest`.
 * @param {string} model
 * @param {string} text
 * @param {{ id?: string, created?: number, usage?: import('./index').Usage | null }} [options]
 * @returns {import('./index').ChatResponse}
 */
export function responseWithText(model, text, options = {}) {
  return {
    id: options.id ?? 'chatcmpl-weir-stage',
    model,
    created: options.created ?? 0,
    choices: [{ index: 0, message: Message.assistant(text), finishReason: 'stop', extra: '{}' }],
    usage: options.usage ?? null,
    extra: '{}',
  };
}

/**
 * The text of the first choice of `response` (see `textOf`); `""` when there is none.
 * @param {import('./index').ChatResponse} response
 * @returns {string}
 */
export function responseText(response) {
  return response.choices.length > 0 ? textOf(response.choices[0].message) : '';
}

// -- config -----------------------------------------------------------------------------------

/**
 * The stage's own config table (`config = { ... }` of its `[[routes.stages]]` entry). The
 * host renders every value as a string: strings as they are, everything else as JSON, so
 * `config.get('max_chars')` is `"8000"`; the typed readers parse it and throw `ConfigError`
 * (naming the key) when it does not parse, which fails the stage with that message.
 */
export const config = Object.freeze({
  /**
   * The raw value of `key`, or `fallback` (default `undefined`) when it is not set.
   * @param {string} key
   * @param {string} [fallback]
   */
  get(key, fallback) {
    const raw = host.configGet(key);
    return raw == null ? fallback : raw;
  },
  /**
   * `key` as an integer (a safe JS integer), or `fallback` when unset.
   * @param {string} key
   * @param {number} [fallback]
   */
  getInt(key, fallback) {
    const raw = host.configGet(key);
    if (raw == null) return fallback;
    const text = raw.trim();
    if (!/^[+-]?\d+$/.test(text)) throw new ConfigError(key, 'an integer', raw);
    const value = Number(text);
    if (!Number.isSafeInteger(value)) throw new ConfigError(key, 'an integer', raw, 'out of range');
    return value;
  },
  /**
   * `key` as a number, or `fallback` when unset.
   * @param {string} key
   * @param {number} [fallback]
   */
  getNumber(key, fallback) {
    const raw = host.configGet(key);
    if (raw == null) return fallback;
    const value = raw.trim() === '' ? NaN : Number(raw);
    if (!Number.isFinite(value)) throw new ConfigError(key, 'a number', raw);
    return value;
  },
  /**
   * `key` as a boolean (`true` / `false`, in any case), or `fallback` when unset.
   * @param {string} key
   * @param {boolean} [fallback]
   */
  getBool(key, fallback) {
    const raw = host.configGet(key);
    if (raw == null) return fallback;
    const lowered = raw.trim().toLowerCase();
    if (lowered === 'true' || lowered === 'false') return lowered === 'true';
    throw new ConfigError(key, 'true or false', raw);
  },
  /**
   * `key` parsed as JSON (arrays, tables, numbers, ...), or `fallback` when unset. A bare
   * string that is not JSON reads as itself, so `greeting = "hi"` gives `"hi"` either way.
   * @param {string} key
   * @param {any} [fallback]
   */
  getJson(key, fallback) {
    const raw = host.configGet(key);
    if (raw == null) return fallback;
    try {
      return JSON.parse(raw);
    } catch (_) {
      return raw;
    }
  },
});

// -- log --------------------------------------------------------------------------------------

function formatArgs(args) {
  return args.map((arg) => {
    if (typeof arg === 'string') return arg;
    if (arg instanceof Error) return `${arg.name}: ${arg.message}`;
    if (arg !== null && typeof arg === 'object') {
      try { return JSON.stringify(arg); } catch (_) { return safeString(arg); }
    }
    return safeString(arg);
  }).join(' ');
}

function logAt(level) {
  return (...args) => host.log(level, formatArgs(args));
}

/**
 * Lines in the host log, tagged by the host with the stage name and version. Arguments are
 * joined with spaces (objects as JSON), like `console.log`. The host truncates long lines and
 * caps the lines per phase call.
 */
export const log = Object.freeze({
  /** @param {...any} args */ trace: logAt('trace'),
  /** @param {...any} args */ debug: logAt('debug'),
  /** @param {...any} args */ info: logAt('info'),
  /** @param {...any} args */ warn: logAt('warn'),
  /** @param {...any} args */ error: logAt('error'),
});

// QuickJS has no `console`; give stage code (and its dependencies) one that writes to the
// host log. StarlingMonkey has its own, which prints to stdout (the host logs that too).
if (typeof globalThis.console === 'undefined') {
  globalThis.console = {
    log: log.info, info: log.info, debug: log.debug, trace: log.trace, warn: log.warn, error: log.error,
  };
}

// -- cache ------------------------------------------------------------------------------------

function toBytes(value) {
  if (value instanceof Uint8Array) return value;
  if (typeof value === 'string') return encodeUtf8(value);
  if (ArrayBuffer.isView(value)) return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  if (value instanceof ArrayBuffer || Array.isArray(value)) return new Uint8Array(value);
  throw new TypeError('cache.set: the value must be a Uint8Array, an array of bytes or a string');
}

function ttlOf(ttlSeconds) {
  if (ttlSeconds == null) return null;
  const ttl = Math.ceil(Number(ttlSeconds));
  if (!Number.isFinite(ttl) || ttl < 0) throw new TypeError(`cache: ttl must be a number of seconds >= 0, got ${safeString(ttlSeconds)}`);
  return Math.min(ttl, 0xffffffff);
}

/**
 * A key-value cache private to the stage, kept by the host across requests (keys are
 * namespaced by stage). Values are bytes; `getText`/`setText` and `getJson`/`setJson` store
 * strings and JSON values.
 */
export const cache = Object.freeze({
  /**
   * The bytes stored under `key`, or `undefined` when absent or expired.
   * @param {string} key
   * @returns {Uint8Array | undefined}
   */
  get(key) {
    const value = host.cacheGet(key);
    if (value == null) return undefined;
    return value instanceof Uint8Array ? value : new Uint8Array(value);
  },
  /**
   * Stores `value` (bytes, or a string as UTF-8) under `key` for at most `ttlSeconds` (the
   * host's default when omitted). Values over the host's size limit are not stored.
   * @param {string} key
   * @param {Uint8Array | ArrayBuffer | number[] | string} value
   * @param {number} [ttlSeconds]
   */
  set(key, value, ttlSeconds) {
    host.cacheSet(key, toBytes(value), ttlOf(ttlSeconds));
  },
  /**
   * The value under `key` decoded as UTF-8, or `undefined` when absent.
   * @param {string} key
   * @returns {string | undefined}
   */
  getText(key) {
    const bytes = cache.get(key);
    return bytes === undefined ? undefined : decodeUtf8(bytes);
  },
  /**
   * Stores `text` as UTF-8 under `key`.
   * @param {string} key
   * @param {string} text
   * @param {number} [ttlSeconds]
   */
  setText(key, text, ttlSeconds) {
    host.cacheSet(key, encodeUtf8(String(text)), ttlOf(ttlSeconds));
  },
  /**
   * The JSON value under `key`, or `fallback` when absent or not valid JSON.
   * @param {string} key
   * @param {any} [fallback]
   */
  getJson(key, fallback) {
    const text = cache.getText(key);
    if (text === undefined) return fallback;
    try { return JSON.parse(text); } catch (_) { return fallback; }
  },
  /**
   * Stores `value` as JSON under `key`.
   * @param {string} key
   * @param {any} value
   * @param {number} [ttlSeconds]
   */
  setJson(key, value, ttlSeconds) {
    cache.setText(key, JSON.stringify(value), ttlSeconds);
  },
});

// -- llm --------------------------------------------------------------------------------------

/** The WIT llm-error a host import threw, whatever the componentizer wrapped it in. */
function llmErrorFrom(err) {
  const payload = err !== null && typeof err === 'object' && 'payload' in err ? err.payload : err;
  if (payload !== null && typeof payload === 'object' && typeof payload.code === 'string') {
    return new LlmError(payload.status, payload.code, payload.message);
  }
  return err;
}

/**
 * Model calls through the host's own LLM step: the same cache, budget and fallbacks as the
 * request itself, counted against the request's limit on LLM calls and the stage's own
 * (`llm_calls_exceeded` past either). None may be called from `describe`.
 */
export const llm = Object.freeze({
  /** The most requests one `completeAll` takes (the host's limit). */
  MAX_COMPLETE_ALL: 16,

  /**
   * A chat request for `model` with `messages`; everything else unset unless given (`extra`
   * is a JSON object of other OpenAI fields, passed through verbatim).
   * @param {string} model
   * @param {import('./index').Message[]} messages
   * @param {import('./index').RequestOptions} [options]
   * @returns {import('./index').ChatRequest}
   */
  request(model, messages, options = {}) {
    return {
      model,
      messages: [...messages],
      temperature: options.temperature ?? null,
      topP: options.topP ?? null,
      maxTokens: options.maxTokens ?? null,
      stream: false,
      user: options.user ?? null,
      metadata: options.metadata ? [...options.metadata] : [],
      extra: options.extra ?? '{}',
    };
  },

  /**
   * Sends `request` through the host's LLM step and returns the response.
   * @param {import('./index').ChatRequest} request
   * @returns {import('./index').ChatResponse}
   * @throws {LlmError} when the call fails
   */
  complete(request) {
    try {
      return host.complete(normalizeRequest(request));
    } catch (err) {
      throw llmErrorFrom(err);
    }
  },

  /**
   * Sends every request at once and returns, in order, each response or `LlmError`, when
   * the last one ends or `deadlineMs` passes (capped by the stage call's own deadline; a call
   * still running then is a 504 `deadline_exceeded`). At most `MAX_COMPLETE_ALL` requests.
   * @param {import('./index').ChatRequest[]} requests
   * @param {{ deadlineMs?: number }} [options]
   * @returns {Array<import('./index').ChatResponse | LlmError>}
   */
  completeAll(requests, options = {}) {
    let deadline = null;
    if (options.deadlineMs != null) {
      deadline = Math.min(Math.max(Math.ceil(Number(options.deadlineMs)) || 0, 0), 0xffffffff);
    }
    const results = host.completeAll(requests.map(normalizeRequest), deadline);
    return results.map((result) => (result.tag === 'ok' ? result.val : llmErrorFrom(result.val)));
  },

  /**
   * Embeds each of `inputs` with `model`; one vector per input, in order.
   * @param {string} model
   * @param {string[]} inputs
   * @returns {number[][]}
   * @throws {LlmError} when the call fails
   */
  embed(model, inputs) {
    try {
      return host.embed(model, [...inputs]).map((vector) => Array.from(vector));
    } catch (err) {
      throw llmErrorFrom(err);
    }
  },
});

// -- Tokens and retries -----------------------------------------------------------------------

/**
 * Tokens `text` takes for `model`, counted by the host with the model's real tokenizer
 * (tiktoken; an unknown or empty model counts as `gpt-4o`).
 * @param {string} model
 * @param {string} text
 * @returns {number}
 */
export function countTokens(model, text) {
  return host.countTokens(model, text);
}

/**
 * From `onResponse`: this answer is not acceptable, have the host ask the model again. The
 * host discards what this `onResponse` returns (return the response unchanged), asks again
 * with `feedback` (when given) appended as a user message, and runs the response phase again
 * on the new answer, within the route's `max_output_retries`; past them the client gets 502
 * `invalid_model_output` with `reason`. Outside `onResponse` it does nothing.
 * @param {string} reason
 * @param {string} [feedback]
 */
export function retryResponse(reason, feedback) {
  host.retryResponse(reason, feedback ?? null);
}

// -- service ----------------------------------------------------------------------------------

/**
 * A service call that got no answer. `kind` is `denied` (the service is not granted; nothing
 * was sent), `transport` (the request could not be sent), `body_too_large` (the answer's body
 * is over the call's limit) or `invalid_request` (a bad method, path or header).
 */
export class ServiceError extends Error {
  constructor(kind, service, detail) {
    super(`service \`${service}\` ${kind}: ${detail}`);
    this.name = 'ServiceError';
    this.kind = kind;
    this.service = service;
    this.detail = detail;
  }
}

/** A service's answer, whatever its status. */
class ServiceResponse {
  constructor(status, headers, body) {
    /** @type {number} */
    this.status = status;
    /** @type {[string, Uint8Array][]} names lower case */
    this.headers = headers;
    /** @type {Uint8Array} */
    this.body = body;
  }
  /** True for a 2xx status. */
  isSuccess() { return this.status >= 200 && this.status < 300; }
  /** The body as text (UTF-8). */
  text() { return decodeUtf8(this.body); }
  /** The body parsed as JSON (throws when it is not JSON). */
  json() { return JSON.parse(this.text()); }
  /** The first value of header `name` (any case), or `undefined`. */
  header(name) {
    const lower = String(name).toLowerCase();
    const found = this.headers.find(([key]) => key.toLowerCase() === lower);
    return found === undefined ? undefined : found[1];
  }
  /** The `error.message` of an OpenAI-shaped error body, or `undefined`. */
  errorMessage() {
    try {
      const message = this.json().error.message;
      return typeof message === 'string' ? message : undefined;
    } catch (_) {
      return undefined;
    }
  }
}

function serviceBytes(value) {
  if (value == null) return null;
  return typeof value === 'string' ? encodeUtf8(value) : toBytes(value);
}

/**
 * HTTP calls to the services the host grants this stage (`services = ["search"]`), through
 * weir's `weir:stage/services` import (a whole batch in one host call). A stage names a
 * service, never a URL; when every upstream fails the host answers an ordinary 5xx (or 429)
 * with an OpenAI-shaped error body, so check the status.
 */
export const service = Object.freeze({
  /** The most bytes of an answer's body a call reads unless told otherwise: 4 MiB. */
  MAX_RESPONSE_BODY: 4 << 20,

  /**
   * Sends every call at once; returns, in order, each answer or `ServiceError`.
   * @param {{method?: string, service: string, path: string, headers?: [string, string | Uint8Array][], body?: string | Uint8Array | null}[]} calls
   * @param {number} [limit] most bytes of each answer's body
   */
  sendAll(calls, limit = service.MAX_RESPONSE_BODY) {
    const maxBody = Math.min(Math.max(Math.floor(Number(limit)) || 0, 0), 0xffffffff);
    const requests = calls.map((call) => ({
      service: String(call.service),
      method: String(call.method ?? 'GET').toUpperCase(),
      path: String(call.path),
      headers: (call.headers ?? []).map(([name, value]) => [String(name), serviceBytes(value)]),
      body: serviceBytes(call.body),
      maxBody,
    }));
    const answers = services.call(requests);
    return answers.map((answer, i) => {
      if (answer.tag === 'ok') {
        const { status, headers, body } = answer.val;
        return new ServiceResponse(status, headers, body instanceof Uint8Array ? body : new Uint8Array(body));
      }
      const kind = String(answer.val.kind).toLowerCase().replace(/-/g, '_');
      return new ServiceError(kind, requests[i].service, answer.val.detail);
    });
  },

  /**
   * `method http://<service><path>`; throws `ServiceError` when the call got no answer.
   * @param {{method?: string, service: string, path: string, headers?: [string, string | Uint8Array][], body?: string | Uint8Array | null}} call
   * @param {number} [limit]
   */
  send(call, limit) {
    const answer = service.sendAll([call], limit)[0];
    if (answer instanceof ServiceError) throw answer;
    return answer;
  },

  /** `GET http://<service><path>`. */
  get(name, path, limit) {
    return service.send({ method: 'GET', service: name, path }, limit);
  },

  /** `POST http://<service><path>` with `body` as JSON. */
  postJson(name, path, body, limit) {
    return service.send({
      method: 'POST',
      service: name,
      path,
      headers: [['content-type', 'application/json']],
      body: JSON.stringify(body),
    }, limit);
  },
});

// -- UTF-8 ------------------------------------------------------------------------------------

/**
 * `text` as UTF-8 bytes (QuickJS has no `TextEncoder`; lone surrogates become U+FFFD).
 * @param {string} text
 * @returns {Uint8Array}
 */
export function encodeUtf8(text) {
  const out = [];
  for (let i = 0; i < text.length; i++) {
    let c = text.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < text.length) {
      const d = text.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
        i++;
      }
    }
    if (c >= 0xd800 && c <= 0xdfff) c = 0xfffd;
    if (c < 0x80) {
      out.push(c);
    } else if (c < 0x800) {
      out.push(0xc0 | (c >> 6), 0x80 | (c & 0x3f));
    } else if (c < 0x10000) {
      out.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 0x3f), 0x80 | (c & 0x3f));
    } else {
      out.push(0xf0 | (c >> 18), 0x80 | ((c >> 12) & 0x3f), 0x80 | ((c >> 6) & 0x3f), 0x80 | (c & 0x3f));
    }
  }
  return new Uint8Array(out);
}

/**
 * UTF-8 `bytes` as a string (invalid sequences become U+FFFD).
 * @param {Uint8Array | number[]} bytes
 * @returns {string}
 */
export function decodeUtf8(bytes) {
  let out = '';
  for (let i = 0; i < bytes.length;) {
    const b = bytes[i];
    let c = 0xfffd;
    let n = 1;
    if (b < 0x80) {
      c = b;
    } else if (b >= 0xc2 && b < 0xe0 && cont(bytes, i + 1)) {
      c = ((b & 0x1f) << 6) | (bytes[i + 1] & 0x3f);
      n = 2;
    } else if (b >= 0xe0 && b < 0xf0 && cont(bytes, i + 1) && cont(bytes, i + 2)) {
      const v = ((b & 0x0f) << 12) | ((bytes[i + 1] & 0x3f) << 6) | (bytes[i + 2] & 0x3f);
      if (v >= 0x800 && (v < 0xd800 || v > 0xdfff)) { c = v; n = 3; }
    } else if (b >= 0xf0 && b < 0xf5 && cont(bytes, i + 1) && cont(bytes, i + 2) && cont(bytes, i + 3)) {
      const v = ((b & 0x07) << 18) | ((bytes[i + 1] & 0x3f) << 12) | ((bytes[i + 2] & 0x3f) << 6) | (bytes[i + 3] & 0x3f);
      if (v >= 0x10000 && v <= 0x10ffff) { c = v; n = 4; }
    }
    out += String.fromCodePoint(c);
    i += n;
  }
  return out;
}

function cont(bytes, i) {
  return i < bytes.length && (bytes[i] & 0xc0) === 0x80;
}

// -- Normalization of what goes back to the host ----------------------------------------------
//
// The componentizers trap (not fail) on a value that does not fit the WIT type, which the
// client sees as a bare 500 `trap`. Filling in the fields a hand-written value commonly
// leaves out keeps the common slips working; what cannot be fixed is left to fail loudly.

function normalizeContent(content) {
  if (content == null) return null;
  if (typeof content === 'string') return { tag: 'text', val: content };
  if (Array.isArray(content)) content = { tag: 'parts', val: content };
  if (content.tag === 'parts') {
    content.val = content.val.map((part) => {
      if (typeof part === 'string') return { kind: 'text', text: part, extra: '{}' };
      if (part.kind === undefined) part.kind = part.text != null ? 'text' : '';
      if (part.text === undefined) part.text = null;
      if (part.extra === undefined) part.extra = '{}';
      return part;
    });
  }
  return content;
}

function normalizeMessage(message) {
  message.content = normalizeContent(message.content);
  if (message.name === undefined) message.name = null;
  if (message.extra === undefined) message.extra = '{}';
  return message;
}

function normalizeRequest(request) {
  request.messages = request.messages.map(normalizeMessage);
  for (const key of ['temperature', 'topP', 'maxTokens', 'user']) {
    if (request[key] === undefined) request[key] = null;
  }
  request.stream = Boolean(request.stream);
  if (request.metadata == null) request.metadata = [];
  else if (!Array.isArray(request.metadata)) request.metadata = Object.entries(request.metadata);
  if (request.extra === undefined) request.extra = '{}';
  return request;
}

function normalizeResponse(response) {
  if (response.id === undefined) response.id = 'chatcmpl-weir-stage';
  if (response.created === undefined) response.created = 0;
  response.choices = response.choices.map((choice, index) => {
    if (choice.index === undefined) choice.index = index;
    normalizeMessage(choice.message);
    if (choice.finishReason === undefined) choice.finishReason = null;
    if (choice.extra === undefined) choice.extra = '{}';
    return choice;
  });
  if (response.usage === undefined) response.usage = null;
  if (response.extra === undefined) response.extra = '{}';
  return response;
}
