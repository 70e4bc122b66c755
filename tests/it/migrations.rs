//! Both dialects' migrations stay in step with each other and with schema.rs.

use crate::common;

use std::collections::BTreeMap;

use casesync::config::{DatabaseTarget, Secret};
use casesync::db::{self, DbConnection};
use diesel::prelude::*;
use diesel::sql_types::Text;

fn migration_names(dialect: &str) -> Vec<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(dialect);
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn every_migration_exists_in_both_dialects() {
    let sqlite = migration_names("sqlite");
    let postgres = migration_names("postgres");
    assert!(!sqlite.is_empty());
    assert_eq!(sqlite, postgres, "a migration is missing from one dialect");
    for dialect in ["sqlite", "postgres"] {
        for name in &sqlite {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("migrations")
                .join(dialect)
                .join(name);
            assert!(dir.join("up.sql").is_file(), "{dialect}/{name}/up.sql");
            assert!(dir.join("down.sql").is_file(), "{dialect}/{name}/down.sql");
        }
    }
}

type Columns = BTreeMap<String, Vec<String>>;

/// Tables and columns declared in `schema.rs`, read from its `table!` blocks.
fn declared_columns() -> Columns {
    let text = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/server/src/db/schema.rs"
    ));
    let mut out = Columns::new();
    let mut current: Option<String> = None;
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_suffix('{').map(str::trim) {
            if let Some((table, _)) = rest.split_once(" (") {
                current = Some(table.to_string());
                out.insert(table.to_string(), Vec::new());
                continue;
            }
        }
        if line == "}" {
            current = None;
        } else if let (Some(table), Some((col, _))) = (&current, line.split_once(" -> ")) {
            out.get_mut(table).unwrap().push(col.to_string());
        }
    }
    for cols in out.values_mut() {
        cols.sort();
    }
    out
}

#[derive(QueryableByName)]
struct NameRow {
    #[diesel(sql_type = Text)]
    name: String,
}

fn live_columns(conn: &mut DbConnection) -> Columns {
    let tables: Vec<NameRow> = match conn {
        DbConnection::Sqlite(c) => diesel::sql_query(
            "SELECT name FROM sqlite_master WHERE type = 'table' \
             AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '__diesel%'",
        )
        .load(c)
        .unwrap(),
        DbConnection::Pg(c) => diesel::sql_query(
            "SELECT table_name AS name FROM information_schema.tables \
             WHERE table_schema = 'public' AND table_name NOT LIKE '__diesel%'",
        )
        .load(c)
        .unwrap(),
    };
    let mut out = Columns::new();
    for NameRow { name: table } in tables {
        let cols: Vec<NameRow> = match conn {
            DbConnection::Sqlite(c) => {
                diesel::sql_query(format!("SELECT name FROM pragma_table_info('{table}')"))
                    .load(c)
                    .unwrap()
            }
            DbConnection::Pg(c) => diesel::sql_query(
                "SELECT column_name AS name FROM information_schema.columns \
                 WHERE table_schema = 'public' AND table_name = $1",
            )
            .bind::<Text, _>(&table)
            .load(c)
            .unwrap(),
        };
        let mut cols: Vec<String> = cols.into_iter().map(|r| r.name).collect();
        cols.sort();
        out.insert(table, cols);
    }
    out
}

