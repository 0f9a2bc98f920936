//! Flags of the benchmarks and how they report.

use std::collections::HashMap;

use anyhow::{Result, bail};
/// Parses `--name value` pairs.
pub(crate) struct Flags(HashMap<String, String>);

impl Flags {
    pub(crate) fn parse(args: &[String]) -> Result<Self> {
        let mut flags = HashMap::new();
        let mut args = args.iter().peekable();
        while let Some(name) = args.next() {
            let Some(name) = name.strip_prefix("--") else {
                bail!("unexpected argument {name}")
            };
            // A flag without a value (`--pdf`) is `true`.
            let value = match args.peek() {
                Some(next) if !next.starts_with("--") => args.next().cloned().unwrap_or_default(),
                _ => "true".to_owned(),
            };
            flags.insert(name.to_owned(), value);
        }
        Ok(Self(flags))
    }

    pub(crate) fn get<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T>
    where
        T::Err: std::fmt::Display,
    {
        match self.0.get(name) {
            Some(value) => value
                .parse()
                .map_err(|error| anyhow::anyhow!("--{name} {value}: {error}")),
            None => Ok(default),
        }
    }

    pub(crate) fn text(&self, name: &str, default: &str) -> String {
        self.0
            .get(name)
            .cloned()
            .unwrap_or_else(|| default.to_owned())
    }
}

/// Prints one result: a JSON line on stdout, a Markdown table on stderr.
pub(crate) fn report(result: &serde_json::Value) {
    println!("{result}");
    let object = result.as_object().expect("results are objects");
    let header: Vec<&str> = object.keys().map(String::as_str).collect();
    let values: Vec<String> = object
        .values()
        .map(|value| match value {
            serde_json::Value::String(text) => text.clone(),
            other => other.to_string(),
        })
        .collect();
    eprintln!("| {} |", header.join(" | "));
    eprintln!(
        "|{}|",
        header.iter().map(|_| "---").collect::<Vec<_>>().join("|")
    );
    eprintln!("| {} |", values.join(" | "));
}
