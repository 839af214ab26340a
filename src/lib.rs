//! photosync: a background uploader for photo folders that behaves like the
//! system-owned upload queue of iOS 26.1 — every new photo or video is
//! queued, uploaded when allowed, retried with backoff when it fails,
//! resumed after a crash, and acknowledged only once the destination has
//! verifiably stored it.
//!
//! # Architecture
//!
//! One durable queue, the [`catalog`] (`SQLite`), sits at the centre. Jobs move
//! through the lifecycle in [`model`]: `queued → running → succeeded →
//! acknowledged`, with `retry_wait`, `failed` and `cancelled` beside it.
//! Every transition is committed before it is acted on, and every upload is
//! idempotent, so a kill at any moment loses nothing and uploads nothing
//! twice.
//!
//! - [`config`] turns the TOML file into a validated [`config::Config`].
//! - [`discover`] walks sources, filters media ([`media`] sniffs, hashes and
//!   reads capture times), and records new versions and their jobs in the
//!   [`catalog`].
//! - [`scheduler`] runs queued jobs against [`destination`]s (photos found
//!   live first, then by capture time), at the keys each destination's
//!   [`layout`] renders, applying the pure retry arithmetic of [`policy`].
//! - [`backup`] is the one-shot pipeline behind `photosync backup`.
//! - [`daemon`] runs discovery (with the live watcher in [`discover::watch`])
//!   and the scheduler for `photosync daemon`, controlled over [`ipc`].
//! - [`verify`] proves acknowledged receipts against the destinations.
//! - [`why`] says whether a file is backed up, waiting, or left out, and why.
//! - [`secrets`] reads and stores destination passwords in the system keyring;
//!   [`oauth`] signs in to cloud services and keeps their grants.
//! - [`runtime`] finds the private runtime folder the sockets live in.
//!
//! Dependencies point downward: `daemon → ipc::server → scheduler →
//! {catalog, discover, destination, policy, media, layout} → {config, model}`, and
//! `backup` beside `daemon`; the CLI reaches the daemon only through
//! `ipc::client`. Only the `photosync`
//! binary's `cli` uses `anyhow`, prints, or chooses exit codes.

pub mod backup;
pub mod catalog;
pub mod conditions;
pub mod config;
pub mod daemon;
pub mod destination;
pub mod discover;
pub mod error;
pub mod ipc;
pub mod layout;
pub mod media;
pub mod model;
pub mod oauth;
pub mod policy;
pub mod runtime;
pub mod scheduler;
pub mod secrets;
pub mod verify;
pub mod why;

pub use error::Error;
