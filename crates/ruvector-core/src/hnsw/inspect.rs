//! Inspection of a stored graph: a [`Snapshot`] of nodes, links and entry points, and the
//! checks that hold for every healthy tenant-aware HNSW graph.
//!
//! A snapshot is taken from any [`GraphStore`] ([`Snapshot::of_tenant`]: one tenant's live
//! graph, what an integrity monitor samples), or filled node by node by a reader that sees
//! more than the store's interface shows (`ruvector_index_check` reads every page, deleted
//! nodes included, and adds them with [`Snapshot::add`]).
//!
//! The checks: links ([`Snapshot::check_links`]: no duplicates, no self links, no links to
//! missing nodes, to another tenant, or to a layer above the target's level; deleted nodes
//! hold no links), entry points ([`Snapshot::check_entries`]: every tenant with live nodes
//! has one, on a live node of its own at the level recorded), and reachability on layer 0
//! from each tenant's entry point ([`Snapshot::reachable`]), which is what a search can find.

use std::collections::{BTreeMap, HashMap};

use super::graph::IdSet;
use super::store::{GraphStore, NodeId, TenantOrd};

/// One node as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub tenant: TenantOrd,
    pub level: u8,
    pub deleted: bool,
    /// Neighbours per layer, 0 to `level`.
    pub links: Vec<Vec<NodeId>>,
}

/// What a check found wrong. Node ids are the store's; the caller names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    DuplicateLink {
        node: NodeId,
        to: NodeId,
        layer: u8,
    },
    SelfLink {
        node: NodeId,
        layer: u8,
    },
    MissingTarget {
        node: NodeId,
        to: NodeId,
        layer: u8,
    },
    OtherTenant {
        node: NodeId,
        to: NodeId,
    },
    AboveLevel {
        node: NodeId,
        to: NodeId,
        layer: u8,
    },
    /// A deleted node still has links (erasure).
    DeletedHasLinks {
        node: NodeId,
    },
    NoEntry {
        tenant: TenantOrd,
        live: usize,
    },
    EntryMissing {
        tenant: TenantOrd,
        node: NodeId,
    },
    EntryDeleted {
        tenant: TenantOrd,
        node: NodeId,
    },
    EntryOtherTenant {
        tenant: TenantOrd,
        node: NodeId,
    },
    EntryLevel {
        tenant: TenantOrd,
        node: NodeId,
        recorded: u8,
        actual: u8,
    },
}

impl Problem {
    /// The problem in words, with node ids written by `name`.
    pub fn describe(&self, name: impl Fn(NodeId) -> String) -> String {
        match *self {
            Problem::DuplicateLink { node, to, layer } => {
                format!(
                    "{}: duplicate link to {} on layer {layer}",
                    name(node),
                    name(to)
                )
            }
            Problem::SelfLink { node, layer } => {
                format!("{}: links to itself on layer {layer}", name(node))
            }
            Problem::MissingTarget { node, to, layer } => format!(
                "{}: link to missing node {} on layer {layer}",
                name(node),
                name(to)
            ),
            Problem::OtherTenant { node, to } => {
                format!("{}: link to {} of another tenant", name(node), name(to))
            }
            Problem::AboveLevel { node, to, layer } => format!(
                "{}: link to {} on layer {layer} above its level",
                name(node),
                name(to)
            ),
            Problem::DeletedHasLinks { node } => {
                format!("{}: deleted node still has links", name(node))
            }
            Problem::NoEntry { tenant, live } => {
                format!("tenant {tenant}: no entry point, but {live} live nodes")
            }
            Problem::EntryMissing { tenant, node } => {
                format!("tenant {tenant}: entry point {} does not exist", name(node))
            }
            Problem::EntryDeleted { tenant, node } => {
                format!("tenant {tenant}: entry point {} is deleted", name(node))
            }
            Problem::EntryOtherTenant { tenant, node } => {
                format!(
                    "tenant {tenant}: entry point {} is another tenant's",
                    name(node)
                )
            }
            Problem::EntryLevel {
                tenant,
                node,
                recorded,
                actual,
            } => format!(
                "tenant {tenant}: entry point {} has level {actual}, the directory says {recorded}",
                name(node)
            ),
        }
    }
}

/// What [`Snapshot::check_links`] found.
#[derive(Debug, Default)]
pub struct LinkCheck {
    /// Links of live nodes.
    pub links: usize,
    /// Of those, links to deleted nodes (allowed: VACUUM repairs them).
    pub to_deleted: usize,
    /// Structural problems (corruption).
    pub problems: Vec<Problem>,
    /// Deleted nodes that still hold links (an erasure failure).
    pub erasure: Vec<Problem>,
}

/// The nodes and entry points of a graph, or of some of its tenants.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    nodes: HashMap<NodeId, Node>,
    entries: BTreeMap<TenantOrd, Option<(NodeId, u8)>>,
}