/// Runs on the suite's database: SQLite by default, PostgreSQL in the
/// PostgreSQL run (`CASESYNC_TEST_DATABASE_URL`), so each dialect is checked.
#[test]
fn migrations_create_exactly_what_schema_rs_declares() {
    let test_db = common::TestDb::new();
    let dir = tempfile::tempdir().unwrap();
    let target = match &test_db.url {
        Some(url) => DatabaseTarget::Postgres(Secret::new(url)),
        None => DatabaseTarget::Sqlite(dir.path().join("m.db")),
    };
    let mut conn = db::open_one(&target).unwrap();
    assert!(!db::migrations_current(&mut conn).unwrap());
    assert!(db::run_migrations(&mut conn).unwrap() > 0);
    assert!(db::migrations_current(&mut conn).unwrap());
    assert_eq!(live_columns(&mut conn), declared_columns());

    // Servers starting together: each finds nothing left to do, none fails.
    let handles: Vec<_> = (0..3)
        .map(|_| {
            let target = target.clone();
            std::thread::spawn(move || {
                let mut c = db::open_one(&target).unwrap();
                db::run_migrations(&mut c).unwrap()
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), 0);
    }
}

/// Migration 000015 gives the submissions already stored their case's site
/// and number (the form export reads those copies, not the cases).
#[test]
fn submissions_stored_before_000015_get_their_cases_site_and_number() {
    use casesync::db::schema::{cases, submissions};
    use diesel::connection::SimpleConnection;

    let app = common::TestApp::spawn();
    let admin = app.admin_token();
    let (_, worker) = app.user(&admin, "aigerim", "field_worker", &["KZ-CAM-ALA"]);
    let case_id = uuid::Uuid::new_v4().to_string();
    let envelope = common::phone::form_envelope(
        "kz.referral",
        &case_id,
        common::phone::fixture("kz.referral"),
    );
    assert_eq!(
        common::phone::phone(&app, &worker).send(&envelope).status,
        201
    );
    let (up, down) = if app.shared.db.is_postgres() {
        (
            include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/migrations/postgres/2026-11-23-000015_submission_case_copy/up.sql"
            )),
            include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/migrations/postgres/2026-11-23-000015_submission_case_copy/down.sql"
            )),
        )
    } else {
        (
            include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/migrations/sqlite/2026-11-23-000015_submission_case_copy/up.sql"
            )),
            include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/migrations/sqlite/2026-11-23-000015_submission_case_copy/down.sql"
            )),
        )
    };
    let mut conn = app.conn();
    conn.batch_execute(down).unwrap();
    conn.batch_execute(up).unwrap();
    let copied: (Option<String>, Option<String>) = submissions::table
        .find(envelope["instance_id"].as_str().unwrap())
        .select((submissions::site_id, submissions::case_number))
        .first(&mut conn)
        .unwrap();
    let case: (String, Option<String>) = cases::table
        .find(&case_id)
        .select((cases::site_id, cases::number))
        .first(&mut conn)
        .unwrap();
    assert_eq!(copied, (Some(case.0), case.1));
}

/// Migration 000024 moves the de-identified records of the submissions
/// already stored into their own table, unchanged (down and up again).
#[test]
fn de_identified_records_stored_before_000024_move_to_their_own_table() {
    use casesync::db::schema::submission_cells_deidentified as cells;
    use diesel::connection::SimpleConnection;

    let app = common::TestApp::spawn();
    let admin = app.admin_token();
    let (_, worker) = app.user(&admin, "aigerim", "field_worker", &["KZ-CAM-ALA"]);
    let envelope = common::phone::form_envelope(
        "kz.referral",
        &uuid::Uuid::new_v4().to_string(),
        common::phone::fixture("kz.referral"),
    );
    assert_eq!(
        common::phone::phone(&app, &worker).send(&envelope).status,
        201
    );
    let instance = envelope["instance_id"].as_str().unwrap();
    let mut conn = app.conn();
    let record = |conn: &mut casesync::db::DbConnection| -> (String, String, String) {
        cells::table
            .filter(cells::instance_id.eq(instance))
            .select((cells::layout, cells::event_day, cells::deidentified))
            .first(conn)
            .unwrap()
    };
    let stored = record(&mut conn);
    assert!(!stored.2.is_empty());
    let (up, down) = if app.shared.db.is_postgres() {
        (
            include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/migrations/postgres/2026-12-06-000024_deidentified_cells/up.sql"
            )),
            include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/migrations/postgres/2026-12-06-000024_deidentified_cells/down.sql"
            )),
        )
    } else {
        (
            include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/migrations/sqlite/2026-12-06-000024_deidentified_cells/up.sql"
            )),
            include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/migrations/sqlite/2026-12-06-000024_deidentified_cells/down.sql"
            )),
        )
    };
    conn.batch_execute(down).unwrap();
    conn.batch_execute(up).unwrap();
    assert_eq!(record(&mut conn), stored);
}
