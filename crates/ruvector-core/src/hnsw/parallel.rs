//! Parallel linking for index builds: the build adds every node first ([`Hnsw::push`]),
//! then several threads link them at once ([`Hnsw::link_node`]).
//!
//! Linking is the algorithm `INSERT` runs, which already allows several writers on one
//! graph: a neighbour list changes only by compare-and-replace, a tenant's entry point only
//! by `offer_entry`. Here the writers are threads sharing a [`SharedStore`]; each takes the
//! next unlinked node from a counter. Levels are drawn in the order the nodes were added, as
//! a single-threaded build draws them; the links depend on the order threads finish in, so
//! two parallel builds of the same rows differ (as two runs of concurrent `INSERT`s do).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::graph::{Hnsw, Params};
use super::store::{MemoryStore, NodeId, SharedStore};

/// A graph being linked by several threads; each calls [`ParallelLink::work`].
#[derive(Debug)]
pub struct ParallelLink {
    store: SharedStore,
    params: Params,
    /// The next node to take.
    next: AtomicUsize,
    /// Nodes linked so far.
    linked: AtomicUsize,
    stopped: AtomicBool,
}

impl ParallelLink {
    /// `store`'s nodes were added by [`Hnsw::push`], none linked yet.
    pub fn new(store: MemoryStore, params: Params) -> ParallelLink {
        ParallelLink {
            store: SharedStore::new(store),
            params,
            next: AtomicUsize::new(0),
            linked: AtomicUsize::new(0),
            stopped: AtomicBool::new(false),
        }
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.store.len()
    }

    pub fn is_empty(&self) -> bool {
        self.store.is_empty()
    }

    /// Links nodes until none is left or the work is stopped. After each node this thread
    /// links, `keep_going` gets the number of nodes linked so far by every thread; when it
    /// answers `false`, every thread stops after the node it is linking.
    pub fn work(&self, mut keep_going: impl FnMut(usize) -> bool) {
        let mut hnsw = Hnsw::new(&self.store, self.params);
        while !self.stopped.load(Ordering::Relaxed) {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            if i >= self.store.len() {
                return;
            }
            hnsw.link_node(i as NodeId);
            let done = self.linked.fetch_add(1, Ordering::Relaxed) + 1;
            if !keep_going(done) {
                self.stopped.store(true, Ordering::Relaxed);
            }
        }
    }

    /// Links on `threads` threads, the caller's included, and returns when every one has
    /// returned: each spawned thread calls `on_start` first, then works to the end; the
    /// caller's thread works with `keep_going` (see [`ParallelLink::work`]).
    pub fn run(
        &self,
        threads: usize,
        on_start: impl Fn() + Sync,
        keep_going: impl FnMut(usize) -> bool,
    ) {
        std::thread::scope(|s| {
            for _ in 1..threads {
                s.spawn(|| {
                    on_start();
                    self.work(|_| true)
                });
            }
            self.work(keep_going);
        });
    }

    /// Lets [`ParallelLink::work`] go on after it was stopped.
    pub fn resume(&self) {
        self.stopped.store(false, Ordering::Relaxed);
    }

    /// Whether every node is linked.
    pub fn finished(&self) -> bool {
        self.linked.load(Ordering::Relaxed) == self.store.len()
    }

    /// The linked graph.
    pub fn into_store(self) -> MemoryStore {
        self.store.into_memory()
    }
}

/// Links every node of `store` (added by [`Hnsw::push`]) on `threads` threads, the
/// caller's included.
pub fn link_all(store: MemoryStore, params: Params, threads: usize) -> MemoryStore {
    let build = ParallelLink::new(store, params);
    build.run(threads, || {}, |_| true);
    build.into_store()
}

#[cfg(test)]
mod tests {
    use super::super::testdata::{dataset, recall};
    use super::super::{GraphStore, Metric, TenantOrd};
    use super::*;

    fn pushed(data: &[(Vec<f32>, TenantOrd)], params: Params) -> Hnsw<MemoryStore> {
        let mut h = Hnsw::new(MemoryStore::new(data[0].0.len()), params);
        for (i, (v, t)) in data.iter().enumerate() {
            h.push(v, *t, i as u64);
        }
        h
    }

    /// Four threads link a graph as well as one does: the same recall within 0.01, every
    /// node linked, links only within a tenant, the same levels.
    #[test]
    fn four_threads_link_as_well_as_one() {
        let data = dataset(6000, 32, 3, 11);
        let queries = dataset(90, 32, 3, 12);
        for metric in [Metric::L2, Metric::Cosine, Metric::InnerProduct] {
            let params = Params {
                metric,
                ..Params::default()
            };
            let one = pushed(&data, params);
            let levels: Vec<u8> = (0..data.len() as NodeId)
                .map(|id| one.store().level(id))
                .collect();
            let one = Hnsw::new(link_all(one.into_store(), params, 1), params);
            let four = Hnsw::new(
                link_all(pushed(&data, params).into_store(), params, 4),
                params,
            );
            let store = four.store();
            for id in 0..data.len() as NodeId {
                assert_eq!(store.level(id), levels[id as usize], "levels as drawn");
                assert_eq!(store.payload(id), id, "payloads kept");
                let links = store.neighbors(id, 0);
                assert!(!links.is_empty(), "{metric:?}: node {id} has links");
                assert!(links.len() <= 2 * params.m, "lists stay within 2m");
                assert!(
                    links.iter().all(|&n| store.tenant(n) == store.tenant(id)),
                    "links stay within the tenant"
                );
            }
            for t in 0..3 {
                let (entry, level) = store.entry(t).expect("every tenant has an entry point");
                assert_eq!(store.tenant(entry), t);
                let top = store.tenant_nodes(t).iter().map(|&n| store.level(n)).max();
                assert_eq!(
                    Some(level),
                    top,
                    "the entry point is on the tenant's top level"
                );
            }
            let (r1, r4) = (
                recall(&one, &queries, 10, 64),
                recall(&four, &queries, 10, 64),
            );
            assert!(r4 >= 0.95, "{metric:?}: recall@10 {r4} with four threads");
            assert!(
                r4 >= r1 - 0.01,
                "{metric:?}: {r4} with four threads, {r1} with one"
            );
        }
    }

    /// A stopped build links nothing more until resumed, then finishes.
    #[test]
    fn stops_and_resumes() {
        let data = dataset(500, 16, 2, 5);
        let params = Params::default();
        let build = ParallelLink::new(pushed(&data, params).into_store(), params);
        build.work(|done| done < 100);
        assert!(!build.finished());
        build.work(|_| true);
        assert_eq!(
            build.linked.load(Ordering::Relaxed),
            100,
            "stopped: nothing more"
        );
        build.resume();
        build.run(2, || {}, |_| true);
        assert!(build.finished());
        let h = Hnsw::new(build.into_store(), params);
        assert!(recall(&h, &dataset(30, 16, 2, 6), 10, 40) >= 0.95);
    }
}
