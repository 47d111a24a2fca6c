//! Prometheus metrics of mounts: what `datamon bundle mount`, `datamon bundle mount new` and
//! the CSI node plugin serve at `--metrics-addr` (`GET /metrics`, OpenMetrics text).
//!
//! One [`MountMetrics`] per process totals every mount it serves: give its [`MountMetrics::vfs`]
//! counters to each mount's `VfsOptions::metrics`, hold a [`MountGauge`] while a mount is up,
//! and report each commit of a writable mount with [`MountMetrics::commit`]. The counters are
//! atomics read at scrape time, so a scrape never blocks a read.
//!
//! | metric | type | meaning |
//! |---|---|---|
//! | `datamon_mounts{mode}` | gauge | mounts served now, `read-only` or `versioned` |
//! | `datamon_read_requests_total` | counter | read calls answered |
//! | `datamon_read_bytes_total` | counter | bytes returned to readers |
//! | `datamon_cache_hits_total{cache}` | counter | chunks found in the `memory` or `disk` cache |
//! | `datamon_cache_misses_total` | counter | chunks a reader needed that no cache held |
//! | `datamon_store_reads_total` | counter | range reads of the store (read-ahead included) |
//! | `datamon_store_read_chunks_total` | counter | chunks fetched from the store and verified |
//! | `datamon_store_read_bytes_total` | counter | bytes of those chunks |
//! | `datamon_fetch_errors_total` | counter | store accesses that failed or timed out |
//! | `datamon_commits_total{result}` | counter | commits of writable mounts: `committed`, `unchanged`, `failed` |
//! | `datamon_build_info{version}` | gauge | 1 |

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use datamon::vfs::VfsMetrics;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

/// The content type of [`MountMetrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What kind of mount a [`MountGauge`] counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountMode {
    /// A bundle, read-only.
    ReadOnly,
    /// A writable work tree whose changes are committed as new bundles.
    Versioned,
}

impl MountMode {
    fn label(self) -> &'static str {
        match self {
            MountMode::ReadOnly => "read-only",
            MountMode::Versioned => "versioned",
        }
    }
}

/// How one commit of a writable mount ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitResult {
    /// A new bundle was made.
    Committed,
    /// Nothing had changed: no bundle.
    Unchanged,
    /// The commit failed (the data stays for a retry).
    Failed,
}

const MODES: [MountMode; 2] = [MountMode::ReadOnly, MountMode::Versioned];
const RESULTS: [(CommitResult, &str); 3] = [
    (CommitResult::Committed, "committed"),
    (CommitResult::Unchanged, "unchanged"),
    (CommitResult::Failed, "failed"),
];

/// The metrics of every mount of one process (see the module docs).
#[derive(Debug, Default)]
pub struct MountMetrics {
    vfs: Arc<VfsMetrics>,
    mounts: [AtomicI64; 2],
    commits: [AtomicU64; 3],
}

/// Counts one mount in `datamon_mounts` while it is alive.
#[derive(Debug)]
pub struct MountGauge {
    metrics: Arc<MountMetrics>,
    mode: MountMode,
}

impl Drop for MountGauge {
    fn drop(&mut self) {
        self.metrics.mounts[self.mode as usize].fetch_sub(1, Relaxed);
    }
}

impl MountMetrics {
    /// Metrics at zero.
    pub fn new() -> Arc<MountMetrics> {
        Arc::default()
    }

    /// The read counters to give every mount (`VfsOptions::metrics`).
    pub fn vfs(&self) -> Arc<VfsMetrics> {
        self.vfs.clone()
    }

    /// Counts a mount of `mode` until the returned gauge is dropped.
    pub fn track(self: &Arc<Self>, mode: MountMode) -> MountGauge {
        self.mounts[mode as usize].fetch_add(1, Relaxed);
        MountGauge {
            metrics: self.clone(),
            mode,
        }
    }

    /// Counts a commit of a writable mount.
    pub fn commit(&self, result: CommitResult) {
        self.commits[result as usize].fetch_add(1, Relaxed);
    }

    /// Mounts of `mode` served now.
    pub fn mounted(&self, mode: MountMode) -> i64 {
        self.mounts[mode as usize].load(Relaxed)
    }

    /// The metrics in the OpenMetrics text format ([`CONTENT_TYPE`]).
    pub fn render(self: &Arc<Self>) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Collect(self.clone())));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// The collector that reads the counters at scrape time.
#[derive(Debug)]
struct Collect(Arc<MountMetrics>);

/// One metric with one sample per value of label `key` (`samples`: label value, metric).
fn family<M: EncodeMetric>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    key: &str,
    samples: &[(&str, M)],
) -> std::fmt::Result {
    let Some((_, first)) = samples.first() else {
        return Ok(());
    };
    let mut f = e.encode_descriptor(name, help, None, first.metric_type())?;
    for (value, m) in samples {
        m.encode(f.encode_family(&[(key, *value)])?)?;
    }
    Ok(())
}

