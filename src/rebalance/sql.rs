//! The SQL a rebalance runs on the shards, built as text (pure, unit-tested).
//!
//! Everything a rebalance creates on a shard lives in one schema, [`SCHEMA`]: the list
//! of moving slots, the change log and capture function of each table (on sources), the
//! staging copy of each table (on destinations). Triggers on the user's tables call the
//! capture functions, so `DROP SCHEMA … CASCADE` removes every trace at once — after a
//! finished move, a failure, Ctrl-C, or a killed process on the next run.

use crate::config::TableRule;
use crate::sharding::KeyType;

use super::estimate::slot_expr;

/// Schema holding everything a rebalance creates on a shard.
pub const SCHEMA: &str = "pgshard_rebalance";

/// Name of the capture trigger on a moving table (also the `BEFORE TRUNCATE` guard's
/// prefix).
pub const TRIGGER: &str = "pgshard_rebalance_capture";

/// The session setting that marks the rebalancer's own writes (cutover deletes), which
/// the capture trigger must not log.
pub const INTERNAL_SETTING: &str = "pgshard.rebalance";

/// `"name"` with embedded quotes doubled.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// `'text'` with embedded quotes doubled (the rebalancer's sessions run with
/// `standard_conforming_strings = on`, so backslashes need nothing).
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A table name from the map as SQL: `schema.table` names keep their dot.
pub fn table_ident(name: &str) -> String {
    match name.split_once('.') {
        Some((schema, table)) => format!("{}.{}", quote_ident(schema), quote_ident(table)),
        None => quote_ident(name),
    }
}

/// A name for a per-table object in [`SCHEMA`]: a prefix per kind, a readable part of
/// the table name, and a hash of the whole name. Distinct tables get distinct names
/// whatever their length (Postgres cuts names at 63 bytes) or spelling (`s.t` vs `s_t`),
/// and no per-table name can equal a fixed one (`moving`).
fn object_name(prefix: &str, table: &str) -> String {
    let mut readable = String::new();
    for c in table.chars().map(|c| if c == '.' { '_' } else { c }) {
        if readable.len() + c.len_utf8() > 40 {
            break;
        }
        readable.push(c);
    }
    // FNV-1a: stable across runs and builds, unlike std's hasher
    let hash = table.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    format!("{prefix}_{readable}_{hash:08x}")
}

/// The staging table on a destination.
pub fn staging(table: &str) -> String {
    format!("{SCHEMA}.{}", quote_ident(&object_name("stage", table)))
}

/// The change log of a table on a source.
pub fn changes(table: &str) -> String {
    format!("{SCHEMA}.{}", quote_ident(&object_name("log", table)))
}

/// The capture function of a table on a source.
fn capture_function(table: &str) -> String {
    format!("{SCHEMA}.{}", quote_ident(&object_name("capture", table)))
}

/// SQL type of a key column.
pub fn key_sql_type(key: KeyType) -> &'static str {
    match key {
        KeyType::SmallInt => "int2",
        KeyType::Integer => "int4",
        KeyType::BigInt => "int8",
        KeyType::Text => "text",
        KeyType::Uuid => "uuid",
    }
}

/// The slot of a row of `table` in a query over it (its key column, unqualified).
pub fn row_slot(table: &TableRule, slots: u32) -> String {
    slot_expr(&quote_ident(&table.key), table.key_type, slots)
}

/// `ARRAY[…]::int8[]` of slots (COPY takes no parameters, so lists are literals).
pub fn slot_array(slots: &[u32]) -> String {
    let items: Vec<String> = slots.iter().map(u32::to_string).collect();
    format!("ARRAY[{}]::int8[]", items.join(","))
}

/// `ARRAY['k1','k2']::<key type>[]` of key values given as their text form.
pub fn key_array(keys: &[String], key: KeyType) -> String {
    let items: Vec<String> = keys.iter().map(|k| quote_literal(k)).collect();
    format!("ARRAY[{}]::{}[]", items.join(","), key_sql_type(key))
}

