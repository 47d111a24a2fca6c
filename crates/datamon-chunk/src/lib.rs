//! Content-defined chunking, hashing and compression: the CPU side of datamon's store.
//!
//! Everything here is synchronous and pure; callers run it on a thread pool.
//!
//! - [`Chunker`] cuts a byte stream into chunks with FastCDC (v2020, gear hash), so inserting
//!   bytes only changes the chunks around the insertion: later boundaries stay where they were.
//! - Chunks are named by their BLAKE3 hash ([`datamon_types::Hash::of`]).
//! - [`compress`] applies zstd when it saves at least 1/16 of the size, and keeps the raw bytes
//!   otherwise; [`decode`] reverses it and verifies the hash.
//!
//! ```
//! use datamon_chunk::{Chunker, ChunkerParams};
//! let data = vec![7u8; 300_000];
//! let mut chunker = Chunker::new(ChunkerParams::default());
//! let mut total = 0;
//! chunker.chunk_reader(&data[..], |chunk| { total += chunk.len(); Ok::<_, std::io::Error>(()) }).unwrap();
//! assert_eq!(total, data.len());
//! ```

mod chunker;
mod codec;

pub use chunker::{Chunker, ChunkerParams};
pub use codec::{compress, decode, decode_with, Compression, DecodeError};
