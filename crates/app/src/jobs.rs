//! The one registry of job types: every type this application runs, which of them are steps
//! of a book's pipeline (clients start them on a book, chains follow their order), which a
//! worker runs when `--types` is not given, and which need object storage. The api (type
//! and chain validation, the OpenAPI document) and the worker (handler selection, the OCR
//! preflight) read it; a new type is a row of [`REGISTRY`] and its handler in
//! [`crate::handlers`].

use std::fmt;

use extraction::{FINALIZE_JOB_TYPE, GUIDELINES_JOB_TYPE};
use ingest::INGEST_JOB_TYPE;
use ocr::OCR_JOB_TYPE;

/// A job that does nothing: measures the runtime's own cost (`cargo xtask bench jobs`).
pub const BENCH_NOOP: &str = "bench.noop";
/// A job of timed, checkpointed steps: exercises crash, pause and shutdown recovery.
pub const BENCH_STEPS: &str = "bench.steps";

/// One row of the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobType {
    /// The type's name, as jobs store it and clients send it.
    pub name: &'static str,
    /// A step of a book's pipeline: clients may start it on a book
    /// (`POST /v1/books/{book_id}/jobs`), and a chain lists such steps in the order of
    /// [`REGISTRY`].
    pub pipeline: bool,
    /// A worker runs it when `--types` is not given (benchmark types run only when named).
    pub by_default: bool,
    /// Its handler reads and writes books in object storage.
    pub needs_storage: bool,
}

/// Every job type in the order of a book's chain: `ingest` (started by an upload, never
/// by a client on its own: its payload is the upload), then the pipeline's steps.
pub const REGISTRY: [JobType; 6] = [
    JobType {
        name: INGEST_JOB_TYPE,
        pipeline: false,
        by_default: true,
        needs_storage: true,
    },
    JobType {
        name: OCR_JOB_TYPE,
        pipeline: true,
        by_default: true,
        needs_storage: true,
    },
    JobType {
        name: GUIDELINES_JOB_TYPE,
        pipeline: true,
        by_default: true,
        needs_storage: true,
    },
    JobType {
        name: FINALIZE_JOB_TYPE,
        pipeline: true,
        by_default: true,
        needs_storage: true,
    },
    JobType {
        name: BENCH_NOOP,
        pipeline: false,
        by_default: false,
        needs_storage: false,
    },
    JobType {
        name: BENCH_STEPS,
        pipeline: false,
        by_default: false,
        needs_storage: false,
    },
];

/// Which column of [`REGISTRY`] a derived list selects.
#[derive(Clone, Copy)]
enum Column {
    All,
    Pipeline,
    ByDefault,
}

const fn selects(row: &JobType, column: Column) -> bool {
    match column {
        Column::All => true,
        Column::Pipeline => row.pipeline,
        Column::ByDefault => row.by_default,
    }
}

const fn count(column: Column) -> usize {
    let mut count = 0;
    let mut index = 0;
    while index < REGISTRY.len() {
        if selects(&REGISTRY[index], column) {
            count += 1;
        }
        index += 1;
    }
    count
}

/// The names of the rows `column` selects, in registry order (`N` is their count: a
/// wrong one fails the build).
const fn names<const N: usize>(column: Column) -> [&'static str; N] {
    let mut names = [""; N];
    let mut filled = 0;
    let mut index = 0;
    while index < REGISTRY.len() {
        if selects(&REGISTRY[index], column) {
            names[filled] = REGISTRY[index].name;
            filled += 1;
        }
        index += 1;
    }
    assert!(filled == N, "the count of a derived list is wrong");
    names
}

/// Every job type's name, in registry order.
pub const ALL: [&str; count(Column::All)] = names(Column::All);

/// The pipeline's steps in order (`ocr`, `guidelines`, `finalize`): the types clients may
/// start on a book.
pub const PIPELINE: [&str; count(Column::Pipeline)] = names(Column::Pipeline);

/// The types a worker runs when `--types` is not given.
pub const DEFAULT_TYPES: [&str; count(Column::ByDefault)] = names(Column::ByDefault);

/// The registry's row of `name`.
pub fn get(name: &str) -> Option<&'static JobType> {
    REGISTRY.iter().find(|row| row.name == name)
}

/// `text` as a pipeline step, or `None` when it names none.
pub fn pipeline_step(text: &str) -> Option<&'static str> {
    PIPELINE.iter().copied().find(|step| *step == text)
}

/// The steps that may follow a job of type `job_type` in a chain: the pipeline's later
/// steps (none when `job_type` is not a step).
pub fn followers(job_type: &str) -> &'static [&'static str] {
    PIPELINE
        .iter()
        .position(|step| *step == job_type)
        .map_or(&[], |position| &PIPELINE[position + 1..])
}

/// Why a chain (the `then` of a job) is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainError {
    /// An entry names no pipeline step.
    UnknownType(String),
    /// A step is named twice (the chain's first job included).
    Twice(&'static str),
    /// A step comes no later in the pipeline than the one before it.
    OutOfOrder {
        job_type: &'static str,
        /// The step before it.
        previous: &'static str,
    },
}

