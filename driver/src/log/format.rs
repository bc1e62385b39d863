//! The log line's timestamp and the human format's fields, written as `tracing_subscriber` writes them
//! but with fewer, larger writes.
//!
//! `DefaultFields` writes every field as `write!(w, "{}{}{:?}", italic(name), dimmed("="), value)`, and
//! escapes the message one character at a time. Without colours the styles write nothing, but the
//! formatting machinery still runs for each piece: the session-end line (nine fields) took about 11,000
//! instructions for its fields alone, a third of what the proxy's own code spends on a whole session in
//! the setup benchmark. [`HumanFields`] writes the same bytes with a name, an `=` and the value, numbers
//! through `itoa`, and a message escaped in runs. When colours are on (a terminal) or escaping is off, it
//! hands the fields to `DefaultFields` unchanged; a test checks both give the same bytes.
//!
//! The timestamp had the same cost: `tracing_subscriber`'s `SystemTime` writes seven zero-padded numbers
//! through `write!`. [`Time`] writes the same RFC 3339 text (UTC, microseconds) with `humantime`, which
//! fills a byte array and writes it once.

use std::fmt::{self, Write};

use tracing::field::{Field, Visit};
use tracing_subscriber::field::{RecordFields, VisitOutput};
use tracing_subscriber::fmt::format::{DefaultFields, DefaultVisitor, Writer};
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::fmt::FormatFields;

/// The log timestamp: `2026-12-03T18:56:21.534892Z`, as `tracing_subscriber`'s default timer writes it.
#[derive(Debug, Default, Clone, Copy)]
pub struct Time;

/// 10000-01-01T00:00:00Z: `humantime` writes four-digit years only.
const YEAR_10000: u64 = 253_402_300_800;

impl FormatTime for Time {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        let now = std::time::SystemTime::now();
        match now.duration_since(std::time::UNIX_EPOCH) {
            Ok(since) if since.as_secs() < YEAR_10000 => {
                write!(w, "{}", humantime::format_rfc3339_micros(now))
            }
            // A clock set before 1970 or after 9999 (humantime would panic or fail): the crate's timer
            // writes those years its own way.
            _ => tracing_subscriber::fmt::time::SystemTime.format_time(w),
        }
    }
}

/// The human format's fields: `DefaultFields`' output, written with fewer calls.
#[derive(Debug, Default, Clone, Copy)]
pub struct HumanFields;

impl<'w> FormatFields<'w> for HumanFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'w>, fields: R) -> fmt::Result {
        if writer.has_ansi_escapes() || !writer.sanitizes_ansi_escapes() {
            return DefaultFields::new().format_fields(writer, fields);
        }
        let mut visitor = Visitor {
            writer,
            is_empty: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct Visitor<'w> {
    writer: Writer<'w>,
    /// Nothing written yet: the next field needs no separating space.
    is_empty: bool,
    result: fmt::Result,
}

/// What [`Visitor::start`] has written for a field, and so what its value needs.
enum Start {
    /// Nothing: a field `DefaultFields` skips (`log.*` metadata from the `log` crate), or an earlier error.
    Skip,
    /// The separating space: the value is the message, written escaped.
    Message,
    /// The separating space and `name=`: the value follows as it is.
    Named,
}

impl Visitor<'_> {
    fn start(&mut self, field: &Field) -> Start {
        let name = field.name();
        if self.result.is_err() || name.starts_with("log.") {
            return Start::Skip;
        }
        if !std::mem::replace(&mut self.is_empty, false) {
            self.result = self.writer.write_char(' ');
        }
        if name == "message" {
            return Start::Message;
        }
        let name = name.strip_prefix("r#").unwrap_or(name);
        self.result = self.result.and_then(|()| {
            self.writer.write_str(name)?;
            self.writer.write_char('=')
        });
        Start::Named
    }

    /// A value whose text needs no escaping (a number, a bool).
    fn plain(&mut self, field: &Field, text: &str) {
        if !matches!(self.start(field), Start::Skip) {
            self.result = self.result.and_then(|()| self.writer.write_str(text));
        }
    }
}

