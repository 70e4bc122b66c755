//! The sync benchmark's fleet (#19 item 7, `scripts/bench-sync.sh`: "1,000
//! simulated phones (field workers with 50 open cases each, 50,000
//! cases), each pulling `GET /sync` from its cursor"): `casesync seed
//! --workers N --in-turn --all-open --device-tokens FILE` gives every field
//! worker the same number of open cases and a device token, each token's
//! first sync carries exactly its worker's cases, and a follow-up on each
//! of them (`casesync collect fill --each-case`) reaches that phone, and
//! only it, at its next pull from its cursor.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use casesync::db::schema::{audit_log, cases, users};
use common::bin::{cli, BIN};
use common::{private_tempdir, test_settings, Shared, TestApp, TestDb};
use diesel::prelude::*;
use serde_json::Value;

fn collect(phone: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("collect")
        .arg("--dir")
        .arg(phone)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn said(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn case_ids(feed: &Value) -> BTreeSet<String> {
    feed["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn seeded_workers_hold_the_same_open_cases_and_their_phones_sync_them() {
    let shared = Arc::new(Shared {
        data_dir: private_tempdir(),
        db: TestDb::new(),
    });
    let work = tempfile::tempdir().unwrap();
    let tokens_file = work.path().join("phones.tokens");
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/forms");
    // Four workers over the three KZ sites (2, 1, 1), three cases each,
    // several forms per case and none closed.
    cli(
        work.path(),
        &shared.db,
        &[
            "--data-dir",
            shared.data_dir.path().to_str().unwrap(),
            "seed",
            "--programme",
            "kz",
            "--cases",
            "12",
            "--forms-per-case",
            "4",
            "--workers",
            "4",
            "--in-turn",
            "--all-open",
            "--device-tokens",
            tokens_file.to_str().unwrap(),
            "--fixtures",
            fixtures,
        ],
        None,
    );

    // Only its owner may read the tokens: each is as good as a password.
    let mode = std::fs::metadata(&tokens_file)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let tokens: Vec<(String, String)> = std::fs::read_to_string(&tokens_file)
        .unwrap()
        .lines()
        .map(|l| {
            let (user, token) = l.split_once(' ').unwrap();
            (user.to_string(), token.to_string())
        })
        .collect();
    // Every worker once, spread over the three sites: 2, 1 and 1.
    let mut per_site: BTreeMap<&str, usize> = BTreeMap::new();
    for (user, _) in &tokens {
        let site = user.strip_prefix("seed-worker-").unwrap();
        *per_site
            .entry(&site[..site.rfind('-').unwrap()])
            .or_default() += 1;
    }
    let mut spread: Vec<usize> = per_site.values().copied().collect();
    spread.sort();
    assert_eq!(spread, [1, 1, 2], "{tokens:?}");
    assert_eq!(tokens.len(), 4, "{tokens:?}");

    let settings = test_settings(&shared);
    let app = TestApp::start(shared.clone(), settings);
    let mut conn = app.conn();
    // Every case open, three to each worker.
    let rows: Vec<(String, Option<String>, bool)> = cases::table
        .inner_join(users::table.on(cases::assigned_to.eq(users::id.nullable())))
        .select((cases::id, cases::assigned_to, cases::closed_at.is_null()))
        .load(&mut conn)
        .unwrap();
    assert_eq!(rows.len(), 12);
    assert!(
        rows.iter().all(|(_, _, open)| *open),
        "a seeded case is closed"
    );
    let mut held: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (id, who, _) in rows {
        held.entry(who.unwrap()).or_default().insert(id);
    }
    assert_eq!(held.len(), 4, "{held:?}");
    assert!(held.values().all(|c| c.len() == 3), "{held:?}");

    // Each phone's first sync: its worker's three cases, no one else's.
    let mut cursors = Vec::new();
    for (username, token) in &tokens {
        let user_id: String = users::table
            .filter(users::username.eq(username))
            .select(users::id)
            .first(&mut conn)
            .unwrap();
        let feed = app.get("/api/v1/sync", token);
        assert_eq!(feed.status, 200, "{}", feed.text);
        assert_eq!(feed.body["full"], true);
        assert_eq!(case_ids(&feed.body), held[&user_id], "{username}");
        cursors.push(feed.body["cursor"].as_str().unwrap().to_string());
    }
    // The first worker's collector signs in with its device token and
    // follows up each of its cases.
    let phone = work.path().join("phone");
    let token_file = work.path().join("token");
    std::fs::write(&token_file, &tokens[0].1).unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let follow_up = format!("{fixtures}/kz.communication/valid.json");
    let early = collect(
        &phone,
        &["fill", "kz.communication", &follow_up, "--each-case"],
    );
    assert!(!early.status.success());
    let server = app.url("");
    let login = collect(
        &phone,
        &[
            "login",
            "--server",
            &server,
            "--token-file",
            token_file.to_str().unwrap(),
        ],
    );
    assert!(login.status.success(), "{}", said(&login));
    let before_pull = collect(
        &phone,
        &["fill", "kz.communication", &follow_up, "--each-case"],
    );
    assert!(!before_pull.status.success());
    assert!(
        said(&before_pull).contains("collect pull"),
        "{}",
        said(&before_pull)
    );
    let pull = collect(&phone, &["pull"]);
    assert!(pull.status.success(), "{}", said(&pull));
    let referral = format!("{fixtures}/kz.referral/valid.json");
    let opens = collect(&phone, &["fill", "kz.referral", &referral, "--each-case"]);
    assert!(!opens.status.success());
    assert!(
        said(&opens).contains("does not follow up a case"),
        "{}",
        said(&opens)
    );
    let fill = collect(
        &phone,
        &["fill", "kz.communication", &follow_up, "--each-case"],
    );
    assert!(fill.status.success(), "{}", said(&fill));
    assert!(
        said(&fill).contains("queued 3 submissions"),
        "{}",
        said(&fill)
    );
    let push = collect(&phone, &["push", "--batch", "1"]);
    assert!(push.status.success(), "{}", said(&push));
    // Each sync that carried cases is audited (four phones, then the
    // collector's pull); the committer appends a sync's row with its next
    // group, so a submission acknowledged after the syncs has them on disk.
    let synced: i64 = audit_log::table
        .filter(audit_log::action.eq("cases_synced"))
        .count()
        .get_result(&mut conn)
        .unwrap();
    assert_eq!(synced, 5, "a sync that carries cases is audited");

    // Its next pull from its cursor: the three cases, each a version on;
    // the other phones hear nothing.
    let first_user: String = users::table
        .filter(users::username.eq(&tokens[0].0))
        .select(users::id)
        .first(&mut conn)
        .unwrap();
    for (k, (username, token)) in tokens.iter().enumerate() {
        let feed = app.get(&format!("/api/v1/sync?cursor={}", cursors[k]), token);
        assert_eq!(feed.status, 200, "{}", feed.text);
        assert_eq!(feed.body["full"], false);
        if k == 0 {
            assert_eq!(case_ids(&feed.body), held[&first_user], "{username}");
            assert!(feed.body["cases"]
                .as_array()
                .unwrap()
                .iter()
                .all(|c| c["version"].as_i64().unwrap() > 1));
        } else {
            assert!(case_ids(&feed.body).is_empty(), "{username}: {}", feed.text);
        }
    }
}

/// A pull from a cursor reads a user's changes and everyone's through the
/// (user, seq) index, two reads merged (#19 item 7): pages of any size
/// still give every change for the user or for everyone exactly once, in
/// sequence order, and nobody else's.
#[test]
fn pages_of_changes_merge_the_users_and_everyones_in_order() {
    use casesync::changes::{changes_for, latest, record_change, ChangeKind};
    use casesync::db::write_tx;
    let app = TestApp::spawn();
    let mut conn = app.conn();
    let start = latest(&mut conn).unwrap();
    // Interleaved: for "a", for "b", for everyone; runs of each.
    let plan: Vec<Option<&str>> = vec![
        Some("a"),
        Some("b"),
        None,
        Some("a"),
        Some("a"),
        Some("b"),
        Some("b"),
        Some("b"),
        None,
        None,
        Some("a"),
        Some("b"),
        None,
        Some("a"),
    ];
    let mut expected = Vec::new();
    for (k, user) in plan.iter().enumerate() {
        let object = format!("object-{k}");
        let seq = write_tx(&mut conn, |c| {
            record_change(c, ChangeKind::Case, &object, *user)
        })
        .unwrap();
        if *user != Some("b") {
            expected.push((seq, object));
        }
    }
    let upto = latest(&mut conn).unwrap();
    for limit in [1, 2, 3, 5, 100] {
        let (mut after, mut got) = (start, Vec::new());
        loop {
            let page = changes_for(&mut conn, "a", after, upto, limit).unwrap();
            assert!(page.len() as i64 <= limit);
            got.extend(page.iter().map(|(seq, _, object)| (*seq, object.clone())));
            match page.last() {
                Some((seq, _, _)) if page.len() as i64 == limit => after = *seq,
                _ => break,
            }
        }
        assert_eq!(got, expected, "pages of {limit}");
    }
}
