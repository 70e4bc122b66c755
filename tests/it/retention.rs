//! Retention of closed case files (KZ 8.5.5 / §3.5 F7; BT D-11 and Annex
//! E §9): the rules as pure functions, then closed cases built through the
//! real submission path and reported by `casesync retention report`.

use crate::common;

use std::collections::BTreeMap;

use casesync::cases::Case;
use casesync::db::schema::{audit_log, cases};
use casesync::privacy::retention::{self, assess, birthday, may_purge, Status};
use casesync::programmes::{self, Programme, Programmes, Vocabulary};
use chrono::NaiveDate;
use common::build::{referral, submit};
use common::phone::{fixture, phone_for, Phone};
use common::TestApp;
use diesel::prelude::*;
use serde_json::{json, Value};

fn day(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

fn facts(v: Value) -> BTreeMap<String, Value> {
    serde_json::from_value(v).unwrap()
}

fn shipped(id: &str) -> std::sync::Arc<Programme> {
    Programmes::shipped().get(id).unwrap().clone()
}

// ---------------------------------------------------------------------------
// The rules, without a server
// ---------------------------------------------------------------------------

/// A case of `programme` in `state`, closed at `closed_at` (UTC).
fn case(programme: &str, state: &str, closed_at: Option<&str>, facts: Value) -> Case {
    let t = day("2026-01-01").and_hms_opt(0, 0, 0).unwrap();
    Case {
        id: "c".into(),
        programme: programme.into(),
        site_id: "s".into(),
        assigned_to: None,
        state: state.into(),
        version: 1,
        opened_by_instance: "i".into(),
        created_at: t,
        updated_at: t,
        child_id: None,
        number: Some("1".into()),
        admission: 0,
        facts: facts.to_string(),
        opened_at: Some(t),
        closed_at: closed_at.map(|s| s.parse().unwrap()),
        next_due_at: None,
        merged_into: None,
    }
}

#[test]
fn birthdays_never_come_early() {
    assert_eq!(birthday(day("2016-03-14"), 18), Some(day("2034-03-14")));
    // Born on 29 February: 1 March in a common year, not 28 February.
    assert_eq!(birthday(day("2008-02-29"), 18), Some(day("2026-03-01")));
    assert_eq!(birthday(day("2012-02-29"), 20), Some(day("2032-02-29")));
}

#[test]
fn kz_keeps_a_closed_file_until_the_18th_birthday() {
    let kz = shipped("kz");
    let rules = kz.retention.as_ref();
    let born = facts(json!({"child.date_of_birth": "2016-03-14"}));
    let closed = day("2026-11-22");
    let before = assess(rules, &born, closed, day("2034-03-13"));
    assert_eq!(before.retain_until, Some(day("2034-03-14")));
    assert_eq!(before.status, Status::Keep);
    assert_eq!(before.basis, "kz F7: 18th birthday");
    let on = assess(rules, &born, closed, day("2034-03-14"));
    assert_eq!(on.status, Status::DueForArchiving);

    // Closed after turning 18: kept until the closure day, not before.
    let adult = facts(json!({"child.date_of_birth": "2007-01-02"}));
    let a = assess(rules, &adult, closed, day("2026-11-21"));
    assert_eq!(a.retain_until, Some(closed));
    assert_eq!(a.status, Status::Keep);
    assert!(a.basis.contains("closure day"), "{}", a.basis);

    for unknown in [
        json!({}),
        json!({"child.date_of_birth": "unknown"}),
        json!({"child.date_of_birth": "14/03/2016"}),
    ] {
        let a = assess(rules, &facts(unknown), closed, day("2090-01-01"));
        assert_eq!(a.status, Status::Unknown);
        assert_eq!(a.retain_until, None);
        assert!(a.basis.contains("no date of birth"), "{}", a.basis);
    }
}

#[test]
fn bt_keeps_until_the_d11_date_and_otherwise_indefinitely() {
    let bt = shipped("bt");
    let rules = bt.retention.as_ref();
    let closed = day("2026-03-11");
    let dated = facts(json!({"bt.file_retain_until": "2032-05-14",
                             "child.date_of_birth": "2012-06-14"}));
    let a = assess(rules, &dated, closed, day("2032-05-13"));
    assert_eq!(a.retain_until, Some(day("2032-05-14")));
    assert_eq!(a.basis, "bt D-11 retain_until");
    assert_eq!(a.status, Status::Keep);
    // The child's age plays no part in Bhutan.
    let undated = facts(json!({"child.date_of_birth": "2000-01-01"}));
    let u = assess(rules, &undated, closed, day("2100-01-01"));
    assert_eq!(u.status, Status::Unknown);
    assert!(u.basis.contains("Annex E §9"), "{}", u.basis);
    // A programme without rules keeps everything.
    let none = assess(None, &dated, closed, day("2100-01-01"));
    assert_eq!(none.status, Status::Unknown);
}

#[test]
fn may_purge_only_closed_cases_past_their_date() {
    let born = json!({"child.date_of_birth": "2016-03-14"});
    let closed = case("kz", "closed", Some("2026-11-22T05:00:00"), born.clone());
    assert!(!may_purge(&closed, day("2026-11-23")));
    assert!(!may_purge(&closed, day("2034-03-13")));
    assert!(may_purge(&closed, day("2034-03-14")));

    // Unknown date of birth: never, however late.
    let unknown = case(
        "kz",
        "closed",
        Some("2026-11-22T05:00:00"),
        json!({"child.date_of_birth": "unknown"}),
    );
    assert!(!may_purge(&unknown, day("2199-01-01")));

    // Open, merged, or a closure time without a closed state: never.
    let open = case("kz", "social_assessment", None, born.clone());
    assert!(!may_purge(&open, day("2199-01-01")));
    let mut merged = closed.clone();
    merged.merged_into = Some("other".into());
    assert!(!may_purge(&merged, day("2199-01-01")));
    let odd = case("kz", "intake", Some("2026-11-22T05:00:00"), born);
    assert!(!may_purge(&odd, day("2199-01-01")));

    // A programme the server has no rules for: never.
    let mut foreign = closed.clone();
    foreign.programme = "xx".into();
    assert!(!may_purge(&foreign, day("2199-01-01")));

    // BT: from the D-11 date on; without one, never.
    let bt = case(
        "bt",
        "closed",
        Some("2026-03-11T03:00:00"),
        json!({"bt.file_retain_until": "2032-05-14"}),
    );
    assert!(!may_purge(&bt, day("2032-05-13")));
    assert!(may_purge(&bt, day("2032-05-14")));
    let bt_undated = case("bt", "closed", Some("2026-03-11T03:00:00"), json!({}));
    assert!(!may_purge(&bt_undated, day("2199-01-01")));
}

#[test]
fn the_closure_day_is_the_local_one() {
    // 20:00 UTC on 21 November is 22 November in Almaty (UTC+5).
    let kz = shipped("kz");
    let late = case(
        "kz",
        "closed",
        Some("2026-11-21T20:00:00"),
        json!({"child.date_of_birth": "2000-01-01"}),
    );
    let a = retention::assess_case(&kz, &late, day("2026-11-21")).unwrap();
    assert_eq!(a.retain_until, Some(day("2026-11-22")));
    assert_eq!(a.status, Status::Keep);
}

#[test]
fn retention_mistakes_are_reported_with_their_pointer() {
    let set = casesync::forms::definitions::shipped();
    let vocabulary = Vocabulary::of(&set);
    let mut document: Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("form-definitions/kz/programme.json"),
        )
        .unwrap(),
    )
    .unwrap();
    document["retention"] = json!({
        "rules": [
            {"until": {"birthday": {"fact": "child.date_of_brith", "years": 0}},
             "basis": "", "source": "8.5.5"},
            {"until": {"date": {"fact": "child.sex"}}, "basis": "b", "source": "s"}
        ],
        "then": "purge",
        "unknown": "kept",
        "source": "8.5.5"
    });
    let problems = programmes::compile(&document, &vocabulary).unwrap_err();
    for expected in [
        "/retention/then",
        "/retention/rules/0/until/birthday/years",
        "/retention/rules/0/until/birthday/fact: unknown fact",
        "/retention/rules/0/basis",
        "/retention/rules/1/until/date/fact: is not a date fact",
    ] {
        assert!(
            problems.iter().any(|p| p.starts_with(expected)),
            "{expected} not in {problems:#?}"
        );
    }
}

