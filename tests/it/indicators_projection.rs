//! The indicator projection (#19 item 4, docs/indicators.md "What a
//! report reads"): a report counted from the compact per-case projection
//! the fold keeps is the report counted from the cases themselves, for
//! every indicator, period and breakdown, exact and suppressed.
//!
//! The cases are realistic: `casesync seed` stores KZ and BT cases through
//! ingest's own code (about eight forms each across the programmes' forms),
//! so the fold writes each projection as it would in service. The "old
//! way" is the same engine with the projection taken away: a case without
//! a current projection is read from its own row and events, as every
//! case was before.

use crate::common;

use casesync::cases::projection;
use casesync::db::schema::{cases, indicator_cases};
use casesync::db::DbConnection;
use casesync::indicators::{self, Audience, ReportQuery, Row};
use common::{open_db, private_tempdir, TestDb};
use diesel::prelude::*;

/// Seeds `cases` cases of both programmes into a new data directory (and
/// the suite's database) through the `casesync seed` command.
fn seeded(cases: usize) -> (tempfile::TempDir, TestDb) {
    let dir = private_tempdir();
    let db = TestDb::new();
    common::seed(dir.path(), &db, cases, 8);
    (dir, db)
}

/// Every report of `programme` the comparison looks at: each breakdown
/// the programme declares (three at a time at most), by quarter over the
/// seeded years, exact and suppressed.
fn queries(programme: &str) -> Vec<ReportQuery> {
    let programmes = casesync::programmes::Programmes::shipped();
    let names: Vec<String> = programmes
        .get(programme)
        .unwrap()
        .indicators
        .dimensions
        .iter()
        .map(|(n, _)| n.clone())
        .collect();
    let today = chrono::Utc::now().date_naive();
    let base = ReportQuery {
        from: Some(today - chrono::Duration::days(3 * 366)),
        to: Some(today + chrono::Duration::days(1)),
        period: Some("quarter".into()),
        ..ReportQuery::default()
    };
    let mut out = vec![
        base.clone(),
        ReportQuery {
            by: Some("sex,age_band".into()),
            ..base.clone()
        },
        ReportQuery {
            by: Some("sex,age_band".into()),
            period: Some("range".into()),
            suppress: Some(true),
            ..base.clone()
        },
    ];
    for three in names.chunks(3) {
        out.push(ReportQuery {
            by: Some(three.join(",")),
            period: Some("year".into()),
            ..base.clone()
        });
    }
    out
}

fn report(conn: &mut DbConnection, programme: &str, query: &ReportQuery) -> Vec<Row> {
    let request = indicators::plan(conn, &Audience::shell(), programme, query, 5)
        .unwrap_or_else(|e| panic!("{programme} {:?}: {e}", query.by));
    indicators::report(conn, &request).unwrap()
}

fn all_reports(conn: &mut DbConnection) -> Vec<(String, Option<String>, Vec<Row>)> {
    let mut out = Vec::new();
    for programme in ["kz", "bt"] {
        for query in queries(programme) {
            let rows = report(conn, programme, &query);
            out.push((programme.to_string(), query.by.clone(), rows));
        }
    }
    out
}

type ProjectionRow = (
    String,
    String,
    Option<chrono::NaiveDateTime>,
    String,
    String,
    Option<String>,
    String,
);

fn projections(conn: &mut DbConnection) -> Vec<ProjectionRow> {
    indicator_cases::table
        .order(indicator_cases::case_id)
        .select((
            indicator_cases::case_id,
            indicator_cases::spec,
            indicator_cases::closed_at,
            indicator_cases::facts,
            indicator_cases::event_days,
            indicator_cases::records,
            indicator_cases::deadlines,
        ))
        .load(conn)
        .unwrap()
}

/// The count of `indicator` in the grand total row of `rows` (first
/// period), for the check that the comparison compares something.
fn counted(rows: &[Row], item: usize) -> u64 {
    rows.iter()
        .filter(|r| r.item == item && r.values.iter().all(|v| v == "total"))
        .map(|r| r.cases)
        .sum()
}

#[test]
fn reports_from_the_projection_are_the_reports_from_the_cases() {
    let (dir, db) = seeded(90);
    let mut conn = open_db(&dir.path().join("data"), &db);

    // The fold wrote one projection per case.
    let case_count: i64 = cases::table.count().get_result(&mut conn).unwrap();
    let stored = projections(&mut conn);
    assert_eq!(stored.len() as i64, case_count);
    assert!(case_count >= 90);

    let projected = all_reports(&mut conn);

    // The comparison counts something in both programmes: KZ referrals
    // (IND-01, Table 1 indicator 1), BT referrals by record (E2) and plans
    // (D3, the unit each plan version).
    let kz = &projected[0].2;
    assert!(counted(kz, 0) > 0, "no KZ case counted: {kz:?}");
    let programmes = casesync::programmes::Programmes::shipped();
    let bt_list = &programmes.get("bt").unwrap().indicators.list;
    let bt = &projected.iter().find(|(p, ..)| p == "bt").unwrap().2;
    let by_record: Vec<usize> = bt_list
        .iter()
        .enumerate()
        .filter(|(_, i)| i.id == "BT-E2" || i.id == "BT-D3")
        .map(|(n, _)| n)
        .collect();
    assert_eq!(by_record.len(), 2);
    for n in by_record {
        assert!(counted(bt, n) > 0, "{} counted nothing", bt_list[n].id);
    }

    // The old way: the same engine, every case read from its own row.
    diesel::delete(indicator_cases::table)
        .execute(&mut conn)
        .unwrap();
    let from_cases = all_reports(&mut conn);
    assert_eq!(projected.len(), from_cases.len());
    for (a, b) in projected.iter().zip(&from_cases) {
        assert_eq!(a.0, b.0);
        assert_eq!(a.2, b.2, "{} by {:?} differs", a.0, a.1);
    }

    // Once filled, a start reads only the marker the fill left.
    assert_eq!(projection::ensure(&mut conn).unwrap(), 0);
    assert_eq!(projections(&mut conn).len(), 0);

    // The start's backfill (the migration's table filled from the cases
    // as folded, no marker yet) makes exactly what the fold made.
    diesel::delete(
        casesync::db::schema::counters::table
            .filter(casesync::db::schema::counters::name.like("indicator_projection:%")),
    )
    .execute(&mut conn)
    .unwrap();
    let made = projection::ensure(&mut conn).unwrap();
    assert_eq!(made as i64, case_count);
    assert_eq!(projections(&mut conn), stored);
    assert_eq!(projection::ensure(&mut conn).unwrap(), 0);
    assert_eq!(all_reports(&mut conn), projected);
}
