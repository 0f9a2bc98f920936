"""Schemathesis hooks for Folio's schema fuzzing test (bins/api/tests/it/schemathesis.rs).

The document says which media types an upload's `files` part takes (`encoding.contentType`
of `POST /v1/books/{book_id}/pages`: PNG, JPEG, WebP, TIFF, BMP, GIF, PDF), but a schema
cannot say "bytes that decode as an image", and schemathesis generates no file by itself:
it takes the bytes of a media type from a strategy registered for it. These strategies
make real files, so a schema-valid upload is one the server must accept (positive data
acceptance holds for uploads too). PNG, BMP and TIFF files are built here with random sizes
and pixels; JPEG, GIF, WebP and PDF are the smallest valid files schemathesis ships for
uploads (the PDF is rendered by poppler-utils, which `cargo xtask ci` installs). A media
type the document does not name is never drawn.
"""

import struct
import zlib

import schemathesis
from hypothesis import strategies as st
from schemathesis.core.file_samples import FILE_SAMPLES


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data))
        + kind
        + data
        + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


# PNG color types with 8-bit samples: gray, RGB, gray with alpha, RGBA.
_PNG_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}


@st.composite
def png_images(draw) -> bytes:
    width = draw(st.integers(min_value=1, max_value=48))
    height = draw(st.integers(min_value=1, max_value=48))
    color_type = draw(st.sampled_from(sorted(_PNG_CHANNELS)))
    row_bytes = width * _PNG_CHANNELS[color_type]
    pixels = draw(st.binary(min_size=row_bytes * height, max_size=row_bytes * height))
    # Filter type 0 (none) before every row.
    raw = b"".join(
        b"\x00" + pixels[row * row_bytes : (row + 1) * row_bytes] for row in range(height)
    )
    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(raw))
        + _png_chunk(b"IEND", b"")
    )


@st.composite
def bmp_images(draw) -> bytes:
    width = draw(st.integers(min_value=1, max_value=48))
    height = draw(st.integers(min_value=1, max_value=48))
    # 24-bit rows, bottom-up, each padded to 4 bytes.
    row_bytes = (width * 3 + 3) // 4 * 4
    pixels = b"".join(
        draw(st.binary(min_size=width * 3, max_size=width * 3)) + b"\x00" * (row_bytes - width * 3)
        for _ in range(height)
    )
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, len(pixels), 2835, 2835, 0, 0)
    offset = 14 + len(info)
    header = struct.pack("<2sIHHI", b"BM", offset + len(pixels), 0, 0, offset)
    return header + info + pixels


@st.composite
def tiff_images(draw) -> bytes:
    """An uncompressed 8-bit grayscale baseline TIFF, little-endian, in one strip."""
    width = draw(st.integers(min_value=1, max_value=48))
    height = draw(st.integers(min_value=1, max_value=48))
    pixels = draw(st.binary(min_size=width * height, max_size=width * height))
    short, long_ = 3, 4
    entries = [
        (256, long_, width),  # ImageWidth
        (257, long_, height),  # ImageLength
        (258, short, 8),  # BitsPerSample
        (259, short, 1),  # Compression: none
        (262, short, 1),  # PhotometricInterpretation: black is zero
        (273, long_, 8 + 2 + 12 * 9 + 4),  # StripOffsets: right after the IFD
        (277, short, 1),  # SamplesPerPixel
        (278, long_, height),  # RowsPerStrip
        (279, long_, len(pixels)),  # StripByteCounts
    ]
    ifd = struct.pack("<H", len(entries))
    for tag, kind, value in entries:
        packed = struct.pack("<HH", value, 0) if kind == short else struct.pack("<I", value)
        ifd += struct.pack("<HHI", tag, kind, 1) + packed
    ifd += struct.pack("<I", 0)  # no next IFD
    return b"II*\x00" + struct.pack("<I", 8) + ifd + pixels


schemathesis.openapi.media_type("image/png", png_images())
schemathesis.openapi.media_type("image/tiff", tiff_images())
schemathesis.openapi.media_type("image/bmp", bmp_images())
schemathesis.openapi.media_type("image/jpeg", st.just(FILE_SAMPLES["jpg"]))
schemathesis.openapi.media_type("image/gif", st.just(FILE_SAMPLES["gif"]))
schemathesis.openapi.media_type("image/webp", st.just(FILE_SAMPLES["webp"]))
schemathesis.openapi.media_type("application/pdf", st.just(FILE_SAMPLES["pdf"]))
