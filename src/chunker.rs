//! Content-defined chunking: FastCDC 2020 with a per-repository gear seed, so
//! that chunk boundaries (and so chunk sizes) do not reveal content across
//! repositories. Streams any reader with a buffer of twice the maximum chunk.

use std::io::{self, Read};

use fastcdc::v2020::{cut_gear, get_gear_with_seed, MASKS};

/// Chunk size bounds, stored in the repository config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkerParams {
    pub min: u32,
    pub avg: u32,
    pub max: u32,
}

impl Default for ChunkerParams {
    fn default() -> Self {
        ChunkerParams { min: 256 << 10, avg: 1 << 20, max: 4 << 20 }
    }
}

impl ChunkerParams {
    /// Whether FastCDC accepts these bounds.
    pub fn is_valid(&self) -> bool {
        use fastcdc::v2020::{AVERAGE_MAX, AVERAGE_MIN, MAXIMUM_MAX, MAXIMUM_MIN, MINIMUM_MAX, MINIMUM_MIN};
        (MINIMUM_MIN..=MINIMUM_MAX).contains(&self.min)
            && (AVERAGE_MIN..=AVERAGE_MAX).contains(&self.avg)
            && (MAXIMUM_MIN..=MAXIMUM_MAX).contains(&self.max)
            && self.min <= self.avg
            && self.avg <= self.max
    }
}

pub struct Chunker {
    params: ChunkerParams,
    gear: Box<[u64; 256]>,
    gear_ls: Box<[u64; 256]>,
    mask_s: u64,
    mask_l: u64,
}

impl Chunker {
    /// Panics if `params` is not valid; the config decoder checks it first.
    pub fn new(params: ChunkerParams, seed: u64) -> Chunker {
        assert!(params.is_valid(), "invalid chunker parameters");
        let bits = (params.avg as f64).log2().round() as usize;
        // Normalization level 1, as FastCDC recommends.
        let (gear, gear_ls) = get_gear_with_seed(seed);
        Chunker { params, gear, gear_ls, mask_s: MASKS[bits + 1], mask_l: MASKS[bits - 1] }
    }

    pub fn max_chunk(&self) -> usize {
        self.params.max as usize
    }

    /// Length of the first chunk of `data` (all of it if `data` is the end of
    /// the stream and shorter than the maximum).
    fn cut(&self, data: &[u8]) -> usize {
        let p = &self.params;
        let (_, n) = cut_gear(
            data,
            p.min as usize,
            p.avg as usize,
            p.max as usize,
            self.mask_s,
            self.mask_l,
            self.mask_s << 1,
            self.mask_l << 1,
            &self.gear,
            &self.gear_ls,
        );
        n
    }

    /// Chunks `reader`, using `buf` as the read buffer (grown once to twice
    /// the maximum chunk size and reused across files).
    pub fn chunks<'c, R: Read>(&'c self, reader: R, buf: &'c mut Vec<u8>) -> Chunks<'c, R> {
        if buf.len() < 2 * self.max_chunk() {
            buf.resize(2 * self.max_chunk(), 0);
        }
        Chunks { chunker: self, reader, buf, start: 0, end: 0, eof: false }
    }
}

/// Iterator over the chunks of a reader.
pub struct Chunks<'c, R> {
    chunker: &'c Chunker,
    reader: R,
    buf: &'c mut Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
}

