//! The statements of the SQL stores, the same text for every engine but for the placeholder
//! sigil (`?1` for SQLite, `$1` for PostgreSQL).

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

/// The columns of `keygate_keys`, in the order [`Row`](super::rows::Row) binds and reads them.
pub(super) const COLUMNS: &str = "id, shape, kind, digest, digest_scheme, pepper_id, revision, name, prefix, status, \
     soft_blocked, team_id, created_at, updated_at, expires_at, last_used_at, attributes, inherits_budget";

/// How many columns [`COLUMNS`] names.
pub(super) const COLUMN_COUNT: usize = 18;

/// `UPDATE … SET` for every column but `id`, with `$n`-style parameters `2..=COLUMN_COUNT`
/// (`sigil` is `$` for PostgreSQL, `?` for SQLite), the id as parameter 1.
fn set_clause(sigil: char) -> String {
    COLUMNS
        .split(',')
        .map(str::trim)
        .enumerate()
        .skip(1)
        .map(|(i, column)| format!("{column} = {sigil}{}", i + 1))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `VALUES (…)` parameters `1..=COLUMN_COUNT`.
fn values_clause(sigil: char) -> String {
    (1..=COLUMN_COUNT).map(|i| format!("{sigil}{i}")).collect::<Vec<_>>().join(", ")
}

/// How many rows one statement of a batch insert writes (18 parameters a row, well within
/// both engines' limits on parameters).
pub(super) const BATCH_ROWS: usize = 500;

/// `INSERT` of `rows` rows, [`COLUMNS`] bound row after row, leaving out a row whose id or
/// opaque digest is taken and returning the ids of those written.
///
/// SQLite's placeholders are anonymous (`?`, bound in order): the driver asks SQLite for each
/// parameter's name as it binds it, a linear search among numbered ones, which made binding
/// the 9 000 parameters of a statement quadratic (82% of an import's time).
pub(super) fn insert_rows(sigil: char, rows: usize) -> String {
    let values = (0..rows)
        .map(|r| {
            let params = (1..=COLUMN_COUNT).map(|i| match sigil {
                '?' => String::from("?"),
                _ => format!("{sigil}{}", r * COLUMN_COUNT + i),
            });
            format!("({})", params.collect::<Vec<_>>().join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ");
    format!("INSERT INTO keygate_keys ({COLUMNS}) VALUES {values} ON CONFLICT DO NOTHING RETURNING id")
}

/// The statements of one SQL dialect, whose placeholders are `<sigil><n>`, built once per store.
#[derive(Debug)]
pub(super) struct Queries {
    /// The row with id `1`.
    pub(super) by_id: String,
    /// The opaque key with digest `1`.
    pub(super) by_digest: String,
    /// A new row, [`COLUMNS`] bound as `1..=COLUMN_COUNT`.
    pub(super) insert: String,
    /// [`insert_rows`] of [`BATCH_ROWS`] rows.
    pub(super) insert_batch: String,
    /// The compare-and-swap: the row with id `1` and revision `COLUMN_COUNT + 1` gets the
    /// other columns; one row affected is success.
    pub(super) replace: String,
    /// Removes the row with id `1`, returning it.
    pub(super) delete: String,
    /// Whether a row with id `1` exists.
    pub(super) exists: String,
    /// How many rows there are.
    pub(super) count_all: String,
    /// How many rows team `1` has.
    pub(super) count_team: String,
    /// A page of the stable order: limit `1`, offset `2`.
    pub(super) page_all: String,
    /// A page of team `3`'s rows in the stable order: limit `1`, offset `2`.
    pub(super) page_team: String,
}

impl Queries {
    pub(super) fn new(sigil: char) -> Self {
        const ORDER: &str = "ORDER BY created_at, length(id), id";
        Self {
            by_id: format!("SELECT {COLUMNS} FROM keygate_keys WHERE id = {sigil}1"),
            by_digest: format!("SELECT {COLUMNS} FROM keygate_keys WHERE shape = 'opaque' AND digest = {sigil}1"),
            insert: format!("INSERT INTO keygate_keys ({COLUMNS}) VALUES ({})", values_clause(sigil)),
            insert_batch: insert_rows(sigil, BATCH_ROWS),
            replace: format!(
                "UPDATE keygate_keys SET {} WHERE id = {sigil}1 AND revision = {sigil}{}",
                set_clause(sigil),
                COLUMN_COUNT + 1
            ),
            delete: format!("DELETE FROM keygate_keys WHERE id = {sigil}1 RETURNING {COLUMNS}"),
            exists: format!("SELECT 1 FROM keygate_keys WHERE id = {sigil}1"),
            count_all: String::from("SELECT COUNT(*) FROM keygate_keys"),
            count_team: format!("SELECT COUNT(*) FROM keygate_keys WHERE team_id = {sigil}1"),
            page_all: format!("SELECT {COLUMNS} FROM keygate_keys {ORDER} LIMIT {sigil}1 OFFSET {sigil}2"),
            page_team: format!(
                "SELECT {COLUMNS} FROM keygate_keys WHERE team_id = {sigil}3 {ORDER} LIMIT {sigil}1 OFFSET {sigil}2"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clauses() {
        assert!(set_clause('$').starts_with("shape = $2, kind = $3"));
        assert!(set_clause('?').ends_with("attributes = ?17, inherits_budget = ?18"));
        assert!(values_clause('$').ends_with("$17, $18"));
    }

    #[test]
    fn batch_rows_number_their_parameters_on() {
        let q = insert_rows('$', 2);
        assert!(q.contains("VALUES ($1, $2,") && q.contains("$18), ($19, ") && q.contains("$36) ON CONFLICT"), "{q}");
        let q = insert_rows('?', 2);
        assert!(q.contains("VALUES (?, ?,") && q.contains("?), (?, ") && q.matches('?').count() == 36, "{q}");
    }

    #[test]
    fn placeholders_follow_the_sigil() {
        let q = Queries::new('?');
        assert!(q.replace.ends_with("WHERE id = ?1 AND revision = ?19"), "{}", q.replace);
        assert!(q.page_team.contains("team_id = ?3") && q.page_team.ends_with("LIMIT ?1 OFFSET ?2"));
        assert!(!Queries::new('$').insert.contains('?'));
    }
}
