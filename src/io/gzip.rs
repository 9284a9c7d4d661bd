//! The gzip codec: ISA-L's igzip, linked to Debian's libisal.
//!
//! Reading streams through `isal-rs`. Writing compresses one image on several
//! threads into a **single** gzip member, the way pigz does: the data is cut
//! into 1 MiB chunks, each chunk is deflated on its own thread with the
//! previous 32 KiB as its dictionary (so matches across the cut are still
//! found) and ends with a sync flush (an empty stored block that byte-aligns
//! it), only the last chunk closes the stream, and the chunks' CRC-32s are
//! combined into the trailer's. Every gzip reader reads the result as one
//! member, which a concatenation of members (BGZF-style) would not give:
//! some readers, nifti-rs among them, stop after the first member.
//!
//! At nibabel's default level (zlib 1) igzip's level 2 writes files as small
//! as zlib's several times faster (docs/performance.md).

use std::io::{Read, Write};
use std::mem::MaybeUninit;

use isal::isal_sys::igzip_lib as sys;
use rayon::prelude::*;

/// Input bytes per chunk compressed on one thread.
pub const CHUNK: usize = 1 << 20;
/// Deflate's window: the dictionary each chunk inherits from the one before.
const DICT: usize = 32 * 1024;

#[link(name = "isal")]
extern "C" {
    /// ISA-L's gzip CRC-32 (reflected, as the gzip trailer needs it).
    fn crc32_gzip_refl(init_crc: u32, buf: *const u8, len: u64) -> u32;
}

/// The two magic bytes that open every gzip member.
pub fn is_gzip(bytes: &[u8]) -> bool {
    bytes.len() >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b
}

/// A streaming gzip reader.
pub fn decoder<R: Read>(input: R) -> impl Read {
    isal::read::Decoder::new(input, isal::Codec::Gzip)
}

/// A gzip reading error in words (ISA-L's own are enum names).
pub fn describe(e: &std::io::Error) -> String {
    let text = e.to_string();
    if text.contains("IncorrectChecksum") {
        "CRC-32 mismatch: the data is damaged".into()
    } else if ["InvalidWrapper", "UnsupportedMethod"]
        .iter()
        .any(|k| text.contains(k))
    {
        "invalid gzip header".into()
    } else if [
        "Corrupt data",
        "InvalidBlock",
        "InvalidSymbol",
        "InvalidLoopBack",
    ]
    .iter()
    .any(|k| text.contains(k))
    {
        "invalid compressed data (damaged, or cut short)".into()
    } else {
        text
    }
}

/// nibabel/zlib level (0..=9) to an ISA-L level (0..=3). zlib 1 (nibabel's
/// default) maps to ISA-L 2: as fast as ISA-L 1 on image data, and it keeps
/// int16 images within nibabel's size, which ISA-L 1 misses by about 2%.
pub fn isal_level(level: u32) -> u32 {
    match level {
        0 => 0,
        1 | 2 => 2,
        _ => 3,
    }
}

/// CRC-32 of `bytes` as gzip stores it.
pub fn crc32(bytes: &[u8]) -> u32 {
    // SAFETY: reads exactly `bytes.len()` bytes from a valid slice.
    unsafe { crc32_gzip_refl(0, bytes.as_ptr(), bytes.len() as u64) }
}

/// The CRC-32 of A followed by B, from crc(A), crc(B) and B's length (zlib's
/// `crc32_combine`: multiply crc(A) by x^(8·len B) modulo the polynomial).
pub fn crc32_combine(crc_a: u32, crc_b: u32, len_b: u64) -> u32 {
    multmodp(x8nmodp(len_b), crc_a) ^ crc_b
}

const POLY: u32 = 0xedb8_8320;

/// a·b modulo the CRC polynomial (bit-reflected).
fn multmodp(a: u32, mut b: u32) -> u32 {
    let mut m = 1u32 << 31;
    let mut p = 0;
    loop {
        if a & m != 0 {
            p ^= b;
            if a & (m - 1) == 0 {
                return p;
            }
        }
        m >>= 1;
        b = if b & 1 != 0 { (b >> 1) ^ POLY } else { b >> 1 };
    }
}

/// x^(8n) modulo the polynomial, by squaring.
fn x8nmodp(mut n: u64) -> u32 {
    let mut p = 1u32 << 31; // x^0
    let mut sq = multmodp(1 << 30, 1 << 30); // x^2
    sq = multmodp(sq, sq); // x^4
    sq = multmodp(sq, sq); // x^8
    while n != 0 {
        if n & 1 != 0 {
            p = multmodp(sq, p);
        }
        n >>= 1;
        sq = multmodp(sq, sq);
    }
    p
}

/// Why a chunk could not be deflated (ISA-L's return code).
#[derive(Debug, thiserror::Error)]
#[error("ISA-L deflate failed with code {0}")]
pub struct DeflateError(i32);

