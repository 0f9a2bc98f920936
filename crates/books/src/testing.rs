//! Test helpers (feature `testing`): PDFs written by hand, so tests need no binary fixture.
//!
//! [`PdfBuilder`] writes a PDF 1.4 file with scanned pages (a PNG's own compressed data
//! embedded as a Flate image with the PNG predictor, as image-to-PDF tools do: the pixels
//! are exactly the PNG's) and text pages (Helvetica, with a real text layer). [`encrypt`]
//! runs `qpdf --encrypt` (Debian's qpdf, installed by `scripts/install-poppler.sh`).

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::Command;

/// Points of a US letter page.
pub const LETTER: (f64, f64) = (612.0, 792.0);

/// One page of a [`PdfBuilder`].
#[derive(Debug, Clone)]
enum PageSpec {
    /// A PNG image: drawn at 300 dpi at the top left of a page of `size` points, or of
    /// the image's own size.
    Scan {
        image: PngImage,
        size: Option<(f64, f64)>,
        /// The resolution the image is drawn at (300, or a scan's own).
        dpi: f64,
    },
    /// Lines of text in 12 pt Helvetica on a letter page.
    Text { lines: Vec<String> },
}

/// What a PDF image needs from a PNG.
#[derive(Debug, Clone)]
struct PngImage {
    width: u32,
    height: u32,
    bits: u8,
    colors: u8,
    /// The concatenated IDAT chunks: zlib data of filtered rows, which PDF's
    /// `/FlateDecode` with `/Predictor 15` reads as is.
    data: Vec<u8>,
}

impl PngImage {
    /// Reads a non-interlaced gray or RGB PNG without alpha (any bit depth PDF takes).
    fn parse(png: &[u8]) -> Self {
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
        let mut position = 8;
        let mut image = None;
        let mut data = Vec::new();
        while position + 8 <= png.len() {
            let length =
                u32::from_be_bytes(png[position..position + 4].try_into().unwrap()) as usize;
            let kind = &png[position + 4..position + 8];
            let body = &png[position + 8..position + 8 + length];
            match kind {
                b"IHDR" => {
                    let width = u32::from_be_bytes(body[0..4].try_into().unwrap());
                    let height = u32::from_be_bytes(body[4..8].try_into().unwrap());
                    let (bits, color_type, interlace) = (body[8], body[9], body[12]);
                    assert_eq!(interlace, 0, "an interlaced PNG cannot be embedded as is");
                    let colors = match color_type {
                        0 => 1,
                        2 => 3,
                        other => panic!("PNG color type {other} cannot be embedded as is"),
                    };
                    image = Some((width, height, bits, colors));
                }
                b"IDAT" => data.extend_from_slice(body),
                _ => {}
            }
            position += 12 + length;
        }
        let (width, height, bits, colors) = image.expect("the PNG has a header");
        Self {
            width,
            height,
            bits,
            colors,
            data,
        }
    }

    /// Its size in points at `dpi`.
    fn points(&self, dpi: f64) -> (f64, f64) {
        (
            f64::from(self.width) * 72.0 / dpi,
            f64::from(self.height) * 72.0 / dpi,
        )
    }
}

/// Writes a PDF page by page.
#[derive(Debug, Clone, Default)]
pub struct PdfBuilder {
    pages: Vec<PageSpec>,
    /// The page tree's `/Count` when it should lie about the pages.
    claimed_pages: Option<u64>,
}

impl PdfBuilder {
    /// A PDF without pages yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A scanned page: the PNG (gray or RGB, not interlaced) on a page of its own size at
    /// 300 dpi, so that rendering at 300 dpi gives its pixels back. No text layer.
    pub fn scanned_page(mut self, png: &[u8]) -> Self {
        self.pages.push(PageSpec::Scan {
            image: PngImage::parse(png),
            size: None,
            dpi: 300.0,
        });
        self
    }

    /// A scanned page of `size` points (e.g. [`LETTER`]) with the PNG at 300 dpi at its
    /// top left and white around it: a full-size page of a scanned book.
    pub fn scanned_page_of_size(mut self, png: &[u8], size: (f64, f64)) -> Self {
        self.pages.push(PageSpec::Scan {
            image: PngImage::parse(png),
            size: Some(size),
            dpi: 300.0,
        });
        self
    }

