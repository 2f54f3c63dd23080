// An in-memory stand-in for the `weir:stage/host` imports, in the QuickJS representation
// (options are null, list<u8> is a Uint8Array, import errors are thrown with `payload`).
// Tests set `stub.config`, `stub.complete`, ... and read `stub.logs`, `stub.cache`.

export const stub = {
  config: {},
  cache: new Map(),
  logs: [],
  complete: () => { throw new Error('stub.complete not set'); },
  service: () => { throw new Error('stub.service not set'); },
  retries: [],
  reset() {
    this.config = {};
    this.cache = new Map();
    this.logs = [];
    this.retries = [];
    this.complete = () => { throw new Error('stub.complete not set'); };
    this.service = () => { throw new Error('stub.service not set'); };
  },
};

export function log(level, message) { stub.logs.push([level, message]); }
export function configKeys(keys) { stub.declared = keys; }
export function configGet(key) { return key in stub.config ? stub.config[key] : null; }
export function complete(request) { return stub.complete(request); }
export function completeAll(requests) {
  return requests.map((request) => {
    try {
      return { tag: 'ok', val: stub.complete(request) };
    } catch (err) {
      return { tag: 'err', val: err.payload };
    }
  });
}
export function embed(_model, inputs) { return inputs.map((text) => new Float32Array([text.length])); }
export function retryResponse(reason, feedback) { stub.retries.push([reason, feedback]); }
export function countTokens(_model, text) { return Math.ceil(text.length / 4); }
export function cacheGet(key) { return stub.cache.has(key) ? stub.cache.get(key).value : null; }
// `weir:stage/services`: every request answered by `stub.service(request)` (an `{tag, val}`).
export function call(requests) { return requests.map((request) => stub.service(request)); }
export function cacheSet(key, value, ttl) { stub.cache.set(key, { value: new Uint8Array(value), ttl }); }

/** The error a failing host import throws, as jco's componentizers throw it. */
export function importError(payload) {
  const err = new Error(`${payload} (see error.payload)`);
  err.payload = payload;
  return err;
}
