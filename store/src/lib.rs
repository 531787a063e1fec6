//! writ's durable state: implementations of the CA core's [`writ_ca::store::Store`] trait,
//! and the files kept beside them.
//!
//! - [`embedded`]: the zero-setup default, a sled database with the hash-chained journal
//!   beside it, for one server on one machine.
//! - [`kek_file`]: a copy of the key-encryption record beside the database, so a wrong
//!   passphrase is refused before anything is opened.
//!
//! Each backend is a module of its own that knows nothing of the others; the CA core
//! knows only the trait. Errors are the trait's ([`writ_ca::Error`]): the server maps
//! them to gRPC codes in one place whichever backend produced them.
#![forbid(unsafe_code)]

pub mod embedded;
pub mod kek_file;
mod replace;

pub use embedded::{JOURNAL_FILE, SegmentInfo, SledStore, StoreOptions, sealed_segments};
