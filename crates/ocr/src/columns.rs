//! Reading order of two-column pages that tesseract reads partly straight across.
//!
//! Tesseract's layout analysis can find a page's two columns for some rows and miss them
//! for others: it then gives the upper rows as a left block and a right block, and the
//! lower rows as lines that run over the gutter ("1. Write the ratio.   2. Multiply as
//! whole numbers."). Such a page reads out of order, and a row's two halves become one
//! sentence. [`reflow`] finishes what tesseract started: where tesseract put lines side by
//! side across a gutter, every line of that band that crosses the gutter only through a
//! wide gap is cut there, and the band is read column by column.
//!
//! A gap alone is not taken as a gutter (a table's rows have wide gaps too, and are read
//! row by row): only a gutter that tesseract itself put lines on both sides of, side by
//! side, is. A page without one keeps tesseract's own text.

/// One word of tesseract's TSV output: its box and text.
#[derive(Debug, Clone)]
struct Word {
    left: i32,
    right: i32,
    top: i32,
    bottom: i32,
    text: String,
}

/// One line of tesseract's TSV output, in tesseract's order.
#[derive(Debug, Clone)]
struct Line {
    block: u32,
    paragraph: u32,
    words: Vec<Word>,
}

impl Line {
    fn top(&self) -> i32 {
        self.words.iter().map(|word| word.top).min().unwrap_or(0)
    }
    fn bottom(&self) -> i32 {
        self.words.iter().map(|word| word.bottom).max().unwrap_or(0)
    }
    fn overlaps_vertically(&self, other: &Line) -> bool {
        let overlap = self.bottom().min(other.bottom()) - self.top().max(other.top());
        let shorter = (self.bottom() - self.top()).min(other.bottom() - other.top());
        overlap * 2 >= shorter
    }
    /// The gaps between its words at least `min` wide, as (left edge, right edge).
    fn wide_gaps(&self, min: i32) -> impl Iterator<Item = (i32, i32)> + '_ {
        self.words
            .windows(2)
            .map(|pair| (pair[0].right, pair[1].left))
            .filter(move |(start, end)| end - start >= min)
    }
}

/// Which side of a gutter a line lies on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Left,
    Right,
    /// Words on both sides, apart only by a wide gap over the gutter.
    Both,
    /// A word over the gutter.
    Across,
}

/// The page's text read column by column, when tesseract read some rows of a two-column
/// band straight across its gutter (see the module's doc); `None` when it did not, and
/// tesseract's own text stands.
pub(crate) fn reflow(tsv: &str) -> Option<String> {
    let lines = parse(tsv);
    let height = median_word_height(&lines)?;
    // Word spaces are a fraction of the text's height; a gutter is several times it.
    let min_gap = height * 5 / 2;
    let gutter = gutter(&lines, min_gap)?;
    let side = |line: &Line| -> Side {
        if line
            .words
            .iter()
            .any(|w| w.left < gutter && gutter < w.right)
        {
            return Side::Across;
        }
        let end = line
            .words
            .iter()
            .map(|w| w.right)
            .filter(|&x| x <= gutter)
            .max();
        let start = line
            .words
            .iter()
            .map(|w| w.left)
            .filter(|&x| x >= gutter)
            .min();
        match (end, start) {
            (Some(_), None) => Side::Left,
            (None, _) => Side::Right,
            (Some(end), Some(start)) if start - end >= min_gap => Side::Both,
            _ => Side::Across,
        }
    };
    let sides: Vec<Side> = lines.iter().map(side).collect();
    // The band: lines that tesseract put beside a line on the gutter's other side, and the
    // lines read across the gutter; with every line of their blocks.
    let beside = |i: usize| {
        let wanted = match sides[i] {
            Side::Left => Side::Right,
            Side::Right => Side::Left,
            _ => return false,
        };
        lines.iter().enumerate().any(|(j, other)| {
            sides[j] == wanted
                && other.block != lines[i].block
                && lines[i].overlaps_vertically(other)
        })
    };
    let column_blocks: Vec<u32> = (0..lines.len())
        .filter(|&i| beside(i))
        .map(|i| lines[i].block)
        .collect();
    if column_blocks.is_empty() || !sides.contains(&Side::Both) {
        return None;
    }
    let in_band: Vec<bool> = lines
        .iter()
        .zip(&sides)
        .map(|(line, side)| *side == Side::Both || column_blocks.contains(&line.block))
        .collect();
    // Every line of a column block must stay on its side, and the band must hold no line
    // that runs over the gutter: else the page is not two plain columns there.
    if lines
        .iter()
        .zip(&sides)
        .zip(&in_band)
        .any(|((_, side), band)| *band && *side == Side::Across)
    {
        return None;
    }
    let (top, bottom) = lines
        .iter()
        .zip(&in_band)
        .filter(|(_, band)| **band)
        .fold((i32::MAX, i32::MIN), |(top, bottom), (line, _)| {
            (top.min(line.top()), bottom.max(line.bottom()))
        });
    if lines
        .iter()
        .zip(&in_band)
        .any(|(line, band)| !band && line.bottom() > top && line.top() < bottom)
    {
        return None;
    }

    let mut left: Vec<Line> = Vec::new();
    let mut right: Vec<Line> = Vec::new();
    for (line, _) in lines.iter().zip(&in_band).filter(|(_, band)| **band) {
        let (before, after): (Vec<Word>, Vec<Word>) = line
            .words
            .iter()
            .cloned()
            .partition(|word| word.right <= gutter);
        for (words, column) in [(before, &mut left), (after, &mut right)] {
            if !words.is_empty() {
                column.push(Line { words, ..*line });
            }
        }
    }
    for column in [&mut left, &mut right] {
        column.sort_by_key(Line::top);
    }

    // Paragraphs as tesseract's text has them: apart by a blank line.
    let mut text = String::new();
    let mut previous = None;
    let mut band_written = false;
    for (line, band) in lines.iter().zip(&in_band) {
        if !band {
            push_line(
                &mut text,
                &mut previous,
                (line.block, line.paragraph, 0),
                line,
            );
        } else if !band_written {
            band_written = true;
            for (side, column) in [(1, &left), (2, &right)] {
                for line in column {
                    push_line(
                        &mut text,
                        &mut previous,
                        (line.block, line.paragraph, side),
                        line,
                    );
                }
            }
        }
    }
    Some(text)
}