/// Deflates one chunk as part of a larger raw-deflate stream: primed with
/// `dict`, ended by a sync flush unless it is the `last` chunk (which sets
/// BFINAL). Output is appended to `out`.
pub fn deflate_chunk(
    level: u32,
    dict: &[u8],
    input: &[u8],
    last: bool,
    out: &mut Vec<u8>,
) -> Result<(), DeflateError> {
    // ISA-L's per-level hash tables: a few hundred KiB, kept per thread
    // (ISA-L resets them for every new stream).
    thread_local! {
        static LEVEL_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let level = level.min(3);
    let buf_size = match level {
        0 => sys::ISAL_DEF_LVL0_DEFAULT,
        1 => sys::ISAL_DEF_LVL1_DEFAULT,
        2 => sys::ISAL_DEF_LVL2_DEFAULT,
        _ => sys::ISAL_DEF_LVL3_DEFAULT,
    } as usize;
    LEVEL_BUF.with_borrow_mut(|level_buf| {
        if level_buf.len() < buf_size {
            level_buf.resize(buf_size, 0);
        }
        deflate_with(level, level_buf, dict, input, last, out)
    })
}

fn deflate_with(
    level: u32,
    level_buf: &mut [u8],
    dict: &[u8],
    input: &[u8],
    last: bool,
    out: &mut Vec<u8>,
) -> Result<(), DeflateError> {
    let buf_size = level_buf.len();
    // SAFETY: isal_deflate_init fills in the whole structure; every pointer
    // handed to ISA-L stays valid (and unmoved) until the last call returns.
    unsafe {
        let mut s: sys::isal_zstream = {
            let mut m = MaybeUninit::<sys::isal_zstream>::zeroed();
            sys::isal_deflate_init(m.as_mut_ptr());
            m.assume_init()
        };
        s.level = level;
        s.level_buf = level_buf.as_mut_ptr();
        s.level_buf_size = buf_size as u32;
        s.gzip_flag = sys::IGZIP_DEFLATE as u16;
        if !dict.is_empty() {
            let rc =
                sys::isal_deflate_set_dict(&mut s, dict.as_ptr() as *mut u8, dict.len() as u32);
            if rc != sys::COMP_OK as i32 {
                return Err(DeflateError(rc));
            }
        }
        s.end_of_stream = last as u16;
        s.flush = if last { sys::NO_FLUSH } else { sys::SYNC_FLUSH } as u16;
        s.next_in = input.as_ptr() as *mut u8;
        s.avail_in = input.len() as u32;
        let done = if last {
            sys::isal_zstate_state_ZSTATE_END
        } else {
            sys::isal_zstate_state_ZSTATE_NEW_HDR
        };
        out.reserve(input.len() + input.len() / 16 + 1024);
        loop {
            let start = out.len();
            let room = out.capacity() - start;
            s.next_out = out.as_mut_ptr().add(start);
            s.avail_out = room as u32;
            let rc = sys::isal_deflate(&mut s);
            out.set_len(start + room - s.avail_out as usize);
            if rc != sys::COMP_OK as i32 {
                return Err(DeflateError(rc));
            }
            if s.avail_in == 0 && s.internal_state.state == done {
                return Ok(());
            }
            out.reserve(64 * 1024);
        }
    }
}

/// One chunk's deflate output, the CRC-32 of its input, and its input length.
type Deflated = (Vec<u8>, u32, usize);

/// Compresses images into single-member gzip files on a pool of threads.
pub struct Compressor {
    pool: rayon::ThreadPool,
    level: u32,
    /// Output buffers of finished chunks, reused (each is about 1 MiB; fresh
    /// ones would be mapped and faulted in for every chunk of every image).
    spare: std::sync::Mutex<Vec<Vec<u8>>>,
}

impl Compressor {
    /// `threads` compress at once; `level` is zlib's 0..=9.
    pub fn new(threads: usize, level: u32) -> std::io::Result<Compressor> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .thread_name(|i| format!("nismooth-gzip-{i}"))
            .build()
            .map_err(std::io::Error::other)?;
        Ok(Compressor {
            pool,
            level: isal_level(level),
            spare: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// Writes `header` then `data` as one gzip member. `swap` > 1 byte-swaps
    /// every `swap`-byte element of `data` on the way (foreign byte order).
    /// At most 2 × threads chunks are in flight, so memory stays bounded.
    pub fn write(
        &self,
        out: &mut impl Write,
        header: &[u8],
        data: &[u8],
        swap: usize,
    ) -> std::io::Result<()> {
        // mtime 0, no name: the bytes depend only on the data.
        out.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3])?;
        let total = (header.len() + data.len()) as u64;
        let nchunks = data.len().div_ceil(CHUNK).max(1);
        // The header is chunk "-1": small, compressed here, dictionary for chunk 0.
        let mut crc = crc32(header);
        let mut buf = Vec::new();
        deflate_chunk(self.level, &[], header, data.is_empty(), &mut buf)
            .map_err(std::io::Error::other)?;
        out.write_all(&buf)?;
        let window = 2 * self.pool.current_num_threads();
        let mut first = 0;
        while first < nchunks && !data.is_empty() {
            let end = (first + window).min(nchunks);
            let done: Vec<Result<Deflated, DeflateError>> = self.pool.install(|| {
                (first..end)
                    .into_par_iter()
                    .map(|i| {
                        let lo = i * CHUNK;
                        let hi = (lo + CHUNK).min(data.len());
                        let dict_lo = lo.saturating_sub(DICT);
                        // Dictionary and chunk, swapped together when needed.
                        let span = swapped(&data[dict_lo..hi], swap);
                        let (dict, chunk) = span.split_at(lo - dict_lo);
                        let dict = if i == 0 { tail(header) } else { dict };
                        let mut z = self.take_buffer();
                        deflate_chunk(self.level, dict, chunk, i + 1 == nchunks, &mut z)?;
                        Ok((z, crc32(chunk), chunk.len()))
                    })
                    .collect()
            });
            for r in done {
                let (z, c, n) = r.map_err(std::io::Error::other)?;
                out.write_all(&z)?;
                crc = crc32_combine(crc, c, n as u64);
                self.give_buffer(z);
            }
            first = end;
        }
        out.write_all(&crc.to_le_bytes())?;
        out.write_all(&(total as u32).to_le_bytes())?;
        Ok(())
    }
}

impl Compressor {
    fn take_buffer(&self) -> Vec<u8> {
        let mut v = self
            .spare
            .lock()
            .ok()
            .and_then(|mut s| s.pop())
            .unwrap_or_default();
        v.clear();
        v
    }

    fn give_buffer(&self, v: Vec<u8>) {
        if let Ok(mut s) = self.spare.lock() {
            if s.len() < 2 * self.pool.current_num_threads() {
                s.push(v);
            }
        }
    }
}

fn tail(b: &[u8]) -> &[u8] {
    &b[b.len().saturating_sub(DICT)..]
}

fn swapped(bytes: &[u8], swap: usize) -> std::borrow::Cow<'_, [u8]> {
    if swap <= 1 {
        return std::borrow::Cow::Borrowed(bytes);
    }
    let mut v = bytes.to_vec();
    v.chunks_exact_mut(swap).for_each(|e| e.reverse());
    std::borrow::Cow::Owned(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bitwise_crc(bytes: &[u8]) -> u32 {
        let mut c = !0u32;
        for &b in bytes {
            c ^= b as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 { (c >> 1) ^ POLY } else { c >> 1 };
            }
        }
        !c
    }

    fn sample(n: usize) -> Vec<u8> {
        // Compressible but not trivial: a noisy ramp of f32 values.
        let mut s = 7u64;
        (0..n / 4)
            .flat_map(|i| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1);
                ((i % 1000) as f32 + (s >> 60) as f32).to_le_bytes()
            })
            .collect()
    }

    #[test]
    fn crc_and_combine_agree_with_the_definition() {
        let data = sample(100_003);
        assert_eq!(crc32(&data), bitwise_crc(&data));
        for cut in [0, 1, 4096, 50_000, data.len()] {
            let (a, b) = data.split_at(cut);
            assert_eq!(
                crc32_combine(crc32(a), crc32(b), b.len() as u64),
                crc32(&data)
            );
        }
    }

    #[test]
    fn parallel_output_is_one_member_that_reads_back() {
        for (len, threads, swap) in [
            (0, 2, 1),
            (5, 1, 1),
            (3 * CHUNK + 12_345, 3, 1),
            (2 * CHUNK + 8, 2, 4),
        ] {
            let header = b"a header of some bytes".to_vec();
            let data = sample(len);
            for level in [0, 1, 6] {
                let mut gz = Vec::new();
                Compressor::new(threads, level)
                    .unwrap()
                    .write(&mut gz, &header, &data, swap)
                    .unwrap();
                let mut back = Vec::new();
                decoder(&gz[..]).read_to_end(&mut back).unwrap();
                let mut want = header.clone();
                want.extend_from_slice(&swapped(&data, swap));
                let what = format!("len {len} threads {threads} swap {swap} level {level}");
                assert_eq!(back, want, "{what}");
                // One member: the trailer's size field is the whole payload.
                let isize = u32::from_le_bytes(gz[gz.len() - 4..].try_into().unwrap());
                assert_eq!(isize as usize, want.len(), "{what}");
            }
        }
    }

    #[test]
    fn chunking_costs_almost_nothing_in_size() {
        let data = sample(4 * CHUNK);
        let mut one = Vec::new();
        Compressor::new(1, 1)
            .unwrap()
            .write(&mut one, b"", &data, 1)
            .unwrap();
        let mut whole = Vec::new();
        deflate_chunk(isal_level(1), &[], &data, true, &mut whole).unwrap();
        assert!(
            (one.len() as f64) < whole.len() as f64 * 1.01,
            "{} vs {}",
            one.len(),
            whole.len()
        );
    }
}
