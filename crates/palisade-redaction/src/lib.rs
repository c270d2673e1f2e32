//! PCI redaction: single-pass PAN/CVV/track scanner, tracing integration and a scrubbed audit layer.
//!
//! Under construction in this session: see the issue tracker.
