//! Harness for the in-memory reference backend.

use std::sync::Arc;

use async_trait::async_trait;
use lockkit_core::conformance::Harness;
use lockkit_core::memory::MemoryBackend;
use lockkit_core::{LockBackend, LockName};

/// Clients of one shared in-memory lock table.
#[derive(Debug, Default)]
pub struct MemoryHarness {
    backend: MemoryBackend,
}

impl MemoryHarness {
    /// A fresh, empty lock table.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl Harness for MemoryHarness {
    async fn client(&self) -> Arc<dyn LockBackend> {
        Arc::new(self.backend.client())
    }

    async fn queued(&self, name: &LockName) -> Option<usize> {
        Some(self.backend.waiting(name))
    }

    async fn stored_fence(&self, name: &LockName) -> Option<u64> {
        self.backend.fence_counter(name)
    }

    async fn leftovers(&self, name: &LockName) -> Vec<String> {
        if self.backend.has_record(name) {
            vec![format!(
                "a record for {name:?} with {} queued waiter(s)",
                self.backend.waiting(name)
            )]
        } else {
            Vec::new()
        }
    }
}
