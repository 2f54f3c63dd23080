// Module resolution hook: the WIT host interfaces become the in-memory stub.
const STUB = new URL('./host-stub.js', import.meta.url).href;

export async function resolve(specifier, context, nextResolve) {
  if (specifier === 'weir:stage/host@0.1.0' || specifier === 'weir:stage/services@0.2.0') {
    return { url: STUB, shortCircuit: true };
  }
  return nextResolve(specifier, context);
}
