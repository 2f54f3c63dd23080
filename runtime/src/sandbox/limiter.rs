//! The memory limiter of one stage instance.
//!
//! A guest that hits the cap usually aborts (`unreachable`) rather than reporting an error, so
//! the trap code alone cannot tell a memory bomb from a panic. The limiter records every
//! refused grow, and the failure is classified `memory_limit` from that record.

use wasmtime::ResourceLimiter;

/// Table elements a stage may have (function tables of large guests stay far below this).
const MAX_TABLE_ELEMENTS: usize = 1 << 20;

/// Caps linear memory and tables of one instance and remembers refusals.
#[derive(Debug)]
pub struct CallLimiter {
    /// Cap on each linear memory, bytes.
    memory_bytes: u64,
    /// Set when a memory or table grow was refused.
    refused: bool,
}

impl CallLimiter {
    /// A limiter capping each memory at `memory_bytes`.
    pub fn new(memory_bytes: u64) -> Self {
        CallLimiter {
            memory_bytes,
            refused: false,
        }
    }

    /// True when the guest asked for more memory (or table) than allowed.
    pub fn refused(&self) -> bool {
        self.refused
    }
}

impl ResourceLimiter for CallLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = desired as u64 <= self.memory_bytes && maximum.is_none_or(|m| desired <= m);
        if !allowed {
            self.refused = true;
        }
        Ok(allowed)
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.refused = true;
        Ok(())
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = desired <= MAX_TABLE_ELEMENTS && maximum.is_none_or(|m| desired <= m);
        if !allowed {
            self.refused = true;
        }
        Ok(allowed)
    }
}
