//! Where log lines go. Under systemd with stderr connected to the journal (`$JOURNAL_STREAM`
//! names stderr's device:inode), tracing events are sent to journald natively through
//! `systemd-journal-logger`, each event's fields (and its spans' fields) becoming journal
//! fields: `warn!(show_id = %id, error = %e, "…")` is findable with `journalctl SHOW_ID=…`.
//! Otherwise: human-readable lines on stderr (tracing-subscriber's fmt).
//!
//! The level comes from `RUST_LOG` when set and valid, else `[log] level`, else `info`.
//!
//! Logged values carry text from outside (show titles from webhooks, error bodies, paths), so
//! both destinations escape control characters in every message and field value
//! ([`escape_control`]): a title holding a newline cannot forge a second log line, and ESC
//! bytes never reach a terminal raw. This happens here, in the formatting layer, once: on
//! stderr through [`EscapedFields`], in the journal through the [`JournalLayer`]'s visitor.

use std::borrow::Cow;
use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::{DefaultFields, Format, Writer};
use tracing_subscriber::fmt::{FormatFields, MakeWriter, SubscriberBuilder};
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

/// What `[log] level` takes, for messages.
pub const LEVEL_HINT: &str =
    "a level (error, warn, info, debug, trace or off) or a filter like \"plexsync=debug,info\"";

/// Check `[log] level`: a level name, or a comma-separated list of directives as `RUST_LOG`
/// takes them (`plexsync=debug,info`), each checked with tracing-subscriber's own parser.
/// A bare word must be a level: EnvFilter would take `verbose` as a target name, and a filter
/// that matches no target logs nothing at all.
pub fn check_level(level: &str) -> Result<(), String> {
    const LEVELS: &[&str] = &["off", "error", "warn", "info", "debug", "trace"];
    let l = level.trim();
    if l.is_empty() {
        return Err(format!("is empty; expected {LEVEL_HINT}"));
    }
    for d in l.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        if !d.contains(['=', '[']) {
            if !LEVELS.contains(&d.to_ascii_lowercase().as_str()) {
                return Err(format!("{d:?} is not a level; expected {LEVEL_HINT}"));
            }
            continue;
        }
        d.parse::<tracing_subscriber::filter::Directive>()
            .map_err(|e| format!("{d:?} is not a filter directive ({e}); expected {LEVEL_HINT}"))?;
    }
    EnvFilter::try_new(l)
        .map(drop)
        .map_err(|e| format!("{l:?} is not a filter ({e}); expected {LEVEL_HINT}"))
}

/// tungstenite logs the websocket's upgrade request, Plex token header included, at trace
/// level (`handshake::client`: "Request: …"), and no setting of its hides it. Whatever a
/// person asks for (`RUST_LOG=trace`, `tungstenite=trace`), that one module stays at debug.
const SECRET_TRACES: &str = "tungstenite::handshake::client=debug";

fn without_secret_traces(filter: EnvFilter) -> EnvFilter {
    match SECRET_TRACES.parse() {
        Ok(d) => filter.add_directive(d),
        Err(_) => filter,
    }
}

/// Install the global subscriber (once; later calls change nothing).
pub fn init(level: &str) -> Destination {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .or_else(|| EnvFilter::try_new(directives(level)).ok())
        .unwrap_or_else(|| EnvFilter::new(directives("info")));
    let filter = without_secret_traces(filter);
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
    let _ = lines(filter, std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    if let Some(e) = journal_error {
        tracing::warn!(error = %e, "stderr is the journal's, but journald does not take native messages; logging plain lines to stderr");
    }
    Destination::Stderr
}

/// The stderr destination's layout (escaped fields, no target) writing to `writer`.
fn lines<W>(filter: EnvFilter, writer: W) -> SubscriberBuilder<EscapedFields, Format, EnvFilter, W>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .fmt_fields(EscapedFields::default())
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(false)
}

/// The subscriber [`init`] installs when logging to stderr, writing plain lines (no ANSI) to
/// `writer` instead and filtered by `directives` (as `RUST_LOG` takes them; the environment
/// is not read), without installing it: for daemons run in process (tests), each logging to
/// its own buffer through a thread-default dispatcher, in the very text the binary writes.
pub fn lines_subscriber<W>(directives: &str, writer: W) -> impl Subscriber + Send + Sync + 'static
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_new(directives).unwrap_or_else(|_| EnvFilter::new("info"));
    lines(without_secret_traces(filter), writer)
        .with_ansi(false)
        .finish()
}

