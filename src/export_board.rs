//! The exporter's figures on the status board (issue 15): requests in flight, the request
//! latency histogram, budget waits, the budget state `status` shows, and the `export_budget`
//! answer type. A leaf module: the state holds it, the exporter fills it, `/metrics` and
//! `/api/status` read it.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `export_budget` of `GET /api/status`: whether exports are limited (a configured
/// `[tracker] max_requests_per_*`, or the tracker asked to wait), until when they wait, and
/// roughly how long the backlog will take at that pace.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExportBudget {
    /// A request budget is configured, or the tracker answered 429 and exports wait.
    pub limited: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_minute: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_hour: Option<u32>,
    /// Unix seconds: no export request goes before then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_until: Option<i64>,
    /// Why: `budget` (the configured limit is used up) or `tracker` (its Retry-After).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
    /// What the tracker announced of its own budget with its last answer (rate-limit headers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracker: Option<TrackerBudget>,
    /// Requests the backlog needs at least (formed batches + each show's waiting episodes).
    #[serde(default)]
    pub backlog_requests: u64,
    /// Roughly how long until the backlog is at the tracker at the allowed pace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backlog_eta_secs: Option<u64>,
    /// Requests allowed in flight right now (lower while the tracker is slow or pushes back).
    #[serde(default)]
    pub in_flight_limit: usize,
}

/// The tracker's budget as stated by its `RateLimit-*` / `X-RateLimit-*` headers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackerBudget {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    /// Requests left (less those sent since it said so).
    pub remaining: u64,
    /// Unix seconds: when its window resets.
    pub reset_at: i64,
}

/// The exporter's figures on the status board: `/metrics` and `status` read them.
#[derive(Debug, Default)]
pub struct ExportBoard {
    /// Tracker requests in flight now.
    pub in_flight: AtomicU64,
    /// Tracker request durations.
    pub latency: LatencyHistogram,
    /// Times an export waited because the request budget was used up.
    pub budget_waits: AtomicU64,
    /// Bulk imports running besides a backfill (see [`ExportBoard::bulk_import`]).
    pub(crate) bulk_imports: AtomicU64,
    pub(crate) view: Mutex<BudgetView>,
}

/// Held while a bulk import produces plays; see [`ExportBoard::bulk_import`].
pub struct BulkImport<'a>(&'a AtomicU64);

impl Drop for BulkImport<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

impl ExportBoard {
    /// A bulk import (a library sync, say) other than the backfill, which the exporter sees by
    /// its lock: while the guard lives, part-full batches wait for the import's end (at most
    /// [`BACKFILL_HOLD`]) instead of going out once per page.
    pub fn bulk_import(&self) -> BulkImport<'_> {
        self.bulk_imports.fetch_add(1, Relaxed);
        BulkImport(&self.bulk_imports)
    }
}

#[derive(Debug, Default, Clone)]
pub(crate) struct BudgetView {
    pub(crate) tracker: Option<TrackerBudget>,
    pub(crate) waiting_until: Option<i64>,
    pub(crate) waiting_for: Option<&'static str>,
    pub(crate) available_now: u64,
    pub(crate) in_flight_limit: usize,
}

/// Upper bounds (seconds) of the latency histogram's buckets.
const BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A Prometheus histogram of request durations (cumulative when rendered).
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl LatencyHistogram {
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| s <= *b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros().min(u64::MAX as u128) as u64, Relaxed);
    }
}

impl ExportBoard {
    /// The exporter's `/metrics` families, in the text exposition format.
    pub fn render_metrics(&self, o: &mut String) {
        use std::fmt::Write as _;
        let name = "plexsync_export_request_duration_seconds";
        let _ = writeln!(
            o,
            "# HELP {name} Tracker export request durations.\n# TYPE {name} histogram"
        );
        let mut cum = 0;
        for (b, c) in BUCKETS.iter().zip(&self.latency.buckets) {
            cum += c.load(Relaxed);
            let _ = writeln!(o, "{name}_bucket{{le=\"{b}\"}} {cum}");
        }
        let count = self.latency.count.load(Relaxed);
        let _ = writeln!(o, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.latency.sum_micros.load(Relaxed) as f64 / 1e6;
        let _ = writeln!(o, "{name}_sum {sum}\n{name}_count {count}");
        let _ = writeln!(
            o,
            "# HELP plexsync_export_requests_in_flight Tracker export requests in flight.\n# TYPE plexsync_export_requests_in_flight gauge\nplexsync_export_requests_in_flight {}",
            self.in_flight.load(Relaxed)
        );
        let _ = writeln!(
            o,
            "# HELP plexsync_export_budget_waits_total Times exports waited for the request budget.\n# TYPE plexsync_export_budget_waits_total counter\nplexsync_export_budget_waits_total {}",
            self.budget_waits.load(Relaxed)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_renders_cumulative_buckets() {
        let b = ExportBoard::default();
        b.latency.observe(Duration::from_millis(3));
        b.latency.observe(Duration::from_millis(30));
        b.latency.observe(Duration::from_secs(30));
        b.in_flight.store(2, Relaxed);
        let mut o = String::new();
        b.render_metrics(&mut o);
        assert!(o.contains("# TYPE plexsync_export_request_duration_seconds histogram"));
        assert!(o.contains("plexsync_export_request_duration_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(o.contains("plexsync_export_request_duration_seconds_bucket{le=\"0.05\"} 2\n"));
        assert!(o.contains("plexsync_export_request_duration_seconds_bucket{le=\"10\"} 2\n"));
        assert!(o.contains("plexsync_export_request_duration_seconds_bucket{le=\"+Inf\"} 3\n"));
        assert!(o.contains("plexsync_export_request_duration_seconds_count 3\n"));
        assert!(o.contains("plexsync_export_requests_in_flight 2\n"));
    }
}
