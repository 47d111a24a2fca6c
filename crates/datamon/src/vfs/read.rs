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

    /// The open file of handle `fh`.
    fn open_file(&self, fh: u64) -> Result<Arc<OpenFile>> {
        lock(&self.inner.files)
            .get(&fh)
            .cloned()
            .ok_or_else(|| vfs_err(VfsErrorKind::Stale, format!("unknown file handle {fh}")))
    }

    /// The chunks `first..=last` that `offset..end` covers, and the read-ahead window after
    /// this read (0: none), updating the file's sequential-reader state.
    fn plan_read(&self, file: &OpenFile, offset: u64, end: u64) -> (usize, usize, u64, usize) {
        let first = file.offsets.partition_point(|&o| o <= offset) - 1;
        let last = file.offsets.partition_point(|&o| o < end) - 1; // inclusive
        let mut seq = lock(&file.seq);
        let w = if offset == seq.0 && self.inner.opts.readahead > 0 {
            (seq.1 * 2).clamp(MIN_READAHEAD, self.inner.opts.readahead)
        } else {
            seq.2 = 0;
            0
        };
        seq.0 = end;
        seq.1 = w;
        (first, last, w, seq.2)
    }

    /// Starts the read-ahead of a sequential reader after chunk `last`.
    fn after_read(&self, file: &OpenFile, last: usize, window: u64, issued: usize) {
        if window > 0 {
            let upto = self.prefetch(file, last + 1, issued, window);
            let mut seq = lock(&file.seq);
            seq.2 = seq.2.max(upto);
        }
    }

    /// Reads up to `size` bytes of handle `fh` at `offset` (see [`Vfs::read_blocking`]): the
    /// chunks it covers, whole, in one buffer, returned as a slice of it.
    pub(super) fn read_file(&self, fh: u64, offset: u64, size: u32) -> Result<Bytes> {
        let file = self.open_file(fh)?;
        let file_size = *file.offsets.last().expect("offsets has n+1 elements");
        if offset >= file_size || size == 0 {
            return Ok(Bytes::new());
        }
        let end = file_size.min(offset + u64::from(size));
        let (first, last, window, issued) = self.plan_read(&file, offset, end);
        let base = file.offsets[first];
        let mut buf = vec![0u8; (file.offsets[last + 1] - base) as usize];
        let starts: Vec<usize> = file.offsets[first..=last + 1]
            .iter()
            .map(|&o| (o - base) as usize)
            .collect();
        self.fill(
            &file.chunks[first..=last],
            &mut Targets {
                head: None,
                mid: &mut buf,
                starts,
                tail: None,
            },
        )?;
        self.after_read(&file, last, window, issued);
        Ok(Bytes::from(buf).slice((offset - base) as usize..(end - base) as usize))
    }

    /// Reads into `out` from `offset` of handle `fh` (see [`Vfs::read_into_blocking`]): whole
    /// chunks straight into `out`, the partial first and last chunks through a scratch buffer.
    pub(super) fn read_file_into(
        &self,
        fh: u64,
        offset: u64,
        out: &mut [u8],
        sequential: bool,
    ) -> Result<usize> {
        let file = self.open_file(fh)?;
        let file_size = *file.offsets.last().expect("offsets has n+1 elements");
        if offset >= file_size || out.is_empty() {
            return Ok(0);
        }
        let end = file_size.min(offset + out.len() as u64);
        let out = &mut out[..(end - offset) as usize];
        let (first, last, window, issued) = if sequential {
            self.plan_read(&file, offset, end)
        } else {
            let first = file.offsets.partition_point(|&o| o <= offset) - 1;
            let last = file.offsets.partition_point(|&o| o < end) - 1;
            (first, last, 0, 0)
        };
        let o = &file.offsets;
        // The first chunk goes through scratch unless `out` holds all of it; the last, unless
        // `out` ends where it ends.
        let head_partial = offset > o[first] || (first == last && end < o[first + 1]);
        let tail_partial = last > first && end < o[last + 1];
        let mid_from = if head_partial { first + 1 } else { first };
        let mid_to = if tail_partial { last } else { last + 1 }; // exclusive
        let head_len = if head_partial {
            (o[first + 1].min(end) - offset) as usize
        } else {
            0
        };
        let mid_len = if mid_to > mid_from {
            (o[mid_to] - o[mid_from]) as usize
        } else {
            0
        };
        let mut head = head_partial.then(|| vec![0u8; (o[first + 1] - o[first]) as usize]);
        let mut tail = tail_partial.then(|| vec![0u8; (o[last + 1] - o[last]) as usize]);
        let (out_head, rest) = out.split_at_mut(head_len);
        let (out_mid, out_tail) = rest.split_at_mut(mid_len);
        let starts: Vec<usize> = if mid_to > mid_from {
            o[mid_from..=mid_to]
                .iter()
                .map(|&x| (x - o[mid_from]) as usize)
                .collect()
        } else {
            vec![0]
        };
        self.fill(
            &file.chunks[first..=last],
            &mut Targets {
                head: head.as_deref_mut(),
                mid: out_mid,
                starts,
                tail: tail.as_deref_mut(),
            },
        )?;
        if let Some(h) = &head {
            let at = (offset - o[first]) as usize;
            out_head.copy_from_slice(&h[at..at + head_len]);
        }
        if let Some(t) = &tail {
            let n = out_tail.len();
            out_tail.copy_from_slice(&t[..n]);
        }
        self.after_read(&file, last, window, issued);
        Ok(out.len())
    }

    /// Fills the targets of `chunks` with their decoded bytes: runs of chunks adjacent in the
    /// disk cache (and in the targets) with one read each, then the memory cache (chunks
    /// fetched with no disk cache, or whose write to it failed), then the store. Everything
    /// taken from the disk cache is verified against its hash.
    fn fill(&self, chunks: &[ChunkRef], t: &mut Targets<'_>) -> Result<()> {
        let disk = &self.inner.disk;
        let locs = disk.locate(chunks);
        let mut missing = Vec::new();
        let (mut memory_hits, mut disk_hits) = (0, 0);
        let n = chunks.len();
        let mut i = 0;
        while i < n {
            let Some(loc) = locs[i] else {
                match self.inner.memory.get(&chunks[i].0) {
                    Some(b) => {
                        t.chunk(i, n).copy_from_slice(&b);
                        memory_hits += 1;
                    }
                    None => missing.push(i),
                }
                i += 1;
                continue;
            };
            let mut j = i + 1;
            while j < n
                && t.same_group(i, j, n)
                && locs[j].is_some_and(|next| locs[j - 1].is_some_and(|l| l.followed_by(&next)))
            {
                j += 1;
            }
            let (run, starts) = t.run(i, j, n);
            match disk.read_at(loc.seg, loc.off, run) {
                Ok(()) => {
                    let before = missing.len();
                    for k in i..j {
                        let bytes = &run[starts[k - i]..starts[k - i + 1]];
                        if self.inner.dm.store.hasher().hash(bytes) != chunks[k].0 {
                            disk.invalidate(&chunks[k].0);
                            missing.push(k);
                        }
                    }
                    disk_hits += (j - i) - (missing.len() - before);
                    // Read again while about to be evicted: keep it (second chance).
                    if missing.len() == before && disk.is_old(loc.seg) {
                        disk.promote(&chunks[i..j], run);
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
                t.chunk(k, n).copy_from_slice(bytes);
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

/// Where the bytes of each chunk of one read go: chunk 0 to `head` and the last chunk to
/// `tail` when given (partial chunks, through scratch buffers), the others back to back in
/// `mid`, chunk `h + k` at `mid[starts[k]..starts[k + 1]]` (`h`: 1 with a head, else 0).
struct Targets<'a> {
    head: Option<&'a mut [u8]>,
    mid: &'a mut [u8],
    starts: Vec<usize>,
    tail: Option<&'a mut [u8]>,
}

impl Targets<'_> {
    fn h(&self) -> usize {
        usize::from(self.head.is_some())
    }

    /// 0: the head, 1: `mid`, 2: the tail (of `n` chunks).
    fn group(&self, i: usize, n: usize) -> u8 {
        if i == 0 && self.head.is_some() {
            0
        } else if i + 1 == n && self.tail.is_some() {
            2
        } else {
            1
        }
    }

    /// Whether chunks `i` and `j` lie in one contiguous target.
    fn same_group(&self, i: usize, j: usize, n: usize) -> bool {
        let g = self.group(i, n);
        g == 1 && self.group(j, n) == 1
    }

    /// The target of chunk `i` (of `n`).
    fn chunk(&mut self, i: usize, n: usize) -> &mut [u8] {
        self.run(i, i + 1, n).0
    }

    /// The contiguous target of chunks `i..j` (of `n`, one group), and where each starts in it.
    fn run(&mut self, i: usize, j: usize, n: usize) -> (&mut [u8], Vec<usize>) {
        match self.group(i, n) {
            0 => {
                let h = self.head.as_deref_mut().expect("group 0 is the head");
                let len = h.len();
                (h, vec![0, len])
            }
            2 => {
                let t = self.tail.as_deref_mut().expect("group 2 is the tail");
                let len = t.len();
                (t, vec![0, len])
            }
            _ => {
                let (a, b) = (i - self.h(), j - self.h());
                let base = self.starts[a];
                let starts = self.starts[a..=b].iter().map(|&s| s - base).collect();
                (&mut self.mid[base..self.starts[b]], starts)
            }
        }
    }
}
