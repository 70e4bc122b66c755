//! `casesync seed` (README, "A database of realistic cases"; #19 items 1
//! and 8: `scripts/bench-ingest.sh STORED=` and `HTTP=1
//! scripts/bench-export.sh` fill their databases with it, on SQLite and on
//! PostgreSQL alike): what it stores passes the check of a database after
//! load (`casesync cases check`, `cases::check`), on whichever database the
//! suite runs, and a second seed into the same database adds to it.

use crate::common;

use casesync::cases::check;
use casesync::db::schema::{cases, submissions};
use common::{open_db, private_tempdir, TestDb};
use diesel::prelude::*;

fn check_passes(conn: &mut casesync::db::DbConnection) -> check::Report {
    let report = check::run(conn, &[]).unwrap();
    assert!(report.passed(), "{:?}", report.problems);
    report
}

#[test]
fn seeded_cases_pass_the_check_after_load_and_a_second_seed_adds_to_them() {
    let dir = private_tempdir();
    let db = TestDb::new();
    common::seed(dir.path(), &db, 12, 6);
    let mut conn = open_db(&dir.path().join("data"), &db);

    // Every case equal to a fold of its events from scratch, and case
    // numbers unique per site and without gaps: KZ "a unique ID number"
    // (kz-manual §3.5 F1, "Case 1", "Case 2", … F3), BT "Number of cases
    // dealt with in the month" (bt-sops §3.1).
    let first = check_passes(&mut conn);
    assert_eq!(first.cases, 12);
    assert_eq!(first.numbers, 12, "every seeded case has its number");
    let stored: i64 = submissions::table.count().get_result(&mut conn).unwrap();
    assert_eq!(first.stored, stored);
    // Its follow-up forms were stored too, not only the opening ones.
    assert!(stored > 2 * 12, "{stored} forms for 12 cases");
    let programmes: Vec<String> = cases::table
        .select(cases::programme)
        .distinct()
        .order(cases::programme)
        .load(&mut conn)
        .unwrap();
    assert_eq!(programmes, ["bt", "kz"]);
    drop(conn);

    // A second seed continues the numbers where the first stopped.
    common::seed(dir.path(), &db, 6, 6);
    let mut conn = open_db(&dir.path().join("data"), &db);
    let second = check_passes(&mut conn);
    assert_eq!(second.cases, 18);
    assert_eq!(second.numbers, 18);
    assert!(second.stored > first.stored);
}
