//! The Prometheus scrape: per-tenant and server-wide series in the text exposition format
//! (written by the `prometheus` crate's encoder).
//!
//! Series are bounded: the `max_tenants` most active tenants (statements in the last window,
//! then statements in all) get series of their own; the others are folded into one series
//! with `tenant="_other"`, where counts, rates and sizes are summed, quota usage, latency
//! quantiles and the integrity state are the highest among them and λ_cut the lowest (so an
//! alert on them still fires).

use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram as PHistogram, LabelPair, Metric, MetricFamily, MetricType,
};

use crate::metrics::{Histogram, Window, LATENCY_BOUNDS_US};

/// The tenant label of the folded series.
pub const OTHER: &str = "_other";

/// One tenant's figures.
#[derive(Debug, Clone, Default)]
pub struct TenantFigures {
    pub database: String,
    pub tenant: String,
    pub vectors: i64,
    /// 0: no limit.
    pub max_vectors: i64,
    pub storage_bytes: i64,
    /// 0: no limit.
    pub max_storage_bytes: i64,
    pub collections: u32,
    /// `u32::MAX`: no limit.
    pub max_collections: u32,
    pub searches: u64,
    pub inserts: u64,
    pub updates: u64,
    pub deletes: u64,
    pub refused: u64,
    pub admitted: u64,
    pub rate_limited: u64,
    pub queued: u64,
    pub wait_us: u64,
    pub latency: Histogram,
    pub window: Option<Window>,
    /// Unix milliseconds of the last statement, 0 = none.
    pub last_access_ms: i64,
    /// Integrity state (0 normal, 1 stress, 2 critical) and λ_cut; `None` before a sample.
    pub integrity: Option<(u32, f64)>,
}

impl TenantFigures {
    fn statements(&self) -> u64 {
        self.searches + self.inserts + self.updates + self.deletes
    }

    fn activity(&self) -> (u32, u64) {
        (self.window.map_or(0, |w| w.statements), self.statements())
    }

    /// Usage of each quota resource (0 to 1, above 1 when over); `None` without a limit or
    /// with a limit of 0.
    pub fn quota_usage(&self) -> [(&'static str, Option<f64>); 3] {
        let ratio = |used: f64, max: f64| (max > 0.0).then(|| used / max);
        [
            (
                "vectors",
                ratio(self.vectors as f64, self.max_vectors as f64),
            ),
            (
                "storage",
                ratio(self.storage_bytes as f64, self.max_storage_bytes as f64),
            ),
            (
                "collections",
                (self.max_collections != u32::MAX)
                    .then(|| ratio(self.collections as f64, self.max_collections as f64))
                    .flatten(),
            ),
        ]
    }
}

/// Server-wide figures.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerFigures {
    pub admission_running: u32,
    pub admission_waiting: u32,
    pub admission_capacity: u32,
    pub registry_capacity: u32,
    pub registry_used: u32,
    pub tenants_active: u32,
    pub tenants_suspended: u32,
    pub tenants_deleted: u32,
    pub index_searches: u64,
    pub index_inserts: u64,
}

