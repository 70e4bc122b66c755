//! Streaming a form export (#6): ROWS stored KZ referrals (default
//! 200,000; the figure is 1,000,000 — `ROWS=1000000`, about 4 GB of
//! SQLite) written as de-identified CSV to a sink that only counts bytes.
//! Prints rows/s and the process's resident memory before and at its peak
//! during the export (the rows are inserted directly, not through ingest:
//! this measures the export, not the decryption), each with the export
//! cells ingest stores beside it (`submissions::cells`).
//!
//! `cargo bench --bench export`; `KEEP_DB=1` keeps the database and says
//! where, `REUSE_DB=<that directory>` exports it again without the setup.
//! The database is SQLCipher-encrypted like the server's;
//! `BENCH_PLAINTEXT=1` measures the same without encryption.

mod common;

use std::time::Instant;

use casesync::db::schema::{cases, submission_cells, submission_cells_deidentified, submissions};
use casesync::db::write_tx;
use casesync::db::Database;
use casesync::error::AppError;
use casesync::exports::forms::{self, FormFilter};
use casesync::exports::Scope;
use common::{bench_database, bench_db, BenchDb};
use diesel::prelude::*;
use serde_json::{json, Value};

fn rss_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let rows: usize = std::env::var("ROWS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(if quick { 2_000 } else { 200_000 });
    if let Ok(path) = std::env::var("REUSE_DB") {
        // A database an earlier run kept (`KEEP_DB=1`): export it again.
        let database = bench_database(std::path::Path::new(&path));
        let mut conn = casesync::db::open_one(&database).unwrap();
        export(&mut conn, &database);
        return;
    }
    let BenchDb {
        dir,
        mut conn,
        site,
        worker,
        ..
    } = bench_db();
    let data: Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/forms/kz.referral/valid.json"),
        )
        .unwrap(),
    )
    .unwrap();

    // The cells ingest stores beside each payload (submissions::cells).
    let set = casesync::forms::definitions::shipped();
    let file = set
        .forms
        .iter()
        .find(|f| f.document["x-form"]["id"] == "kz.referral")
        .unwrap();
    let form = casesync::forms::check::check(&file.document, &set.resources).unwrap();
    let cells = casesync::submissions::cells::stored_cells(
        &casesync::forms::columns::Layout::of(&form.fields),
        &data,
        chrono::NaiveDate::from_ymd_opt(2026, 3, 2).unwrap(),
    );

    // The JWE as received is kept in the same row: as large as a real one
    // (base64url of the envelope plus the encrypted key), so reading past
    // it costs what it costs in production.
    let raw_jwe = "A".repeat(data.to_string().len() * 4 / 3 + 700);

    let began = Instant::now();
    let now = chrono::Utc::now().naive_utc();
    for chunk in (0..rows).collect::<Vec<_>>().chunks(5_000) {
        write_tx(&mut conn, |conn| {
            for i in chunk {
                // Random, as phones make them: nothing may rely on their order.
                let instance = uuid::Uuid::new_v4().to_string();
                let received_at = now + chrono::Duration::microseconds(*i as i64);
                // Each referral opens a case of its own, as in the field.
                let case_id = uuid::Uuid::new_v4().to_string();
                let number = format!("KZ-ALA-2026-{i:07}");
                diesel::insert_into(cases::table)
                    .values((
                        cases::id.eq(&case_id),
                        cases::programme.eq("kz"),
                        cases::site_id.eq(&site.id),
                        cases::assigned_to.eq(&worker.id),
                        cases::state.eq("open"),
                        cases::version.eq(1i64),
                        cases::opened_by_instance.eq(&instance),
                        cases::created_at.eq(received_at),
                        cases::updated_at.eq(received_at),
                        cases::number.eq(&number),
                        cases::admission.eq(1),
                        cases::facts.eq("{}"),
                    ))
                    .execute(conn)?;
                let payload = json!({"instance_id": instance, "form_id": "kz.referral",
                    "form_version": "2021.1.1", "case_id": case_id, "device_id": "bench",
                    "completed_at": "2026-03-02T10:40:00+05:00", "data": data});
                diesel::insert_into(submissions::table)
                    .values((
                        submissions::instance_id.eq(&instance),
                        submissions::form_id.eq("kz.referral"),
                        submissions::form_version.eq("2021.1.1"),
                        submissions::case_id.eq(&case_id),
                        submissions::submitted_by.eq(&worker.id),
                        submissions::device_id.eq("bench"),
                        submissions::completed_at.eq(now),
                        submissions::received_at.eq(received_at),
                        submissions::kid.eq("bench"),
                        submissions::raw_jwe.eq(&raw_jwe),
                        submissions::payload.eq(payload.to_string()),
                        submissions::content_sha256.eq(""),
                        submissions::status.eq("complete"),
                        // As ingest keeps them (migration 000015).
                        submissions::site_id.eq(&site.id),
                        submissions::case_number.eq(&number),
                    ))
                    .execute(conn)?;
                diesel::insert_into(submission_cells::table)
                    .values((
                        submission_cells::form_id.eq("kz.referral"),
                        submission_cells::received_at.eq(received_at),
                        submission_cells::instance_id.eq(&instance),
                        submission_cells::layout.eq(&cells.layout),
                        submission_cells::event_day.eq(&cells.event_day),
                        submission_cells::identifying.eq(&cells.identifying),
                    ))
                    .execute(conn)?;
                diesel::insert_into(submission_cells_deidentified::table)
                    .values((
                        submission_cells_deidentified::form_id.eq("kz.referral"),
                        submission_cells_deidentified::received_at.eq(received_at),
                        submission_cells_deidentified::instance_id.eq(&instance),
                        submission_cells_deidentified::layout.eq(&cells.layout),
                        submission_cells_deidentified::event_day.eq(&cells.event_day),
                        submission_cells_deidentified::deidentified.eq(&cells.deidentified),
                    ))
                    .execute(conn)?;
            }
            Ok::<_, AppError>(())
        })
        .unwrap();
    }
    println!(
        "setup: {rows} referrals stored in {:.1} s",
        began.elapsed().as_secs_f64()
    );

    let database = bench_database(dir.path());
    export(&mut conn, &database);
    if std::env::var("KEEP_DB").is_ok() {
        println!("kept {:?}: REUSE_DB=that-path exports it again", dir.keep());
    }
}

/// Exports the stored referrals and prints the figures.
fn export(conn: &mut casesync::db::DbConnection, database: &Database) {
    let scope = Scope::shell();
    let plan = forms::plan(conn, &scope, "kz.referral", &FormFilter::default()).unwrap();
    let before = rss_kib("VmRSS:");
    let mut peak = before;
    let mut bytes = 0usize;
    let began = Instant::now();
    // Both cores read, as the server does with a second pooled connection.
    let mut second = casesync::db::open_one(database).unwrap();
    let written = forms::write(conn, Some(&mut second), &plan, |chunk| {
        bytes += chunk.len();
        peak = peak.max(rss_kib("VmRSS:"));
        true
    })
    .unwrap();
    let took = began.elapsed().as_secs_f64();
    println!(
        "export: {written} rows, {:.0} MB of CSV in {took:.2} s = {:.0} rows/s; resident memory {} MB before, {} MB at most during",
        bytes as f64 / 1e6,
        written as f64 / took,
        before / 1024,
        peak / 1024
    );
}
