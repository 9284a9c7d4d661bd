//! The gzip codec: ISA-L's igzip, linked to Debian's libisal.
//!
//! Reading streams the file through a reused 1 MiB buffer into ISA-L's
//! inflate, which writes straight into the image's voxels (no second copy of
//! the compressed or the inflated bytes). Writing compresses one image on several
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

/// Compressed bytes read from the file per refill of a streaming reader.
const INFLATE_INPUT: usize = 1 << 20;

/// A streaming gzip reader. ISA-L inflates from one input buffer straight
/// into the caller's buffer (the image's voxels): no other copy is made.
/// Every member is read, in order (BGZF, `cat a.gz b.gz`).
pub fn decoder<R: Read>(input: R) -> Inflater<R> {
    let mut parts = INFLATERS
        .with_borrow_mut(Vec::pop)
        .unwrap_or_else(|| InflateParts {
            // SAFETY: an all-zero inflate_state is plain data (integers, arrays,
            // null pointers); isal_inflate_init below sets it up.
            state: unsafe { Box::new(MaybeUninit::<sys::inflate_state>::zeroed().assume_init()) },
            input: vec![0; INFLATE_INPUT],
        });
    // SAFETY: a valid, exclusively owned inflate_state.
    unsafe { sys::isal_inflate_init(&mut *parts.state) };
    parts.state.crc_flag = sys::ISAL_GZIP;
    Inflater {
        inner: input,
        parts: Some(parts),
        start: 0,
        end: 0,
        eof: false,
        stalls: 0,
    }
}

/// An inflate state (about 100 KiB) and its input buffer: kept per thread
/// and reused, so that reading an image allocates and faults in nothing.
struct InflateParts {
    state: Box<sys::inflate_state>,
    input: Vec<u8>,
}

thread_local! {
    static INFLATERS: std::cell::RefCell<Vec<InflateParts>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// See `decoder`.
pub struct Inflater<R> {
    inner: R,
    /// Always `Some` until dropped, when they go back to the thread's pool.
    parts: Option<InflateParts>,
    /// `input[start..end]` is read from the file but not yet inflated.
    start: usize,
    end: usize,
    eof: bool,
    /// Calls in a row that neither took input nor gave output: ISA-L can
    /// stall like that on some damaged headers instead of failing.
    stalls: u32,
}

impl<R> Drop for Inflater<R> {
    fn drop(&mut self) {
        if let Some(p) = self.parts.take() {
            let _ = INFLATERS.try_with(|pool| pool.borrow_mut().push(p));
        }
    }
}

/// An inflate error in words.
fn inflate_error(rc: i32) -> std::io::Error {
    let msg = match rc {
        sys::ISAL_INCORRECT_CHECKSUM => "a check failed (the trailer's CRC-32 or length, or the header's CRC-16): the file is damaged".to_string(),
        sys::ISAL_INVALID_WRAPPER | sys::ISAL_UNSUPPORTED_METHOD => "invalid gzip header".into(),
        sys::ISAL_INVALID_BLOCK | sys::ISAL_INVALID_SYMBOL | sys::ISAL_INVALID_LOOKBACK => {
            "invalid compressed data (damaged)".into()
        }
        rc => format!("ISA-L inflate failed with code {rc}"),
    };
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg)
}

