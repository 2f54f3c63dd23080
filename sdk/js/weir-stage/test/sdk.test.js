// Off-host tests of weir-stage: `npm test` (node --import ./test/register.js --test test/sdk.test.js).
// The host imports are the in-memory stub of host-stub.js.
import { test, beforeEach } from 'node:test';
import assert from 'node:assert/strict';

import { stub, importError } from './host-stub.js';
import {
  defineStage, next, respond, reject, fail, StageError, LlmError, ConfigError,
  Message, textOf, setText, mapText, lastUserText, metadataOf, responseWithText, responseText,
  config, log, cache, llm, countTokens, retryResponse, encodeUtf8, decodeUtf8,
  service, ServiceError,
} from '../index.js';

const ctx = { requestId: 'req-1', route: 'demo', stage: 'test' };

function request(...texts) {
  return llm.request('demo', texts.map((t) => Message.user(t)));
}

/** What a phase threw (the WIT stage-error value), or fails the test. */
function thrown(f) {
  try {
    f();
  } catch (err) {
    return err;
  }
  assert.fail('expected the phase to throw');
}

beforeEach(() => stub.reset());

const NONE = new Uint8Array(0);

test('describe infers the phases from the functions defined', () => {
  const both = defineStage({ name: 'a', version: '1', onRequest() {}, onResponse() {} });
  assert.deepEqual(both.describe(), {
    name: 'a', version: '1', phases: { request: true, response: true, responseChunk: false }, deterministic: false,
  });
  const req = defineStage({ name: 'b', onRequest() {}, deterministic: true });
  assert.deepEqual(req.describe().phases, { request: true, response: false, responseChunk: false });
  assert.equal(req.describe().version, '0.1.0');
  assert.equal(req.describe().deterministic, true);
  const resp = defineStage({ name: 'c', onResponse() {} });
  assert.deepEqual(resp.describe().phases, { request: false, response: true, responseChunk: false });
  const chunks = defineStage({ name: 'd', onResponseChunk() {} });
  assert.deepEqual(chunks.describe().phases, { request: false, response: false, responseChunk: true });
});

test('defineStage refuses definitions that cannot work', () => {
  assert.throws(() => defineStage({ onRequest() {} }), /name/);
  assert.throws(() => defineStage({ name: 'x' }), /onRequest, onResponse or both/);
  assert.throws(() => defineStage({ name: 'x', onRequest: 3 }), /onRequest/);
});

test('state is fresh per request and travels to the response phase as bytes', () => {
  const seen = [];
  const stage = defineStage({
    name: 's',
    state: () => ({ hits: 0 }),
    onRequest(_ctx, r, state) { state.hits += 1; state.model = r.model; },
    onResponse(_ctx, _r, response, state) { seen.push({ ...state }); return response; },
  });
  const a = stage.onRequest(ctx, request('a'));
  assert.ok(a.state instanceof Uint8Array && a.state.length > 0);
  const b = stage.onRequest(ctx, request('b'));
  stage.onResponse(ctx, a.state, request('a'), responseWithText('m', 'x'));
  stage.onResponse(ctx, b.state, request('b'), responseWithText('m', 'x'));
  assert.deepEqual(seen, [{ hits: 1, model: 'demo' }, { hits: 1, model: 'demo' }]);
  // An answer keeps no state: there is no response phase for it.
  const answering = defineStage({ name: 's', onRequest: () => respond(responseWithText('m', 'x')) });
  assert.equal(answering.onRequest(ctx, request('a')).state.length, 0);
});

test('a response-only stage gets a fresh state', () => {
  const stage = defineStage({
    name: 's', state: () => ({ n: 0 }),
    onResponse(_c, _r, response, state) { assert.equal(state.n, 0); return response; },
  });
  assert.equal(stage.onResponse(ctx, NONE, request('a'), responseWithText('m', 'x')).id, 'chatcmpl-weir-stage');
});

test('the chunk hook holds text back in its state until the last delta', () => {
  const stage = defineStage({
    name: 'c',
    state: () => ({ held: '' }),
    onRequest() {},
    onResponseChunk(_c, deltas, state) {
      return deltas.map((d) => {
        const text = state.held + d.text;
        const open = text.lastIndexOf('[');
        const cut = !d.last && open >= 0 && !text.slice(open).includes(']') ? open : text.length;
        state.held = text.slice(cut);
        return { ...d, text: text.slice(0, cut).replace('[X]', 'x') };
      });
    },
  });
  let { state } = stage.onRequest(ctx, request('a'));
  const out = [];
  for (const [text, last] of [['a [', false], ['X] b', false], ['', true]]) {
    const done = stage.onResponseChunk(ctx, state, [{ choice: 0, text, last }]);
    state = done.state;
    out.push(done.deltas[0].text);
  }
  assert.deepEqual(out, ['a ', 'x b', '']);
  const wrong = defineStage({ name: 'w', onResponseChunk: () => 'nope' });
  assert.match(thrown(() => wrong.onResponseChunk(ctx, NONE, [])).val, /return an array/);
});

