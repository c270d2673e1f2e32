//! tracing integration: scrub every byte a formatter writes, scrub field values as they are formatted, and a
//! one-line [`install`].

use std::fmt;
use std::io;

use tracing::{Metadata, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::{Format, Writer};
use tracing_subscriber::fmt::{FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

use crate::redactor::Redactor;
use crate::stream::RedactingWriter;

/// A `MakeWriter` that scrubs everything any formatter writes through it (the fmt formatter, JSON, a
/// third-party layer's output) before it reaches the inner writer. Each event's writer redacts as a stream and
/// writes its held-back tail when the event is done (on drop).
///
/// ```
/// use palisade_redaction::{RedactingMakeWriter, Redactor};
/// use palisade_testkit::LogCapture;
///
/// let cap = LogCapture::new();
/// let sub = tracing_subscriber::fmt().with_ansi(false).with_writer(RedactingMakeWriter::new(Redactor::new(), cap.clone())).finish();
/// tracing::subscriber::with_default(sub, || tracing::info!("card 4242424242424242 on file"));
/// assert!(cap.contents().contains("card ************4242 on file"));
/// ```
#[derive(Debug, Clone)]
pub struct RedactingMakeWriter<M> {
    redactor: Redactor,
    inner: M,
}

impl<M> RedactingMakeWriter<M> {
    /// Wraps `inner` (`std::io::stderr`, a file appender, a capture).
    pub fn new(redactor: Redactor, inner: M) -> Self {
        RedactingMakeWriter { redactor, inner }
    }
}

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for RedactingMakeWriter<M> {
    type Writer = RedactingWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        RedactingWriter::new(self.redactor.clone(), self.inner.make_writer())
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        RedactingWriter::new(self.redactor.clone(), self.inner.make_writer_for(meta))
    }
}

/// A `FormatFields` that formats with `N` (default [`SensitiveNameFields`]) and scrubs the result: the
/// field-level option, for span fields that are stored formatted and for formatters whose output does not go
/// through a [`RedactingMakeWriter`].
#[derive(Debug, Clone)]
pub struct RedactingFields<N = SensitiveNameFields> {
    redactor: Redactor,
    inner: N,
}

impl RedactingFields {
    /// Formats like tracing's `DefaultFields`, hides fields named like card data (`card_number = ...`,
    /// `cvv = ...`: see [`SensitiveNameFields`]) and scrubs everything else.
    #[must_use]
    pub fn new(redactor: Redactor) -> Self {
        RedactingFields { redactor, inner: SensitiveNameFields }
    }
}

impl<N> RedactingFields<N> {
    /// Scrubs what `inner` writes (`DefaultFields`, a JSON field formatter, your own).
    pub fn with_inner(redactor: Redactor, inner: N) -> Self {
        RedactingFields { redactor, inner }
    }
}

impl<'writer, N> FormatFields<'writer> for RedactingFields<N>
where
    N: for<'w> FormatFields<'w> + 'static,
{
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut buf = String::new();
        self.inner.format_fields(Writer::new(&mut buf), fields)?;
        writer.write_str(&self.redactor.redact(&buf))
    }
}

/// Field formatting as tracing's `DefaultFields` does it (`message` first, then `name=value`), except that a field
/// whose name is card data ([`is_sensitive_key`](crate::is_sensitive_key): `card_number`, `pan`, `cvv`, `cvc`,
/// `track2`, `pin_block`, … in any case) is written `name=[REDACTED]` whatever its value.
#[derive(Debug, Clone, Copy, Default)]
pub struct SensitiveNameFields;

struct NameVisitor<'a> {
    out: &'a mut String,
    result: fmt::Result,
}

impl NameVisitor<'_> {
    fn sep(&mut self) {
        if !self.out.is_empty() {
            self.out.push(' ');
        }
    }
}

impl tracing::field::Visit for NameVisitor<'_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{value}"));
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        use std::fmt::Write as _;
        let name = field.name();
        if name.starts_with("log.") {
            return;
        }
        self.sep();
        self.result = self.result.and_then(|()| {
            if name == "message" {
                write!(self.out, "{value:?}")
            } else if crate::json::is_sensitive_key(name) {
                write!(self.out, "{name}={}", crate::sensitive::SENSITIVE_PLACEHOLDER)
            } else {
                write!(self.out, "{}={value:?}", name.strip_prefix("r#").unwrap_or(name))
            }
        });
    }
}

impl<'writer> FormatFields<'writer> for SensitiveNameFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut buf = String::new();
        let mut v = NameVisitor { out: &mut buf, result: Ok(()) };
        fields.record(&mut v);
        v.result?;
        writer.write_str(&buf)
    }
}

/// The fmt layer [`install`] builds: scrubbed fields, the default event format, a scrubbed stderr.
pub type RedactingFmtLayer<S> =
    tracing_subscriber::fmt::Layer<S, RedactingFields, Format, RedactingMakeWriter<fn() -> io::Stderr>>;

/// The fmt layer [`install`] uses, for composing with other layers on a registry: fields scrubbed as they are
/// formatted, and every byte scrubbed again on its way to stderr.
pub fn fmt_layer<S>(redactor: Redactor) -> RedactingFmtLayer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    tracing_subscriber::fmt::layer()
        .fmt_fields(RedactingFields::new(redactor.clone()))
        .with_writer(RedactingMakeWriter::new(redactor, io::stderr as fn() -> io::Stderr))
}

/// Why [`install`] failed.
#[derive(Debug, thiserror::Error)]
#[error(
    "could not install the redacting subscriber: {0}; a global subscriber is already set — wrap its writer in RedactingMakeWriter instead"
)]
pub struct InstallError(String);

/// Installs the common subscriber (fmt to stderr, INFO and above) as the global default, with field values
/// and every written byte scrubbed by the default [`Redactor`]. One line at the top of `main`.
///
/// # Errors
/// [`InstallError`] when a global subscriber is already set.
pub fn install() -> Result<(), InstallError> {
    install_with(Redactor::default(), tracing::Level::INFO)
}

/// [`install`] with a redactor and a maximum level of your choice.
///
/// # Errors
/// [`InstallError`] when a global subscriber is already set.
pub fn install_with(redactor: Redactor, max_level: tracing::Level) -> Result<(), InstallError> {
    tracing_subscriber::fmt()
        .with_max_level(max_level)
        .fmt_fields(RedactingFields::new(redactor.clone()))
        .with_writer(RedactingMakeWriter::new(redactor, io::stderr))
        .try_init()
        .map_err(|e| InstallError(e.to_string()))
}
