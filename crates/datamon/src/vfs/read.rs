//! The read path: open files, a read mapped to the chunks it covers, served from the disk cache
//! (adjacent chunks with one read, each verified), the memory cache, else fetched
//! ([`super::fetch`]); and read-ahead for sequential readers.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use datamon_types::ChunkRef;

use super::{lock, vfs_err, Vfs};
use crate::{Result, VfsErrorKind};

/// The first read-ahead window of a sequential reader.
const MIN_READAHEAD: u64 = 256 << 10;

/// An open file.
#[derive(Debug)]
pub(super) struct OpenFile {
    chunks: Arc<[ChunkRef]>,
    /// `offsets[i]` is where chunk `i` starts; the last element is the size.
    offsets: Vec<u64>,
    /// Where the next sequential read would start, the current read-ahead window, and the chunk
    /// index up to which read-ahead was already issued.
    seq: Mutex<(u64, u64, usize)>,
}

impl Vfs {
    /// A handle reading a file made of `chunks`, and the file's size.
    pub(super) fn open_chunks(&self, chunks: Arc<[ChunkRef]>) -> (u64, u64) {
        let mut offsets = Vec::with_capacity(chunks.len() + 1);
        let mut at = 0u64;
        for c in chunks.iter() {
            offsets.push(at);
            at += u64::from(c.1);
        }
        offsets.push(at);
        let fh = self.inner.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.inner.files).insert(
            fh,
            Arc::new(OpenFile {
                chunks,
                offsets,
                seq: Mutex::new((0, 0, 0)),
            }),
        );
        (fh, at)
    }

    /// Reads up to `size` bytes of handle `fh` at `offset` (see [`Vfs::read_blocking`]).
    pub(super) fn read_file(&self, fh: u64, offset: u64, size: u32) -> Result<Bytes> {
        let file = lock(&self.inner.files)
            .get(&fh)
            .cloned()
            .ok_or_else(|| vfs_err(VfsErrorKind::Stale, format!("unknown file handle {fh}")))?;
        let file_size = *file.offsets.last().expect("offsets has n+1 elements");
        if offset >= file_size || size == 0 {
            return Ok(Bytes::new());
        }
        let end = file_size.min(offset + u64::from(size));
        let first = file.offsets.partition_point(|&o| o <= offset) - 1;
        let last = file.offsets.partition_point(|&o| o < end) - 1; // inclusive
        let (window, issued) = {
            let mut seq = lock(&file.seq);
            let w = if offset == seq.0 && self.inner.opts.readahead > 0 {
                (seq.1 * 2).clamp(MIN_READAHEAD, self.inner.opts.readahead)
            } else {
                seq.2 = 0;
                0
            };
            seq.0 = end;
            seq.1 = w;
            (w, seq.2)
        };
        let base = file.offsets[first];
        let mut buf = vec![0u8; (file.offsets[last + 1] - base) as usize];
        let starts: Vec<usize> = file.offsets[first..=last + 1]
            .iter()
            .map(|&o| (o - base) as usize)
            .collect();
        self.fill(&file.chunks[first..=last], &starts, &mut buf)?;
        if window > 0 {
            let upto = self.prefetch(&file, last + 1, issued, window);
            let mut seq = lock(&file.seq);
            seq.2 = seq.2.max(upto);
        }
        Ok(Bytes::from(buf).slice((offset - base) as usize..(end - base) as usize))
    }

    /// Fills `buf` with the decoded bytes of `chunks` (chunk `i` at `starts[i]..starts[i + 1]`):
    /// runs of chunks adjacent in the disk cache with one read each, then the memory cache, then
    /// the store. Everything taken from a cache is verified against its hash.
    fn fill(&self, chunks: &[ChunkRef], starts: &[usize], buf: &mut [u8]) -> Result<()> {
        let disk = &self.inner.disk;
        let locs = disk.locate(chunks);
        let mut missing = Vec::new();
        let (mut memory_hits, mut disk_hits) = (0, 0);
        let mut i = 0;
        while i < chunks.len() {
            let Some(loc) = locs[i] else {
                match self.inner.memory.get(&chunks[i].0) {
                    Some(b) => {
                        buf[starts[i]..starts[i + 1]].copy_from_slice(&b);
                        memory_hits += 1;
                    }
                    None => missing.push(i),
                }
                i += 1;
                continue;
            };
            let mut j = i + 1;
            while j < chunks.len()
                && locs[j].is_some_and(|next| locs[j - 1].is_some_and(|l| l.followed_by(&next)))
            {
                j += 1;
            }
            let run = &mut buf[starts[i]..starts[j]];
            match disk.read_at(loc.seg, loc.off, run) {
                Ok(()) => {
                    let before = missing.len();
                    for k in i..j {
                        let bytes = &buf[starts[k]..starts[k + 1]];
                        if self.inner.dm.store.hasher().hash(bytes) != chunks[k].0 {
                            disk.invalidate(&chunks[k].0);
                            missing.push(k);
                        }
                    }
                    disk_hits += (j - i) - (missing.len() - before);
                    // Read again while about to be evicted: keep it (second chance).
                    if missing.len() == before && disk.is_old(loc.seg) {
                        disk.promote(&chunks[i..j], &buf[starts[i]..starts[j]]);
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "chunk cache read failed");
                    missing.extend(i..j);
                }
            }
            i = j;
        }
        let metrics = &self.inner.opts.metrics;
        metrics.lookups(memory_hits, disk_hits, missing.len());
        if !missing.is_empty() {
            let wanted: Vec<ChunkRef> = missing.iter().map(|&k| chunks[k]).collect();
            let data = self.chunks_blocking(&wanted)?;
            for (&k, bytes) in missing.iter().zip(&data) {
                buf[starts[k]..starts[k + 1]].copy_from_slice(bytes);
            }
        }
        Ok(())
    }

    /// Read-ahead for a sequential reader: of the chunks that start less than `window` bytes
    /// after chunk `next` (the reader's position), skipping those before `issued` (already
    /// requested), those in the disk cache are asked of the kernel (`posix_fadvise(WILLNEED)`,
    /// adjacent ones as one range) and the others fetched from the store in the background
    /// (claimed at once, so that a reader that needs them waits for that fetch).
    /// Returns the index of the first chunk not considered.
    fn prefetch(&self, file: &OpenFile, next: usize, issued: usize, window: u64) -> usize {
        let from = next.max(issued);
        if next >= file.chunks.len() || from >= file.chunks.len() {
            return from;
        }
        let limit = file.offsets[next] + window;
        let upto = (from..file.chunks.len())
            .find(|&i| file.offsets[i] >= limit)
            .unwrap_or(file.chunks.len());
        let candidates = &file.chunks[from..upto];
        let locs = self.inner.disk.locate(candidates);
        let mut ranges: Vec<(u32, u32, u64)> = Vec::new();
        let mut from_store = Vec::new();
        let mut seen = HashSet::new();
        for (c, loc) in candidates.iter().zip(&locs) {
            if let Some(l) = loc {
                match ranges.last_mut() {
                    Some((seg, off, len))
                        if *seg == l.seg && u64::from(*off) + *len == u64::from(l.off) =>
                    {
                        *len += u64::from(l.len);
                    }
                    _ => ranges.push((l.seg, l.off, u64::from(l.len))),
                }
            } else if !self.inner.memory.contains(&c.0)
                && !self.inner.inflight.contains(&c.0)
                && seen.insert(c.0)
            {
                from_store.push(*c);
            }
        }
        if !ranges.is_empty() {
            let this = self.clone();
            self.inner.handle.spawn_blocking(move || {
                for (seg, off, len) in ranges {
                    this.inner.disk.will_need(seg, off, len);
                }
            });
        }
        // Claimed here, not in the task: a reader arriving before the task runs waits for it.
        let (claim, _, _) = self.inner.inflight.claim(&from_store);
        if !claim.chunks().is_empty() {
            let this = self.clone();
            let timeout = self.inner.opts.timeout;
            self.inner.handle.spawn(async move {
                let chunks = claim.chunks().to_vec();
                match tokio::time::timeout(timeout, this.fetch(claim, chunks, false)).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::debug!(error = %e, "read-ahead failed"),
                    Err(_) => {
                        this.inner.opts.metrics.error();
                        tracing::debug!("read-ahead timed out");
                    }
                }
            });
        }
        upto
    }
}