impl<R: Read> Read for Inflater<R> {
    /// Ok(0) at the end of the last member; an `UnexpectedEof` error where
    /// the file ends inside one.
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            let parts = self.parts.as_mut().expect("inflater in use");
            if self.start == self.end && !self.eof {
                let n = loop {
                    match self.inner.read(&mut parts.input) {
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        r => break r?,
                    }
                };
                (self.start, self.end, self.eof) = (0, n, n == 0);
            }
            let st = &mut *parts.state;
            if st.block_state == sys::isal_block_state_ISAL_BLOCK_FINISH {
                // Zeros after a member are padding (tape blocks, a
                // preallocated file), as gzip -d and Python's gzip (which
                // nibabel reads with) skip them.
                let input = &parts.input[self.start..self.end];
                self.start += input.iter().take_while(|&&b| b == 0).count();
                if self.start == self.end {
                    if self.eof {
                        return Ok(0);
                    }
                    continue;
                }
                if parts.input[self.start] != 0x1f {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "data after the gzip member that is not another member (the file has bytes appended)",
                    ));
                }
                // Another member follows.
                // SAFETY: a valid inflate_state, exclusively borrowed.
                unsafe { sys::isal_inflate_reset(st) };
                st.crc_flag = sys::ISAL_GZIP;
            }
            let avail = self.end - self.start;
            st.next_in = parts.input[self.start..].as_mut_ptr();
            st.avail_in = avail as u32;
            let room = out.len().min(u32::MAX as usize);
            st.next_out = out.as_mut_ptr();
            st.avail_out = room as u32;
            // SAFETY: next_in/next_out point into live buffers of at least
            // avail_in/avail_out bytes, which ISA-L does not keep past the call.
            let rc = unsafe { sys::isal_inflate(st) };
            let taken = avail - st.avail_in as usize;
            let given = room - st.avail_out as usize;
            (st.next_in, st.next_out) = (std::ptr::null_mut(), std::ptr::null_mut());
            self.start += taken;
            if rc < 0 {
                return Err(inflate_error(rc));
            }
            if taken > 0 || given > 0 {
                self.stalls = 0;
            }
            if given > 0 {
                return Ok(given);
            }
            let finished = st.block_state == sys::isal_block_state_ISAL_BLOCK_FINISH;
            if taken == 0 && !finished {
                if self.eof {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the file ends inside a gzip member (cut short)",
                    ));
                }
                self.stalls += 1;
                if self.stalls >= 2 {
                    return Err(inflate_error(sys::ISAL_INVALID_BLOCK));
                }
            }
        }
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
    // ISA-L's per-level hash tables and token buffer: a few hundred KiB,
    // kept per thread (ISA-L resets them for every new stream). Level 2 gets
    // the largest token buffer: fewer, longer blocks deflate float32 images
    // 12% faster at the same size (docs/performance.md).
    thread_local! {
        static LEVEL_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let level = level.min(3);
    let buf_size = match level {
        0 => sys::ISAL_DEF_LVL0_DEFAULT,
        1 => sys::ISAL_DEF_LVL1_DEFAULT,
        2 => sys::ISAL_DEF_LVL2_EXTRA_LARGE,
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
        let mut stream = self.begin(out, header, data.len() as u64, swap)?;
        self.append(&mut stream, out, data)?;
        self.end(stream, out)
    }

    /// Starts a member of `header` and `data_len` bytes of data that come
    /// later, a piece at a time (`append`, then `end`): a series streamed
    /// volume by volume. The bytes are those `write` gives the whole data,
    /// because the chunks are cut at the same offsets whatever the pieces.
    pub fn begin(
        &self,
        out: &mut impl Write,
        header: &[u8],
        data_len: u64,
        swap: usize,
    ) -> std::io::Result<GzStream> {
        // mtime 0, no name: the bytes depend only on the data.
        out.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3])?;
        // The header is chunk "-1": small, compressed here, dictionary for chunk 0.
        let mut buf = Vec::new();
        deflate_chunk(self.level, &[], header, data_len == 0, &mut buf)
            .map_err(std::io::Error::other)?;
        out.write_all(&buf)?;
        Ok(GzStream {
            data_len,
            done: 0,
            crc: crc32(header),
            total: header.len() as u64 + data_len,
            dict: tail(header).to_vec(),
            pending: Vec::new(),
            swap,
            from: 0,
        })
    }

    /// The next piece of the data: every chunk it completes is deflated
    /// and written; the rest waits for the next piece.
    pub fn append(
        &self,
        s: &mut GzStream,
        out: &mut impl Write,
        mut data: &[u8],
    ) -> std::io::Result<()> {
        let left = s.data_len - s.done - s.pending.len() as u64;
        if data.len() as u64 > left {
            return Err(std::io::Error::other(format!(
                "{} bytes more than the header announced",
                data.len() as u64 - left
            )));
        }
        if !s.pending.is_empty() {
            let want = s.chunk_at(s.done) - s.pending.len();
            let take = want.min(data.len());
            s.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
            if s.pending.len() < s.chunk_at(s.done) {
                return Ok(());
            }
            let whole = std::mem::take(&mut s.pending);
            self.deflate_run(s, out, &whole)?;
        }
        // Whole chunks straight from the piece (no copy); the last chunk of
        // the data may be short.
        let reaches_end = s.done + data.len() as u64 == s.data_len;
        let n = if reaches_end {
            data.len()
        } else {
            data.len() / CHUNK * CHUNK
        };
        self.deflate_run(s, out, &data[..n])?;
        s.pending.extend_from_slice(&data[n..]);
        Ok(())
    }

    /// Ends the member: its CRC-32 and length. Every byte the header
    /// announced must have come.
    pub fn end(&self, s: GzStream, out: &mut impl Write) -> std::io::Result<()> {
        if s.done != s.data_len || !s.pending.is_empty() {
            return Err(std::io::Error::other(format!(
                "{} of {} data bytes written",
                s.done, s.data_len
            )));
        }
        out.write_all(&s.crc.to_le_bytes())?;
        out.write_all(&(s.total as u32).to_le_bytes())
    }

    /// Deflates `run`, whole chunks from offset `s.done` of the data (the
    /// data's last chunk may be short), 2 × threads chunks at a time.
    fn deflate_run(
        &self,
        s: &mut GzStream,
        out: &mut impl Write,
        run: &[u8],
    ) -> std::io::Result<()> {
        let nchunks = run.len().div_ceil(CHUNK);
        let window = 2 * self.pool.current_num_threads();
        let mut first = 0;
        while first < nchunks {
            let end = (first + window).min(nchunks);
            let chunk = |i: usize| {
                let lo = i * CHUNK;
                let hi = (lo + CHUNK).min(run.len());
                let chunk = swapped(&run[lo..hi], s.swap);
                let before;
                let dict: &[u8] = if i == 0 {
                    &s.dict
                } else {
                    before = swapped(&run[lo - DICT..lo], s.swap);
                    &before
                };
                let last = s.done + hi as u64 == s.data_len;
                let mut z = self.take_buffer();
                deflate_chunk(self.level, dict, &chunk, last, &mut z)?;
                Ok((z, crc32(&chunk), chunk.len()))
            };
            // One chunk (an image under 1 MiB), or one thread: deflated right
            // here. The pool's hand-off would cost more than a small chunk,
            // and a time slice per wake-up on a node whose cores are all busy.
            let serial = end - first == 1 || self.pool.current_num_threads() == 1;
            let done: Vec<Result<Deflated, DeflateError>> = if serial {
                (first..end).map(chunk).collect()
            } else {
                self.pool
                    .install(|| (first..end).into_par_iter().map(chunk).collect())
            };
            for r in done {
                let (z, c, n) = r.map_err(std::io::Error::other)?;
                out.write_all(&z)?;
                s.crc = crc32_combine(s.crc, c, n as u64);
                self.give_buffer(z);
            }
            first = end;
        }
        if run.len() >= DICT {
            s.dict = swapped(&run[run.len() - DICT..], s.swap).into_owned();
        }
        s.done += run.len() as u64;
        Ok(())
    }
}