/// Whether `c` is escaped in logs: the C0 controls (newline, carriage return, tab, ESC…), DEL
/// and the C1 controls (Unicode `Cc`), plus the line and paragraph separators (U+2028/9, shown
/// as line breaks by some viewers) and the bidirectional formatting characters (which can make
/// a line read differently from what it holds).
fn must_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

/// `s` with control characters written the way Rust writes them in string literals: `\n`,
/// `\r`, `\t`, anything else as `\u{1b}`. Borrowed (no copy) when there is nothing to escape,
/// which is nearly always. Backslashes stay as they are: the point is that a value can never
/// end a line or drive a terminal, not that the escaping can be reversed.
pub fn escape_control(s: &str) -> Cow<'_, str> {
    if !s.chars().any(must_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    // Writing into a String cannot fail.
    let _ = Escaper(&mut out).write_str(s);
    Cow::Owned(out)
}

/// A [`fmt::Write`] adapter that escapes control characters on their way to `W`.
struct Escaper<W>(W);

impl<W: fmt::Write> fmt::Write for Escaper<W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut rest = s;
        while let Some(at) = rest.find(must_escape) {
            self.0.write_str(&rest[..at])?;
            let mut chars = rest[at..].chars();
            let Some(c) = chars.next() else { break };
            match c {
                '\n' => self.0.write_str("\\n")?,
                '\r' => self.0.write_str("\\r")?,
                '\t' => self.0.write_str("\\t")?,
                c => write!(self.0, "\\u{{{:x}}}", c as u32)?,
            }
            rest = chars.as_str();
        }
        self.0.write_str(rest)
    }
}

/// The stderr formatter's fields (an event's message and fields, and the fields of its spans):
/// tracing-subscriber's own layout (`message key=value …`), every character of it passed
/// through [`Escaper`]. Field names are identifiers, so only values and messages change.
///
/// tracing-subscriber already turns ESC in a *message* into `\x1b`, but lets a newline through,
/// and writes `%`-formatted field values untouched: `show = %title` could end the line.
#[derive(Debug, Default)]
pub struct EscapedFields {
    inner: DefaultFields,
}

