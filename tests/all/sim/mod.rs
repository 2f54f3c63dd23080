//! Black-box tests of `weir sim`: each binds 127.0.0.1:0 and talks real HTTP/1.1 over
//! loopback. Every wait is bounded; no test sleeps and hopes.

pub mod client;
mod control;
mod dialects;
mod endpoints;
mod faults;
mod lifecycle;
