//! The console's audit pages (`/audit`, docs/console.md) over real HTTP:
//! only admins (as `GET /audit`); the rows of a filter are the API's for
//! the same filter, a page at a time; a filter the API refuses says why;
//! the CSV is the API's; the chain's state is `audit verify`'s, intact or
//! where it breaks. (The journey in Chromium is tests/it/browser_people.rs.)

use crate::common;
use crate::console::Browser;

use casesync::db::schema::audit_log;
use common::{Response, TestApp};
use diesel::prelude::*;

/// The positions of the rows a page shows, in its order.
fn seqs_on(page: &Response) -> Vec<i64> {
    let Some(start) = page.text.find("<table class=\"audit\">") else {
        return Vec::new();
    };
    page.text[start..]
        .split("<tr>\n  <td>")
        .skip(1)
        .map(|rest| rest.split('<').next().unwrap().parse().unwrap())
        .collect()
}

fn seqs_of(api: &Response) -> Vec<i64> {
    assert_eq!(api.status, 200, "{}", api.text);
    api.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["seq"].as_i64().unwrap())
        .collect()
}

#[test]
fn only_admins_read_the_log_and_its_filters_are_the_apis() {
    let app = TestApp::spawn();
    let staff = app.staff().analyst().build();
    let admin = &staff.admin;

    // Every other role: 403 from the page, its CSV and the chain, as the
    // API answers them; no header link.
    for token in [&staff.coordinator, &staff.worker, &staff.analyst] {
        assert_eq!(app.get("/api/v1/audit", token).status, 403);
        let mut browser = Browser::with_session(&app, token);
        assert_eq!(browser.get("/audit").status, 403);
        assert_eq!(browser.get("/audit.csv").status, 403);
        assert_eq!(browser.get("/audit/chain").status, 403);
        assert!(!browser.get("/today").text.contains("href=\"/audit\""));
    }

    // An action: the API's rows for it, and one audit_read row per read.
    let mut root = Browser::with_session(&app, admin);
    let api = seqs_of(&app.get("/api/v1/audit?action=user_created&limit=50", admin));
    assert!(api.len() >= 3, "the staff made");
    let reads = app.audit_count("audit_read");
    let page = root.get("/audit?action=user_created");
    assert_eq!(page.status, 200, "{}", page.text);
    assert_eq!(seqs_on(&page), api);
    assert_eq!(app.audit_count("audit_read"), reads + 1);
    assert!(page.text.contains("<a href=\"/audit\">Audit</a>"));
    assert!(
        page.text.contains("value=\"user_created\""),
        "the filter kept"
    );

    // The actor by username, and a day range, each as the API has them.
    let today = chrono::Utc::now().date_naive();
    let query = format!("actor=manager&from={today}&to={today}");
    let page = root.get(&format!("/audit?{query}"));
    assert_eq!(page.status, 200, "{}", page.text);
    assert_eq!(
        seqs_on(&page),
        seqs_of(&app.get(&format!("/api/v1/audit?{query}&limit=50"), admin))
    );
    assert!(!seqs_on(&page).is_empty());
    let page = root.get("/audit?from=2000-01-01&to=2000-01-02");
    assert!(page.text.contains("No rows match."));

    // A case: object type and id.
    let query = "object_type=user&object_id=nobody";
    assert!(root
        .get(&format!("/audit?{query}"))
        .text
        .contains("No rows match."));

    // Filters the API refuses: why, in its words, and no rows.
    let unknown = root.get("/audit?actor=nobody-here");
    assert_eq!(unknown.status, 422, "{}", unknown.text);
    assert!(unknown
        .text
        .contains("Who: no user with username or id &#34;nobody-here&#34;"));
    let bad = root.get("/audit?from=yesterday");
    assert_eq!(bad.status, 400, "{}", bad.text);
    assert!(bad.text.contains("From (UTC day): a day (YYYY-MM-DD)"));
    assert!(seqs_on(&bad).is_empty());
    let backwards = root.get("/audit?from=2026-02-02&to=2026-02-01");
    assert_eq!(backwards.status, 400);
    assert!(backwards.text.contains("is before from"));
}