// ---------------------------------------------------------------------------
// Closed cases through the real submission path, and the report
// ---------------------------------------------------------------------------

/// A KZ referral (received 2 March 2026) of `name`, born `dob`.
fn kz_referral(phone: &Phone, name: &str, dob: &str) -> String {
    let case_id = uuid::Uuid::new_v4().to_string();
    let data = referral(&case_id).child(name).born(dob).data();
    submit(phone, "kz.referral", &case_id, data);
    case_id
}

/// The Manager's Annex E closure, on 15 September 2026 (the fixture's day).
fn kz_close(manager: &Phone, case_id: &str) {
    submit(
        manager,
        "kz.case_closure",
        case_id,
        fixture("kz.case_closure"),
    );
}

/// A BT registration (3 March 2026) and its D-11 closure (20 July 2026)
/// recording `retain_until`; approved by the supervisor when `approve`.
fn bt_closed(
    app: &TestApp,
    worker: &Phone,
    supervisor: &str,
    name: &str,
    retain_until: &str,
    approve: bool,
) -> String {
    let case_id = uuid::Uuid::new_v4().to_string();
    let mut registration = fixture("bt.registration");
    registration["child"]["child_name"] = json!(name);
    submit(worker, "bt.registration", &case_id, registration);
    let mut closure = fixture("bt.case_closure");
    closure["arrangements"]["retain_until"] = json!(retain_until);
    submit(worker, "bt.case_closure", &case_id, closure);
    if approve {
        let res = app.post(
            &format!("/api/v1/cases/{case_id}/approvals"),
            supervisor,
            json!({ "subject": "closure", "decision": "approved",
                    "occurred_at": "2026-07-21T09:00:00+06:00" }),
        );
        assert_eq!(res.status, 200, "{}", res.text);
    }
    case_id
}

