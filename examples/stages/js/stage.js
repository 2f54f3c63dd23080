// example-js: the example stage of SPEC.md (the same behaviour as example-rust and
// example-python), written with the weir-stage JavaScript SDK. Build and run: README.md.
//
// Config keys (all optional): `greeting` (default "Be brief."), `suffix` (default
// " [checked]"), `summary_model` (default: the request's own model).

import {
  defineStage, next, respond, reject, config, log, cache, llm, service, Message,
  LlmError, ServiceError, lastUserText, responseText, responseWithText,
} from 'weir-stage';

// The query `/search` sends to the `search` service: a Chroma v2 query path.
const SEARCH_PATH = '/api/v2/tenants/default_tenant/databases/default_database/collections/docs/query';

export const handler = defineStage({
  name: 'example-js',
  version: '0.1.0',
  // A misspelled key (`greting`) is refused when the host loads the config.
  configKeys: ['greeting', 'suffix', 'summary_model'],

  // Per-request state, kept from onRequest to onResponse of the same request.
  state: () => ({ greeted: false }),

  onRequest(ctx, request, state) {
    // SPEC: the text parts of a multimodal message are concatenated as they are.
    const text = lastUserText(request, '');

    if (text.toLowerCase().includes('forbidden')) {
      reject(403, 'forbidden_word', "the word 'forbidden' is not allowed");
    }

    if (text.startsWith('/count')) {
      const stored = cache.getText('count');
      const n = (stored !== undefined && /^\d+$/.test(stored) ? Number(stored) : 0) + 1;
      cache.setText('count', String(n), 60);
      return respond(responseWithText(request.model, `count: ${n}`, { id: 'example-count' }));
    }

    if (text.startsWith('/summarize ')) {
      const model = config.get('summary_model', request.model);
      const question = llm.request(model, [
        Message.system('Summarize in one line.'),
        Message.user(text.slice('/summarize '.length)),
      ]);
      let answer;
      try {
        answer = llm.complete(question);
      } catch (err) {
        if (err instanceof LlmError) reject(err.status, err.code, err.message);
        throw err;
      }
      return respond(responseWithText(request.model, `summary: ${responseText(answer)}`, { id: 'example-summary' }));
    }

    if (text === '/search') {
      let said;
      try {
        const answer = service.postJson('search', SEARCH_PATH, { query_embeddings: [[1.0]], n_results: 1 });
        let first = '';
        try { first = answer.json().documents[0][0] ?? ''; } catch (_) { first = ''; }
        said = `search: ${answer.status} ${first}`;
      } catch (err) {
        if (!(err instanceof ServiceError)) throw err;
        said = `search: error ${err.kind}`;
      }
      return respond(responseWithText(request.model, said, { id: 'example-search' }));
    }

    if (text === '/spin') {
      // Pure computation, no host calls: the host's fuel or deadline must stop it.
      let x = 1;
      for (;;) x = (Math.imul(x, 1103515245) + 12345) | 0;
    }

    if (text === '/hog') {
      // ~1 MiB at a time, written (a byte in every 64 KiB Wasm page) and kept: the host's
      // memory cap must stop it. Each chunk costs ~1.1 M fuel, so the default 64 MiB cap is
      // reached well within the default 100 M fuel per call.
      const chunks = [];
      for (;;) {
        const chunk = new Uint8Array(1 << 20);
        for (let i = 0; i < chunk.length; i += 1 << 16) chunk[i] = chunks.length & 0xff;
        chunks.push(chunk);
      }
    }

    request.messages.unshift(Message.system(config.get('greeting', 'Be brief.')));
    log.info(`greeted ${ctx.requestId}`);
    state.greeted = true;
    return next(request);
  },

  onResponse(ctx, request, response, state) {
    if (state.greeted) {
      const suffix = config.get('suffix', ' [checked]');
      for (const choice of response.choices) {
        const content = choice.message.content;
        if (content != null && content.tag === 'text') content.val += suffix;
      }
    }
    return response;
  },
});