    /// A scanned page: the PNG at `dpi` on a page of its own size (a 150 dpi scan of an A4
    /// page makes an A4 page, which rendering at 300 dpi scales up twice).
    pub fn scanned_page_at(mut self, png: &[u8], dpi: f64) -> Self {
        self.pages.push(PageSpec::Scan {
            image: PngImage::parse(png),
            size: None,
            dpi,
        });
        self
    }

    /// A letter page with `text` (one line per line, 12 pt Helvetica from the top left):
    /// a page with a text layer. Characters outside Latin-1 become `?`.
    pub fn text_page(mut self, text: &str) -> Self {
        self.pages.push(PageSpec::Text {
            lines: text.lines().map(str::to_owned).collect(),
        });
        self
    }

    /// A page 8.5 inches wide filled by one image of `width` x `height` gray pixels, all
    /// black: its stream is a few MB and inflates to `width * height` bytes (gigabytes for
    /// 46,000 x 46,000), every row of which a render at 300 dpi reads. `pdfinfo` sees a
    /// plain page; only rendering meets the bomb.
    pub fn inflate_bomb_page(mut self, width: u32, height: u32) -> Self {
        use miniz_oxide::deflate::core::{
            CompressorOxide, TDEFLFlush, TDEFLStatus, compress, create_comp_flags_from_zip_params,
        };
        // Rows as PNG stores them (a filter byte, then the pixels), so that the page takes
        // the same `/Predictor 15` path as a scan.
        let row = vec![0_u8; width as usize + 1];
        let mut compressor = CompressorOxide::new(create_comp_flags_from_zip_params(9, 15, 0));
        let mut data = Vec::new();
        let mut out = vec![0_u8; 1 << 16];
        let mut feed = |input: &[u8], flush: TDEFLFlush, data: &mut Vec<u8>| {
            let mut input = input;
            loop {
                let (status, read, written) = compress(&mut compressor, input, &mut out, flush);
                data.extend_from_slice(&out[..written]);
                input = &input[read..];
                match status {
                    TDEFLStatus::Done => return,
                    TDEFLStatus::Okay if input.is_empty() && written < out.len() => return,
                    TDEFLStatus::Okay => {}
                    other => panic!("compressing the bomb: {other:?}"),
                }
            }
        };
        for _ in 0..height {
            feed(&row, TDEFLFlush::None, &mut data);
        }
        feed(&[], TDEFLFlush::Finish, &mut data);
        self.pages.push(PageSpec::Scan {
            image: PngImage {
                width,
                height,
                bits: 8,
                colors: 1,
                data,
            },
            size: None,
            dpi: f64::from(width) / 8.5,
        });
        self
    }

    /// A page tree that claims `count` pages, whatever pages were added: a hostile PDF.
    pub fn claiming_pages(mut self, count: u64) -> Self {
        self.claimed_pages = Some(count);
        self
    }