/// `casesync retention report ARGS`: standard output and standard error.
fn report(app: &TestApp, args: &[&str]) -> (String, String) {
    let out = app
        .shell()
        .args(["retention", "report"])
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stdout}{stderr}");
    (stdout, stderr)
}

/// CSV rows by case number, each as header → value.
fn rows_of(csv_text: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut reader = csv::Reader::from_reader(csv_text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_string)
        .collect();
    assert_eq!(header, retention::CSV_HEADER);
    reader
        .records()
        .map(|r| {
            let row: BTreeMap<String, String> = header
                .iter()
                .cloned()
                .zip(r.unwrap().iter().map(str::to_string))
                .collect();
            (row["case_number"].clone(), row)
        })
        .collect()
}

/// The line of the summary on standard error (the log is JSON lines).
fn summary_line(stderr: &str) -> &str {
    stderr
        .lines()
        .find(|l| l.contains("due for archiving"))
        .unwrap_or_else(|| panic!("no summary in {stderr}"))
}

#[test]
fn closed_files_are_reported_with_their_retention_and_nothing_is_deleted() {
    let app = TestApp::spawn();
    let admin = app.admin_token();
    let (_, kz_worker) = app.user(&admin, "aigerim", "field_worker", &["KZ-CAM-ALA"]);
    let (_, kz_manager) = app.user(&admin, "manager", "coordinator", &["KZ-CAM-ALA"]);
    let (_, bt_worker) = app.user(&admin, "karma", "field_worker", &["BT-NCWC"]);
    let (_, bt_supervisor) = app.user(&admin, "pema", "coordinator", &["BT-NCWC"]);
    let worker = phone_for(&app, &kz_worker, "kz");
    let manager = phone_for(&app, &kz_manager, "kz");
    let bt = phone_for(&app, &bt_worker, "bt");

    // A child of 10, closed: kept until her 18th birthday.
    let ten = kz_referral(&worker, "Aida Serikova", "2015-12-01");
    kz_close(&manager, &ten);
    // A child of 17 at closure, 18 on 20 April 2027, before the as-of day.
    let grown = kz_referral(&worker, "Timur Aliyev", "2009-04-20");
    kz_close(&manager, &grown);
    // Date of birth not known: kept, and the report says why.
    let unknown = kz_referral(&worker, "Child Without Papers", "unknown");
    kz_close(&manager, &unknown);
    // Open: never listed, however old the child.
    let open = kz_referral(&worker, "Still Open", "2000-01-01");
    // BT: closed with a D-11 retain-until date; and one whose closure
    // awaits the supervisor (not closed yet: not listed).
    let bt_case = bt_closed(
        &app,
        &bt,
        &bt_supervisor,
        "Sonam Choden",
        "2032-05-14",
        true,
    );
    let bt_pending = bt_closed(&app, &bt, &bt_supervisor, "Pema Lhamo", "2030-01-01", false);

    let number = |token: &str, id: &str| -> String {
        let case = app.case(token, id);
        case["number"].as_str().unwrap().to_string()
    };
    for id in [&ten, &grown, &unknown] {
        assert_eq!(app.case(&kz_manager, id)["state"], "closed");
    }
    assert_eq!(app.case(&bt_supervisor, &bt_case)["state"], "closed");
    assert_eq!(
        app.case(&bt_supervisor, &bt_pending)["state"],
        "closure_awaiting_approval"
    );
    let (n_ten, n_grown, n_unknown, n_open) = (
        number(&kz_manager, &ten),
        number(&kz_manager, &grown),
        number(&kz_manager, &unknown),
        number(&kz_manager, &open),
    );
    let (n_bt, n_bt_pending) = (
        number(&bt_supervisor, &bt_case),
        number(&bt_supervisor, &bt_pending),
    );

    // Both programmes, as of 1 June 2027, to standard output.
    let (stdout, stderr) = report(&app, &["--as-of", "2027-06-01"]);
    let listed = rows_of(&stdout);
    assert_eq!(listed.len(), 4, "{stdout}");
    for (name, n) in [("open", &n_open), ("awaiting approval", &n_bt_pending)] {
        assert!(
            !listed.contains_key(n),
            "the {name} case is listed: {stdout}"
        );
    }
    let kept = &listed[&n_ten];
    assert_eq!(kept["programme"], "kz");
    assert_eq!(kept["site_code"], "KZ-CAM-ALA");
    assert_eq!(kept["closed_on"], "2026-09-15");
    assert_eq!(kept["retain_until"], "2033-12-01");
    assert_eq!(kept["basis"], "kz F7: 18th birthday");
    assert_eq!(kept["status"], "keep");
    let due = &listed[&n_grown];
    assert_eq!(due["retain_until"], "2027-04-20");
    assert_eq!(due["status"], "due_for_archiving");
    let unknown_row = &listed[&n_unknown];
    assert_eq!(unknown_row["retain_until"], "");
    assert_eq!(unknown_row["status"], "unknown");
    assert!(
        unknown_row["basis"].contains("no date of birth"),
        "{unknown_row:?}"
    );
    let bt_row = &listed[&n_bt];
    assert_eq!(bt_row["programme"], "bt");
    assert_eq!(bt_row["site_code"], "BT-NCWC");
    assert_eq!(bt_row["closed_on"], "2026-07-21");
    assert_eq!(bt_row["retain_until"], "2032-05-14");
    assert_eq!(bt_row["basis"], "bt D-11 retain_until");
    assert_eq!(bt_row["status"], "keep");
    assert_eq!(
        summary_line(&stderr),
        "2 kept, 1 due for archiving, 1 unknown (kept)"
    );
    // Case numbers only: no child's name anywhere.
    for name in ["Aida", "Timur", "Papers", "Sonam", "Pema"] {
        assert!(!stdout.contains(name) && !stderr.contains(name), "{name}");
    }

    // BT only, on its retain-until day, to a file: due from that day on.
    let file = app.data_dir().join("retention-bt.csv");
    let file_arg = file.to_str().unwrap();
    let (stdout, stderr) = report(
        &app,
        &[
            "--programme",
            "bt",
            "--as-of",
            "2032-05-14",
            "--out",
            file_arg,
        ],
    );
    assert_eq!(stdout, "");
    let written = std::fs::read_to_string(&file).unwrap();
    let listed = rows_of(&written);
    assert_eq!(listed.keys().collect::<Vec<_>>(), [&n_bt]);
    assert_eq!(listed[&n_bt]["status"], "due_for_archiving");
    assert_eq!(
        summary_line(&stderr),
        "0 kept, 1 due for archiving, 0 unknown (kept)"
    );
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // A day before the 18th birthday the file is still kept.
    let (stdout, _) = report(&app, &["--programme", "kz", "--as-of", "2027-04-19"]);
    assert_eq!(rows_of(&stdout)[&n_grown]["status"], "keep");

    // Every run is audited, by what it covered; and nothing was deleted.
    let audited: Vec<(Option<String>, Option<String>)> = audit_log::table
        .filter(audit_log::action.eq("retention_reported"))
        .order(audit_log::id)
        .select((audit_log::object_id, audit_log::detail))
        .load(&mut app.conn())
        .unwrap();
    assert_eq!(audited.len(), 3, "{audited:?}");
    assert_eq!(audited[0].0.as_deref(), Some("all"));
    assert_eq!(
        audited[1].1.as_deref(),
        Some("programme bt, as of 2032-05-14; cli")
    );
    let remaining: i64 = cases::table.count().get_result(&mut app.conn()).unwrap();
    assert_eq!(remaining, 6);
    // And may_purge agrees with the report on the stored cases.
    let stored: Vec<Case> = cases::table
        .select(Case::as_select())
        .load(&mut app.conn())
        .unwrap();
    let on = day("2027-06-01");
    let purgeable: Vec<&str> = stored
        .iter()
        .filter(|c| may_purge(c, on))
        .map(|c| c.id.as_str())
        .collect();
    assert_eq!(purgeable, [grown.as_str()]);

    // Over HTTP: coordinators see their sites only; field workers nothing,
    // admins nothing either (a KZ retain-until date is a birthday).
    app.get("/api/v1/retention", &kz_worker)
        .assert_problem(403, "forbidden");
    let kz_json = app.get("/api/v1/retention?as_of=2027-06-01", &kz_manager);
    assert_eq!(kz_json.status, 200, "{}", kz_json.text);
    assert_eq!(kz_json.header("content-type"), Some("application/json"));
    let items = kz_json.body["items"].as_array().unwrap();
    let mut numbers: Vec<&str> = items
        .iter()
        .map(|i| i["case_number"].as_str().unwrap())
        .collect();
    numbers.sort_unstable();
    let mut kz_numbers = vec![n_ten.as_str(), n_grown.as_str(), n_unknown.as_str()];
    kz_numbers.sort_unstable();
    assert_eq!(numbers, kz_numbers);
    let grown_item = items
        .iter()
        .find(|i| i["case_id"] == grown.as_str())
        .unwrap();
    assert_eq!(grown_item["retain_until"], "2027-04-20");
    assert_eq!(grown_item["status"], "due_for_archiving");
    assert_eq!(
        kz_json.body["summary"],
        json!({"kept": 1, "due": 1, "unknown": 1})
    );
    let bt_csv = app.get(
        "/api/v1/retention?format=csv&as_of=2027-06-01",
        &bt_supervisor,
    );
    assert_eq!(bt_csv.status, 200, "{}", bt_csv.text);
    assert_eq!(rows_of(&bt_csv.text).keys().collect::<Vec<_>>(), [&n_bt]);
    app.get("/api/v1/retention?format=csv&as_of=2027-06-01", &admin)
        .assert_problem(403, "forbidden");
    let bt_only = app.get(
        "/api/v1/retention?programme=bt&as_of=2032-05-14",
        &bt_supervisor,
    );
    assert_eq!(bt_only.body["items"][0]["status"], "due_for_archiving");
    assert_eq!(bt_only.body["items"].as_array().unwrap().len(), 1);
    let none_of_theirs = app.get("/api/v1/retention?programme=bt", &kz_manager);
    assert_eq!(none_of_theirs.body["items"], json!([]));
    app.get("/api/v1/retention?programme=xx", &kz_manager)
        .assert_problem(422, "validation");
    let http_audited: i64 = audit_log::table
        .filter(audit_log::action.eq("retention_reported"))
        .filter(audit_log::actor_id.not_like("os:%"))
        .count()
        .get_result(&mut app.conn())
        .unwrap();
    assert_eq!(http_audited, 4);
    // The shell's reports name the operating-system user (#15 item 5).
    let shell_audited: i64 = audit_log::table
        .filter(audit_log::action.eq("retention_reported"))
        .filter(audit_log::actor_id.like("os:%"))
        .count()
        .get_result(&mut app.conn())
        .unwrap();
    assert_eq!(shell_audited, 3);
    let refused: i64 = audit_log::table
        .filter(audit_log::action.eq("access_refused"))
        .count()
        .get_result(&mut app.conn())
        .unwrap();
    assert_eq!(refused, 2, "the worker's and the admin's refusals");
}

