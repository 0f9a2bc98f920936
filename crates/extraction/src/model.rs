//! The guidelines documents: one page's (`guidelines/pages/NNNN.json`, SPEC 4.3) and the
//! book's final one (`guidelines/final.json`, SPEC 4.4).

use serde::{Deserialize, Serialize};

/// What a guideline is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GuidelineKind {
    /// Something to always or never do.
    Rule,
    /// One step of a numbered procedure.
    Step,
    /// Advice, a note.
    Tip,
    /// What a term means.
    Definition,
    /// A worked example.
    Example,
}

impl GuidelineKind {
    /// Every kind, in the order of the schema's enum.
    pub const ALL: [GuidelineKind; 5] = [
        GuidelineKind::Rule,
        GuidelineKind::Step,
        GuidelineKind::Tip,
        GuidelineKind::Definition,
        GuidelineKind::Example,
    ];

    /// The kind as written in JSON (`rule`, `step`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            GuidelineKind::Rule => "rule",
            GuidelineKind::Step => "step",
            GuidelineKind::Tip => "tip",
            GuidelineKind::Definition => "definition",
            GuidelineKind::Example => "example",
        }
    }
}

impl std::fmt::Display for GuidelineKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One guideline of a page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Guideline {
    pub kind: GuidelineKind,
    /// Its text, without labels (`Tip:`) or list markers.
    pub text: String,
    /// The pages its text comes from when it runs over a page break: the page it starts
    /// on (the page of this file) first, then the page it ends on. Empty, and absent from
    /// the JSON, when it is all on its page, so pages written before the field read the
    /// same.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pages: Vec<u32>,
}

impl Guideline {
    /// A guideline all on its page.
    pub fn new(kind: GuidelineKind, text: impl Into<String>) -> Self {
        Self {
            kind,
            text: text.into(),
            pages: Vec::new(),
        }
    }
}

/// A topic of a page: a heading and the guidelines under it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topic {
    /// The heading as written ("Chapter 2. Adding Fractions").
    pub title: String,
    /// Its guidelines, in page order.
    pub guidelines: Vec<Guideline>,
}

/// The guidelines of one page: `guidelines/pages/NNNN.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageGuidelines {
    /// The page number (Folio's, never an extractor's).
    pub page: u32,
    /// The topics, in page order.
    pub topics: Vec<Topic>,
}

/// The finalized guidelines of a book: `guidelines/final.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalGuidelines {
    pub book_id: String,
    /// Topics merged by normalized title, in order of first appearance.
    pub topics: Vec<FinalTopic>,
}

/// One topic of the finalized guidelines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalTopic {
    /// The title as first seen.
    pub title: String,
    /// Every page the topic appears on, ascending.
    pub pages: Vec<u32>,
    /// Its guidelines, near-duplicates merged, in order of first appearance.
    pub guidelines: Vec<FinalGuideline>,
}

/// One guideline of the finalized guidelines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalGuideline {
    /// Its kind (the first occurrence's).
    pub kind: GuidelineKind,
    /// Its text (the first occurrence's).
    pub text: String,
    /// Every page it (or a near-duplicate of it) came from, ascending.
    pub pages: Vec<u32>,
}