/// A folded series: what several tenants add up to.
struct Folded {
    figures: TenantFigures,
    qps: f64,
    statements_per_second: f64,
    p50: Option<f64>,
    p99: Option<f64>,
    usage: [(&'static str, Option<f64>); 3],
    tenants: usize,
}

fn max_opt(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

fn fold(database: &str, tenants: &[TenantFigures]) -> Folded {
    let mut f = TenantFigures {
        database: database.into(),
        tenant: OTHER.into(),
        ..Default::default()
    };
    let (mut qps, mut sps) = (0.0, 0.0);
    let (mut p50, mut p99) = (None, None);
    let mut usage: [(&'static str, Option<f64>); 3] =
        [("vectors", None), ("storage", None), ("collections", None)];
    for t in tenants {
        f.vectors += t.vectors;
        f.storage_bytes += t.storage_bytes;
        f.collections += t.collections;
        f.searches += t.searches;
        f.inserts += t.inserts;
        f.updates += t.updates;
        f.deletes += t.deletes;
        f.refused += t.refused;
        f.admitted += t.admitted;
        f.rate_limited += t.rate_limited;
        f.queued += t.queued;
        f.wait_us += t.wait_us;
        f.latency.add(&t.latency);
        f.last_access_ms = f.last_access_ms.max(t.last_access_ms);
        if let Some((state, lambda)) = t.integrity {
            f.integrity = Some(match f.integrity {
                Some((s, l)) => (s.max(state), l.min(lambda)),
                None => (state, lambda),
            });
        }
        if let Some(w) = t.window {
            qps += w.qps();
            sps += w.statements_per_second();
            p50 = max_opt(p50, w.p50_us.map(f64::from));
            p99 = max_opt(p99, w.p99_us.map(f64::from));
        }
        for (slot, (_, u)) in usage.iter_mut().zip(t.quota_usage()) {
            slot.1 = max_opt(slot.1, u);
        }
    }
    Folded {
        figures: f,
        qps,
        statements_per_second: sps,
        p50,
        p99,
        usage,
        tenants: tenants.len(),
    }
}

fn single(t: &TenantFigures) -> Folded {
    let w = t.window;
    Folded {
        figures: t.clone(),
        qps: w.map_or(0.0, |w| w.qps()),
        statements_per_second: w.map_or(0.0, |w| w.statements_per_second()),
        p50: w.and_then(|w| w.p50_us).map(f64::from),
        p99: w.and_then(|w| w.p99_us).map(f64::from),
        usage: t.quota_usage(),
        tenants: 1,
    }
}

fn labels(pairs: &[(&str, &str)]) -> Vec<LabelPair> {
    pairs
        .iter()
        .map(|(n, v)| {
            let mut l = LabelPair::default();
            l.set_name(n.to_string());
            l.set_value(v.to_string());
            l
        })
        .collect()
}

/// Builds metric families in a fixed order.
#[derive(Default)]
struct Families(Vec<MetricFamily>);

impl Families {
    fn family(&mut self, name: &str, help: &str, kind: MetricType) -> &mut MetricFamily {
        if let Some(i) = self.0.iter().position(|f| f.name() == name) {
            return &mut self.0[i];
        }
        let mut f = MetricFamily::default();
        f.set_name(name.into());
        f.set_help(help.into());
        f.set_field_type(kind);
        self.0.push(f);
        self.0.last_mut().unwrap()
    }

    fn push(&mut self, name: &str, help: &str, kind: MetricType, m: Metric) {
        let f = self.family(name, help, kind);
        let mut all = f.take_metric();
        all.push(m);
        f.set_metric(all);
    }

    fn gauge(&mut self, name: &str, help: &str, l: &[(&str, &str)], v: f64) {
        let mut m = Metric::default();
        m.set_label(labels(l));
        let mut g = Gauge::default();
        g.set_value(v);
        m.set_gauge(g);
        self.push(name, help, MetricType::GAUGE, m);
    }

    fn counter(&mut self, name: &str, help: &str, l: &[(&str, &str)], v: f64) {
        let mut m = Metric::default();
        m.set_label(labels(l));
        let mut c = Counter::default();
        c.set_value(v);
        m.set_counter(c);
        self.push(name, help, MetricType::COUNTER, m);
    }

    fn histogram(&mut self, name: &str, help: &str, l: &[(&str, &str)], h: &Histogram) {
        let mut m = Metric::default();
        m.set_label(labels(l));
        let mut p = PHistogram::default();
        let mut cumulative = 0;
        let buckets = LATENCY_BOUNDS_US
            .iter()
            .zip(h.counts)
            .map(|(&bound, c)| {
                cumulative += c;
                let mut b = Bucket::default();
                b.set_upper_bound(bound as f64 / 1e6);
                b.set_cumulative_count(cumulative);
                b
            })
            .collect();
        p.set_bucket(buckets);
        p.set_sample_count(h.count());
        p.set_sample_sum(h.sum_us as f64 / 1e6);
        m.set_histogram(p);
        self.push(name, help, MetricType::HISTOGRAM, m);
    }
}

fn tenant_series(out: &mut Families, s: &Folded) {
    let t = &s.figures;
    let l = [
        ("database", t.database.as_str()),
        ("tenant", t.tenant.as_str()),
    ];
    out.gauge(
        "ruvector_tenant_vectors",
        "Rows of the tenant in its registered tables.",
        &l,
        t.vectors as f64,
    );
    out.gauge(
        "ruvector_tenant_storage_bytes",
        "Bytes of the tenant's rows in its registered tables.",
        &l,
        t.storage_bytes as f64,
    );
    for (resource, usage) in s.usage {
        if let Some(u) = usage {
            let lr = [l[0], l[1], ("resource", resource)];
            out.gauge(
                "ruvector_tenant_quota_usage",
                "Share of the tenant's limit in use (1 = at the limit); no series without a limit.",
                &lr,
                u,
            );
        }
    }
    out.histogram(
        "ruvector_tenant_search_latency_seconds",
        "Latency of the tenant's search statements.",
        &l,
        &t.latency,
    );
    if let Some(p) = s.p50 {
        out.gauge(
            "ruvector_tenant_search_latency_p50",
            "Median search latency over the last window (ruvector.metrics_window), in seconds.",
            &l,
            p / 1e6,
        );
    }
    if let Some(p) = s.p99 {
        out.gauge(
            "ruvector_tenant_search_latency_p99",
            "99th-percentile search latency over the last window (ruvector.metrics_window), in seconds.",
            &l,
            p / 1e6,
        );
    }
    out.gauge(
        "ruvector_tenant_qps",
        "Searches per second over the last window (ruvector.metrics_window).",
        &l,
        s.qps,
    );
    out.gauge(
        "ruvector_tenant_statements_per_second",
        "Statements (searches, inserts, updates, deletes) per second over the last window (ruvector.metrics_window).",
        &l,
        s.statements_per_second,
    );
    for (op, n) in [
        ("search", t.searches),
        ("insert", t.inserts),
        ("update", t.updates),
        ("delete", t.deletes),
    ] {
        let lo = [l[0], l[1], ("operation", op)];
        out.counter(
            "ruvector_tenant_statements_total",
            "Statements of the tenant, by operation.",
            &lo,
            n as f64,
        );
    }
    out.counter(
        "ruvector_tenant_refused_total",
        "Statements of the tenant refused (context, quota, rate limit, admission).",
        &l,
        t.refused as f64,
    );
    out.counter(
        "ruvector_tenant_admitted_total",
        "Statements of the tenant given an execution slot.",
        &l,
        t.admitted as f64,
    );
    out.counter(
        "ruvector_tenant_rate_limited_total",
        "Statements of the tenant refused by its rate limit.",
        &l,
        t.rate_limited as f64,
    );
    out.counter(
        "ruvector_tenant_queued_total",
        "Statements of the tenant that waited for an execution slot.",
        &l,
        t.queued as f64,
    );
    out.counter(
        "ruvector_tenant_admission_wait_seconds_total",
        "Time the tenant's statements waited for execution slots.",
        &l,
        t.wait_us as f64 / 1e6,
    );
    if let Some((state, lambda)) = t.integrity {
        out.gauge(
            "ruvector_tenant_integrity_state",
            "Integrity state of the tenant's index graph: 0 normal, 1 stress, 2 critical.",
            &l,
            f64::from(state),
        );
        out.gauge(
            "ruvector_tenant_lambda_cut",
            "Normalized minimum cut of the tenant's contracted index graph (1 = healthy).",
            &l,
            lambda,
        );
    }
    if t.last_access_ms > 0 {
        out.gauge(
            "ruvector_tenant_last_access_timestamp_seconds",
            "When the tenant last ran a statement (Unix time).",
            &l,
            t.last_access_ms as f64 / 1000.0,
        );
    }
    if t.tenant == OTHER {
        out.gauge(
            "ruvector_metrics_folded_tenants",
            "Tenants folded into the tenant=\"_other\" series.",
            &[l[0]],
            s.tenants as f64,
        );
    }
}

/// The scrape of `tenants` (every database's) and the server figures; at most
/// `max_tenants` tenant series per database plus one `_other` series.
pub fn render(
    server: &ServerFigures,
    mut tenants: Vec<TenantFigures>,
    max_tenants: usize,
) -> String {
    let mut out = Families::default();
    tenants.sort_by(|a, b| {
        a.database
            .cmp(&b.database)
            .then(b.activity().cmp(&a.activity()))
            .then(a.tenant.cmp(&b.tenant))
    });
    for db in tenants.chunk_by(|a, b| a.database == b.database) {
        let (top, rest) = db.split_at(db.len().min(max_tenants));
        for t in top {
            tenant_series(&mut out, &single(t));
        }
        if !rest.is_empty() {
            tenant_series(&mut out, &fold(&rest[0].database, rest));
        }
    }
    let s = server;
    out.gauge(
        "ruvector_admission_running",
        "Tenant statements holding an execution slot.",
        &[],
        s.admission_running as f64,
    );
    out.gauge(
        "ruvector_admission_waiting",
        "Tenant statements waiting for an execution slot.",
        &[],
        s.admission_waiting as f64,
    );
    out.gauge(
        "ruvector_admission_capacity",
        "Execution slots server-wide (ruvector.max_active_statements).",
        &[],
        s.admission_capacity as f64,
    );
    out.gauge(
        "ruvector_registry_capacity",
        "Tenant slots in shared memory (ruvector.max_tenants).",
        &[],
        s.registry_capacity as f64,
    );
    out.gauge(
        "ruvector_registry_used",
        "Tenant slots in use, deleted tenants' included.",
        &[],
        s.registry_used as f64,
    );
    for (state, n) in [
        ("active", s.tenants_active),
        ("suspended", s.tenants_suspended),
        ("deleted", s.tenants_deleted),
    ] {
        out.gauge(
            "ruvector_tenants",
            "Tenants in the registry, by state.",
            &[("state", state)],
            n as f64,
        );
    }
    out.counter(
        "ruvector_index_searches_total",
        "ruhnsw index scans started.",
        &[],
        s.index_searches as f64,
    );
    out.counter(
        "ruvector_index_inserts_total",
        "Rows inserted into ruhnsw indexes (builds excluded).",
        &[],
        s.index_inserts as f64,
    );
    prometheus::TextEncoder::new()
        .encode_to_string(&out.0)
        .expect("encoding to a string")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(db: &str, id: &str, recent: u32, searches: u64) -> TenantFigures {
        let mut latency = Histogram::default();
        latency.counts[4] = searches; // 250 to 500 µs
        latency.sum_us = searches * 400;
        TenantFigures {
            database: db.into(),
            tenant: id.into(),
            vectors: 90,
            max_vectors: 100,
            storage_bytes: 1000,
            searches,
            latency,
            window: Some(Window {
                start_ms: 0,
                end_ms: 60_000,
                searches: recent,
                statements: recent,
                p50_us: Some(300),
                p99_us: Some(490),
            }),
            ..Default::default()
        }
    }

    fn lines_of<'a>(text: &'a str, metric: &str) -> Vec<&'a str> {
        text.lines()
            .filter(|l| l.starts_with(metric) && l[metric.len()..].starts_with('{'))
            .collect()
    }

    #[test]
    fn the_most_active_tenants_get_series_and_the_rest_are_folded() {
        let tenants: Vec<_> = (0..10)
            .map(|i| tenant("app", &format!("t{i}"), i * 10, 5))
            .collect();
        let text = render(&ServerFigures::default(), tenants, 3);
        let vectors = lines_of(&text, "ruvector_tenant_vectors");
        assert_eq!(vectors.len(), 4, "{vectors:?}");
        for t in ["t9", "t8", "t7"] {
            assert!(text.contains(&format!(
                "ruvector_tenant_vectors{{database=\"app\",tenant=\"{t}\"}} 90"
            )));
        }
        assert!(text.contains("ruvector_tenant_vectors{database=\"app\",tenant=\"_other\"} 630"));
        assert!(text.contains("ruvector_metrics_folded_tenants{database=\"app\"} 7"));
        // Quota usage of the folded series is the highest, not the sum.
        assert!(text.contains(
            "ruvector_tenant_quota_usage{database=\"app\",tenant=\"_other\",resource=\"vectors\"} 0.9"
        ));
        // Rates add up: 7 tenants with 0..60 statements a minute.
        let qps = (0..7).map(|i| i as f64 * 10.0 / 60.0).sum::<f64>();
        let line = lines_of(&text, "ruvector_tenant_qps")
            .into_iter()
            .find(|l| l.contains("_other"))
            .unwrap();
        let v: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!((v - qps).abs() < 1e-9);
    }

    #[test]
    fn histograms_are_cumulative_with_every_bound_in_seconds() {
        let text = render(
            &ServerFigures::default(),
            vec![tenant("app", "a", 1, 7)],
            100,
        );
        let buckets = lines_of(&text, "ruvector_tenant_search_latency_seconds_bucket");
        assert_eq!(buckets.len(), LATENCY_BOUNDS_US.len() + 1);
        assert!(buckets[0].contains("le=\"0.000025\"") && buckets[0].ends_with(" 0"));
        assert!(buckets[3].contains("le=\"0.00025\"") && buckets[3].ends_with(" 0"));
        assert!(buckets[4].contains("le=\"0.0005\"") && buckets[4].ends_with(" 7"));
        assert!(buckets[15].contains("le=\"+Inf\"") && buckets[15].ends_with(" 7"));
        assert!(text.contains(
            "ruvector_tenant_search_latency_seconds_sum{database=\"app\",tenant=\"a\"} 0.0028"
        ));
        assert!(text
            .contains("ruvector_tenant_search_latency_p99{database=\"app\",tenant=\"a\"} 0.00049"));
        assert!(text.contains("# TYPE ruvector_tenant_search_latency_seconds histogram"));
    }

    #[test]
    fn no_limit_no_usage_series_and_label_values_are_escaped() {
        let mut t = tenant("app", "we\"ird", 1, 1);
        t.max_vectors = 0;
        let text = render(&ServerFigures::default(), vec![t], 100);
        assert!(!text.contains("resource=\"vectors\""));
        assert!(text.contains("tenant=\"we\\\"ird\""));
    }

    #[test]
    fn the_folded_series_reports_the_worst_integrity() {
        let mut tenants: Vec<_> = (0..4)
            .map(|i| tenant("app", &format!("t{i}"), 10 - i, 1))
            .collect();
        tenants[2].integrity = Some((2, 0.1));
        tenants[3].integrity = Some((1, 0.3));
        tenants[0].integrity = Some((0, 1.0));
        let text = render(&ServerFigures::default(), tenants, 2);
        assert!(text.contains("ruvector_tenant_integrity_state{database=\"app\",tenant=\"t0\"} 0"));
        assert!(
            text.contains("ruvector_tenant_integrity_state{database=\"app\",tenant=\"_other\"} 2")
        );
        assert!(text.contains("ruvector_tenant_lambda_cut{database=\"app\",tenant=\"_other\"} 0.1"));
        assert!(
            !text.contains("ruvector_tenant_lambda_cut{database=\"app\",tenant=\"t1\"}"),
            "t1 was never sampled"
        );
    }

    #[test]
    fn each_database_is_bounded_on_its_own() {
        let mut tenants: Vec<_> = (0..5)
            .map(|i| tenant("a", &format!("t{i}"), i, 1))
            .collect();
        tenants.extend((0..5).map(|i| tenant("b", &format!("t{i}"), i, 1)));
        let text = render(&ServerFigures::default(), tenants, 2);
        assert_eq!(lines_of(&text, "ruvector_tenant_vectors").len(), 6);
    }
}