/// Appends `line` to `text`: on the next line within a paragraph (same `key` as the line
/// before), after a blank line otherwise.
fn push_line(
    text: &mut String,
    previous: &mut Option<(u32, u32, u8)>,
    key: (u32, u32, u8),
    line: &Line,
) {
    if !text.is_empty() {
        text.push_str(if *previous == Some(key) { "\n" } else { "\n\n" });
    }
    *previous = Some(key);
    for (index, word) in line.words.iter().enumerate() {
        if index > 0 {
            text.push(' ');
        }
        text.push_str(&word.text);
    }
}

/// The gutter's middle: of the x positions where lines have a wide gap, the one most
/// lines have one over, moved to the middle of what all those gaps cover. `None` when no
/// line has a wide gap.
fn gutter(lines: &[Line], min_gap: i32) -> Option<i32> {
    let gaps: Vec<Vec<(i32, i32)>> = lines
        .iter()
        .map(|line| line.wide_gaps(min_gap).collect())
        .collect();
    let covering = |x: i32| {
        gaps.iter()
            .filter_map(move |gaps| gaps.iter().find(|(start, end)| *start <= x && x <= *end))
    };
    let most = gaps
        .iter()
        .flatten()
        .map(|(start, end)| (start + end) / 2)
        .max_by_key(|&x| (covering(x).count(), std::cmp::Reverse(x)))?;
    let (start, end) = covering(most).fold((i32::MIN, i32::MAX), |(start, end), gap| {
        (start.max(gap.0), end.min(gap.1))
    });
    Some((start + end) / 2)
}

fn median_word_height(lines: &[Line]) -> Option<i32> {
    let mut heights: Vec<i32> = lines
        .iter()
        .flat_map(|line| &line.words)
        .map(|word| word.bottom - word.top)
        .collect();
    if heights.is_empty() {
        return None;
    }
    heights.sort_unstable();
    Some(heights[heights.len() / 2].max(1))
}