impl<'writer> FormatFields<'writer> for EscapedFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        let mut escaper = Escaper(&mut writer);
        // The inner writer has no ANSI styling (field names would otherwise arrive wrapped in
        // escape sequences, which the escaper would then show as text).
        self.inner.format_fields(Writer::new(&mut escaper), fields)
    }
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
    /// Every value enters here, so every string reaching the journal (message and fields) is
    /// escaped: journald keeps newlines in a field, and `journalctl` prints them as lines.
    fn put(&mut self, field: &Field, v: Val) {
        let v = match v {
            Val::Str(s) => Val::Str(match escape_control(&s) {
                Cow::Borrowed(_) => s,
                Cow::Owned(escaped) => escaped,
            }),
            other => other,
        };
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

    /// What a webhook could put in a show title: a forged line and terminal escapes.
    const HOSTILE: &str = "Show\n2026-01-01T00:00:00Z  INFO forged\r\t\u{1b}[31mred\u{1b}]0;title\u{7}\u{7f}\u{85}\u{9b}\u{2028}\u{202e}";

    fn assert_inert(text: &str) {
        assert!(
            !text.chars().any(must_escape),
            "a control character got through: {text:?}"
        );
    }

    #[test]
    fn control_characters_are_escaped_readably() {
        assert!(matches!(
            escape_control("Be Cool, Scooby-Doo!"),
            Cow::Borrowed(_)
        ));
        assert!(matches!(
            escape_control("Ünïcödé 日本 \\n"),
            Cow::Borrowed(_)
        ));
        assert_eq!(escape_control("a\nb\r\tc"), "a\\nb\\r\\tc");
        assert_eq!(escape_control("\u{1b}[2J\u{0}"), "\\u{1b}[2J\\u{0}");
        assert_eq!(
            escape_control("\u{7f}\u{85}\u{9f}"),
            "\\u{7f}\\u{85}\\u{9f}"
        );
        assert_eq!(
            escape_control("x\u{2028}y\u{202e}z"),
            "x\\u{2028}y\\u{202e}z"
        );
        let e = escape_control(HOSTILE);
        assert_inert(&e);
        assert!(
            e.starts_with("Show\\n2026-01-01T00:00:00Z  INFO forged\\r\\t\\u{1b}[31mred"),
            "{e}"
        );
        // Every character is either kept or written as an escape, never dropped.
        for c in ['\u{0}', '\u{1f}', '\u{80}', '\u{9f}', '\u{2069}'] {
            assert_eq!(
                escape_control(&c.to_string()),
                format!("\\u{{{:x}}}", c as u32)
            );
        }
        for c in [' ', '~', '\u{a0}', '\u{ff}', '\u{200b}', '😀'] {
            assert_eq!(escape_control(&c.to_string()), c.to_string());
        }
    }

    /// A log destination the test reads back.
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Buf {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    /// Everything the stderr formatter writes while `f` runs (no ANSI, no timestamps).
    fn stderr_lines(f: impl FnOnce()) -> String {
        let buf = Buf::default();
        let w = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .fmt_fields(EscapedFields::default())
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .without_time()
            .with_target(false)
            .with_writer(move || w.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        buf.text()
    }

    /// The websocket library's trace of its upgrade request (Plex token included) is never
    /// written, even when everything is asked for at trace.
    #[test]
    fn the_websocket_handshake_trace_is_never_logged() {
        for asked in [
            "trace",
            "tungstenite=trace,info",
            "tungstenite::handshake=trace",
        ] {
            let buf = Buf::default();
            let w = buf.clone();
            let sub = lines_subscriber(asked, move || w.clone());
            tracing::subscriber::with_default(sub, || {
                tracing::trace!(target: "tungstenite::handshake::client", "Request: X-Plex-Token: s3cret");
                tracing::trace!(target: "tungstenite::handshake::machine", "frame");
            });
            let out = buf.text();
            assert!(!out.contains("s3cret"), "{asked}: {out}");
            assert!(
                out.contains("frame"),
                "{asked}: the rest still traces: {out}"
            );
        }
    }

    #[test]
    fn stderr_lines_cannot_be_forged_or_carry_terminal_escapes() {
        let out = stderr_lines(|| {
            let span = tracing::info_span!("request", show = %HOSTILE);
            let _s = span.enter();
            let e = std::io::Error::other(HOSTILE);
            tracing::info!(
                show = %HOSTILE,
                shown_as_debug = ?HOSTILE,
                plain = HOSTILE,
                error = %e,
                "journaled {HOSTILE}"
            );
            let e = std::io::Error::other(HOSTILE);
            let as_error: &(dyn std::error::Error + 'static) = &e;
            tracing::warn!(error = as_error, "failed");
        });
        assert_eq!(out.lines().count(), 2, "one line per event:\n{out}");
        assert!(
            !out.lines()
                .any(|l| l.contains("forged") && !l.contains("\\n2026")),
            "{out}"
        );
        for line in out.lines() {
            assert_inert(line);
        }
        // Readable: the escapes stay in place of what they replace.
        assert!(
            out.contains("show=Show\\n2026-01-01T00:00:00Z  INFO forged\\r\\t\\u{1b}[31mred"),
            "{out}"
        );
        assert!(out.contains("journaled Show\\n2026"), "{out}");
        // The usual layout is unchanged for ordinary text.
        let plain = stderr_lines(
            || tracing::info!(show = %"The Office", season = 2u64, "webhook play journaled"),
        );
        assert_eq!(
            plain.trim(),
            "INFO webhook play journaled show=The Office season=2"
        );
    }

    #[test]
    fn journal_fields_and_message_are_escaped() {
        let got = capture(|| {
            let span = tracing::info_span!("request", from_span = %HOSTILE);
            let _s = span.enter();
            let e = std::io::Error::other(HOSTILE);
            tracing::info!(show = %HOSTILE, plain = HOSTILE, error = %e, "journaled {HOSTILE}");
        });
        let c = &got[0];
        assert_inert(&c.message);
        assert!(
            c.message
                .starts_with("journaled Show\\n2026-01-01T00:00:00Z"),
            "{}",
            c.message
        );
        for (k, v) in &c.kvs {
            assert_inert(v);
            assert!(v.starts_with("Show\\n2026"), "{k}={v}");
        }
        assert_eq!(c.kvs.len(), 4, "{:?}", c.kvs);
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