/// A member cut among processes, each deflating its run of the data
/// (`resume`, `append`, `GzStream::end_run`); whoever holds every run's CRC
/// and length ends it (`trailer`). The runs, laid after `head` in order,
/// are the bytes `write` gives: chunks are cut at the same data offsets and
/// primed with the same 32 KiB.
impl Compressor {
    /// The member's first bytes: its gzip header and the deflated `header`
    /// (what `begin` writes).
    pub fn head(&self, header: &[u8], data_len: u64) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        self.begin(&mut out, header, data_len, 1)?;
        Ok(out)
    }

    /// A run of the data from byte `at` (a multiple of `CHUNK`) of a member
    /// whose data is `data_len` long: `append` deflates what comes. `before`
    /// is the data just before `at` (its last 32 KiB count, as given to the
    /// writer), or the NIfTI header when `at` is 0.
    pub fn resume(
        &self,
        before: &[u8],
        at: u64,
        data_len: u64,
        swap: usize,
    ) -> std::io::Result<GzStream> {
        if !at.is_multiple_of(CHUNK as u64) || at > data_len {
            return Err(std::io::Error::other(format!(
                "a run from byte {at} of {data_len} does not start on a {CHUNK}-byte chunk"
            )));
        }
        let dict = if at == 0 {
            tail(before).to_vec()
        } else {
            swapped(tail(before), swap).into_owned()
        };
        Ok(GzStream {
            data_len,
            done: at,
            crc: 0,
            total: 0,
            dict,
            pending: Vec::new(),
            swap,
            from: at,
        })
    }
}