impl Visit for Visitor<'_> {
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.plain(field, itoa::Buffer::new().format(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.plain(field, itoa::Buffer::new().format(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.plain(field, if value { "true" } else { "false" });
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        match self.start(field) {
            Start::Message => {
                self.result = self.result.and_then(|()| escape(&mut self.writer, value))
            }
            Start::Named => {
                self.result = self.result.and_then(|()| write!(self.writer, "{value:?}"))
            }
            Start::Skip => {}
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        // Rare (a failure line), and its `name.sources=[..]` list is DefaultVisitor's own: let it write.
        if self.result.is_err() || field.name().starts_with("log.") {
            return;
        }
        let mut default = DefaultVisitor::new(self.writer.by_ref(), self.is_empty);
        default.record_error(field, value);
        self.result = default.finish();
        self.is_empty = false;
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        match self.start(field) {
            Start::Message => {
                let mut out = Escaping(&mut self.writer);
                self.result = self.result.and_then(|()| write!(out, "{value:?}"));
            }
            Start::Named => {
                self.result = self.result.and_then(|()| write!(self.writer, "{value:?}"))
            }
            Start::Skip => {}
        }
    }
}

/// Writes through to `W`, escaping what `tracing_subscriber` escapes in a message (terminal control
/// characters that could inject escape sequences) and writing every run in between with one call.
struct Escaping<'a, W>(&'a mut W);

impl<W: Write> Write for Escaping<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        escape(self.0, s)
    }
}