/// Comma-separated quoted column names.
pub fn column_list(columns: &[String]) -> String {
    columns
        .iter()
        .map(|c| quote_ident(c))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Statements that install change capture on a source for one table: the change log,
/// the capture function (logging the key of every row written in a moving slot, before
/// and after the change), the row trigger and a `TRUNCATE` guard. The schema and the
/// `moving` table must exist ([`setup_source`]).
///
/// The log holds keys, not row images: catching up replaces all rows of a logged key
/// on the destination with what the source holds *now*, which is idempotent and does
/// not depend on the order transactions commit in.
pub fn capture(table: &TableRule, slots: u32, moving: &[u32]) -> Vec<String> {
    // The moving slots are a constant in the function body, not a table it reads: a
    // REPEATABLE READ transaction whose snapshot predates the setup would see an empty
    // table, and its writes would go unlogged.
    let moving = slot_array(moving);
    let name = table_ident(&table.name);
    let log = changes(&table.name);
    let func = capture_function(&table.name);
    let key = quote_ident(&table.key);
    let slot_of = |row: &str| slot_expr(&format!("{row}.{key}"), table.key_type, slots);
    vec![
        format!(
            "CREATE TABLE IF NOT EXISTS {log} (slot int8 NOT NULL, k {})",
            key_sql_type(table.key_type)
        ),
        format!(
            "CREATE OR REPLACE FUNCTION {func}() RETURNS trigger LANGUAGE plpgsql AS $pgshard$\n\
             DECLARE s int8;\n\
             BEGIN\n\
               IF current_setting('{INTERNAL_SETTING}', true) = 'internal' THEN RETURN NULL; END IF;\n\
               IF TG_OP <> 'INSERT' THEN\n\
                 s := {old};\n\
                 IF s = ANY({moving}) THEN\n\
                   INSERT INTO {log} VALUES (s, OLD.{key});\n\
                 END IF;\n\
               END IF;\n\
               IF TG_OP <> 'DELETE' THEN\n\
                 s := {new};\n\
                 IF s = ANY({moving}) THEN\n\
                   INSERT INTO {log} VALUES (s, NEW.{key});\n\
                 END IF;\n\
               END IF;\n\
               RETURN NULL;\n\
             END $pgshard$",
            old = slot_of("OLD"),
            new = slot_of("NEW"),
        ),
        format!("DROP TRIGGER IF EXISTS {TRIGGER} ON {name}"),
        format!(
            "CREATE TRIGGER {TRIGGER} AFTER INSERT OR UPDATE OR DELETE ON {name} \
             FOR EACH ROW EXECUTE FUNCTION {func}()"
        ),
        format!("DROP TRIGGER IF EXISTS {TRIGGER}_truncate ON {name}"),
        format!(
            "CREATE TRIGGER {TRIGGER}_truncate BEFORE TRUNCATE ON {name} \
             FOR EACH STATEMENT EXECUTE FUNCTION {SCHEMA}.refuse_truncate()"
        ),
    ]
}

/// Statements creating the schema, the moving-slot list and the `TRUNCATE` guard on a
/// source, and filling the list.
pub fn setup_source(moving: &[(u32, String)]) -> Vec<String> {
    let mut out = vec![
        format!("CREATE SCHEMA IF NOT EXISTS {SCHEMA}"),
        format!(
            "CREATE TABLE IF NOT EXISTS {SCHEMA}.moving (slot int8 PRIMARY KEY, destination text NOT NULL)"
        ),
        format!(
            "CREATE OR REPLACE FUNCTION {SCHEMA}.refuse_truncate() RETURNS trigger LANGUAGE plpgsql AS $pgshard$\n\
             BEGIN\n\
               RAISE EXCEPTION 'table % is being rebalanced by pgshard: TRUNCATE would lose the rows being moved', TG_TABLE_NAME\n\
                 USING ERRCODE = '55000';\n\
             END $pgshard$"
        ),
        format!("TRUNCATE {SCHEMA}.moving"),
    ];
    for chunk in moving.chunks(1000) {
        let values: Vec<String> = chunk
            .iter()
            .map(|(slot, to)| format!("({slot}, {})", quote_literal(to)))
            .collect();
        out.push(format!(
            "INSERT INTO {SCHEMA}.moving VALUES {}",
            values.join(", ")
        ));
    }
    out
}

/// Catalog query: the capture and TRUNCATE-guard triggers on the user's tables, as
/// (table as SQL, trigger name).
pub const TRIGGERS_QUERY: &str = "SELECT tgrelid::regclass::text, tgname::text FROM pg_trigger \
     WHERE tgname IN ('pgshard_rebalance_capture', 'pgshard_rebalance_capture_truncate')";

/// Remove everything a rebalance created on a shard (triggers go with their functions).
pub fn teardown() -> String {
    format!("DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
}

/// One column of a table as the catalog describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// name
    pub name: String,
    /// `format_type` of its type, e.g. `numeric(10,2)`
    pub sql_type: String,
    /// NOT NULL
    pub not_null: bool,
    /// default expression (`pg_get_expr`), generation expression for generated columns
    pub default: Option<String>,
    /// `a` / `d` for identity columns (ALWAYS / BY DEFAULT), `None` otherwise
    pub identity: Option<char>,
    /// stored generated column
    pub generated: bool,
}

/// Catalog query: the columns of a table (`$1` is its name as SQL text).
pub const COLUMNS_QUERY: &str = "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), \
     a.attnotnull, pg_get_expr(d.adbin, d.adrelid), a.attidentity::text, a.attgenerated::text \
     FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
     WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum";

/// Catalog query: `ADD CONSTRAINT` clauses of primary key, unique, check and exclusion
/// constraints (foreign keys are left out: a referenced row may live on another shard).
pub const CONSTRAINTS_QUERY: &str = "SELECT conname::text, pg_get_constraintdef(oid) \
     FROM pg_constraint WHERE conrelid = to_regclass($1) AND contype IN ('p','u','c','x') \
     ORDER BY contype DESC, conname";

/// Catalog query: definitions of indexes that do not back a constraint.
pub const INDEXES_QUERY: &str = "SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i \
     WHERE i.indrelid = to_regclass($1) \
     AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid) \
     ORDER BY i.indexrelid";

/// Catalog query: sequences owned by the table's columns (serial), to create before
/// the table whose defaults call them.
pub const SEQUENCES_QUERY: &str = "SELECT s.oid::regclass::text FROM pg_class s \
     JOIN pg_depend d ON d.objid = s.oid AND d.classid = 'pg_class'::regclass \
     AND d.refclassid = 'pg_class'::regclass AND d.deptype = 'a' \
     WHERE s.relkind = 'S' AND d.refobjid = to_regclass($1)";

/// `CREATE TABLE` for a table missing on a destination, from the source's definition:
/// columns with types, NOT NULL, defaults, identity and generated columns, then the
/// constraints.
pub fn create_table(table: &str, columns: &[Column], constraints: &[(String, String)]) -> String {
    let mut items: Vec<String> = columns
        .iter()
        .map(|c| {
            let mut def = format!("{} {}", quote_ident(&c.name), c.sql_type);
            if c.generated {
                if let Some(expr) = &c.default {
                    def.push_str(&format!(" GENERATED ALWAYS AS ({expr}) STORED"));
                }
            } else if let Some(kind) = c.identity {
                def.push_str(if kind == 'a' {
                    " GENERATED ALWAYS AS IDENTITY"
                } else {
                    " GENERATED BY DEFAULT AS IDENTITY"
                });
            } else if let Some(expr) = &c.default {
                def.push_str(&format!(" DEFAULT {expr}"));
            }
            if c.not_null {
                def.push_str(" NOT NULL");
            }
            def
        })
        .collect();
    for (name, def) in constraints {
        items.push(format!("CONSTRAINT {} {def}", quote_ident(name)));
    }
    format!(
        "CREATE TABLE {} (\n  {}\n)",
        table_ident(table),
        items.join(",\n  ")
    )
}

/// `CREATE TABLE` of the staging copy: the stored columns only (generated ones are
/// computed again when rows go into the real table), no constraints.
pub fn create_staging(table: &str, columns: &[Column]) -> String {
    let items: Vec<String> = columns
        .iter()
        .filter(|c| !c.generated)
        .map(|c| format!("{} {}", quote_ident(&c.name), c.sql_type))
        .collect();
    format!("CREATE TABLE {} ({})", staging(table), items.join(", "))
}

/// Order-independent fingerprint per slot of a set of rows named `rel` in a query
/// (`slot` computes a row's slot): per slot, the row count and the sum of a 64-bit hash
/// of each row's text form. Both sides of a move compute it over the rows they delete or
/// insert, in the same transaction that does it.
pub fn fingerprint(rel: &str, slot: &str) -> String {
    format!(
        "SELECT ({slot})::int8, count(*)::int8, sum(hashtextextended({rel}::text, 0)::numeric)::text \
         FROM {rel} GROUP BY 1 ORDER BY 1"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(name: &str, key: &str, key_type: KeyType) -> TableRule {
        TableRule {
            name: name.into(),
            key: key.into(),
            key_type,
        }
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(table_ident("s.t"), "\"s\".\"t\"");
        assert!(staging("s.t").starts_with("pgshard_rebalance.\"stage_s_t_"));
        assert!(changes("t").starts_with("pgshard_rebalance.\"log_t_"));
        // distinct tables, distinct objects, even when readable parts agree or are cut
        assert_ne!(staging("s.t"), staging("s_t"));
        let long_a = format!("{}a", "x".repeat(70));
        let long_b = format!("{}b", "x".repeat(70));
        assert_ne!(staging(&long_a), staging(&long_b));
        assert!(object_name("capture", &long_a).len() <= 63);
        assert_ne!(object_name("stage", "moving"), "moving");
    }

    #[test]
    fn arrays() {
        assert_eq!(slot_array(&[1, 5]), "ARRAY[1,5]::int8[]");
        assert_eq!(
            key_array(&["a'b".into(), "c".into()], KeyType::Text),
            "ARRAY['a''b','c']::text[]"
        );
        assert_eq!(key_array(&[], KeyType::BigInt), "ARRAY[]::int8[]");
    }

    #[test]
    fn capture_logs_old_and_new_keys_of_moving_slots() {
        let sql = capture(&rule("accounts", "aid", KeyType::BigInt), 1024, &[3, 9]).join(";\n");
        assert!(sql.contains("OLD.\"aid\""), "{sql}");
        assert!(sql.contains("NEW.\"aid\""), "{sql}");
        assert!(sql.contains("s = ANY(ARRAY[3,9]::int8[])"), "{sql}");
        assert!(
            sql.contains("AFTER INSERT OR UPDATE OR DELETE ON \"accounts\""),
            "{sql}"
        );
        assert!(sql.contains("BEFORE TRUNCATE ON \"accounts\""), "{sql}");
        assert!(
            sql.contains("current_setting('pgshard.rebalance', true)"),
            "{sql}"
        );
        // the router's slot arithmetic on the row's key
        assert!(sql.contains("hashint8extended(OLD.\"aid\"::int8"), "{sql}");
    }

    #[test]
    fn setup_lists_every_moving_slot() {
        let moving: Vec<(u32, String)> = (0..2500).map(|s| (s, "s2".to_string())).collect();
        let sql = setup_source(&moving);
        let inserts: Vec<&String> = sql.iter().filter(|s| s.starts_with("INSERT")).collect();
        assert_eq!(inserts.len(), 3);
        assert!(inserts[0].contains("(0, 's2')"));
        assert!(inserts[2].contains("(2499, 's2')"));
    }

    #[test]
    fn create_table_from_catalog_rows() {
        let cols = vec![
            Column {
                name: "id".into(),
                sql_type: "bigint".into(),
                not_null: true,
                default: None,
                identity: Some('d'),
                generated: false,
            },
            Column {
                name: "note".into(),
                sql_type: "text".into(),
                not_null: false,
                default: Some("'x'::text".into()),
                identity: None,
                generated: false,
            },
            Column {
                name: "len".into(),
                sql_type: "integer".into(),
                not_null: false,
                default: Some("length(note)".into()),
                identity: None,
                generated: true,
            },
        ];
        let sql = create_table("t", &cols, &[("t_pkey".into(), "PRIMARY KEY (id)".into())]);
        assert_eq!(
            sql,
            "CREATE TABLE \"t\" (\n  \"id\" bigint GENERATED BY DEFAULT AS IDENTITY NOT NULL,\n  \
             \"note\" text DEFAULT 'x'::text,\n  \
             \"len\" integer GENERATED ALWAYS AS (length(note)) STORED,\n  \
             CONSTRAINT \"t_pkey\" PRIMARY KEY (id)\n)"
        );
        assert_eq!(
            create_staging("t", &cols),
            format!(
                "CREATE TABLE {} (\"id\" bigint, \"note\" text)",
                staging("t")
            )
        );
    }
}
