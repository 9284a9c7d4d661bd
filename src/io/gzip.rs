//! The gzip codec: ISA-L's igzip through `isal-rs`, linked to Debian's libisal.
//!
//! At level 1 igzip writes files as small as zlib's level 1 (what nibabel
//! writes) several times faster, and inflates faster too; see
//! docs/performance.md. nibabel's levels 0..9 map onto ISA-L's 0, 1 and 3.

use std::io::{Read, Write};

pub use isal::CompressionLevel;

/// The two magic bytes that open every gzip member.
pub fn is_gzip(bytes: &[u8]) -> bool {
    bytes.len() >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b
}

/// nibabel/zlib level (0..=9) to the nearest ISA-L level.
pub fn isal_level(level: u32) -> CompressionLevel {
    match level {
        0 => CompressionLevel::Zero,
        1 | 2 => CompressionLevel::One,
        _ => CompressionLevel::Three,
    }
}

/// A streaming gzip reader.
pub fn decoder<R: Read>(input: R) -> impl Read {
    isal::read::Decoder::new(input, isal::Codec::Gzip)
}

/// A streaming gzip writer; call `finish` on it to write the trailer.
pub fn encoder<W: Write>(output: W, level: u32) -> isal::write::Encoder<W> {
    isal::write::Encoder::new(output, isal_level(level), isal::Codec::Gzip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_is_readable_as_plain_gzip() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let mut enc = encoder(Vec::new(), 1);
        enc.write_all(&data).unwrap();
        let gz = enc.finish().unwrap();
        assert!(is_gzip(&gz));
        assert!(gz.len() < data.len() / 4);
        let mut back = Vec::new();
        decoder(&gz[..]).read_to_end(&mut back).unwrap();
        assert_eq!(back, data);
    }
}
