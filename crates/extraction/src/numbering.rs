//! Numbering words shared by the rules extractor (headings) and finalize (topic titles):
//! one definition of what "Chapter 2", "Unit IV" and "Appendix A" look like.

/// Words that, followed by a number, make a heading's or title's numbering ("Chapter 2").
pub(crate) const NUMBERING_KEYWORDS: &[&str] = &[
    "appendix", "chapter", "lesson", "module", "part", "section", "topic", "unit",
];

/// Spelled-out numbers after a numbering keyword ("Chapter Two").
pub(crate) const NUMBER_WORDS: &[&str] = &[
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
    "twenty",
];

/// A canonical roman numeral up to 100, all lowercase or all uppercase ("xii", "IV"); "mix"
/// and "Li" are not.
pub(crate) fn is_roman_numeral(text: &str) -> bool {
    if text.is_empty()
        || !(text.chars().all(|c| c.is_ascii_lowercase())
            || text.chars().all(|c| c.is_ascii_uppercase()))
    {
        return false;
    }
    roman_value(text).is_some_and(|value| value <= 100)
}

/// The value of a canonical roman numeral.
pub(crate) fn roman_value(text: &str) -> Option<u32> {
    let digit = |c: char| match c.to_ascii_lowercase() {
        'i' => Some(1),
        'v' => Some(5),
        'x' => Some(10),
        'l' => Some(50),
        'c' => Some(100),
        'd' => Some(500),
        'm' => Some(1000),
        _ => None,
    };
    let digits: Vec<u32> = text.chars().map(digit).collect::<Option<_>>()?;
    let mut value = 0_i64;
    for (index, current) in digits.iter().enumerate() {
        match digits.get(index + 1) {
            Some(next) if next > current => value -= i64::from(*current),
            _ => value += i64::from(*current),
        }
    }
    let value = u32::try_from(value).ok()?;
    // Only the canonical spelling counts ("IIII", "VX" and "IL" are words or noise).
    to_roman(value).eq_ignore_ascii_case(text).then_some(value)
}

/// The canonical roman numeral of `value`.
fn to_roman(mut value: u32) -> String {
    const TABLE: &[(u32, &str)] = &[
        (1000, "m"),
        (900, "cm"),
        (500, "d"),
        (400, "cd"),
        (100, "c"),
        (90, "xc"),
        (50, "l"),
        (40, "xl"),
        (10, "x"),
        (9, "ix"),
        (5, "v"),
        (4, "iv"),
        (1, "i"),
    ];
    let mut roman = String::new();
    for (amount, letters) in TABLE {
        while value >= *amount {
            roman.push_str(letters);
            value -= amount;
        }
    }
    roman
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roman_numerals_are_canonical_only() {
        for numeral in ["i", "IV", "xii", "XL", "c", "xcix"] {
            assert!(is_roman_numeral(numeral), "{numeral}");
        }
        for word in ["", "mix", "iiii", "vx", "il", "cd", "dim"] {
            assert!(!is_roman_numeral(word), "{word}");
        }
    }
}
