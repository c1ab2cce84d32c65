//! The knowledge index of each version, built once and shared by every run of that version.
//!
//! Building the index of a 3.8 MiB knowledge set takes about 190 ms of CPU; it used to be built
//! again by every `knowledge` node of every run. A version's snapshot never changes, so its index
//! is built on first use and kept for as long as the snapshot lives: the cache is keyed by the
//! snapshot's identity (its `Arc`), held weakly, so it neither keeps a snapshot alive nor mixes up
//! two snapshots (while a `Weak` exists, its allocation cannot be reused by another). The agent's
//! runtime keeps one snapshot per version, so this is one index per (agent, version) on a node;
//! a preview's snapshot lives for one run, and so does its index.
//!
//! Indexes are large (about 16 bytes per byte of text, so ~60 MB for 4 MiB of knowledge), so the
//! cache holds at most [`BUDGET_BYTES`] of them, least recently used out first.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use events::event::Snapshot;

use super::knowledge::KnowledgeIndex;

/// The size of the indexes the process keeps, by [`KnowledgeIndex::approx_bytes`].
pub const BUDGET_BYTES: usize = 256 * 1024 * 1024;

pub struct IndexCache {
    budget: usize,
    /// Least recently used first.
    entries: Mutex<Vec<Entry>>,
    /// Indexes built so far: how tests see that a version is indexed once.
    builds: AtomicUsize,
}

struct Entry {
    snapshot: Weak<Snapshot>,
    /// Built outside the lock, by the first run that needs it; runs that need it meanwhile wait
    /// for that build rather than making their own.
    index: Arc<OnceLock<Arc<KnowledgeIndex>>>,
}

impl Entry {
    fn bytes(&self) -> usize {
        self.index.get().map_or(0, |i| i.approx_bytes())
    }
}

impl IndexCache {
    pub const fn new(budget: usize) -> Self {
        IndexCache {
            budget,
            entries: Mutex::new(Vec::new()),
            builds: AtomicUsize::new(0),
        }
    }

    /// The cache every run uses.
    pub fn shared() -> &'static IndexCache {
        static SHARED: IndexCache = IndexCache::new(BUDGET_BYTES);
        &SHARED
    }

    /// The index of `snapshot`'s knowledge, built now if no run of it has built it yet.
    pub fn index(&self, snapshot: &Arc<Snapshot>) -> Arc<KnowledgeIndex> {
        let cell = self.cell(snapshot);
        let index = cell.get_or_init(|| {
            self.builds.fetch_add(1, Ordering::Relaxed);
            Arc::new(KnowledgeIndex::build(&snapshot.spec.knowledge))
        });
        let index = index.clone();
        self.evict();
        index
    }

    /// How many indexes have been built.
    pub fn builds(&self) -> usize {
        self.builds.load(Ordering::Relaxed)
    }

    /// Whether the index of `snapshot` has been built and is kept.
    #[cfg(test)]
    pub(crate) fn holds(&self, snapshot: &Arc<Snapshot>) -> bool {
        self.entries().iter().any(|e| {
            std::ptr::eq(e.snapshot.as_ptr(), Arc::as_ptr(snapshot)) && e.index.get().is_some()
        })
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, Vec<Entry>> {
        // Nothing panics while holding the lock; a poisoned one still holds a consistent list.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cell of `snapshot`, made most recently used; a new one if it has none.
    fn cell(&self, snapshot: &Arc<Snapshot>) -> Arc<OnceLock<Arc<KnowledgeIndex>>> {
        let mut entries = self.entries();
        entries.retain(|e| e.snapshot.strong_count() > 0);
        let found = entries
            .iter()
            .position(|e| std::ptr::eq(e.snapshot.as_ptr(), Arc::as_ptr(snapshot)));
        let entry = match found {
            Some(i) => entries.remove(i),
            None => Entry {
                snapshot: Arc::downgrade(snapshot),
                index: Arc::new(OnceLock::new()),
            },
        };
        let cell = entry.index.clone();
        entries.push(entry);
        cell
    }

    /// Drops the least recently used indexes past the budget, never the newest one (a single
    /// index over the budget is still shared by the runs of its version while they last).
    fn evict(&self) {
        let mut entries = self.entries();
        let mut total: usize = entries.iter().map(Entry::bytes).sum();
        while total > self.budget && entries.len() > 1 {
            let dropped = entries.remove(0);
            total -= dropped.bytes();
        }
    }
}

#[cfg(test)]
mod tests {
    use events::spec::{AgentSpec, KnowledgeFile};

    use super::*;

    fn snapshot(content: &str) -> Arc<Snapshot> {
        let spec = AgentSpec {
            knowledge: vec![KnowledgeFile {
                name: "faq.md".into(),
                content: content.into(),
            }],
            ..AgentSpec::default()
        };
        Arc::new(Snapshot {
            spec,
            endpoint: Default::default(),
            connections: vec![],
        })
    }

    /// Guards against re-indexing the knowledge on every call: the runs of one version share
    /// one index, built by the first.
    #[test]
    fn a_version_is_indexed_once() {
        let cache = IndexCache::new(BUDGET_BYTES);
        let v1 = snapshot("Refunds take 14 days.\n\nWe open at 9.");
        let first = cache.index(&v1);
        for _ in 0..10 {
            assert!(Arc::ptr_eq(&cache.index(&v1), &first));
        }
        assert_eq!(cache.builds(), 1);
        assert_eq!(first.search("refunds", 1)[0].text, "Refunds take 14 days.");

        // Another version (even with the same files) is another snapshot: its own index.
        let v2 = snapshot("Refunds take 14 days.\n\nWe open at 9.");
        cache.index(&v2);
        cache.index(&v2);
        assert_eq!(cache.builds(), 2);

        // A snapshot gone (a preview's, an evicted version's) takes its index with it.
        drop(v2);
        cache.index(&v1);
        assert_eq!(cache.entries().len(), 1);
    }

    #[test]
    fn past_the_budget_the_least_recently_used_go() {
        // Three indexes of the same shape, so of the same size; room for two.
        let one = IndexCache::new(0)
            .index(&snapshot("aaaa bbbb"))
            .approx_bytes();
        let cache = IndexCache::new(2 * one);
        let (a, b, c) = (
            snapshot("cccc dddd"),
            snapshot("eeee ffff"),
            snapshot("gggg hhhh"),
        );
        cache.index(&a);
        cache.index(&b);
        cache.index(&a); // a is now the most recent
        cache.index(&c); // over budget: b goes
        assert_eq!(cache.builds(), 3);
        cache.index(&a);
        assert_eq!(cache.builds(), 3, "a was kept");
        cache.index(&b);
        assert_eq!(cache.builds(), 4, "b was built again");
    }
}
