//! The migration history table refinery keeps in each tenant database,
//! `public.refinery_schema_history`, and the statements tenantry runs on it
//! besides refinery's own (reading the version, adopting a Terraform-made
//! database's history). The table is not tenant data: no group may touch it
//! (the gateway's login may read it, see [`GATEWAY_PRIVILEGES`]), and a
//! database holding only history rows is empty.

/// What the tenant's gateway login holds on the table (the console shows
/// the schema version); the groups hold nothing.
pub const GATEWAY_PRIVILEGES: &[&str] = &["SELECT"];

/// The table's name, in schema `public`.
pub const TABLE: &str = "refinery_schema_history";

/// The table, schema-qualified, for SQL.
pub const QUALIFIED: &str = "public.refinery_schema_history";

/// Refinery's layout of the table (refinery 0.8, `tokio-postgres`).
pub const CREATE: &str = "CREATE TABLE IF NOT EXISTS public.refinery_schema_history \
     (version int4 PRIMARY KEY, name varchar(255), applied_on varchar(255), checksum varchar(255))";

/// Whether the table exists: one boolean.
pub const EXISTS: &str = "SELECT to_regclass('public.refinery_schema_history') IS NOT NULL";

/// The newest applied version, NULL when none: one `bigint`, named `v`.
pub const MAX_VERSION: &str =
    "SELECT max(version)::bigint AS v FROM public.refinery_schema_history";

/// [`MAX_VERSION`] for a session that may not be able to read the table
/// (the gateway's login before apply granted it): NULL then, never an
/// error, so it can run inside a transaction with other statements.
pub const MAX_VERSION_IF_READABLE: &str = "SELECT CASE \
     WHEN NOT has_schema_privilege('public', 'USAGE') THEN NULL \
     WHEN to_regclass('public.refinery_schema_history') IS NULL THEN NULL \
     WHEN NOT has_table_privilege('public.refinery_schema_history', 'SELECT') THEN NULL \
     ELSE ((xpath('/row/v/text()', query_to_xml( \
       'SELECT max(version) AS v FROM public.refinery_schema_history', false, true, '')))[1])::text::bigint \
     END";

/// Every applied migration, oldest first: version, name, applied_on, checksum.
pub const ROWS: &str =
    "SELECT version, name, applied_on, checksum FROM public.refinery_schema_history ORDER BY version";

/// Records one applied migration: `$1` version, `$2` name, `$3` applied_on,
/// `$4` checksum, as refinery writes them.
pub const INSERT: &str = "INSERT INTO public.refinery_schema_history \
     (version, name, applied_on, checksum) VALUES ($1, $2, $3, $4)";

/// A change that alters nothing (the newest row, rewritten as it is):
/// a move writes it on the old copy once that is closed, and the new
/// server has everything once it has applied it (changes arrive in commit
/// order).
pub const FENCE: &str = "UPDATE public.refinery_schema_history SET version = version \
     WHERE version = (SELECT max(version) FROM public.refinery_schema_history)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_statement_names_the_same_table() {
        assert_eq!(QUALIFIED, format!("public.{TABLE}"));
        for sql in [CREATE, EXISTS, MAX_VERSION, ROWS, INSERT, FENCE] {
            assert!(sql.contains(QUALIFIED), "{sql}");
        }
    }
}
