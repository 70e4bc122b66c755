//! The case export's deadline counts (#19 item 3): read from the tally
//! the fold keeps on each case's row, they are the counts of the case's
//! deadline rows; a case without a tally (folded before migration 000036)
//! is counted from its rows; and the start's fill gives every such case
//! the tally its fold would have kept.

use crate::common;

use casesync::cases::timeline;
use casesync::db::schema::{cases, counters};
use casesync::db::DbConnection;
use casesync::exports::cases::{self as case_exports, CaseFilter};
use casesync::exports::Scope;
use common::{open_db, private_tempdir, TestDb};
use diesel::prelude::*;

/// The identifying case export of `programme`, from the shell (so its
/// rows name the cases and two exports compare byte for byte).
fn export(conn: &mut DbConnection, programme: &str) -> String {
    let filter = CaseFilter {
        programme: programme.into(),
        identifying: Some(true),
        terms: casesync::privacy::disclosures::DisclosureTerms {
            // Each manual's own word for a court's demand.
            legal_basis: Some(
                match programme {
                    "kz" => "required_by_law",
                    _ => "court_order",
                }
                .into(),
            ),
            provision: Some("Code on Marriage art. 76".into()),
            recipient: Some("Almaty district court".into()),
            purpose: Some("court report".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let plan = case_exports::plan(conn, &Scope::shell(), &filter).unwrap();
    let mut out = Vec::new();
    case_exports::write(conn, &plan, |chunk| {
        out.extend(chunk);
        true
    })
    .unwrap();
    String::from_utf8(out).unwrap()
}

/// Each deadline count column's total over the file.
fn totals(csv: &str) -> Vec<(String, u64)> {
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let header = reader.headers().unwrap().clone();
    let columns: Vec<usize> = (0..header.len())
        .filter(|&i| header[i].starts_with("deadlines_"))
        .collect();
    let mut sums = vec![0u64; columns.len()];
    for record in reader.records() {
        let record = record.unwrap();
        for (sum, &i) in sums.iter_mut().zip(&columns) {
            *sum += record[i].parse::<u64>().unwrap();
        }
    }
    columns
        .iter()
        .map(|&i| header[i].to_string())
        .zip(sums)
        .collect()
}

fn tallies(conn: &mut DbConnection) -> Vec<(String, Option<String>)> {
    cases::table
        .select((cases::id, cases::deadline_tally))
        .order(cases::id)
        .load(conn)
        .unwrap()
}

#[test]
fn the_case_exports_deadline_counts_are_the_tally_the_rows_and_the_fill_alike() {
    let dir = private_tempdir();
    let db = TestDb::new();
    common::seed(dir.path(), &db, 60, 8);
    let mut conn = open_db(&dir.path().join("data"), &db);

    // Every case the seed folded has its tally.
    let kept = tallies(&mut conn);
    assert!(kept.len() >= 60);
    assert!(kept.iter().all(|(_, t)| t.is_some()), "{kept:?}");

    let from_tallies: Vec<String> = ["kz", "bt"].map(|p| export(&mut conn, p)).into();
    // The counts count something of each kind a seeded case has.
    for (csv, programme) in from_tallies.iter().zip(["kz", "bt"]) {
        let sums = totals(csv);
        assert_eq!(sums.len(), 5, "{sums:?}");
        let counted: u64 = sums.iter().map(|(_, n)| n).sum();
        assert!(counted > 0, "{programme}: no deadline counted: {sums:?}");
    }
    let kz = totals(&from_tallies[0]);
    // (The seed's cases are months old: their open deadlines are past
    // due. `DeadlineTally`'s unit tests split open from overdue.)
    for kind in [
        "deadlines_met_on_time",
        "deadlines_met_late",
        "deadlines_overdue",
    ] {
        assert!(
            kz.iter().any(|(k, n)| k == kind && *n > 0),
            "no KZ case with {kind}: {kz:?}"
        );
    }

    // Without tallies: the same file, counted from the deadline rows.
    diesel::update(cases::table)
        .set(cases::deadline_tally.eq(None::<String>))
        .execute(&mut conn)
        .unwrap();
    let from_rows: Vec<String> = ["kz", "bt"].map(|p| export(&mut conn, p)).into();
    assert_eq!(from_rows, from_tallies);

    // The start's fill ran once (its marker): nothing to do again.
    assert_eq!(timeline::fill_deadline_tallies(&mut conn).unwrap(), 0);
    // Without the marker it tallies every case, as its fold did.
    diesel::delete(counters::table.filter(counters::name.eq("deadline_tally_filled")))
        .execute(&mut conn)
        .unwrap();
    let filled = timeline::fill_deadline_tallies(&mut conn).unwrap();
    assert_eq!(filled, kept.len());
    assert_eq!(tallies(&mut conn), kept);
    assert_eq!(timeline::fill_deadline_tallies(&mut conn).unwrap(), 0);
    let after_fill: Vec<String> = ["kz", "bt"].map(|p| export(&mut conn, p)).into();
    assert_eq!(after_fill, from_tallies);
}
