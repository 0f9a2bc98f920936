//! Test images made on the spot: each accepted format, and hostile files.

use std::io::Cursor;

use image::{DynamicImage, ImageFormat, RgbImage};

/// A small gradient, so encoders have something real to compress.
pub(crate) fn sample(width: u32, height: u32) -> DynamicImage {
    DynamicImage::ImageRgb8(RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([
            (x * 7 % 256) as u8,
            (y * 5 % 256) as u8,
            ((x + y) % 256) as u8,
        ])
    }))
}

/// `sample(width, height)` encoded as `format`.
pub(crate) fn encoded(format: ImageFormat, width: u32, height: u32) -> Vec<u8> {
    let mut bytes = Vec::new();
    sample(width, height)
        .write_to(Cursor::new(&mut bytes), format)
        .unwrap();
    bytes
}

/// A PNG whose header claims `width` x `height` 8-bit gray pixels, with a single row of
/// image data: a decompression bomb's header without its gigabytes.
pub(crate) fn png_bomb(width: u32, height: u32) -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut header = Vec::new();
    header.extend(width.to_be_bytes());
    header.extend(height.to_be_bytes());
    header.extend([8, 0, 0, 0, 0]); // 8-bit, grayscale, deflate, adaptive, no interlace
    chunk(&mut png, b"IHDR", &header);
    let row: Vec<u8> = std::iter::once(0)
        .chain(std::iter::repeat_n(0, width as usize))
        .collect();
    chunk(&mut png, b"IDAT", &zlib_stored(&row));
    chunk(&mut png, b"IEND", &[]);
    png
}

fn chunk(png: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    png.extend(u32::try_from(data.len()).unwrap().to_be_bytes());
    let start = png.len();
    png.extend(kind);
    png.extend(data);
    let crc = crc32(&png[start..]);
    png.extend(crc.to_be_bytes());
}

/// A zlib stream of one uncompressed deflate block (data up to 65535 bytes).
fn zlib_stored(data: &[u8]) -> Vec<u8> {
    let length = u16::try_from(data.len()).unwrap();
    let mut out = vec![0x78, 0x01, 0x00]; // zlib header; deflate stored block, not final
    out.extend(length.to_le_bytes());
    out.extend((!length).to_le_bytes());
    out.extend(data);
    let (mut a, mut b) = (1_u32, 0_u32);
    for &byte in data {
        a = (a + u32::from(byte)) % 65521;
        b = (b + a) % 65521;
    }
    out.extend(((b << 16) | a).to_be_bytes());
    out
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFF_u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
