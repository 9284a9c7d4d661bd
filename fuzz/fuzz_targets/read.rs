//! The reader over arbitrary bytes: header (NIfTI-1 and -2, both byte
//! orders), gzip (one or many members) and voxels. Any input must give an
//! image or an error, never a panic, a hang or an allocation the bytes
//! cannot justify.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(img) = nismooth::io::read_image_from_bytes(data) {
        // What the reader accepted must be consistent with itself.
        assert_eq!(img.voxels.len(), img.shape.len());
        assert!(img.raw_header.len() >= img.version.header_len() + 4);
    }
});
