//! What clients and analysts read must not change unnoticed: the
//! problem+json body of each kind of error a client can be answered, the
//! CSV header row of every shipped form's export (each programme,
//! identifying and de-identified) and of the case export, and the
//! generated documents (docs/forms-table.md, docs/facts.md; docs/field-
//! classes.md is held by the library's `field_classes` test).
//!
//! Snapshots live in `tests/it/snapshots/`. A changed or missing snapshot
//! fails the test; `INSTA_UPDATE=no` (set by .ci/run, and by insta itself
//! when `CI` is set) keeps a run from writing new ones. After a deliberate
//! change: `INSTA_UPDATE=always cargo test --test it snapshots::` (or
//! `cargo insta review`), then read the diff and commit the .snap files.

use crate::common;

use casesync::error::AppError;
use casesync::forms::definitions;
use common::bin::BIN;
use common::phone::{envelope, fixture, phone};
use common::TestApp;
use serde_json::{json, Value};

/// `text` with every UUID (ids of users, cases, submissions, requests)
/// replaced by `[id]`, so a snapshot holds only what does not vary.
fn redact_ids(text: &str) -> String {
    fn is_uuid(s: &[u8]) -> bool {
        s.len() == 36
            && s.iter().enumerate().all(|(i, b)| match i {
                8 | 13 | 18 | 23 => *b == b'-',
                _ => b.is_ascii_hexdigit(),
            })
    }
    let bytes = text.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < bytes.len() {
        if i + 36 <= bytes.len() && is_uuid(&bytes[i..i + 36]) {
            out.push_str("[id]");
            i += 36;
        } else {
            let c = text[i..].chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// A problem body as a snapshot: pretty JSON, ids redacted.
fn problem(res: &common::Response, status: u16, kind: &str) -> String {
    let body = res.assert_problem(status, kind);
    redact_ids(&serde_json::to_string_pretty(body).unwrap())
}

#[test]
fn problem_bodies_of_each_kind_a_client_can_get() {
    let app = TestApp::spawn_with(|s| {
        s.login.slow_after = 1;
        s.login.lock_after = 2;
        s.login.lock_secs = 600;
    });
    let first = app.token_for("admin", &app.initial_admin_password());
    insta::assert_snapshot!(
        "password_change_required",
        problem(
            &app.get("/api/v1/users", &first),
            403,
            "password_change_required"
        )
    );
    let staff = app.staff().build();
    let admin = &staff.admin;

    insta::assert_snapshot!(
        "bad_request",
        problem(
            &app.raw(
                "POST",
                "/api/v1/users",
                Some(admin),
                "application/json",
                b"{"
            ),
            400,
            "bad_request"
        )
    );
    insta::assert_snapshot!(
        "unauthorized",
        problem(
            &app.request("GET", "/api/v1/me", None, None),
            401,
            "unauthorized"
        )
    );
    insta::assert_snapshot!(
        "forbidden",
        problem(&app.get("/api/v1/users", &staff.worker), 403, "forbidden")
    );
    let missing_case = uuid::Uuid::new_v4();
    insta::assert_snapshot!(
        "not_found",
        problem(
            &app.get(&format!("/api/v1/cases/{missing_case}"), &staff.coordinator),
            404,
            "not_found"
        )
    );
    insta::assert_snapshot!(
        "method_not_allowed",
        problem(
            &app.request("PUT", "/api/v1/users", Some(admin), Some(&json!({}))),
            405,
            "method_not_allowed"
        )
    );
    insta::assert_snapshot!(
        "conflict",
        problem(
            &app.post(
                "/api/v1/users",
                admin,
                json!({ "username": "aigerim", "role": "viewer" }),
            ),
            409,
            "conflict"
        )
    );
    let over = app.settings.max_body_bytes + 1;
    let big = json!({ "username": "newbie", "role": "viewer", "display_name": "x".repeat(over) });
    insta::assert_snapshot!(
        "payload_too_large",
        problem(
            &app.post("/api/v1/users", admin, big),
            413,
            "payload_too_large"
        )
    );
    insta::assert_snapshot!(
        "unsupported_media_type",
        problem(
            &app.raw("POST", "/api/v1/users", Some(admin), "text/plain", b"x"),
            415,
            "unsupported_media_type"
        )
    );
    insta::assert_snapshot!(
        "validation",
        problem(
            &app.post(
                "/api/v1/users",
                admin,
                json!({ "username": "newbie", "role": "viewer", "site_ids": ["no-such-site"] }),
            ),
            422,
            "validation"
        )
    );
    // A submission whose data does not fit its form: the problems found,
    // at most one per question, and how many more.
    let mut data = fixture("kz.referral");
    data["child"]["child_sex"] = json!("robot");
    data["receipt"]["received_at"] = json!("yesterday");
    let phone = phone(&app, &staff.worker);
    let res = phone.send(&envelope(&uuid::Uuid::new_v4().to_string(), data));
    insta::assert_snapshot!("invalid_data", problem(&res, 422, "validation"));

    // Past login.lock_after failures of one account from one address.
    for _ in 0..2 {
        app.login("aigerim", "not the password");
    }
    let locked = app.login("aigerim", "not the password");
    assert!(locked.header("retry-after").is_some());
    // The seconds left of the lock vary with the clock: `[n]`.
    let mut body = locked.assert_problem(429, "too_many_requests").clone();
    let detail = body["detail"].as_str().unwrap();
    let digits: String = detail.chars().filter(char::is_ascii_digit).collect();
    body["detail"] = json!(detail.replacen(&digits, "[n]", 1));
    insta::assert_snapshot!(
        "too_many_requests",
        serde_json::to_string_pretty(&body).unwrap()
    );
}

/// The errors no request can bring about at will (a full CPU pool, a
/// database gone, a bug) keep their causes to the log; their bodies are
/// these.
#[test]
fn problem_bodies_of_errors_from_the_servers_side() {
    let bodies: Vec<(&str, Value)> = vec![
        (
            "server_busy",
            AppError::Busy {
                detail: "every worker for this kind of work is busy and the queue is full".into(),
                retry_after_secs: 2,
            }
            .problem(),
        ),
        (
            "unavailable",
            AppError::Unavailable("database pool: timed out".into()).problem(),
        ),
        (
            "internal",
            AppError::internal("database: disk I/O error at /var/lib/x").problem(),
        ),
    ];
    for (name, body) in bodies {
        insta::assert_snapshot!(name, serde_json::to_string_pretty(&body).unwrap());
    }
}

/// The terms of an identifying export (a disclosure to a court), by
/// programme: each has its own legal bases.
const IDENTIFYING_KZ: &str = "identifying=true&legal_basis=required_by_law\
    &provision=Code%20on%20Marriage%20art.%2076&recipient=Almaty%20district%20court\
    &purpose=court%20report%20for%20a%20case";
const IDENTIFYING_BT: &str = "identifying=true&legal_basis=court_order\
    &provision=Order%2012%2F2026%20of%20the%20Thimphu%20court&recipient=Thimphu%20district%20court\
    &purpose=court%20report%20for%20a%20case";

/// The header row of a CSV export, one column a line.
fn header_row(res: &common::Response) -> String {
    assert_eq!(res.status, 200, "{}", res.text);
    let text = res.text.trim_start_matches('\u{feff}');
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    reader
        .headers()
        .unwrap()
        .iter()
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn csv_headers_of_every_shipped_form_and_the_case_export() {
    let app = TestApp::spawn();
    let kz = app.staff().analyst().build();
    let bt = app.staff().bt().analyst().by(&kz.admin).build();
    let mut forms: Vec<String> = definitions::shipped()
        .forms
        .iter()
        .map(|f| f.document["x-form"]["id"].as_str().unwrap().to_string())
        .collect();
    forms.sort();
    forms.dedup();
    assert!(forms.iter().any(|f| f.starts_with("kz.")));
    assert!(forms.iter().any(|f| f.starts_with("bt.")));
    for programme in ["kz", "bt"] {
        let (staff, identifying) = if programme == "kz" {
            (&kz, IDENTIFYING_KZ)
        } else {
            (&bt, IDENTIFYING_BT)
        };
        for (mode, query, token) in [
            ("deidentified", String::new(), &staff.analyst),
            ("identifying", format!("?{identifying}"), &staff.coordinator),
        ] {
            let mut shown = Vec::new();
            for form in forms
                .iter()
                .filter(|f| f.starts_with(&format!("{programme}.")))
            {
                let res = app.get(&format!("/api/v1/exports/forms/{form}.csv{query}"), token);
                shown.push(format!("## {form}\n{}", header_row(&res)));
            }
            let cases = app.get(
                &format!(
                    "/api/v1/exports/cases.csv?programme={programme}{}",
                    query.replacen('?', "&", 1)
                ),
                token,
            );
            shown.push(format!("## cases.csv\n{}", header_row(&cases)));
            insta::assert_snapshot!(
                format!("csv_headers_{programme}_{mode}"),
                shown.join("\n\n")
            );
        }
    }
}

/// A generated page is its title and note, then what its command prints.
fn assert_generated(page: &str, args: &[&str]) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let written = std::fs::read_to_string(root.join(page)).unwrap();
    // Commands that read only the shipped definitions: no server, no database.
    let dir = common::private_tempdir();
    let out = std::process::Command::new(BIN)
        .current_dir(dir.path())
        .env_remove("CASESYNC_CONFIG")
        .env_remove("CASESYNC_DATABASE_URL")
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "casesync {args:?}: {out:?}");
    let printed = String::from_utf8(out.stdout).unwrap();
    assert!(
        !printed.trim().is_empty(),
        "casesync {args:?} printed nothing"
    );
    let note = written.strip_suffix(&printed).unwrap_or_else(|| {
        panic!(
            "{page} is stale: it must end with what `casesync {}` prints; regenerate it",
            args.join(" ")
        )
    });
    assert!(note.starts_with("# "), "{page} starts with its title");
    assert!(
        note.contains(&format!("`casesync {}`", args.join(" "))),
        "{page} names the command that generates it"
    );
}

#[test]
fn the_generated_docs_are_what_their_commands_print() {
    assert_generated(
        "docs/forms-table.md",
        &["forms", "list", "--shipped", "--markdown"],
    );
    assert_generated("docs/facts.md", &["forms", "facts"]);
}
