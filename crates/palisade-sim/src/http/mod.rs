//! The simulator over a real socket (feature `http`): [`SimServer`] serves a [`GatewaySim`](crate::GatewaySim) as
//! a Stripe-like JSON API with faults that happen on the wire, and [`HttpGateway`] is the gateway `Service` that
//! calls it, classifying what the socket does. Routes, JSON shapes and status codes: `docs/sim.md`.

mod client;
mod server;
mod wire;

pub use client::{DEFAULT_CLIENT_TIMEOUT, HttpGateway, InvalidBaseUrl, InvalidBaseUrlKind};
pub use server::{
    DEFAULT_BODY_READ_TIMEOUT, DEFAULT_RETRY_AFTER, DEFAULT_TIMEOUT_HOLD, HttpFault, MAX_BODY_BYTES, SimHandle,
    SimServer, SimServerBuilder, UnknownFault,
};
