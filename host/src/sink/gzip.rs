//! Gzip for request bodies.
//!
//! Level 1, the default, is ISA-L's igzip level 1; the other levels are zlib's
//! (zlib-rs). On the benchmark's line protocol (`scripts/bench.sh`' points, in
//! 1.3 MB bodies) igzip's level 1 compressed 1.7 times as fast as zlib-rs' level 1
//! (660 against 390 MB/s on this project's 2-core machine) into 25% fewer bytes
//! (ratio 3.46 against 2.60): zlib-rs' level 1 uses fixed Huffman codes, igzip's
//! builds them per block. Gzip was the largest share of Boulder's CPU, so the fast
//! level gets the fast library.

use flate2::write::GzEncoder;
use std::io::Write;

/// How bodies are compressed.
#[derive(Clone, Copy, Debug)]
pub enum Gzip {
    /// ISA-L's igzip at its level 1.
    Igzip,
    /// zlib at this level (0-9).
    Zlib(flate2::Compression),
}

impl Gzip {
    /// The compressor for a configured `gzip_level` (0-9).
    pub fn level(level: u32) -> Gzip {
        match level {
            1 => Gzip::Igzip,
            level => Gzip::Zlib(flate2::Compression::new(level)),
        }
    }

    /// `data` as one gzip member.
    pub fn compress(self, data: &[u8]) -> Vec<u8> {
        match self {
            Gzip::Igzip => igzip(data).unwrap_or_else(|e| {
                // Not expected: the buffer holds even stored (uncompressed) blocks.
                tracing::warn!(error = %e, bytes = data.len(), "igzip failed; using zlib");
                zlib(data, flate2::Compression::fast())
            }),
            Gzip::Zlib(level) => zlib(data, level),
        }
    }
}

/// Room for `len` bytes however they compress: igzip falls back to stored blocks
/// (5 bytes of header per 64 KiB) when compressing would not save space, and a
/// gzip member adds a 10-byte header and an 8-byte trailer.
fn igzip_bound(len: usize) -> usize {
    len + len / 1024 + 1024
}

fn igzip(data: &[u8]) -> Result<Vec<u8>, isal::error::Error> {
    let mut out = vec![0; igzip_bound(data.len())];
    let len = isal::compress_into(
        data,
        &mut out,
        isal::CompressionLevel::One,
        isal::Codec::Gzip,
    )?;
    out.truncate(len);
    // Bodies wait in memory while a sink is down: keep only what they use.
    out.shrink_to_fit();
    Ok(out)
}

fn zlib(data: &[u8], level: flate2::Compression) -> Vec<u8> {
    let mut gz = GzEncoder::new(Vec::with_capacity(data.len() / 3), level);
    gz.write_all(data).expect("writing to memory");
    gz.finish().expect("writing to memory")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn gunzip(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(body)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    fn line_protocol(points: usize) -> Vec<u8> {
        let mut lines = String::new();
        for i in 0..points {
            lines += &format!(
                "cpu,host=host-{:03},region=us-east-{} usage_user={}.{},usage_idle={}i {}\n",
                i % 300,
                i % 3,
                i * 7 % 100,
                i % 1000,
                i * 31 % 97,
                1_795_654_380_000_000_000u64 + i as u64 * 1_000_003
            );
        }
        lines.into_bytes()
    }

    /// Bytes that do not compress (a xorshift stream), the case igzip's bound is for.
    fn noise(len: usize) -> Vec<u8> {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
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
    fn level_1_is_igzip_and_other_levels_are_zlib() {
        assert!(matches!(Gzip::level(1), Gzip::Igzip));
        for level in [0, 2, 6, 9] {
            assert!(matches!(Gzip::level(level), Gzip::Zlib(l) if l.level() == level));
        }
    }

    #[test]
    fn every_level_round_trips_through_a_standard_gunzip() {
        let lines = line_protocol(5_000);
        for level in [0, 1, 2, 6, 9] {
            let body = Gzip::level(level).compress(&lines);
            assert_eq!(gunzip(&body), lines, "level {level}");
        }
    }

    #[test]
    fn igzip_compresses_line_protocol_at_least_as_well_as_zlib_level_1() {
        let lines = line_protocol(5_000);
        let igzip = igzip(&lines).unwrap();
        let zlib = zlib(&lines, flate2::Compression::fast());
        assert!(
            igzip.len() < lines.len() / 2,
            "{} of {}",
            igzip.len(),
            lines.len()
        );
        assert!(
            igzip.len() <= zlib.len(),
            "igzip {} zlib {}",
            igzip.len(),
            zlib.len()
        );
    }

    #[test]
    fn igzip_fits_incompressible_and_empty_bodies_in_its_bound() {
        for len in [0, 1, 100, 65_535, 65_536, 1_000_000, 3_000_001] {
            let data = noise(len);
            let body = igzip(&data).unwrap_or_else(|e| panic!("{len} bytes: {e}"));
            assert!(body.len() <= igzip_bound(len));
            assert_eq!(gunzip(&body), data, "{len} bytes");
        }
    }
}
