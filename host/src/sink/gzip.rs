//! Gzip for request bodies.
//!
//! Level 1, the default, is ISA-L's igzip level 1; the other levels are zlib's
//! (zlib-rs). On the benchmark's line protocol (`scripts/bench.sh`' points, in
//! 1.3 MB bodies) igzip's level 1 compressed 1.7 times as fast as zlib-rs' level 1
//! (660 against 390 MB/s on this project's 2-core machine) into 25% fewer bytes
//! (ratio 3.46 against 2.60): zlib-rs' level 1 uses fixed Huffman codes, igzip's
//! builds them per block. Gzip was the largest share of Boulder's CPU, so the fast
//! level gets the fast library.
//!
//! igzip looks back 8 KiB (`IGZIP_HISTORY_BITS`) instead of deflate's 32 KiB: on
//! the same bodies that compressed 7% faster (734 against 685 MB/s) into 2% fewer
//! bytes (ratio 3.52 against 3.46). Line protocol repeats itself within a few
//! lines (the same series, the same keys), so the far matches that a longer
//! history finds save less than the time spent searching it. Any gunzip reads the
//! result: a shorter history only means that no match reaches further back.
//!
//! igzip is called through isal-rs's generated bindings to the system's libisal
//! (its safe API has no history setting). `host/build.rs` checks, when Boulder is
//! built, that the system's header agrees with those bindings.

use flate2::write::GzEncoder;
use isal::isal_sys::igzip_lib as isal_sys;
use std::io::Write;
use std::mem::MaybeUninit;

/// Log2 of how far back igzip looks for matches: 8 KiB (deflate allows 32 KiB).
const IGZIP_HISTORY_BITS: u16 = 13;

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
            Gzip::Igzip => igzip(data).unwrap_or_else(|code| {
                // Not expected: the buffer holds even stored (uncompressed) blocks.
                tracing::warn!(code, bytes = data.len(), "igzip failed; using zlib");
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

/// `data` as one gzip member, by igzip's level 1 in one call (its stateless mode:
/// the whole body is at hand), or igzip's error code.
fn igzip(data: &[u8]) -> Result<Vec<u8>, i32> {
    // igzip counts bytes in u32s; bodies are far smaller (batch_points bounds them).
    let too_big = isal_sys::INVALID_PARAM;
    let avail_in = u32::try_from(data.len()).map_err(|_| too_big)?;
    let mut out = Vec::with_capacity(igzip_bound(data.len()));
    let avail_out = u32::try_from(out.capacity()).map_err(|_| too_big)?;
    // Level 1's working memory (hash table and buffered symbols), as igzip sizes it.
    let mut level_buf = vec![0u8; isal_sys::ISAL_DEF_LVL1_DEFAULT as usize];
    // Zeroed first: the init call sets what stateless compression reads, not every
    // byte of the struct's internal state, and a Rust reference needs them all.
    let mut stream = MaybeUninit::<isal_sys::isal_zstream>::zeroed();
    // SAFETY: all-zero bytes are a valid `isal_zstream` (integers and raw
    // pointers), which the call then sets up for stateless compression. The
    // struct is the system library's: host/build.rs checks, against the system's
    // header, that its size, every field used here and the constants are as the
    // bindings say, and fails the build otherwise.
    let stream = unsafe {
        isal_sys::isal_deflate_stateless_init(stream.as_mut_ptr());
        stream.assume_init_mut()
    };
    stream.level = 1;
    stream.level_buf = level_buf.as_mut_ptr();
    stream.level_buf_size = isal_sys::ISAL_DEF_LVL1_DEFAULT;
    stream.gzip_flag = isal_sys::IGZIP_GZIP as u16;
    stream.hist_bits = IGZIP_HISTORY_BITS;
    stream.end_of_stream = 1;
    stream.flush = isal_sys::NO_FLUSH as u16;
    stream.next_in = data.as_ptr().cast_mut(); // only read
    stream.avail_in = avail_in;
    stream.next_out = out.as_mut_ptr();
    stream.avail_out = avail_out;
    // SAFETY: the stream reads `avail_in` bytes of `data` and writes at most
    // `avail_out` bytes into `out`'s spare capacity; `level_buf` is the size
    // level 1 needs (ISAL_DEF_LVL1_DEFAULT) and outlives the call; the struct's
    // layout is the library's (checked by host/build.rs).
    let code = unsafe { isal_sys::isal_deflate_stateless(stream) };
    if code != isal_sys::COMP_OK as i32 {
        return Err(code);
    }
    let written = stream.total_out as usize;
    assert!(written <= out.capacity(), "igzip wrote past its buffer");
    // SAFETY: igzip initialised the first `total_out` bytes of the buffer.
    unsafe { out.set_len(written) };
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
