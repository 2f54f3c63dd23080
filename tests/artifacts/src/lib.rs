//! Paths of the guest components built by this crate's build script, for the tests and
//! benchmarks. Each constant is the absolute path of a `.wasm` component.

include!(concat!(env!("OUT_DIR"), "/artifacts.rs"));
