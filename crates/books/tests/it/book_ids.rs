//! Book id validation (SPEC 3.2) and key layout.

use books::{BookId, layout};

#[test]
fn valid_book_ids_are_accepted() {
    for id in [
        "a",
        "0",
        "math-grade-5",
        "book_2024",
        &"x".repeat(64),
        "9lives",
    ] {
        let parsed = BookId::parse(id).unwrap();
        assert_eq!(parsed.as_str(), id);
    }
}

#[test]
fn path_like_and_malformed_book_ids_are_rejected() {
    for id in [
        "",
        "../x",
        "a/b",
        "..",
        ".",
        "a\\b",
        "A",
        "Book",
        "-lead",
        "_lead",
        "a b",
        "a.b",
        "ñ",
        "a\0",
        &"x".repeat(65),
        "a%2fb",
    ] {
        assert!(BookId::parse(id).is_err(), "{id:?} was accepted");
    }
}

#[test]
fn book_ids_deserialize_only_when_valid() {
    let ok: BookId = serde_json::from_str("\"b1\"").unwrap();
    assert_eq!(ok.as_str(), "b1");
    assert!(serde_json::from_str::<BookId>("\"../x\"").is_err());
    assert!(serde_json::from_str::<BookId>("\"a/b\"").is_err());
}

#[test]
fn keys_follow_the_book_layout() {
    let id = BookId::parse("b1").unwrap();
    assert_eq!(layout::manifest_key(&id), "books/b1/metadata.json");
    assert_eq!(layout::page_image_path(7), "pages/0007.png");
    assert_eq!(layout::ocr_text_path(12), "ocr/0012.txt");
    assert_eq!(
        layout::page_guidelines_path(3),
        "guidelines/pages/0003.json"
    );
    assert_eq!(
        layout::book_key(&id, "pages/0007.png"),
        "books/b1/pages/0007.png"
    );
    assert_eq!(layout::book_prefix(&id), "books/b1/");
}
