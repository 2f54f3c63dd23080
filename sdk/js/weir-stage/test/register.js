// Lets Node load index.js off-host: `weir:stage/host@0.1.0` resolves to host-stub.js.
// Used by `npm test` (node --import ./test/register.js --test test/sdk.test.js).
import { register } from 'node:module';

register('./hooks.js', import.meta.url);