impl fmt::Display for ChainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownType(text) => write!(
                f,
                "unknown job type {:?}: known types are {}",
                text.chars().take(100).collect::<String>(),
                PIPELINE.join(", ")
            ),
            Self::Twice(job_type) => write!(f, "job type {job_type} is named twice in the chain"),
            Self::OutOfOrder { job_type, previous } => write!(
                f,
                "{job_type} cannot run after {previous}: a chain follows the pipeline's order ({})",
                PIPELINE.join(", ")
            ),
        }
    }
}

impl std::error::Error for ChainError {}

/// The chain `then` of a job of type `first`, checked: each entry a pipeline step that comes
/// later in the pipeline than the one before it (the first entry, later than `first`), so
/// none is named twice. Entries are checked in order and the first fault is the error.
pub fn chain(first: &str, then: &[String]) -> Result<Vec<&'static str>, ChainError> {
    let first = pipeline_step(first).ok_or_else(|| ChainError::UnknownType(first.to_owned()))?;
    let mut previous = first;
    let mut steps = Vec::with_capacity(then.len());
    for text in then {
        let job_type = pipeline_step(text).ok_or_else(|| ChainError::UnknownType(text.clone()))?;
        if job_type == first || steps.contains(&job_type) {
            return Err(ChainError::Twice(job_type));
        }
        if !followers(previous).contains(&job_type) {
            return Err(ChainError::OutOfOrder { job_type, previous });
        }
        steps.push(job_type);
        previous = job_type;
    }
    Ok(steps)
}

/// Every chain [`chain`] accepts after a job of type `first`, the empty one first: each
/// ordered selection of its followers.
pub fn chains(first: &str) -> Vec<Vec<&'static str>> {
    let followers = followers(first);
    (0..1u32 << followers.len())
        .map(|mask| {
            followers
                .iter()
                .enumerate()
                .filter(|(index, _)| mask & (1 << index) != 0)
                .map(|(_, job_type)| *job_type)
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owned(chain: &[&str]) -> Vec<String> {
        chain.iter().map(|step| (*step).to_owned()).collect()
    }

    #[test]
    fn derived_lists_follow_the_registry() {
        assert_eq!(PIPELINE, ["ocr", "guidelines", "finalize"]);
        assert_eq!(DEFAULT_TYPES, ["ingest", "ocr", "guidelines", "finalize"]);
        assert_eq!(
            ALL,
            [
                "ingest",
                "ocr",
                "guidelines",
                "finalize",
                "bench.noop",
                "bench.steps"
            ]
        );
        assert!(get("ocr").unwrap().needs_storage && get("ingest").unwrap().needs_storage);
        assert!(!get(BENCH_NOOP).unwrap().needs_storage);
        assert_eq!(get("nope"), None);
        // After ingest, the pipeline's steps, so its order is the registry's.
        let first_other = REGISTRY[1..].iter().position(|row| !row.pipeline).unwrap() + 1;
        assert!(REGISTRY[1..first_other].iter().all(|row| row.pipeline));
        assert!(REGISTRY[first_other..].iter().all(|row| !row.pipeline));
    }

    #[test]
    fn a_chain_follows_the_pipeline() {
        assert_eq!(chain("ocr", &[]), Ok(vec![]));
        assert_eq!(
            chain("ocr", &owned(&["guidelines", "finalize"])),
            Ok(vec!["guidelines", "finalize"])
        );
        assert_eq!(chain("ocr", &owned(&["finalize"])), Ok(vec!["finalize"]));
        assert_eq!(
            chain("guidelines", &owned(&["ocr"])),
            Err(ChainError::OutOfOrder {
                job_type: "ocr",
                previous: "guidelines"
            })
        );
        assert_eq!(
            chain("ocr", &owned(&["finalize", "guidelines"])),
            Err(ChainError::OutOfOrder {
                job_type: "guidelines",
                previous: "finalize"
            })
        );
        assert_eq!(
            chain("ocr", &owned(&["ocr"])),
            Err(ChainError::Twice("ocr"))
        );
        assert_eq!(
            chain("ocr", &owned(&["guidelines", "guidelines"])),
            Err(ChainError::Twice("guidelines"))
        );
        assert_eq!(
            chain("ocr", &owned(&["bench.noop"])),
            Err(ChainError::UnknownType("bench.noop".to_owned()))
        );
        assert_eq!(
            chain("finalize", &owned(&["finalize"]))
                .unwrap_err()
                .to_string(),
            "job type finalize is named twice in the chain"
        );
    }

    #[test]
    fn chains_lists_exactly_what_chain_accepts() {
        for first in PIPELINE {
            let listed = chains(first);
            assert_eq!(listed[0], Vec::<&str>::new());
            // Every sequence of up to four pipeline steps: accepted exactly when listed.
            let mut level: Vec<Vec<&str>> = vec![vec![]];
            let mut candidates = level.clone();
            for _ in 0..4 {
                level = level
                    .iter()
                    .flat_map(|shorter| {
                        PIPELINE.iter().map(move |step| {
                            let mut longer = shorter.clone();
                            longer.push(*step);
                            longer
                        })
                    })
                    .collect();
                candidates.extend(level.iter().cloned());
            }
            for candidate in candidates {
                assert_eq!(
                    chain(first, &owned(&candidate)).is_ok(),
                    listed.contains(&candidate),
                    "{first} then {candidate:?}"
                );
            }
        }
        assert_eq!(chains("finalize"), vec![Vec::<&str>::new()]);
        assert_eq!(chains("ocr").len(), 4);
    }
}