test('onRequest outcomes: next, respond, nothing, a bare request or response', () => {
  const r = request('hi');
  const canned = responseWithText('m', 'canned');
  const returning = (value) => defineStage({ name: 'o', onRequest: () => value }).onRequest(ctx, r).outcome;
  assert.deepEqual(returning(next(r)), { tag: 'next', val: r });
  assert.deepEqual(returning(respond(canned)), { tag: 'respond', val: canned });
  assert.deepEqual(returning(undefined), { tag: 'next', val: r });
  assert.deepEqual(returning(r), { tag: 'next', val: r });
  assert.deepEqual(returning(canned), { tag: 'respond', val: canned });
  assert.deepEqual(thrown(() => returning(42)), {
    tag: 'fail', val: 'onRequest returned a number; return next(request) or respond(response)',
  });
  const viaPromise = thrown(() => defineStage({ name: 'o', onRequest: async () => next(r) }).onRequest(ctx, r));
  assert.equal(viaPromise.tag, 'fail');
  assert.match(viaPromise.val, /synchronously/);
});

test('onResponse: the returned response, or the one given when nothing is returned', () => {
  const given = responseWithText('m', 'x');
  const stage = defineStage({ name: 'r', onResponse(_c, _r, response) { setText(response.choices[0].message, 'y'); } });
  assert.equal(responseText(stage.onResponse(ctx, NONE, request('a'), given)), 'y');
  const wrong = defineStage({ name: 'r', onResponse: () => 'nope' });
  assert.match(thrown(() => wrong.onResponse(ctx, NONE, request('a'), given)).val, /return the response/);
});

test('reject and fail end a phase with the WIT stage-error', () => {
  const rejecting = defineStage({ name: 'e', onRequest() { reject(403, 'forbidden_word', 'no'); } });
  assert.deepEqual(thrown(() => rejecting.onRequest(ctx, request('a'))), {
    tag: 'reject', val: { status: 403, code: 'forbidden_word', message: 'no' },
  });
  const failing = defineStage({ name: 'e', onRequest() { fail('broken'); } });
  assert.deepEqual(thrown(() => failing.onRequest(ctx, request('a'))), { tag: 'fail', val: 'broken' });
  assert.throws(() => reject(400, 'c', 'm'), StageError);
  const bare = defineStage({ name: 'e', onResponse() { throw { tag: 'reject', val: { status: 422, code: 'c', message: 'm' } }; } });
  assert.equal(thrown(() => bare.onResponse(ctx, NONE, request('a'), responseWithText('m', 'x'))).val.status, 422);
});

test('any other exception becomes fail with its name and message', () => {
  const typeError = defineStage({ name: 'e', onRequest() { null.x; } });
  const err = thrown(() => typeError.onRequest(ctx, request('a')));
  assert.equal(err.tag, 'fail');
  assert.match(err.val, /^TypeError: .+ \(onRequest \(.*sdk\.test\.js:\d+:\d+\)\)$/);
  assert.ok(stub.logs.some(([level]) => level === 'debug'), 'the stack goes to the debug log');
  const str = defineStage({ name: 'e', onRequest() { throw 'plain string'; } });
  assert.deepEqual(thrown(() => str.onRequest(ctx, request('a'))), { tag: 'fail', val: 'uncaught a string: plain string' });
  const badStatus = defineStage({ name: 'e', onRequest() { reject(4.5, 'c', 'm'); } });
  assert.match(thrown(() => badStatus.onRequest(ctx, request('a'))).val, /invalid status/);
  const badConfig = defineStage({ name: 'e', onRequest() { throw new ConfigError('k', 'an integer', 'x'); } });
  const configFailure = thrown(() => badConfig.onRequest(ctx, request('a'))).val;
  assert.equal(configFailure, 'ConfigError: stage config `k`: expected an integer, got `x`');
});

test('running out of memory escapes as it is, for the host to see its memory cap', () => {
  const oomString = defineStage({ name: 'e', onRequest() { throw 'out of memory'; } });
  assert.equal(thrown(() => oomString.onRequest(ctx, request('a'))), 'out of memory');
  const internal = new Error('out of memory');
  internal.name = 'InternalError';
  const oomError = defineStage({ name: 'e', onRequest() { throw internal; } });
  assert.equal(thrown(() => oomError.onRequest(ctx, request('a'))), internal);
});