#[test]
fn the_log_pages_back_and_its_csv_is_the_apis() {
    let app = TestApp::spawn();
    let admin = app.admin_token();
    // 55 reads of the log, each one row.
    for _ in 0..55 {
        assert_eq!(app.get("/api/v1/audit?limit=1", &admin).status, 200);
    }
    let mut root = Browser::with_session(&app, &admin);
    let first = root.get("/audit?action=audit_read");
    let shown = seqs_on(&first);
    assert_eq!(shown.len(), 50);
    // The newest first, as the API's; a read's own row is written after
    // it reads, so the API's read after the page's starts with the page's.
    let all = seqs_of(&app.get("/api/v1/audit?action=audit_read&limit=500", &admin));
    assert_eq!(all.len(), 56);
    let all = &all[1..];
    assert_eq!(shown[..], all[..50]);
    let older = first
        .text
        .split("<a href=\"/audit?")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("an older page link")
        .replace("&#38;", "&");
    assert!(older.contains("action=audit_read") && older.contains("cursor="));
    let second = root.get(&format!("/audit?{older}"));
    assert_eq!(second.status, 200, "{}", second.text);
    assert_eq!(seqs_on(&second)[..], all[50..]);
    assert!(!second.text.contains("id=\"older\""), "the last page");

    // The CSV link is the API's export of the same filter, audited as it.
    assert!(first
        .text
        .contains("href=\"/audit.csv?action=audit_read\" download"));
    let exports = app.audit_count("audit_exported");
    let csv = root.get("/audit.csv?action=user_created");
    assert_eq!(csv.status, 200, "{}", csv.text);
    assert_eq!(app.audit_count("audit_exported"), exports + 1);
    assert!(csv.header("content-type").unwrap().starts_with("text/csv"));
    assert_eq!(
        csv.header("content-disposition"),
        Some("attachment; filename=\"audit.csv\"")
    );
    let api = app.get("/api/v1/exports/audit.csv?action=user_created", &admin);
    assert_eq!(api.status, 200);
    assert_eq!(csv.text, api.text);
    assert!(csv.text.starts_with("seq,occurred_at,actor_id"));
    let bad = root.get("/audit.csv?to=someday");
    assert_eq!(bad.status, 400);
    assert!(bad.text.contains("To (UTC day)"));
}

/// The page after its chain check, started in the background, has
/// finished (the check of a test's chain takes moments).
fn finished_check(root: &mut Browser) -> Response {
    for _ in 0..600 {
        let page = root.get("/audit/chain");
        assert_eq!(page.status, 200, "{}", page.text);
        if !page.text.contains("id=\"chain-running\"") {
            return page;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("the chain check never finished");
}

/// #18: the chain check walks every row, so it is not a page render: an
/// admin starts it (a form with its CSRF value, audited), the page shows
/// its progress, then the last result with its time; what it finds is
/// `audit verify`'s, intact or where it breaks.
#[test]
fn the_chain_status_is_audit_verifys() {
    let app = TestApp::spawn();
    let admin = app.admin_token();
    let mut root = Browser::with_session(&app, &admin);
    let page = root.get("/audit");
    assert!(page.text.contains("href=\"/audit/chain\""));
    let never = root.get("/audit/chain");
    assert_eq!(never.status, 200, "{}", never.text);
    assert!(
        never.text.contains("has not been checked"),
        "{}",
        never.text
    );
    assert!(never.text.contains("id=\"chain-start\""));

    // Without the form's CSRF value nothing starts.
    let forged = root.post("/audit/chain", &[]);
    assert_eq!(forged.status, 403, "{}", forged.text);
    assert_eq!(app.audit_count("audit_chain_check_started"), 0);

    let csrf = Browser::hidden(&never, "csrf");
    let started = root.post("/audit/chain", &[("csrf", &csrf)]);
    assert_eq!(started.status, 303, "{}", started.text);
    assert_eq!(app.audit_count("audit_chain_check_started"), 1);
    let chain = finished_check(&mut root);
    assert!(chain.text.contains("The chain is intact"), "{}", chain.text);
    assert!(chain.text.contains("Rows checked"));
    assert!(chain.text.contains("Last check"));
    assert!(chain.text.contains(" UTC"), "when it ran");

    // Someone edits a row in the database: the next check says which.
    let seq: i64 = audit_log::table
        .filter(audit_log::action.eq("login"))
        .select(audit_log::seq)
        .first::<Option<i64>>(&mut app.conn())
        .unwrap()
        .unwrap();
    diesel::update(audit_log::table.filter(audit_log::seq.eq(seq)))
        .set(audit_log::detail.eq("nothing to see"))
        .execute(&mut app.conn())
        .unwrap();
    let stale = root.get("/audit/chain");
    assert!(
        stale.text.contains("The chain is intact"),
        "the last result stands until a new check: {}",
        stale.text
    );
    let csrf = Browser::hidden(&stale, "csrf");
    assert_eq!(root.post("/audit/chain", &[("csrf", &csrf)]).status, 303);
    let broken = finished_check(&mut root);
    assert!(
        broken.text.contains("The chain is broken"),
        "{}",
        broken.text
    );
    assert!(
        broken.text.contains(&format!("seq {seq} (id ")),
        "{}",
        broken.text
    );
    assert!(broken
        .text
        .contains("the row does not match its hash; it was edited"));
    assert_eq!(app.audit_count("audit_chain_check_started"), 2);
}
