//! Where log lines go. Under systemd with stderr connected to the journal (`$JOURNAL_STREAM`
//! names stderr's device:inode), tracing events are sent to journald natively through
//! `systemd-journal-logger`, each event's fields (and its spans' fields) becoming journal
//! fields: `warn!(show_id = %id, error = %e, "…")` is findable with `journalctl SHOW_ID=…`.
//! Otherwise: human-readable lines on stderr (tracing-subscriber's fmt).
//!
//! The level comes from `RUST_LOG` when set and valid, else `[log] level`, else `info`.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{EnvFilter, prelude::*};

/// Where [`init`] sent the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    Journal,
    Stderr,
}

/// `[log] level` as filter directives: a bare level applies to plexsync and its plugins
/// (every target starting with `plexsync`), while libraries (the cron scheduler, hyper…) stay
/// at `warn` unless the level is quieter still; anything else is taken as written.
fn directives(level: &str) -> String {
    let l = level.trim();
    match l.to_ascii_lowercase().as_str() {
        "trace" | "debug" | "info" => format!("warn,plexsync={l}"),
        _ => l.to_string(),
    }
}

/// Install the global subscriber (once; later calls change nothing).
pub fn init(level: &str) -> Destination {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .or_else(|| EnvFilter::try_new(directives(level)).ok())
        .unwrap_or_else(|| EnvFilter::new(directives("info")));
    let mut journal_error = None;
    if systemd_journal_logger::connected_to_journal() {
        match systemd_journal_logger::JournalLog::new() {
            Ok(journal) => {
                let journal = journal.with_syslog_identifier("plexsync".into());
                let _ = tracing_subscriber::registry()
                    .with(filter)
                    .with(JournalLayer::new(journal))
                    .try_init();
                return Destination::Journal;
            }
            Err(e) => journal_error = Some(e),
        }
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
    if let Some(e) = journal_error {
        tracing::warn!(error = %e, "stderr is the journal's, but journald does not take native messages; logging plain lines to stderr");
    }
    Destination::Stderr
}

/// A tracing [`Layer`] that hands every event to a [`log::Log`] (the journal logger) as a
/// record whose key-values are the event's fields and those of its spans.
pub struct JournalLayer<L> {
    logger: L,
}

impl<L: log::Log> JournalLayer<L> {
    pub fn new(logger: L) -> Self {
        JournalLayer { logger }
    }
}

/// A field value as recorded, kept typed so numbers stay numbers for the logger.
#[derive(Debug, Clone, PartialEq)]
enum Val {
    Str(String),
    I64(i64),
    U64(u64),
    F64(f64),
    Bool(bool),
}

impl fmt::Display for Val {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Val::Str(s) => f.write_str(s),
            Val::I64(n) => write!(f, "{n}"),
            Val::U64(n) => write!(f, "{n}"),
            Val::F64(n) => write!(f, "{n}"),
            Val::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// Fields of a span (stored in its extensions) or of an event.
#[derive(Debug, Default, Clone)]
struct Fields {
    message: Option<String>,
    pairs: Vec<(&'static str, Val)>,
    /// `log.target` and friends: events that came from the `log` crate through tracing-log.
    log_target: Option<String>,
    log_module: Option<String>,
    log_file: Option<String>,
    log_line: Option<u32>,
}

impl Fields {
    /// Later values win: an event's own field over its span's, an inner span's over an outer.
    fn set(&mut self, key: &'static str, v: Val) {
        match self.pairs.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = v,
            None => self.pairs.push((key, v)),
        }
    }
    fn put(&mut self, field: &Field, v: Val) {
        match field.name() {
            "message" => self.message = Some(v.to_string()),
            "log.target" => self.log_target = Some(v.to_string()),
            "log.module_path" => self.log_module = Some(v.to_string()),
            "log.file" => self.log_file = Some(v.to_string()),
            "log.line" => self.log_line = v.to_string().parse().ok(),
            n if n.starts_with("log.") => {}
            n => self.set(journal_key(n), v),
        }
    }
}

/// Field names the journal logger writes itself; an event field of the same name is renamed
/// so it cannot shadow them (journalctl shows the first value of a repeated field).
const RESERVED: &[&str] = &[
    "message",
    "priority",
    "syslog_identifier",
    "syslog_pid",
    "code_file",
    "code_line",
    "code_module",
    "target",
];

fn journal_key(name: &'static str) -> &'static str {
    if RESERVED.iter().any(|r| r.eq_ignore_ascii_case(name)) {
        match name.to_ascii_lowercase().as_str() {
            "priority" => "field_priority",
            "syslog_identifier" => "field_syslog_identifier",
            "syslog_pid" => "field_syslog_pid",
            "code_file" => "field_code_file",
            "code_line" => "field_code_line",
            "code_module" => "field_code_module",
            "target" => "field_target",
            _ => "field_message",
        }
    } else {
        name
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Val::Str(value.to_string()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Val::I64(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Val::U64(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Val::F64(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Val::Bool(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, Val::Str(value.to_string()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, Val::Str(format!("{value:?}")));
    }
}

/// The key-values of one record, in the shape `log` wants.
struct Kvs<'a>(&'a [(&'static str, Val)]);

impl log::kv::Source for Kvs<'_> {
    fn visit<'kvs>(
        &'kvs self,
        visitor: &mut dyn log::kv::VisitSource<'kvs>,
    ) -> Result<(), log::kv::Error> {
        for (k, v) in self.0 {
            let value = match v {
                Val::Str(s) => log::kv::Value::from(s.as_str()),
                Val::I64(n) => log::kv::Value::from(*n),
                Val::U64(n) => log::kv::Value::from(*n),
                Val::F64(n) => log::kv::Value::from(*n),
                Val::Bool(b) => log::kv::Value::from(*b),
            };
            visitor.visit_pair(log::kv::Key::from_str(k), value)?;
        }
        Ok(())
    }
}

fn level(l: &tracing::Level) -> log::Level {
    match *l {
        tracing::Level::ERROR => log::Level::Error,
        tracing::Level::WARN => log::Level::Warn,
        tracing::Level::INFO => log::Level::Info,
        tracing::Level::DEBUG => log::Level::Debug,
        tracing::Level::TRACE => log::Level::Trace,
    }
}

impl<S, L> Layer<S> for JournalLayer<L>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    L: log::Log + 'static,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        span.extensions_mut().insert(fields);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut ext = span.extensions_mut();
        if let Some(fields) = ext.get_mut::<Fields>() {
            values.record(fields);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut own = Fields::default();
        event.record(&mut own);
        let mut all = Fields::default();
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(f) = span.extensions().get::<Fields>() {
                    for (k, v) in &f.pairs {
                        all.set(k, v.clone());
                    }
                }
            }
        }
        for (k, v) in &own.pairs {
            all.set(k, v.clone());
        }
        // `journalctl -u plexsync` shows MESSAGE only; the event's own fields are repeated
        // there (as on stderr) so an operator sees the error without `-o verbose`. Filtering
        // uses the separate journal fields.
        let mut message = own.message.clone().unwrap_or_default();
        for (k, v) in &own.pairs {
            if !message.is_empty() {
                message.push(' ');
            }
            let _ = write!(message, "{k}={v}");
        }
        let meta = event.metadata();
        let target = own.log_target.as_deref().unwrap_or(meta.target());
        let module = own.log_module.as_deref().or(meta.module_path());
        let file = own.log_file.as_deref().or(meta.file());
        let line = own.log_line.or(meta.line());
        let kvs = Kvs(&all.pairs);
        self.logger.log(
            &log::Record::builder()
                .args(format_args!("{message}"))
                .level(level(meta.level()))
                .target(target)
                .module_path(module)
                .file(file)
                .line(line)
                .key_values(&kvs)
                .build(),
        );
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_bare_level_keeps_libraries_at_warn() {
        assert_eq!(directives("info"), "warn,plexsync=info");
        assert_eq!(directives(" DEBUG "), "warn,plexsync=DEBUG");
        assert_eq!(directives("warn"), "warn");
        assert_eq!(
            directives("plexsync=debug,hyper=info"),
            "plexsync=debug,hyper=info"
        );
        assert!(EnvFilter::try_new(directives("debug")).is_ok());
    }

    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Debug, Clone)]
    struct Captured {
        level: log::Level,
        target: String,
        message: String,
        kvs: Vec<(String, String)>,
    }

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<Captured>>>);

    impl log::Log for Capture {
        fn enabled(&self, _: &log::Metadata) -> bool {
            true
        }
        fn log(&self, record: &log::Record) {
            struct Collect(Vec<(String, String)>);
            impl<'kvs> log::kv::VisitSource<'kvs> for Collect {
                fn visit_pair(
                    &mut self,
                    key: log::kv::Key<'kvs>,
                    value: log::kv::Value<'kvs>,
                ) -> Result<(), log::kv::Error> {
                    self.0.push((key.as_str().to_string(), value.to_string()));
                    Ok(())
                }
            }
            let mut c = Collect(Vec::new());
            record.key_values().visit(&mut c).unwrap();
            self.0.lock().unwrap().push(Captured {
                level: record.level(),
                target: record.target().to_string(),
                message: record.args().to_string(),
                kvs: c.0,
            });
        }
        fn flush(&self) {}
    }

    fn capture(f: impl FnOnce()) -> Vec<Captured> {
        let cap = Capture::default();
        let subscriber = tracing_subscriber::registry().with(JournalLayer::new(cap.clone()));
        tracing::subscriber::with_default(subscriber, f);
        cap.0.lock().unwrap().clone()
    }

    fn kv<'a>(c: &'a Captured, key: &str) -> Option<&'a str> {
        c.kvs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// What systemd-journal-logger does to a key, and what journald accepts afterwards.
    fn valid_journal_field(key: &str) -> bool {
        let up = key.to_ascii_uppercase();
        !up.is_empty()
            && up.len() <= 64
            && up.starts_with(|c: char| c.is_ascii_uppercase())
            && up
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
    }

    #[test]
    fn event_fields_become_record_key_values() {
        let got = capture(|| {
            let e = std::io::Error::other("connection refused");
            tracing::warn!(
                show_id = %"tt0903747",
                rating_key = 4711u64,
                attempt = -1i64,
                event = "media.scrobble",
                status = 503u16,
                error = %e,
                "export failed"
            );
        });
        assert_eq!(got.len(), 1);
        let c = &got[0];
        assert_eq!(c.level, log::Level::Warn);
        assert_eq!(c.target, module_path!());
        assert_eq!(kv(c, "show_id"), Some("tt0903747"));
        assert_eq!(kv(c, "rating_key"), Some("4711"));
        assert_eq!(kv(c, "attempt"), Some("-1"));
        assert_eq!(kv(c, "event"), Some("media.scrobble"));
        assert_eq!(kv(c, "status"), Some("503"));
        assert_eq!(kv(c, "error"), Some("connection refused"));
        assert!(c.message.starts_with("export failed "), "{}", c.message);
        assert!(c.message.contains("error=connection refused"));
        assert!(kv(c, "message").is_none());
        for (k, _) in &c.kvs {
            assert!(valid_journal_field(k), "{k} is not a journal field name");
        }
    }

    #[test]
    fn span_fields_are_included_and_the_event_wins() {
        let got = capture(|| {
            let outer = tracing::info_span!("export", batch_id = 7u64, show_id = "outer");
            let _o = outer.enter();
            let inner = tracing::info_span!("request", attempt = tracing::field::Empty);
            let _i = inner.enter();
            inner.record("attempt", 3u64);
            tracing::info!(show_id = "inner", "delivered");
        });
        let c = &got[0];
        assert_eq!(kv(c, "batch_id"), Some("7"));
        assert_eq!(kv(c, "attempt"), Some("3"));
        assert_eq!(kv(c, "show_id"), Some("inner"));
        assert_eq!(c.kvs.iter().filter(|(k, _)| k == "show_id").count(), 1);
        // Only the event's own fields are repeated in the message.
        assert_eq!(c.message, "delivered show_id=inner");
    }

    #[test]
    fn reserved_names_cannot_shadow_the_loggers_fields() {
        let got = capture(|| {
            tracing::error!(target = "x", priority = 1u64, "odd fields");
        });
        let c = &got[0];
        assert_eq!(kv(c, "field_target"), Some("x"));
        assert_eq!(kv(c, "field_priority"), Some("1"));
        assert!(kv(c, "target").is_none() && kv(c, "priority").is_none());
        assert_eq!(c.level, log::Level::Error);
    }

    #[test]
    fn levels_map_one_to_one() {
        let got = capture(|| {
            tracing::trace!("t");
            tracing::debug!("d");
            tracing::info!("i");
        });
        let levels: Vec<_> = got.iter().map(|c| c.level).collect();
        assert_eq!(
            levels,
            [log::Level::Trace, log::Level::Debug, log::Level::Info]
        );
        assert_eq!(got[2].message, "i");
    }
}