test('outgoing values are completed: string content, missing extra, name and options', () => {
  const stage = defineStage({
    name: 'n',
    onRequest(_c, r) {
      r.messages.unshift({ role: 'system', content: 'be brief' });
      r.temperature = undefined;
      r.metadata = { team: 'core' };
      return next(r);
    },
  });
  const { outcome } = stage.onRequest(ctx, request('hi'));
  assert.deepEqual(outcome.val.messages[0], { role: 'system', content: { tag: 'text', val: 'be brief' }, name: null, extra: '{}' });
  assert.equal(outcome.val.temperature, null);
  assert.deepEqual(outcome.val.metadata, [['team', 'core']]);
  const responding = defineStage({ name: 'n', onRequest: () => respond({ model: 'm', choices: [{ message: { role: 'assistant', content: ['a', 'b'] } }] }) });
  const response = responding.onRequest(ctx, request('hi')).outcome.val;
  assert.deepEqual(response.choices[0], {
    index: 0,
    message: { role: 'assistant', content: { tag: 'parts', val: [{ kind: 'text', text: 'a', extra: '{}' }, { kind: 'text', text: 'b', extra: '{}' }] }, name: null, extra: '{}' },
    finishReason: null,
    extra: '{}',
  });
  assert.equal(response.id, 'chatcmpl-weir-stage');
  assert.equal(response.usage, null);
});

test('text helpers: plain and parts content, last user message, metadata', () => {
  const parts = {
    role: 'user',
    content: { tag: 'parts', val: [{ kind: 'text', text: 'a', extra: '{}' }, { kind: 'image_url', text: null, extra: '{}' }, { kind: 'text', text: 'b', extra: '{}' }] },
    name: null,
    extra: '{}',
  };
  assert.equal(textOf(parts), 'a\nb');
  assert.equal(textOf(Message.assistant('x')), 'x');
  assert.equal(textOf({ role: 'assistant', content: null, name: null, extra: '{}' }), '');
  const r = llm.request('m', [Message.user('first'), Message.assistant('no'), parts, Message.system('s')], { metadata: [['k', 'v']] });
  assert.equal(lastUserText(r), 'a\nb');
  assert.equal(lastUserText(llm.request('m', [Message.system('s')])), '');
  assert.equal(metadataOf(r, 'k'), 'v');
  assert.equal(metadataOf(r, 'nope'), undefined);
  mapText(parts, (t) => t.toUpperCase());
  assert.equal(textOf(parts), 'A\nB');
  assert.equal(parts.content.val[1].kind, 'image_url');
});

test('responseWithText builds the whole chat-response', () => {
  assert.deepEqual(responseWithText('gpt', 'count: 1', { id: 'example-count' }), {
    id: 'example-count',
    model: 'gpt',
    created: 0,
    choices: [{ index: 0, message: { role: 'assistant', content: { tag: 'text', val: 'count: 1' }, name: null, extra: '{}' }, finishReason: 'stop', extra: '{}' }],
    usage: null,
    extra: '{}',
  });
});

test('config readers parse, fall back, and name the key when a value is wrong', () => {
  stub.config = { n: '12', big: '1e400', flag: 'TRUE', list: '["a","b"]', word: 'hello', bad: 'lots' };
  assert.equal(config.get('word'), 'hello');
  assert.equal(config.get('missing', 'dflt'), 'dflt');
  assert.equal(config.get('missing'), undefined);
  assert.equal(config.getInt('n', 0), 12);
  assert.equal(config.getInt('missing', 7), 7);
  assert.throws(() => config.getInt('bad'), (e) => e instanceof ConfigError && e.key === 'bad' && /expected an integer, got `lots`/.test(e.message));
  assert.throws(() => config.getNumber('big'), ConfigError);
  assert.equal(config.getNumber('n'), 12);
  assert.equal(config.getBool('flag'), true);
  assert.throws(() => config.getBool('word'), /true or false/);
  assert.deepEqual(config.getJson('list'), ['a', 'b']);
  assert.equal(config.getJson('word'), 'hello');
  assert.deepEqual(config.getJson('missing', []), []);
});

test('cache stores bytes, text and JSON with a ttl', () => {
  assert.equal(cache.get('k'), undefined);
  cache.set('k', 'héllo', 60);
  assert.deepEqual([...cache.get('k')], [104, 195, 169, 108, 108, 111]);
  assert.equal(stub.cache.get('k').ttl, 60);
  cache.setText('t', '42');
  assert.equal(stub.cache.get('t').ttl, null);
  assert.equal(cache.getText('t'), '42');
  cache.setJson('j', { a: [1, 2] }, 5);
  assert.deepEqual(cache.getJson('j'), { a: [1, 2] });
  assert.equal(cache.getJson('t-missing', 'd'), 'd');
  cache.set('b', new Uint8Array([1, 2, 3]));
  assert.deepEqual([...cache.get('b')], [1, 2, 3]);
  assert.throws(() => cache.set('x', 12), TypeError);
});

