//! Streaming content-defined chunking.

use std::io::{self, Read};

use fastcdc::v2020::FastCDC;

/// Chunk size bounds, in bytes. They are part of a store's format (see `StoreConfig`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkerParams {
    /// No chunk is shorter, except the last of a stream.
    pub min: u32,
    /// The target average.
    pub avg: u32,
    /// No chunk is longer.
    pub max: u32,
}

impl Default for ChunkerParams {
    /// 4 KiB / 16 KiB / 64 KiB: small enough that scattered edits in large files cost little
    /// (see `bench/` for the measurement behind this choice).
    fn default() -> Self {
        ChunkerParams {
            min: 4 * 1024,
            avg: 16 * 1024,
            max: 64 * 1024,
        }
    }
}

/// Cuts streams into content-defined chunks, reusing one buffer across streams.
#[derive(Debug)]
pub struct Chunker {
    params: ChunkerParams,
    buf: Vec<u8>,
}

impl Chunker {
    /// A chunker with the given bounds.
    ///
    /// # Panics
    /// When the bounds are outside FastCDC's limits (min >= 64, avg >= 256, max >= 1024, and
    /// min <= avg <= max); store configs are validated before they get here.
    pub fn new(params: ChunkerParams) -> Self {
        assert!(params.min >= 64 && params.avg >= 256 && params.max >= 1024);
        assert!(params.min <= params.avg && params.avg <= params.max);
        let cap = (4 << 20).max(4 * params.max as usize);
        Chunker {
            params,
            buf: vec![0; cap],
        }
    }

    /// The bounds.
    pub fn params(&self) -> ChunkerParams {
        self.params
    }

    /// Reads `reader` to its end and calls `f` with each chunk, in order. Returns the number of
    /// bytes read. Memory use is bounded by the internal buffer, whatever the stream's length.
    ///
    /// # Errors
    /// A read error, or the first error `f` returns.
    pub fn chunk_reader<R: Read, E: From<io::Error>>(
        &mut self,
        mut reader: R,
        mut f: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<u64, E> {
        let ChunkerParams { min, avg, max } = self.params;
        let mut filled = 0usize;
        let mut total = 0u64;
        let mut eof = false;
        loop {
            while !eof && filled < self.buf.len() {
                match reader.read(&mut self.buf[filled..]) {
                    Ok(0) => eof = true,
                    Ok(n) => {
                        filled += n;
                        total += n as u64;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e.into()),
                }
            }
            if filled == 0 {
                return Ok(total);
            }
            let mut consumed = 0usize;
            for chunk in FastCDC::new(&self.buf[..filled], min, avg, max) {
                let end = chunk.offset + chunk.length;
                // A cut at the end of the buffer may be an artefact of the buffer's size: keep
                // those bytes and cut them again once more data is read.
                if end == filled && !eof {
                    break;
                }
                f(&self.buf[chunk.offset..end])?;
                consumed = end;
            }
            if eof && consumed == filled {
                return Ok(total);
            }
            self.buf.copy_within(consumed..filled, 0);
            filled -= consumed;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datamon_types::Hash;
    use proptest::prelude::*;

    fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    fn cuts(data: &[u8], read_size: usize) -> Vec<(usize, Hash)> {
        let mut c = Chunker::new(ChunkerParams::default());
        let mut out = Vec::new();
        let reader = SlowReader {
            data,
            pos: 0,
            step: read_size,
        };
        c.chunk_reader(reader, |ch| {
            out.push((ch.len(), Hash::of(ch)));
            Ok::<_, io::Error>(())
        })
        .unwrap();
        out
    }

    struct SlowReader<'a> {
        data: &'a [u8],
        pos: usize,
        step: usize,
    }
    impl Read for SlowReader<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.data.len() - self.pos);
            buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    /// Golden: chunk boundaries are part of the format; changing them breaks dedup with every
    /// existing store.
    #[test]
    fn golden_boundaries() {
        let data = pseudo_random(10 << 20, 42);
        let c = cuts(&data, 1 << 20);
        let lens: Vec<usize> = c.iter().take(8).map(|x| x.0).collect();
        assert_eq!(c.iter().map(|x| x.0).sum::<usize>(), data.len());
        assert_eq!(lens, GOLDEN_LENS);
        assert_eq!(c.len(), GOLDEN_COUNT);
    }
    const GOLDEN_LENS: [usize; 8] = [40880, 19244, 25423, 48774, 11327, 12795, 10846, 17395];
    const GOLDEN_COUNT: usize = 532;

    #[test]
    fn insertion_keeps_later_boundaries() {
        let data = pseudo_random(4 << 20, 7);
        let mut edited = data.clone();
        edited.splice(100_000..100_000, pseudo_random(4096, 9));
        let a = cuts(&data, 1 << 16);
        let b = cuts(&edited, 1 << 16);
        let a_set: std::collections::HashSet<_> = a.iter().map(|x| x.1).collect();
        let changed = b.iter().filter(|x| !a_set.contains(&x.1)).count();
        assert!(changed <= 3, "{changed} chunks changed after one insertion");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn chunks_cover_input_whatever_the_read_sizes(len in 0usize..600_000, seed: u64, step in 1usize..100_000) {
            let data = pseudo_random(len, seed);
            let whole = cuts(&data, usize::MAX / 2);
            let stepped = cuts(&data, step);
            prop_assert_eq!(&whole, &stepped);
            prop_assert_eq!(whole.iter().map(|x| x.0).sum::<usize>(), len);
            for (i, (l, _)) in whole.iter().enumerate() {
                prop_assert!(*l <= 64 * 1024);
                if i + 1 < whole.len() { prop_assert!(*l >= 4 * 1024); }
            }
        }
    }
}
