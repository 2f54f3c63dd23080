//! The resource limiter of one stage instance: the documented per-instance memory cap, in
//! either allocator.
//!
//! wasmtime asks the limiter about each linear memory (and table) on its own, so a cap
//! compared with one memory's size would let a component with many memories use many times
//! the cap. A store serves exactly one component instance, so the sum of the current sizes of
//! every memory in the store is the instance's memory: that sum is what is capped (wasmtime
//! does not report memories being freed, and does not need to: they all live as long as the
//! store). The counts of core instances, memories and tables are capped too, as the pooling
//! allocator caps them per component; without these the on-demand allocator (`allocator =
//! "on-demand"`, or the `auto` fallback) would allow wasmtime's default of 10,000 of each.
//!
//! A guest that hits the cap usually aborts (`unreachable`) rather than reporting an error, so
//! the trap code alone cannot tell a memory bomb from a panic. The limiter records every
//! refused grow, and the failure is classified `memory_limit` from that record.

use wasmtime::ResourceLimiter;

/// Table elements one instance may have, summed over its tables (function tables of large
/// guests stay far below this; each element is a pointer or two of host memory).
const MAX_TABLE_ELEMENTS: usize = 1 << 20;
/// The counts one stage component may hold (`[sandbox]` `core_instances_per_component`,
/// `memories_per_component`, `tables_per_component`): the pooling allocator enforces them per
/// component, and the limiter the same in the on-demand allocator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ComponentCounts {
    /// Core module instances.
    pub instances: u32,
    /// Linear memories.
    pub memories: u32,
    /// Tables.
    pub tables: u32,
}

impl ComponentCounts {
    /// The counts `settings` allow.
    pub fn of(settings: &crate::config::SandboxSettings) -> ComponentCounts {
        ComponentCounts {
            instances: settings.core_instances_per_component,
            memories: settings.memories_per_component,
            tables: settings.tables_per_component,
        }
    }
}

/// Caps the linear memory and tables of one instance, summed over all of them, and remembers
/// refusals.
#[derive(Debug)]
pub struct CallLimiter {
    /// Cap on the instance's linear memory (every memory together), bytes.
    memory_bytes: u64,
    /// Bytes of linear memory the instance holds now, every memory together.
    memory_used: u64,
    /// The last grow allowed, `(from, to)` bytes, undone if wasmtime reports it failed.
    last_grow: (u64, u64),
    /// Table elements the instance holds now, every table together.
    table_elements: usize,
    /// The last table grow allowed, `(from, to)` elements, undone if it failed.
    last_table_grow: (usize, usize),
    /// Set when a memory or table grow was refused.
    refused: bool,
    /// Instances, memories and tables the component may hold.
    counts: ComponentCounts,
}

impl CallLimiter {
    /// A limiter capping the instance's memories together at `memory_bytes`, and its counts
    /// of instances, memories and tables at `counts`.
    pub fn new(memory_bytes: u64, counts: ComponentCounts) -> Self {
        CallLimiter {
            memory_bytes,
            memory_used: 0,
            last_grow: (0, 0),
            table_elements: 0,
            last_table_grow: (0, 0),
            refused: false,
            counts,
        }
    }

    /// True when the guest asked for more memory (or table) than allowed.
    pub fn refused(&self) -> bool {
        self.refused
    }

    /// Bytes of linear memory the instance holds, every memory together.
    pub fn memory_used(&self) -> u64 {
        self.memory_used
    }
}