    /// The PDF file.
    pub fn build(&self) -> Vec<u8> {
        // Objects 1 (catalog), 2 (page tree), 3 (font), then per page: page, content,
        // and for a scan its image.
        let mut objects: Vec<Vec<u8>> = vec![
            Vec::new(),
            Vec::new(),
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"
                .to_vec(),
        ];
        let mut kids = Vec::new();
        for page in &self.pages {
            let page_id = objects.len() + 1;
            let content_id = page_id + 1;
            kids.push(page_id);
            match page {
                PageSpec::Scan { image, size, dpi } => {
                    let image_id = page_id + 2;
                    let (image_width, image_height) = image.points(*dpi);
                    let (width, height) = size.unwrap_or((image_width, image_height));
                    objects.push(
                        format!(
                            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {width:.2} {height:.2}] \
                             /Resources << /XObject << /Im0 {image_id} 0 R >> >> \
                             /Contents {content_id} 0 R >>"
                        )
                        .into_bytes(),
                    );
                    let content = format!(
                        "q {image_width:.2} 0 0 {image_height:.2} 0 {:.2} cm /Im0 Do Q",
                        height - image_height
                    );
                    objects.push(stream("", content.as_bytes()));
                    objects.push(stream(
                        &format!(
                            "/Type /XObject /Subtype /Image /Width {w} /Height {h} \
                             /ColorSpace /{space} /BitsPerComponent {bits} /Filter /FlateDecode \
                             /DecodeParms << /Predictor 15 /Colors {colors} \
                             /BitsPerComponent {bits} /Columns {w} >>",
                            w = image.width,
                            h = image.height,
                            space = if image.colors == 1 {
                                "DeviceGray"
                            } else {
                                "DeviceRGB"
                            },
                            bits = image.bits,
                            colors = image.colors,
                        ),
                        &image.data,
                    ));
                }
                PageSpec::Text { lines } => {
                    objects.push(
                        format!(
                            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {} {}] \
                             /Resources << /Font << /F1 3 0 R >> >> /Contents {content_id} 0 R >>",
                            LETTER.0, LETTER.1
                        )
                        .into_bytes(),
                    );
                    let mut content = b"BT /F1 12 Tf 16 TL 72 720 Td ".to_vec();
                    for line in lines {
                        content.push(b'(');
                        for character in line.chars() {
                            match character {
                                '(' | ')' | '\\' => {
                                    content.push(b'\\');
                                    content.push(character as u8);
                                }
                                ' '..='~' | '\u{a0}'..='\u{ff}' => content.push(character as u8),
                                _ => content.push(b'?'),
                            }
                        }
                        content.extend_from_slice(b") Tj T* ");
                    }
                    content.extend_from_slice(b"ET");
                    objects.push(stream("", &content));
                }
            }
        }
        objects[0] = b"<< /Type /Catalog /Pages 2 0 R >>".to_vec();
        let mut tree = String::from("<< /Type /Pages /Kids [");
        for kid in &kids {
            let _ = write!(tree, "{kid} 0 R ");
        }
        let count = self.claimed_pages.unwrap_or(kids.len() as u64);
        let _ = write!(tree, "] /Count {count} >>");
        objects[1] = tree.into_bytes();

        let mut pdf = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n".to_vec();
        let mut offsets = Vec::with_capacity(objects.len());
        for (index, object) in objects.iter().enumerate() {
            offsets.push(pdf.len());
            let _ = writeln!(pdf, "{} 0 obj", index + 1);
            pdf.extend_from_slice(object);
            pdf.extend_from_slice(b"\nendobj\n");
        }
        let xref = pdf.len();
        let _ = write!(pdf, "xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1);
        for offset in offsets {
            let _ = writeln!(pdf, "{offset:010} 00000 n ");
        }
        let _ = write!(
            pdf,
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        );
        pdf
    }
}

/// A stream object with `dictionary` entries and `data`.
fn stream(dictionary: &str, data: &[u8]) -> Vec<u8> {
    let mut object = format!("<< {dictionary} /Length {} >>\nstream\n", data.len()).into_bytes();
    object.extend_from_slice(data);
    object.extend_from_slice(b"\nendstream");
    object
}

/// `pdf` encrypted by `qpdf --encrypt` with AES-256: with a `user_password` it needs that
/// password to open; with an empty one it opens without (only an owner password is set).
/// Panics with an install hint when qpdf is missing: tests that need it fail, never skip.
pub fn encrypt(pdf: &[u8], user_password: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.pdf");
    let output = dir.path().join("out.pdf");
    std::fs::File::create(&input)
        .and_then(|mut file| file.write_all(pdf))
        .unwrap();
    let status = Command::new("qpdf")
        .arg("--encrypt")
        .arg(user_password)
        .arg("owner-secret")
        .arg("256")
        .arg("--")
        .arg(&input)
        .arg(&output)
        .status()
        .unwrap_or_else(|error| {
            panic!("this test needs qpdf: run scripts/install-poppler.sh (apt-get install qpdf): {error}")
        });
    assert!(status.success(), "qpdf --encrypt failed: {status}");
    std::fs::read(output).unwrap()
}

/// Panics with an install hint unless poppler-utils runs: tests that need it fail, never
/// skip.
pub async fn require_poppler() {
    if let Err(error) = crate::PdfTools::default().version().await {
        panic!("this test needs poppler-utils: run scripts/install-poppler.sh: {error}");
    }
}