/// The lines of tesseract's TSV output (rows of level 5 with text), in its order.
fn parse(tsv: &str) -> Vec<Line> {
    let mut lines: Vec<Line> = Vec::new();
    let mut current: Option<(u32, u32, u32)> = None;
    for row in tsv.lines().skip(1) {
        let fields: Vec<&str> = row.split('\t').collect();
        if fields.len() < 12 || fields[0] != "5" || fields[11].trim().is_empty() {
            continue;
        }
        let number = |index: usize| fields[index].trim().parse::<i32>().ok();
        let (
            Some(block),
            Some(paragraph),
            Some(line),
            Some(left),
            Some(top),
            Some(width),
            Some(height),
        ) = (
            number(2),
            number(3),
            number(4),
            number(6),
            number(7),
            number(8),
            number(9),
        )
        else {
            continue;
        };
        let word = Word {
            left,
            right: left + width,
            top,
            bottom: top + height,
            text: fields[11].trim().to_owned(),
        };
        let key = (block as u32, paragraph as u32, line as u32);
        match lines.last_mut() {
            Some(last) if current == Some(key) => last.words.push(word),
            _ => lines.push(Line {
                block: key.0,
                paragraph: key.1,
                words: vec![word],
            }),
        }
        current = Some(key);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tesseract's TSV of `lines`: (block, paragraph, line, left, top, text), each word
    /// 14 px a character and 10 px apart, 26 px high. Two entries with the same block,
    /// paragraph and line are one line with a gap between them.
    fn tsv(lines: &[(u32, u32, u32, i32, i32, &str)]) -> String {
        let mut tsv = String::from(
            "level\tpage_num\tblock_num\tpar_num\tline_num\tword_num\tleft\ttop\twidth\theight\tconf\ttext\n",
        );
        for (block, paragraph, line, left, top, text) in lines {
            let mut x = *left;
            for (number, word) in text.split(' ').enumerate() {
                let width = 14 * word.len() as i32;
                tsv.push_str(&format!(
                    "5\t1\t{block}\t{paragraph}\t{line}\t{}\t{x}\t{top}\t{width}\t26\t95\t{word}\n",
                    number + 1
                ));
                x += width + 10;
            }
        }
        tsv
    }

    #[test]
    fn rows_read_across_a_gutter_tesseract_found_above_them_are_cut_and_read_by_column() {
        let page = tsv(&[
            (1, 1, 1, 80, 60, "Chapter 3"),
            (2, 1, 1, 80, 120, "Left one."),
            (2, 1, 2, 80, 164, "Left two."),
            (3, 1, 1, 700, 120, "Right one."),
            (3, 1, 2, 700, 164, "Right two."),
            (4, 1, 1, 80, 208, "Left three."),
            (4, 1, 1, 700, 208, "Right three."),
            (4, 1, 2, 80, 252, "Left four,"),
            (4, 1, 2, 700, 252, "Right four."),
            (5, 1, 1, 500, 1600, "44"),
        ]);
        assert_eq!(
            reflow(&page).unwrap(),
            "Chapter 3\n\nLeft one.\nLeft two.\n\nLeft three.\nLeft four,\n\n\
             Right one.\nRight two.\n\nRight three.\nRight four.\n\n44"
        );
    }

    #[test]
    fn a_table_read_row_by_row_keeps_tesseracts_text() {
        let page = tsv(&[
            (1, 1, 1, 80, 60, "Item"),
            (1, 1, 1, 700, 60, "Price"),
            (1, 1, 2, 80, 104, "Pencil"),
            (1, 1, 2, 700, 104, "2"),
        ]);
        assert_eq!(reflow(&page), None);
    }

    #[test]
    fn columns_tesseract_read_whole_keep_its_text() {
        let page = tsv(&[
            (1, 1, 1, 80, 60, "Left one."),
            (1, 1, 2, 80, 104, "Left two."),
            (2, 1, 1, 700, 60, "Right one."),
            (2, 1, 2, 700, 104, "Right two."),
        ]);
        assert_eq!(reflow(&page), None);
    }

    #[test]
    fn a_line_over_the_gutter_inside_the_band_keeps_tesseracts_text() {
        let page = tsv(&[
            (1, 1, 1, 80, 60, "Left one."),
            (2, 1, 1, 700, 60, "Right one."),
            (3, 1, 1, 80, 104, "Left two."),
            (3, 1, 1, 700, 104, "Right two."),
            (
                4,
                1,
                1,
                80,
                148,
                "A caption that runs over the whole width of the page here",
            ),
            (5, 1, 1, 80, 192, "Left three."),
            (5, 1, 1, 700, 192, "Right three."),
        ]);
        assert_eq!(reflow(&page), None);
    }

    #[test]
    fn rows_without_words_or_numbers_are_skipped() {
        assert_eq!(reflow("level\n5\t1\tx\n"), None);
        assert_eq!(reflow(""), None);
    }
}