impl Snapshot {
    /// Tenant `tenant`'s live nodes, their links and its entry point, read through the store.
    pub fn of_tenant<S: GraphStore>(store: &S, tenant: TenantOrd) -> Snapshot {
        let mut s = Snapshot::default();
        for id in store.tenant_nodes(tenant) {
            let level = store.level(id);
            s.add(
                id,
                Node {
                    tenant,
                    level,
                    deleted: false,
                    links: (0..=level).map(|l| store.neighbors(id, l)).collect(),
                },
            );
        }
        s.set_entry(tenant, store.entry(tenant));
        s
    }

    pub fn add(&mut self, id: NodeId, node: Node) {
        self.nodes.insert(id, node);
    }

    /// Records `tenant`'s entry point (and that the tenant exists).
    pub fn set_entry(&mut self, tenant: TenantOrd, entry: Option<(NodeId, u8)>) {
        self.entries.insert(tenant, entry);
    }

    pub fn node(&self, id: NodeId) -> Option<&Node> {
        self.nodes.get(&id)
    }

    pub fn nodes(&self) -> impl Iterator<Item = (NodeId, &Node)> + '_ {
        self.nodes.iter().map(|(&id, n)| (id, n))
    }

    /// The tenants whose entry points were recorded, with them.
    pub fn entries(&self) -> impl Iterator<Item = (TenantOrd, Option<(NodeId, u8)>)> + '_ {
        self.entries.iter().map(|(&t, &e)| (t, e))
    }

    fn is_live(&self, id: NodeId) -> bool {
        self.nodes.get(&id).is_some_and(|n| !n.deleted)
    }

    /// Live nodes.
    pub fn live(&self) -> usize {
        self.nodes.values().filter(|n| !n.deleted).count()
    }

    /// Deleted nodes.
    pub fn deleted(&self) -> usize {
        self.nodes.len() - self.live()
    }

    /// Tenant `tenant`'s live nodes and their highest level.
    pub fn tenant_live(&self, tenant: TenantOrd) -> (usize, Option<u8>) {
        let mine = self
            .nodes
            .values()
            .filter(|n| n.tenant == tenant && !n.deleted);
        (mine.clone().count(), mine.map(|n| n.level).max())
    }

    /// Checks every link of every node.
    pub fn check_links(&self) -> LinkCheck {
        let mut c = LinkCheck::default();
        for (&id, n) in &self.nodes {
            if n.deleted {
                if n.links.iter().any(|l| !l.is_empty()) {
                    c.erasure.push(Problem::DeletedHasLinks { node: id });
                }
                continue;
            }
            for (layer, links) in n.links.iter().enumerate() {
                let layer = layer as u8;
                let mut seen = IdSet::default();
                for &to in links {
                    c.links += 1;
                    if !seen.insert(to) {
                        c.problems.push(Problem::DuplicateLink {
                            node: id,
                            to,
                            layer,
                        });
                    }
                    if to == id {
                        c.problems.push(Problem::SelfLink { node: id, layer });
                        continue;
                    }
                    let Some(target) = self.nodes.get(&to) else {
                        c.problems.push(Problem::MissingTarget {
                            node: id,
                            to,
                            layer,
                        });
                        continue;
                    };
                    if target.tenant != n.tenant {
                        c.problems.push(Problem::OtherTenant { node: id, to });
                    }
                    if target.level < layer {
                        c.problems.push(Problem::AboveLevel {
                            node: id,
                            to,
                            layer,
                        });
                    }
                    c.to_deleted += target.deleted as usize;
                }
            }
        }
        c
    }

    /// Checks every recorded tenant's entry point against its live nodes.
    pub fn check_entries(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        for (&tenant, &entry) in &self.entries {
            let (live, _) = self.tenant_live(tenant);
            let Some((node, recorded)) = entry else {
                if live > 0 {
                    problems.push(Problem::NoEntry { tenant, live });
                }
                continue;
            };
            match self.nodes.get(&node) {
                None => problems.push(Problem::EntryMissing { tenant, node }),
                Some(n) if n.deleted => problems.push(Problem::EntryDeleted { tenant, node }),
                Some(n) if n.tenant != tenant => {
                    problems.push(Problem::EntryOtherTenant { tenant, node })
                }
                Some(n) if n.level != recorded => problems.push(Problem::EntryLevel {
                    tenant,
                    node,
                    recorded,
                    actual: n.level,
                }),
                Some(_) => {}
            }
        }
        problems
    }

    /// The live nodes a search can reach: on layer 0, from each recorded tenant's entry point,
    /// through live nodes.
    pub fn reachable(&self) -> IdSet {
        let mut reached = IdSet::default();
        for (_, entry) in self.entries() {
            let Some((start, _)) = entry else { continue };
            if !self.is_live(start) || !reached.insert(start) {
                continue;
            }
            let mut stack = vec![start];
            while let Some(n) = stack.pop() {
                for &t in self.nodes.get(&n).map_or(&[][..], |n| &n.links[0][..]) {
                    if self.is_live(t) && reached.insert(t) {
                        stack.push(t);
                    }
                }
            }
        }
        reached
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hnsw::{Hnsw, MemoryStore, Params};

    fn graph(tenants: u32, per_tenant: usize) -> Hnsw<MemoryStore> {
        let mut h = Hnsw::new(
            MemoryStore::new(8),
            Params {
                m: 6,
                ..Params::default()
            },
        );
        let mut x = 0x9e37_79b9_u64;
        for i in 0..tenants as usize * per_tenant {
            let v: Vec<f32> = (0..8)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x % 1000) as f32 / 1000.0
                })
                .collect();
            h.insert(&v, (i % tenants as usize) as TenantOrd, i as u64);
        }
        h
    }

    fn whole(h: &Hnsw<MemoryStore>, tenants: u32) -> Snapshot {
        let mut s = Snapshot::default();
        for t in 0..tenants {
            for (id, n) in Snapshot::of_tenant(h.store(), t).nodes() {
                s.add(id, n.clone());
            }
            s.set_entry(t, h.store().entry(t));
        }
        s
    }

    #[test]
    fn a_built_graph_passes_every_check() {
        let h = graph(3, 300);
        let s = whole(&h, 3);
        assert_eq!(s.live(), 900);
        let links = s.check_links();
        assert!(links.problems.is_empty(), "{:?}", links.problems);
        assert!(links.links > 900 && links.to_deleted == 0);
        assert!(s.check_entries().is_empty());
        assert_eq!(s.reachable().len(), 900, "every node reachable");
    }

    #[test]
    fn one_tenant_snapshot_holds_only_its_nodes() {
        let h = graph(3, 100);
        let s = Snapshot::of_tenant(h.store(), 1);
        assert_eq!(s.live(), 100);
        assert!(s.nodes().all(|(_, n)| n.tenant == 1));
        assert_eq!(s.entries().count(), 1);
        assert!(s.check_links().problems.is_empty());
        assert_eq!(s.reachable().len(), 100);
    }

    #[test]
    fn a_link_to_another_tenant_and_a_missing_node_are_found() {
        let mut h = graph(2, 50);
        let s0 = Snapshot::of_tenant(h.store(), 0);
        let (a, _) = s0.nodes().next().unwrap();
        let other = h.store().tenant_nodes(1)[0];
        let old = h.store().neighbors(a, 0);
        let mut new = old.clone();
        new.push(other);
        new.push(1 << 40);
        assert!(h.store_mut().replace_neighbors(a, 0, &old, &new));
        let problems = whole(&h, 2).check_links().problems;
        assert!(problems.contains(&Problem::OtherTenant { node: a, to: other }));
        assert!(problems.contains(&Problem::MissingTarget {
            node: a,
            to: 1 << 40,
            layer: 0
        }));
        let words = Problem::OtherTenant { node: a, to: other }.describe(|id| format!("#{id}"));
        assert_eq!(words, format!("#{a}: link to #{other} of another tenant"));
    }

    #[test]
    fn deleting_without_repair_leaves_links_to_deleted_nodes() {
        let mut h = graph(1, 400);
        let (entry, _) = h.store().entry(0).unwrap();
        let victims: Vec<NodeId> = (0..400).filter(|&id| id != entry && id % 2 == 0).collect();
        for &v in &victims {
            h.store_mut().delete(v);
        }
        // A snapshot that sees deleted nodes too (as a page reader does).
        let mut s = Snapshot::default();
        for id in 0..400 {
            let st = h.store();
            s.add(
                id,
                Node {
                    tenant: 0,
                    level: st.level(id),
                    deleted: st.is_deleted(id),
                    links: (0..=st.level(id)).map(|l| st.neighbors(id, l)).collect(),
                },
            );
        }
        s.set_entry(0, h.store().entry(0));
        let c = s.check_links();
        assert!(c.problems.is_empty() && c.erasure.is_empty());
        assert!(c.to_deleted > 0, "live nodes still name deleted ones");
        assert_eq!(s.deleted(), victims.len());
        assert!(s.reachable().len() <= s.live());
    }

    #[test]
    fn entry_point_problems_are_found() {
        let h = graph(2, 20);
        let mut s = whole(&h, 2);
        let (e0, level) = h.store().entry(0).unwrap();
        s.set_entry(1, Some((e0, level)));
        s.set_entry(2, Some((1 << 40, 0)));
        s.set_entry(0, None);
        let p = s.check_entries();
        assert!(p.contains(&Problem::EntryOtherTenant {
            tenant: 1,
            node: e0
        }));
        assert!(p.contains(&Problem::EntryMissing {
            tenant: 2,
            node: 1 << 40
        }));
        assert!(p.contains(&Problem::NoEntry {
            tenant: 0,
            live: 20
        }));
    }
}