impl ResourceLimiter for CallLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let (current, wanted) = (current as u64, desired as u64);
        let total = self
            .memory_used
            .saturating_sub(current)
            .saturating_add(wanted);
        let allowed = total <= self.memory_bytes && maximum.is_none_or(|m| desired <= m);
        if allowed {
            self.memory_used = total;
            self.last_grow = (current, wanted);
        } else {
            self.refused = true;
        }
        Ok(allowed)
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        let (from, to) = std::mem::take(&mut self.last_grow);
        self.memory_used = self.memory_used.saturating_sub(to).saturating_add(from);
        self.refused = true;
        Ok(())
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self
            .table_elements
            .saturating_sub(current)
            .saturating_add(desired);
        let allowed = total <= MAX_TABLE_ELEMENTS && maximum.is_none_or(|m| desired <= m);
        if allowed {
            self.table_elements = total;
            self.last_table_grow = (current, desired);
        } else {
            self.refused = true;
        }
        Ok(allowed)
    }

    fn table_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        let (from, to) = std::mem::take(&mut self.last_table_grow);
        self.table_elements = self.table_elements.saturating_sub(to).saturating_add(from);
        self.refused = true;
        Ok(())
    }

    fn instances(&self) -> usize {
        self.counts.instances as usize
    }

    fn memories(&self) -> usize {
        self.counts.memories as usize
    }

    fn tables(&self) -> usize {
        self.counts.tables as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;
    const COUNTS: ComponentCounts = ComponentCounts {
        instances: 64,
        memories: 4,
        tables: 8,
    };

    #[test]
    fn the_cap_is_on_the_sum_of_all_memories() {
        let mut limiter = CallLimiter::new(64 << 20, COUNTS);
        // Three memories created at instantiation, 16 MiB each: 48 MiB in all.
        for _ in 0..3 {
            assert!(limiter.memory_growing(0, 16 * MIB, None).unwrap());
        }
        assert_eq!(limiter.memory_used(), 48 << 20);
        // A fourth of 32 MiB would make 80: refused, though it is under the cap on its own.
        assert!(!limiter.memory_growing(0, 32 * MIB, None).unwrap());
        assert!(limiter.refused());
        assert_eq!(limiter.memory_used(), 48 << 20);
        // Growing one of them by 16 MiB reaches the cap exactly.
        assert!(limiter.memory_growing(16 * MIB, 32 * MIB, None).unwrap());
        assert_eq!(limiter.memory_used(), 64 << 20);
        assert!(
            !limiter
                .memory_growing(32 * MIB, 32 * MIB + 65536, None)
                .unwrap()
        );
    }

    #[test]
    fn a_grow_that_failed_is_given_back() {
        let mut limiter = CallLimiter::new(64 << 20, COUNTS);
        assert!(limiter.memory_growing(0, MIB, None).unwrap());
        // Allowed by the limiter, then failed in wasmtime (no address space, say).
        assert!(limiter.memory_growing(MIB, 2 * MIB, None).unwrap());
        assert_eq!(limiter.memory_used(), 2 << 20);
        limiter
            .memory_grow_failed(wasmtime::Error::msg("no room"))
            .unwrap();
        assert_eq!(limiter.memory_used(), MIB as u64);
        assert!(limiter.refused());
    }

    #[test]
    fn a_memory_over_its_own_maximum_is_refused() {
        let mut limiter = CallLimiter::new(64 << 20, COUNTS);
        assert!(!limiter.memory_growing(0, 2 * MIB, Some(MIB)).unwrap());
        assert!(limiter.refused());
        assert_eq!(limiter.memory_used(), 0);
    }

    #[test]
    fn table_elements_are_summed_and_counts_are_the_pools() {
        let mut limiter = CallLimiter::new(64 << 20, COUNTS);
        assert!(
            limiter
                .table_growing(0, MAX_TABLE_ELEMENTS / 2, None)
                .unwrap()
        );
        assert!(
            limiter
                .table_growing(0, MAX_TABLE_ELEMENTS / 2, None)
                .unwrap()
        );
        assert!(!limiter.table_growing(0, 1, None).unwrap());
        assert!(limiter.refused());
        assert_eq!(
            (limiter.instances(), limiter.memories(), limiter.tables()),
            (64, 4, 8)
        );
    }
}
