//! Where a store's tables are: the connection's search path (the default), or a schema named
//! by the embedder. Every statement is written against the unqualified tables
//! (`folio_jobs`, `folio_workers`, `folio_request_keys`) and rendered once per named schema, qualified, with a
//! notification channel of that schema's own.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use crate::NOTIFY_CHANNEL;
use crate::sql::Statements;

/// The Postgres schema a store keeps its tables, functions and migration history in.
///
/// [`Schema::default`] names none: statements are unqualified and resolve through the
/// connection's `search_path` (usually `public`), as before schemas could be named.
/// [`Schema::named`] puts everything in that schema, created by the migrations if missing,
/// so several embedders (or several Folio deployments) share one database apart: each
/// schema has its own jobs, its own one-active rule, its own migrations and its own
/// `NOTIFY` channel (`<schema>.folio_jobs`), whatever the connections' search path.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Schema(Option<String>);

/// A schema name [`Schema::named`] refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidSchema(String);

impl std::fmt::Display for InvalidSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "schema name {:?}: use 1 to {} lowercase ASCII letters, digits and underscores, \
             starting with a letter or underscore, not with pg_",
            self.0,
            Schema::MAX_LEN
        )
    }
}

impl std::error::Error for InvalidSchema {}

impl Schema {
    /// The longest name: a notification channel, `<schema>.folio_jobs`, must stay within
    /// Postgres's 63-byte identifiers.
    pub const MAX_LEN: usize = 63 - 1 - NOTIFY_CHANNEL.len();

    /// A schema of this name. Only plain lowercase names are taken, so the name means the
    /// same quoted or not, in SQL and in `psql`.
    pub fn named(name: &str) -> Result<Self, InvalidSchema> {
        let mut bytes = name.bytes();
        let valid = name.len() <= Self::MAX_LEN
            && bytes
                .next()
                .is_some_and(|first| first.is_ascii_lowercase() || first == b'_')
            && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            && !name.starts_with("pg_");
        if valid {
            Ok(Self(Some(name.to_owned())))
        } else {
            Err(InvalidSchema(name.to_owned()))
        }
    }

    /// The schema's name; `None` for the search path.
    pub fn name(&self) -> Option<&str> {
        self.0.as_deref()
    }

    /// The `NOTIFY` channel of this schema's job inserts.
    pub fn channel(&self) -> &'static str {
        self.statements().channel
    }

    /// The statements for this schema, rendered once per schema for the process's life
    /// (a process uses a handful of schemas at most).
    pub(crate) fn statements(&self) -> &'static Statements {
        let Some(name) = self.name() else {
            return &Statements::UNQUALIFIED;
        };
        static RENDERED: OnceLock<Mutex<HashMap<String, &'static Statements>>> = OnceLock::new();
        let mut rendered = RENDERED
            .get_or_init(Default::default)
            .lock()
            .expect("statements mutex");
        rendered
            .entry(name.to_owned())
            .or_insert_with(|| Box::leak(Box::new(Statements::in_schema(name))))
    }
}

/// `template` with each table (`folio_jobs`, `folio_workers`, `folio_request_keys`) qualified
/// by `schema` and the notification channel (the quoted `'folio_jobs'`) named after it. Other `folio_` names
/// (indexes in comments and plans) stay as they are.
pub(crate) fn qualify(template: &str, schema: &str) -> String {
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(at) = rest.find("folio_") {
        let (before, from) = rest.split_at(at);
        out.push_str(before);
        let len = from
            .bytes()
            .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
            .count();
        let name = &from[..len];
        let preceded = before.chars().last();
        match name {
            "folio_jobs" if preceded == Some('\'') => {
                out.push_str(&format!("{schema}.{name}"));
            }
            "folio_jobs" | "folio_workers" | "folio_request_keys"
                if !preceded.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.') =>
            {
                out.push_str(&format!("\"{schema}\".{name}"));
            }
            _ => out.push_str(name),
        }
        rest = &from[len..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_plain_lowercase_identifiers() {
        for good in ["acme", "_jobs", "tenant_7", &"a".repeat(Schema::MAX_LEN)] {
            assert_eq!(Schema::named(good).unwrap().name(), Some(good));
        }
        for bad in [
            "",
            "Acme",
            "7up",
            "a-b",
            "a b",
            "pg_jobs",
            "a\"; DROP TABLE x; --",
            &"a".repeat(Schema::MAX_LEN + 1),
        ] {
            assert!(Schema::named(bad).is_err(), "{bad:?} taken");
        }
        assert_eq!(Schema::default().name(), None);
    }

    #[test]
    fn qualifies_tables_and_the_channel_and_nothing_else() {
        let sql = "INSERT INTO folio_jobs (a) SELECT pg_notify('folio_jobs', x) FROM folio_workers \
                   JOIN folio_jobs AS j USING (id) -- folio_jobs_one_active, my_folio_jobs";
        assert_eq!(
            qualify(sql, "acme"),
            "INSERT INTO \"acme\".folio_jobs (a) SELECT pg_notify('acme.folio_jobs', x) FROM \
             \"acme\".folio_workers JOIN \"acme\".folio_jobs AS j USING (id) -- \
             folio_jobs_one_active, my_folio_jobs"
        );
        assert_eq!(Schema::named("acme").unwrap().channel(), "acme.folio_jobs");
        assert_eq!(Schema::default().channel(), NOTIFY_CHANNEL);
    }

    #[test]
    fn every_statement_of_a_schema_names_only_its_tables() {
        let statements = Schema::named("acme").unwrap().statements();
        for sql in statements.all() {
            let unqualified = sql.matches("folio_jobs").count()
                + sql.matches("folio_workers").count()
                + sql.matches("folio_request_keys").count();
            let qualified =
                sql.matches("\"acme\".folio_").count() + sql.matches("'acme.folio_jobs'").count();
            let other = sql.matches("folio_jobs_").count();
            assert_eq!(unqualified, qualified + other, "{sql}");
        }
        assert!(std::ptr::eq(
            statements,
            Schema::named("acme").unwrap().statements()
        ));
    }
}
