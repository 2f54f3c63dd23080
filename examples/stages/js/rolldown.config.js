// Bundles stage.js and the weir-stage SDK into one ES module for the componentizer.
// `weir-stage` resolves to the SDK in this repository (sdk/js/weir-stage); a stage of your own
// that installs the package from npm needs no alias. The host interface stays an import: the
// componentizer binds it to the WIT world.
import { fileURLToPath } from 'node:url';

const here = (path) => fileURLToPath(new URL(path, import.meta.url));

export default {
  input: here('stage.js'),
  platform: 'neutral',
  external: [/^weir:/, /^wasi:/],
  resolve: {
    alias: { 'weir-stage': here('../../../sdk/js/weir-stage/index.js') },
  },
  output: { file: here('dist/stage.js'), format: 'esm' },
};