impl GzStream {
    /// Ends a run (`Compressor::resume`) at data byte `end`, which must be
    /// where every byte before it was deflated: a chunk's end, or the data's.
    /// Its CRC-32 and length, for `trailer`.
    pub fn end_run(self, end: u64) -> std::io::Result<(u32, u64)> {
        if self.done != end || !self.pending.is_empty() {
            return Err(std::io::Error::other(format!(
                "a run meant to end at byte {end} holds {} deflated and {} waiting",
                self.done,
                self.pending.len()
            )));
        }
        Ok((self.crc, end - self.from))
    }
}

/// The member's last 8 bytes: the CRC-32 of `header` and of the data (its
/// pieces' CRCs and lengths, in order), and the member's length mod 2^32.
pub fn trailer(header: &[u8], pieces: &[(u32, u64)]) -> [u8; 8] {
    let mut crc = crc32(header);
    let mut total = header.len() as u64;
    for &(c, len) in pieces {
        crc = crc32_combine(crc, c, len);
        total += len;
    }
    let mut t = [0; 8];
    t[..4].copy_from_slice(&crc.to_le_bytes());
    t[4..].copy_from_slice(&(total as u32).to_le_bytes());
    t
}

/// A gzip member written a piece at a time (`Compressor::begin`).
pub struct GzStream {
    data_len: u64,
    /// Data bytes deflated so far: whole chunks until the last.
    done: u64,
    crc: u32,
    /// The member's uncompressed length (header and data).
    total: u64,
    /// The next chunk's dictionary: the 32 KiB before it, as written.
    dict: Vec<u8>,
    /// Data come but not yet deflated: part of one chunk.
    pending: Vec<u8>,
    swap: usize,
    /// Where this stream's run of the data began (0 for a whole member).
    from: u64,
}

impl GzStream {
    /// The length of the chunk that starts at data offset `at`.
    fn chunk_at(&self, at: u64) -> usize {
        (self.data_len - at).min(CHUNK as u64) as usize
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

/// `bytes` with every `swap`-byte element byte-swapped (`swap` ≤ 1: as they are).
pub fn swapped(bytes: &[u8], swap: usize) -> std::borrow::Cow<'_, [u8]> {
    if swap <= 1 {
        return std::borrow::Cow::Borrowed(bytes);
    }
    let mut v = bytes.to_vec();
    v.chunks_exact_mut(swap).for_each(|e| e.reverse());
    std::borrow::Cow::Owned(v)
}

#[cfg(test)]
mod tests;
