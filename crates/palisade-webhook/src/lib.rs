//! Webhook signature verification (Stripe, Standard Webhooks, GitHub) and effectively-once delivery.
//!
//! Under construction in this session: see the issue tracker.