impl Collector for Collect {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let m = &self.0;
        let v = m.vfs.snapshot();
        let mounts = MODES.map(|mode| (mode.label(), ConstGauge::new(m.mounted(mode))));
        family(
            &mut e,
            "datamon_mounts",
            "Mounts served now",
            "mode",
            &mounts,
        )?;
        let plain = [
            ("datamon_read_requests", "Read calls answered", v.reads),
            (
                "datamon_read_bytes",
                "Bytes returned to readers",
                v.read_bytes,
            ),
            (
                "datamon_cache_misses",
                "Chunks readers needed that no cache held",
                v.misses,
            ),
            (
                "datamon_store_reads",
                "Range reads of the store, read-ahead included",
                v.store_reads,
            ),
            (
                "datamon_store_read_chunks",
                "Chunks fetched from the store and verified",
                v.fetched_chunks,
            ),
            (
                "datamon_store_read_bytes",
                "Bytes of the chunks fetched from the store",
                v.fetched_bytes,
            ),
            (
                "datamon_fetch_errors",
                "Store accesses of mounts that failed or timed out",
                v.fetch_errors,
            ),
        ];
        for (name, help, value) in plain {
            let c = ConstCounter::new(value);
            c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)?;
        }
        family(
            &mut e,
            "datamon_cache_hits",
            "Chunks readers needed that a cache held, by cache",
            "cache",
            &[
                ("memory", ConstCounter::new(v.memory_hits)),
                ("disk", ConstCounter::new(v.disk_hits)),
            ],
        )?;
        let commits = RESULTS.map(|(r, label)| {
            (
                label,
                ConstCounter::new(m.commits[r as usize].load(Relaxed)),
            )
        });
        family(
            &mut e,
            "datamon_commits",
            "Commits of writable mounts, by result",
            "result",
            &commits,
        )?;
        family(
            &mut e,
            "datamon_build_info",
            "The datamon version serving these metrics",
            "version",
            &[(env!("CARGO_PKG_VERSION"), ConstGauge::new(1i64))],
        )
    }
}

/// Parses a metrics address: `HOST:PORT`, or `:PORT` for every interface (as Kubernetes
/// components write it).
///
/// # Errors
/// Anything else, with a message that shows the accepted forms.
pub fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    let full = if s.starts_with(':') {
        format!("0.0.0.0{s}")
    } else {
        s.to_owned()
    };
    full.parse().map_err(|_| {
        format!(
            "invalid metrics address {s:?}: give HOST:PORT (127.0.0.1:9101, [::1]:9101) or :PORT"
        )
    })
}

/// A metrics endpoint being served; stops when dropped.
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl MetricsServer {
    /// Binds `addr` and serves `GET /metrics` (and `/`) from `metrics` on the current runtime.
    ///
    /// # Errors
    /// The address cannot be bound (in use, not local, no permission).
    pub async fn start(addr: SocketAddr, metrics: Arc<MountMetrics>) -> std::io::Result<Self> {
        use axum::routing::get;
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let scrape = move || {
            let m = metrics.clone();
            async move {
                (
                    [(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)],
                    m.render(),
                )
            }
        };
        let app = axum::Router::new()
            .route("/metrics", get(scrape.clone()))
            .route("/", get(scrape));
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!("the metrics endpoint stopped: {e}");
            }
        });
        tracing::info!("serving metrics at http://{addr}/metrics");
        Ok(MetricsServer { addr, task })
    }

    /// The address it listens on (the port chosen, for `:0`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauges_follow_mounts_and_commits_are_counted() {
        let m = MountMetrics::new();
        let a = m.track(MountMode::ReadOnly);
        let b = m.track(MountMode::Versioned);
        let c = m.track(MountMode::ReadOnly);
        m.commit(CommitResult::Committed);
        m.commit(CommitResult::Failed);
        m.commit(CommitResult::Failed);
        let text = m.render();
        assert!(
            text.contains("datamon_mounts{mode=\"read-only\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("datamon_mounts{mode=\"versioned\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("datamon_commits_total{result=\"failed\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("datamon_commits_total{result=\"committed\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("datamon_commits_total{result=\"unchanged\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE datamon_read_bytes counter\n"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
        drop((a, b));
        assert_eq!(m.mounted(MountMode::ReadOnly), 1);
        assert_eq!(m.mounted(MountMode::Versioned), 0);
        drop(c);
        assert!(m
            .render()
            .contains("datamon_mounts{mode=\"read-only\"} 0\n"));
    }

    #[test]
    fn addresses_parse_with_or_without_a_host() {
        assert_eq!(
            parse_addr(":9101").unwrap(),
            "0.0.0.0:9101".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            parse_addr("127.0.0.1:0").unwrap(),
            "127.0.0.1:0".parse::<SocketAddr>().unwrap()
        );
        assert!(parse_addr("[::1]:9").is_ok());
        let e = parse_addr("localhost").unwrap_err();
        assert!(e.contains("HOST:PORT"), "{e}");
    }
}
