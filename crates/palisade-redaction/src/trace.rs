//! tracing integration: scrub every byte a formatter writes, scrub field values as they are formatted, and a
//! one-line [`install`].

use std::fmt;
use std::io;

use tracing::{Metadata, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::{DefaultFields, Format, Writer};
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

/// A `FormatFields` that formats with `N` (default [`DefaultFields`]) and scrubs the result: the field-level
/// option, for span fields that are stored formatted and for formatters whose output does not go through a
/// [`RedactingMakeWriter`].
#[derive(Debug, Clone)]
pub struct RedactingFields<N = DefaultFields> {
    redactor: Redactor,
    inner: N,
}

impl RedactingFields {
    /// Scrubs what [`DefaultFields`] writes.
    #[must_use]
    pub fn new(redactor: Redactor) -> Self {
        RedactingFields { redactor, inner: DefaultFields::new() }
    }
}

impl<N> RedactingFields<N> {
    /// Scrubs what `inner` writes.
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