/// `s` with ESC, BEL, BS, FF and DEL written as `\x1b`-style escapes and C1 controls (U+0080..U+009F) as
/// `\u{85}`-style escapes, as `tracing_subscriber` 0.3 writes a message.
fn escape(out: &mut impl Write, s: &str) -> fmt::Result {
    let bytes = s.as_bytes();
    let mut clean = 0; // start of the run not written yet
    let mut i = 0;
    while i < bytes.len() {
        let escaped = match bytes[i] {
            0x1b => Some("\\x1b"),
            0x07 => Some("\\x07"),
            0x08 => Some("\\x08"),
            0x0c => Some("\\x0c"),
            0x7f => Some("\\x7f"),
            // U+0080..U+009F are 0xC2 0x80..=0x9F in UTF-8.
            0xc2 if matches!(bytes.get(i + 1), Some(0x80..=0x9f)) => None,
            _ => {
                i += 1;
                continue;
            }
        };
        out.write_str(&s[clean..i])?;
        match escaped {
            Some(text) => {
                out.write_str(text)?;
                i += 1;
            }
            None => {
                // 0xC2 followed by 0x80..=0xBF encodes the code point of the second byte.
                write!(out, "\\u{{{:x}}}", bytes[i + 1])?;
                i += 2;
            }
        }
        clean = i;
    }
    out.write_str(&s[clean..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::fmt::MakeWriter;

    /// Captures everything a subscriber writes.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Capture {
        type Writer = Capture;
        fn make_writer(&'a self) -> Capture {
            self.clone()
        }
    }

    /// What `emit` logs, formatted by `DefaultFields` and by `HumanFields` (no time, no colours).
    fn both(emit: impl Fn()) -> (String, String) {
        let default = Capture::default();
        let human = Capture::default();
        let subscriber = tracing_subscriber::fmt()
            .without_time()
            .with_ansi(false)
            .with_max_level(tracing::Level::TRACE)
            .with_writer(default.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, &emit);
        let subscriber = tracing_subscriber::fmt()
            .without_time()
            .with_ansi(false)
            .with_max_level(tracing::Level::TRACE)
            .fmt_fields(HumanFields)
            .with_writer(human.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, &emit);
        let text = |c: Capture| String::from_utf8(c.0.lock().unwrap().clone()).unwrap();
        (text(default), text(human))
    }

    #[derive(Debug)]
    struct Outer(std::io::Error);

    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("outer \x1b[31mfailure")
        }
    }

    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn the_lines_the_proxy_writes_are_byte_for_byte_those_of_default_fields() {
        let client: std::net::SocketAddr = "127.0.0.1:43282".parse().unwrap();
        let v6: std::net::SocketAddr = "[2001:db8::1]:25565".parse().unwrap();
        let (default, human) = both(|| {
            tracing::info!(
                c2b = 42u64,
                b2c = 1u64,
                reason = %"ClientClosed",
                player = "echo",
                server = %"lobby",
                client = %client,
                backend = %v6,
                duration_ms = 2u64,
                "session ended"
            );
            tracing::warn!(client = %client, limit = 3, refused = -7i64, "too many connections");
            tracing::error!(
                error = &Outer(std::io::Error::other("inner \x07 cause")) as &dyn std::error::Error,
                "fatal"
            );
            tracing::info!(
                r#type = "a \"quoted\"\n name",
                ok = true,
                ratio = 0.25,
                "raw names"
            );
            tracing::info!(host = ?"mc.\u{1b}[2Jexample.com", "player said {}", "\u{1b}]0;title\u{7}\u{85}\u{9f}\u{a0}é\u{7f}");
            tracing::debug!(bytes = ?b"\x00\xff", only = 1u64);
            tracing::info!("");
            tracing::info!("log.target" = "skipped", kept = 1u64, "log metadata");
            tracing::info!("log.line" = 3u64, "log.file" = "x.rs", after = 2u64);
            tracing::trace!(empty = "");
            let span = tracing::info_span!("session", id = 7u64, peer = %client, note = "x y");
            let _entered = span.enter();
            tracing::info!(inside = true, "in a span");
        });
        assert!(
            default.contains("session ended c2b=42 b2c=1 reason=ClientClosed player=\"echo\""),
            "{default}"
        );
        assert_eq!(default.lines().count(), 11, "{default}");
        assert!(!default.contains("skipped"), "{default}");
        assert_eq!(human, default);
    }

    /// Strings rich in what gets escaped or quoted, among any other characters.
    fn tricky() -> impl Strategy<Value = String> {
        let special = prop::sample::select(vec![
            '\x1b', '\x07', '\x08', '\x0c', '\x7f', '\u{80}', '\u{85}', '\u{9f}', '\u{a0}',
            '\u{c2}', '\0', '\n', '\t', '"', '\\', '{', '}', '=', ' ', 'é',
        ]);
        prop::collection::vec(prop_oneof![special, any::<char>()], 0..24)
            .prop_map(|chars| chars.into_iter().collect())
    }

    /// The first word of what `subscriber` writes for one event.
    fn timestamp_of(subscriber: impl tracing::Subscriber + Send + Sync, out: &Capture) -> String {
        tracing::subscriber::with_default(subscriber, || tracing::info!("tick"));
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        text.split(' ').next().unwrap().to_owned()
    }

    #[test]
    fn the_timestamp_is_the_current_time_in_the_default_timers_format() {
        let ours = Capture::default();
        let default = Capture::default();
        let before = std::time::SystemTime::now();
        let stamp = timestamp_of(
            tracing_subscriber::fmt()
                .with_ansi(false)
                .with_timer(Time)
                .with_writer(ours.clone())
                .finish(),
            &ours,
        );
        let after = std::time::SystemTime::now();
        let theirs = timestamp_of(
            tracing_subscriber::fmt()
                .with_ansi(false)
                .with_writer(default.clone())
                .finish(),
            &default,
        );
        // Same shape: YYYY-MM-DDTHH:MM:SS.ffffffZ, digits where the default timer has digits.
        assert_eq!(stamp.len(), theirs.len(), "{stamp} vs {theirs}");
        for (a, b) in stamp.bytes().zip(theirs.bytes()) {
            assert_eq!(
                a.is_ascii_digit(),
                b.is_ascii_digit(),
                "{stamp} vs {theirs}"
            );
            if !a.is_ascii_digit() {
                assert_eq!(a, b, "{stamp} vs {theirs}");
            }
        }
        // The time it says is when the event was logged (to the microsecond written).
        let at = humantime::parse_rfc3339(&stamp).unwrap();
        let micro = std::time::Duration::from_micros(1);
        assert!(before - micro <= at && at <= after, "{stamp}");
    }

    proptest! {
        #[test]
        fn any_message_and_string_field_is_written_as_default_fields_writes_it(
            message in tricky(),
            text in tricky(),
            number in any::<u64>(),
            signed in any::<i64>(),
        ) {
            let (default, human) = both(|| {
                tracing::info!(text = %text, quoted = text.as_str(), number, signed, "{message}");
                tracing::info!(message = message.as_str(), debug = ?text);
            });
            prop_assert_eq!(human, default);
        }
    }
}