impl<R: Read> Chunks<'_, R> {
    /// Fills the buffer until it holds a maximum chunk or the input ends.
    fn fill(&mut self) -> io::Result<()> {
        if self.end - self.start >= self.chunker.max_chunk() || self.eof {
            return Ok(());
        }
        self.buf.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
        while self.end < self.buf.len() {
            match self.reader.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl<R: Read> Iterator for Chunks<'_, R> {
    type Item = io::Result<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Err(e) = self.fill() {
            return Some(Err(e));
        }
        if self.start == self.end {
            return None;
        }
        let n = self.chunker.cut(&self.buf[self.start..self.end]);
        let chunk = self.buf[self.start..self.start + n].to_vec();
        self.start += n;
        Some(Ok(chunk))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn chunks_cover_the_input_within_bounds() {
        let data = pseudo_random(20 << 20, 42);
        let c = Chunker::new(ChunkerParams::default(), 7);
        let chunks: Vec<Vec<u8>> = c.chunks(&data[..], &mut Vec::new()).map(|r| r.unwrap()).collect();
        assert_eq!(chunks.concat(), data);
        for ch in &chunks[..chunks.len() - 1] {
            assert!(ch.len() >= 256 << 10 && ch.len() <= 4 << 20, "{}", ch.len());
        }
        assert!(chunks.len() >= 5 && chunks.len() <= 60, "{}", chunks.len());
    }

    #[test]
    fn boundaries_resynchronise_after_an_insert() {
        let data = pseudo_random(12 << 20, 1);
        let mut changed = data.clone();
        changed.splice(5 << 20..5 << 20, b"inserted bytes".iter().copied());
        let c = Chunker::new(ChunkerParams::default(), 99);
        let a: Vec<_> = c.chunks(&data[..], &mut Vec::new()).map(|r| blake3::hash(&r.unwrap())).collect();
        let b: Vec<_> = c.chunks(&changed[..], &mut Vec::new()).map(|r| blake3::hash(&r.unwrap())).collect();
        let shared = a.iter().filter(|h| b.contains(h)).count();
        assert!(shared + 2 >= a.len(), "only {shared} of {} chunks shared", a.len());
    }

    #[test]
    fn seed_changes_boundaries() {
        let data = pseudo_random(8 << 20, 3);
        let p = ChunkerParams::default();
        let a: Vec<usize> = Chunker::new(p, 1).chunks(&data[..], &mut Vec::new()).map(|r| r.unwrap().len()).collect();
        let b: Vec<usize> = Chunker::new(p, 2).chunks(&data[..], &mut Vec::new()).map(|r| r.unwrap().len()).collect();
        assert_ne!(a, b);
    }

    /// The test input of format.md §11: the low byte of each step of
    /// xorshift64 (shifts 13, 7, 17) from 0x9E3779B97F4A7C15.
    fn spec_input(len: usize) -> Vec<u8> {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// The lines of the code block of format.md that follows `marker`.
    fn spec_block(marker: &str) -> Vec<&'static str> {
        let spec = include_str!("../docs/format.md");
        let after = &spec[spec.find(marker).unwrap_or_else(|| panic!("format.md lacks {marker:?}"))..];
        let start = after.find("```\n").expect("a code block follows") + 4;
        let body = &after[start..];
        body[..body.find("```").expect("the block ends")].lines().collect()
    }

    fn hex_u64(s: &str) -> u64 {
        u64::from_str_radix(s.trim().trim_start_matches("0x"), 16).expect("hex")
    }

    #[test]
    fn the_gear_table_in_the_spec_is_the_chunkers_and_its_derivation_holds() {
        let (gear, gear_ls) = get_gear_with_seed(0);
        let written: Vec<u64> =
            spec_block("GEAR table:").iter().flat_map(|l| l.split_whitespace()).map(hex_u64).collect();
        assert_eq!(written, gear.to_vec());
        for i in 0..=255u8 {
            let digest = md5::compute([i; 64]);
            let derived = u64::from_be_bytes(digest.0[..8].try_into().unwrap());
            assert_eq!(gear[i as usize], derived, "GEAR[{i}]");
            assert_eq!(gear_ls[i as usize], derived << 1, "GEAR_LS[{i}]");
        }
        let seed = 0x0123_4567_89ab_cdef;
        let (seeded, seeded_ls) = get_gear_with_seed(seed);
        for i in 0..256 {
            assert_eq!(seeded[i], gear[i] ^ seed);
            assert_eq!(seeded_ls[i], gear_ls[i] ^ (seed << 1));
        }
    }

    #[test]
    fn the_mask_table_in_the_spec_is_the_chunkers() {
        let written: Vec<(usize, u64)> = spec_block("MASKS table:")
            .iter()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let (bits, mask) = l.split_once(':').expect("bits: mask");
                (bits.trim().parse().expect("bits"), hex_u64(mask))
            })
            .collect();
        assert_eq!(written.len(), 21);
        for (bits, mask) in written {
            assert_eq!(MASKS[bits], mask, "MASKS[{bits}]");
        }
    }

    #[test]
    fn the_chunk_boundary_vectors_in_the_spec_hold() {
        let vectors = spec_block("Chunking test vectors:");
        assert!(vectors.len() >= 3);
        for line in vectors.iter().filter(|l| !l.trim().is_empty()) {
            let (head, lengths) = line.split_once("->").expect("params -> lengths");
            let field = |name: &str| {
                let v = head.split_whitespace().find_map(|w| w.strip_prefix(name)).expect(name);
                if v.starts_with("0x") {
                    hex_u64(v)
                } else {
                    v.parse().expect("number")
                }
            };
            let params =
                ChunkerParams { min: field("min=") as u32, avg: field("avg=") as u32, max: field("max=") as u32 };
            let input = spec_input(field("len=") as usize);
            let chunker = Chunker::new(params, field("seed="));
            let got: Vec<usize> = chunker.chunks(&input[..], &mut Vec::new()).map(|c| c.unwrap().len()).collect();
            let want: Vec<usize> = lengths.split_whitespace().map(|n| n.parse().expect("length")).collect();
            assert_eq!(got, want, "{head}");
        }
    }

    #[test]
    fn empty_input_has_no_chunks() {
        let c = Chunker::new(ChunkerParams::default(), 0);
        assert_eq!(c.chunks(&[][..], &mut Vec::new()).count(), 0);
    }
}