test('UTF-8 round trips, with U+FFFD for what is not UTF-8', () => {
  for (const text of ['', 'plain', 'héllo wörld', '日本語', 'emoji 🦀 ok', '\u0000\u007f\u0080\u07ff\u0800\uffff']) {
    assert.equal(decodeUtf8(encodeUtf8(text)), text);
    assert.deepEqual([...encodeUtf8(text)], [...Buffer.from(text, 'utf8')]);
  }
  assert.equal(decodeUtf8(new Uint8Array([0x61, 0xff, 0x62, 0xc3])), 'a\ufffdb\ufffd');
  assert.equal(decodeUtf8(new Uint8Array([0xed, 0xa0, 0x80])), '\ufffd\ufffd\ufffd');
});

test('llm.complete returns the response or throws LlmError', () => {
  stub.complete = (r) => responseWithText(r.model, `echo ${textOf(r.messages[0])}`);
  assert.equal(responseText(llm.complete(llm.request('m', [Message.user('q')]))), 'echo q');
  stub.complete = () => { throw importError({ status: 429, code: 'budget_exceeded', message: 'over budget' }); };
  const err = thrown(() => llm.complete(llm.request('m', [Message.user('q')])));
  assert.ok(err instanceof LlmError);
  assert.deepEqual([err.status, err.code, err.message], [429, 'budget_exceeded', 'over budget']);
  const uncaught = defineStage({ name: 'l', onRequest() { llm.complete(llm.request('m', [])); } });
  assert.equal(thrown(() => uncaught.onRequest(ctx, request('a'))).val, 'LlmError: 429 budget_exceeded: over budget');
});

test('llm.completeAll, embed, request; tokens and retries', () => {
  let calls = 0;
  stub.complete = (r) => {
    calls += 1;
    if (r.model === 'bad') throw importError({ status: 502, code: 'upstream_error', message: 'down' });
    return responseWithText(r.model, 'ok');
  };
  const results = llm.completeAll([llm.request('a', []), llm.request('bad', [])], { deadlineMs: 10.2 });
  assert.equal(calls, 2);
  assert.equal(responseText(results[0]), 'ok');
  assert.ok(results[1] instanceof LlmError && results[1].code === 'upstream_error');
  assert.deepEqual(llm.embed('e', ['ab', 'abc']), [[2], [3]]);
  assert.deepEqual(llm.request('m', [], { temperature: 0, maxTokens: 5 }), {
    model: 'm', messages: [], temperature: 0, topP: null, maxTokens: 5, stream: false, user: null, metadata: [], extra: '{}',
  });
  assert.equal(countTokens('gpt-4o', '12345678'), 2);
  retryResponse('no citation');
  assert.deepEqual(stub.retries, [['no citation', null]]);
});

test('log joins its arguments, objects as JSON', () => {
  log.info('greeted', 'req-1', { n: 1 }, 3);
  log.warn(new Error('boom'));
  assert.deepEqual(stub.logs, [['info', 'greeted req-1 {"n":1} 3'], ['warn', 'Error: boom']]);
});

test('service calls go to the host as one batch, answers and errors in order', () => {
  const seen = [];
  stub.service = (request) => {
    seen.push(request);
    if (request.service !== 'search') return { tag: 'err', val: { kind: 'denied', detail: 'not granted' } };
    return { tag: 'ok', val: { status: 200, headers: [['content-type', encodeUtf8('application/json')]], body: encodeUtf8('{"hits":[1]}') } };
  };
  const answer = service.postJson('search', '/query', { q: 'refunds' });
  assert.equal(answer.status, 200);
  assert.ok(answer.isSuccess());
  assert.deepEqual(answer.json(), { hits: [1] });
  assert.equal(decodeUtf8(answer.header('Content-Type')), 'application/json');
  assert.equal(seen[0].method, 'POST');
  assert.equal(seen[0].maxBody, service.MAX_RESPONSE_BODY);
  assert.equal(decodeUtf8(seen[0].body), '{"q":"refunds"}');
  assert.deepEqual(seen[0].headers.map(([n]) => n), ['content-type']);

  const both = service.sendAll([
    { service: 'vectors', path: '/x' },
    { service: 'search', path: '/y', body: null },
  ], 10);
  assert.ok(both[0] instanceof ServiceError);
  assert.equal(both[0].kind, 'denied');
  assert.equal(both[0].service, 'vectors');
  assert.equal(both[1].status, 200);
  assert.equal(seen[2].body, null);
  assert.equal(seen[2].maxBody, 10);

  const err = thrown(() => service.get('vectors', '/z'));
  assert.ok(err instanceof ServiceError);
  stub.service = () => ({ tag: 'err', val: { kind: 'body-too-large', detail: 'too long' } });
  assert.equal(thrown(() => service.get('search', '/z')).kind, 'body_too_large');
});