#[test]
fn an_unknown_programme_is_refused() {
    let app = TestApp::spawn();
    let out = app
        .shell()
        .args(["retention", "report", "--programme", "xx"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("kz or bt"));
}

#[test]
fn the_report_pages_through_many_cases_listing_each_once() {
    let app = TestApp::spawn();
    let admin = app.admin_token();
    let site = app.site_id(&admin, "KZ-CAM-ALA");
    // Arranged in the database: a thousand closed cases through the API
    // would take minutes. Seven share each creation time, so pages break
    // inside a run of equal times (the id decides there).
    let base = day("2026-01-01").and_hms_opt(0, 0, 0).unwrap();
    let mut expected = (0u64, 0u64, 0u64);
    let rows: Vec<Case> = (0..1203)
        .map(|i| {
            let closed = i % 6 != 5;
            let dob = match i % 3 {
                0 => json!("unknown"),
                1 => json!("2008-06-01"),
                _ => json!("2016-06-01"),
            };
            if closed {
                match i % 3 {
                    0 => expected.2 += 1,
                    1 => expected.1 += 1,
                    _ => expected.0 += 1,
                }
            }
            let mut c = case(
                "kz",
                if closed {
                    "closed"
                } else {
                    "social_assessment"
                },
                closed.then_some("2026-09-15T04:00:00"),
                json!({ "child.date_of_birth": dob }),
            );
            c.id = uuid::Uuid::new_v4().to_string();
            c.site_id = site.clone();
            c.number = Some(format!("{}", i + 1));
            c.created_at = base + chrono::Duration::seconds(i / 7);
            c
        })
        .collect();
    app.conn()
        .transaction(|conn| {
            for row in &rows {
                diesel::insert_into(cases::table)
                    .values(row)
                    .execute(conn)?;
            }
            Ok::<_, diesel::result::Error>(())
        })
        .unwrap();

    let (stdout, stderr) = report(&app, &["--programme", "kz", "--as-of", "2027-01-01"]);
    let lines = stdout.lines().count() - 1;
    let listed = rows_of(&stdout);
    assert_eq!(lines, listed.len(), "a case listed twice");
    let closed: Vec<&Case> = rows.iter().filter(|c| c.closed_at.is_some()).collect();
    assert_eq!(listed.len(), closed.len());
    for c in &closed {
        assert!(listed.contains_key(c.number.as_ref().unwrap()));
    }
    assert_eq!(
        summary_line(&stderr),
        format!(
            "{} kept, {} due for archiving, {} unknown (kept)",
            expected.0, expected.1, expected.2
        )
    );
}
