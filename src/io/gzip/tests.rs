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

/// A source that hands out at most `step` bytes per read, as a pipe or a
/// slow file system may.
struct Trickle<'a> {
    data: &'a [u8],
    step: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.step.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// Reads `gz` through `decoder`, `out_step` bytes per call at most.
fn inflate(gz: &[u8], in_step: usize, out_step: usize) -> std::io::Result<Vec<u8>> {
    let mut r = decoder(Trickle {
        data: gz,
        step: in_step,
    });
    let (mut back, mut buf) = (Vec::new(), vec![0; out_step]);
    loop {
        match r.read(&mut buf)? {
            0 => return Ok(back),
            n => back.extend_from_slice(&buf[..n]),
        }
    }
}

#[test]
fn a_member_written_in_pieces_is_the_member_written_whole() {
    let header = sample(352);
    for (len, threads, swap) in [
        (0, 1, 1),
        (5 * CHUNK / 2 + 4, 2, 2),
        (3 * CHUNK, 1, 4),
        (CHUNK - 8, 2, 8),
    ] {
        let data = sample(len);
        let len = data.len();
        let gz = Compressor::new(threads, 1).unwrap();
        let mut whole = Vec::new();
        gz.write(&mut whole, &header, &data, swap).unwrap();
        // Pieces that cut chunks anywhere (a multiple of the element size).
        for piece in [8, 4096, CHUNK / 3 - 8 * 7, CHUNK, 3 * CHUNK / 2] {
            let mut out = Vec::new();
            let mut s = gz.begin(&mut out, &header, len as u64, swap).unwrap();
            for part in data.chunks(piece) {
                gz.append(&mut s, &mut out, part).unwrap();
            }
            gz.end(s, &mut out).unwrap();
            assert!(out == whole, "len {len}, pieces of {piece}");
        }
        // Too few bytes, or too many, is an error, never a short file.
        let mut out = Vec::new();
        let mut s = gz.begin(&mut out, &header, len as u64 + 8, swap).unwrap();
        gz.append(&mut s, &mut out, &data).unwrap();
        assert!(gz.end(s, &mut out).is_err());
        let mut s = gz.begin(&mut out, &header, len as u64, swap).unwrap();
        gz.append(&mut s, &mut out, &data).unwrap();
        assert!(gz.append(&mut s, &mut out, &[0; 8]).is_err());
    }
}

#[test]
fn a_member_cut_among_processes_is_the_member_written_whole() {
    let header = sample(352);
    for (len, swap, cuts) in [
        (5 * CHUNK / 2 + 4, 2, vec![CHUNK, 2 * CHUNK]),
        (3 * CHUNK, 4, vec![CHUNK]),
        (3 * CHUNK, 1, vec![0, 3 * CHUNK]),
        (CHUNK - 8, 8, vec![]),
    ] {
        let data = sample(len);
        let gz = Compressor::new(2, 1).unwrap();
        let mut whole = Vec::new();
        gz.write(&mut whole, &header, &data, swap).unwrap();
        let mut bounds = vec![0];
        bounds.extend(cuts);
        bounds.push(len);
        let mut out = gz.head(&header, len as u64).unwrap();
        let mut crcs = Vec::new();
        for w in bounds.windows(2) {
            let before = if w[0] == 0 {
                &header[..]
            } else {
                &data[..w[0]]
            };
            let mut run = gz.resume(before, w[0] as u64, len as u64, swap).unwrap();
            // In pieces that cut chunks anywhere, as a rank's slabs come.
            for part in data[w[0]..w[1]].chunks(CHUNK / 3 + 2) {
                gz.append(&mut run, &mut out, part).unwrap();
            }
            crcs.push(run.end_run(w[1] as u64).unwrap());
        }
        out.extend_from_slice(&trailer(&header, &crcs));
        assert!(out == whole, "len {len}, cut at {bounds:?}");
    }
    // A run off the chunks is refused, never a wrong member.
    let gz = Compressor::new(1, 1).unwrap();
    let data = sample(2 * CHUNK);
    assert!(gz.resume(&data[..8], 8, 2 * CHUNK as u64, 1).is_err());
    let mut run = gz.resume(&header, 0, 2 * CHUNK as u64, 1).unwrap();
    gz.append(&mut run, &mut Vec::new(), &data[..CHUNK - 8])
        .unwrap();
    assert!(run.end_run(CHUNK as u64 - 8).is_err());
}

#[test]
fn the_reader_reads_every_member_whatever_the_read_sizes() {
    let (a, b) = (sample(300_001), sample(2 * INFLATE_INPUT + 5));
    let member =
        |d: &[u8]| isal::compress(d, isal::CompressionLevel::Three, isal::Codec::Gzip).unwrap();
    let mut gz = member(&a);
    gz.extend(member(&[]));
    gz.extend(member(&b));
    let want = [a, b].concat();
    for (in_step, out_step) in [(usize::MAX, 1 << 24), (1, 4096), (7, 1), (65_537, 999_999)] {
        let back = inflate(&gz, in_step, out_step).unwrap();
        assert!(
            back == want,
            "in {in_step} out {out_step}: {} of {} bytes",
            back.len(),
            want.len()
        );
    }
}

#[test]
fn damaged_streams_fail_with_their_cause() {
    let data = sample(200_000);
    let gz = isal::compress(&data[..], isal::CompressionLevel::One, isal::Codec::Gzip).unwrap();
    let err = |bytes: &[u8]| inflate(bytes, 4096, 1 << 20).unwrap_err();
    for cut in [5, 40, gz.len() / 2, gz.len() - 1] {
        let e = err(&gz[..cut]);
        assert_eq!(
            e.kind(),
            std::io::ErrorKind::UnexpectedEof,
            "cut at {cut}: {e}"
        );
    }
    let mut bad_crc = gz.clone();
    let n = bad_crc.len();
    bad_crc[n - 8] ^= 1;
    assert!(err(&bad_crc).to_string().contains("CRC-32"));
    let mut padded = gz.clone();
    padded.extend(std::iter::repeat_n(0u8, 10_000));
    for step in [1, 7, 4096] {
        let back = inflate(&padded, step, 1 << 20).unwrap();
        assert!(
            back == data,
            "zero padding is no member (read {step} bytes at a time)"
        );
    }
    padded.extend_from_slice(&gz);
    let back = inflate(&padded, 4096, 1 << 20).unwrap();
    assert!(
        back == [&data[..], &data[..]].concat(),
        "a member after the padding"
    );
    let mut trailing = gz.clone();
    trailing.extend_from_slice(b"not gzip at all");
    assert!(err(&trailing)
        .to_string()
        .contains("data after the gzip member"));
    let mut flipped = gz.clone();
    flipped[gz.len() / 3..gz.len() / 3 + 64].fill(0xff);
    assert_eq!(err(&flipped).kind(), std::io::ErrorKind::InvalidData);
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
