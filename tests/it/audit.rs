//! The audit trail is hash-chained: every row written through the server is
//! chained, `casesync audit verify` finds an edited, deleted or inserted
//! row and a cut tail, and admins (only) read and export it. The chain is
//! keyed (HMAC under data/audit.key): a database editor cannot re-hash the
//! rows after a deletion, and an anchor kept elsewhere finds a cut tail
//! whose head was moved back.

use crate::common;

use std::collections::BTreeSet;
use std::sync::Arc;

use casesync::audit::{self, Anchor, Problem, GENESIS};
use casesync::db::schema::{audit_head, audit_log};
use casesync::db::{self, DbConnection};
use common::{Shared, TestApp, TestDb, ADMIN_PASSWORD, USER_PASSWORD};
use diesel::prelude::*;

/// The chain's key from the app's data directory.
fn key(app: &TestApp) -> Option<audit::ChainKey> {
    casesync::server::audit_key(&app.settings).unwrap()
}

fn verify(app: &TestApp) -> audit::Verification {
    audit::verify(&mut app.conn(), key(app).as_ref(), None).unwrap()
}

/// Runs the binary with these arguments on the app's database: (passed, output).
fn run_cli(app: &TestApp, args: &[&str]) -> (bool, String) {
    let out = app.shell().args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// What someone with the database but not the key can compute: the plain
/// SHA-256 of a row as the unkeyed chain hashes it.
fn unkeyed_hash(row: &audit::AuditRow, prev_hash: &str, seq: i64) -> String {
    use sha2::Digest;
    let encoded = serde_json::to_vec(&(
        prev_hash,
        seq,
        row.occurred_at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
        &row.actor_id,
        &row.actor_role,
        &row.actor_sites,
        &row.action,
        &row.object_type,
        &row.object_id,
        &row.detail,
        &row.purpose,
        &row.request_id,
        &row.client_ip,
    ))
    .unwrap();
    hex::encode(sha2::Sha256::digest(&encoded))
}

/// Every row, in chain order.
fn chain(app: &TestApp) -> Vec<audit::AuditRow> {
    let mut rows = audit::recent(&mut app.conn(), 100_000).unwrap();
    rows.sort_by_key(|r| (r.seq, r.id));
    rows
}

/// Runs `casesync audit verify` against the app's database: (passed, output).
fn verify_cli(app: &TestApp) -> (bool, String) {
    run_cli(app, &["audit", "verify"])
}

/// A server with some audited activity: the first admin's login and
/// password change, a user created, that user's logins.
/// Returns the app, the admin's token and the worker's id.
fn busy_app() -> (TestApp, String, String) {
    let app = TestApp::spawn();
    let admin = app.admin_token();
    let (worker_id, _) = app.user(&admin, "aigerim", "field_worker", &["KZ-CAM-ALA"]);
    app.token_for("aigerim", USER_PASSWORD);
    app.token_for("admin", ADMIN_PASSWORD);
    assert!(chain(&app).len() >= 6);
    (app, admin, worker_id)
}

fn id_at(app: &TestApp, seq: i64) -> i64 {
    audit_log::table
        .filter(audit_log::seq.eq(seq))
        .select(audit_log::id)
        .first(&mut app.conn())
        .unwrap()
}

#[test]
fn activity_is_chained_and_verify_passes() {
    let (app, ..) = busy_app();
    let rows = chain(&app);
    let mut prev = GENESIS.to_string();
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row.seq, Some(i as i64 + 1), "{row:?}");
        assert_eq!(row.prev_hash.as_deref(), Some(prev.as_str()), "{row:?}");
        let hash = row.hash.clone().expect("hashed");
        assert_eq!(hash.len(), 64);
        prev = hash;
    }
    let login = rows
        .iter()
        .find(|r| r.action == "login")
        .expect("a login row");
    assert!(login.request_id.is_some() && login.client_ip.is_some());
    // The actor's sites are on record with what it did.
    let created = rows.iter().find(|r| r.action == "user_created").unwrap();
    assert_eq!(created.actor_sites, None, "the first start has no actor");
    let head: (i64, String) = audit_head::table
        .select((audit_head::seq, audit_head::hash))
        .first(&mut app.conn())
        .unwrap();
    assert_eq!(head, (rows.len() as i64, prev.clone()));

    let (passed, out) = verify_cli(&app);
    assert!(passed, "{out}");
    assert!(
        out.contains(&format!(
            "audit chain intact: {n} rows, head seq {n} hash {prev}",
            n = rows.len()
        )),
        "{out}"
    );
}

#[test]
fn an_edited_row_is_found_by_its_seq() {
    let (app, ..) = busy_app();
    let id = id_at(&app, 3);
    diesel::update(audit_log::table.filter(audit_log::seq.eq(3)))
        .set(audit_log::detail.eq("nothing to see"))
        .execute(&mut app.conn())
        .unwrap();
    let (passed, out) = verify_cli(&app);
    assert!(!passed, "{out}");
    assert!(
        out.contains(&format!("seq 3 (id {id}): the row does not match its hash")),
        "{out}"
    );
    assert!(out.contains("audit chain broken: 1 problem(s)"), "{out}");

    // Rewriting its hash too moves the break to the next row's link.
    let found = verify(&app);
    assert_eq!(found.problems, vec![Problem::Altered { seq: 3, id }]);
    diesel::update(audit_log::table.filter(audit_log::seq.eq(3)))
        .set(audit_log::hash.eq("f".repeat(64)))
        .execute(&mut app.conn())
        .unwrap();
    let found = verify(&app);
    assert!(
        found.problems.contains(&Problem::Unlinked {
            seq: 4,
            id: id_at(&app, 4)
        }),
        "{:?}",
        found.problems
    );
}

#[test]
fn a_deleted_row_leaves_a_gap() {
    let (app, admin, _) = busy_app();
    diesel::delete(audit_log::table.filter(audit_log::seq.eq(4)))
        .execute(&mut app.conn())
        .unwrap();
    let (passed, out) = verify_cli(&app);
    assert!(!passed, "{out}");
    assert!(out.contains("seq 4: no such row; it was deleted"), "{out}");
    // The server chains on; the gap stays on record.
    app.token_for("admin", ADMIN_PASSWORD);
    let found = verify(&app);
    assert_eq!(found.problems, vec![Problem::Missing { from: 4, to: 4 }]);
    assert_eq!(
        app.get("/api/v1/audit?limit=1", &admin).body["items"][0]["action"],
        "login"
    );
}

#[test]
fn a_cut_tail_is_found_by_the_head() {
    let (app, ..) = busy_app();
    let last = chain(&app).len() as i64;
    diesel::delete(audit_log::table.filter(audit_log::seq.eq(last)))
        .execute(&mut app.conn())
        .unwrap();
    let (passed, out) = verify_cli(&app);
    assert!(!passed, "{out}");
    assert!(
        out.contains(&format!(
            "the head is at seq {last} but the last row is seq {}",
            last - 1
        )),
        "{out}"
    );
}

#[test]
fn a_row_inserted_around_the_server_is_found_and_never_sealed() {
    let (app, ..) = busy_app();
    let id: i64 = diesel::insert_into(audit_log::table)
        .values((
            audit_log::occurred_at.eq(chrono::Utc::now().naive_utc()),
            audit_log::action.eq("login"),
            audit_log::detail.eq("forged"),
        ))
        .returning(audit_log::id)
        .get_result(&mut app.conn())
        .unwrap();
    let (passed, out) = verify_cli(&app);
    assert!(!passed, "{out}");
    assert!(
        out.contains(&format!("id {id}: a row outside the chain")),
        "{out}"
    );
    // A restart seals only what predates the chain: the forgery stays out.
    let again = app.another();
    again.token_for("admin", ADMIN_PASSWORD);
    let found = verify(&again);
    assert_eq!(found.problems, vec![Problem::Unsealed { id }]);
}

#[test]
fn writers_on_two_servers_keep_one_chain() {
    let (app, ..) = busy_app();
    let other = app.another();
    std::thread::scope(|s| {
        for n in 0..4 {
            let server = if n % 2 == 0 { &app } else { &other };
            s.spawn(move || {
                for _ in 0..4 {
                    server.token_for("aigerim", USER_PASSWORD);
                }
            });
        }
    });
    let found = verify(&app);
    assert!(found.is_intact(), "{:?}", found.problems);
    let rows = chain(&app);
    assert_eq!(found.rows, rows.len() as u64);
    assert!(rows.iter().filter(|r| r.action == "login").count() >= 16 + 3);
    // Times rise with positions: each is taken under the head's lock.
    assert!(rows
        .windows(2)
        .all(|w| w[0].occurred_at <= w[1].occurred_at));
}

#[test]
fn rows_from_before_the_chain_are_sealed_at_start() {
    let shared = Shared {
        data_dir: common::private_tempdir(),
        db: TestDb::new(),
    };
    let settings = common::test_settings(&shared);
    {
        let mut conn = db::open_one(&settings.database_target().unwrap()).unwrap();
        migrate_before_the_chain(&mut conn);
        for (at, action) in [
            ("2026-01-05 09:00:00.5", "user_created"),
            ("2026-01-05 09:01:00", "login"),
            ("2026-01-05 09:02:00.123456", "form_published"),
        ] {
            diesel::sql_query(format!(
                "INSERT INTO audit_log (occurred_at, action, detail) VALUES ('{at}', '{action}', 'legacy')"
            ))
            .execute(&mut conn)
            .unwrap();
        }
    }
    let app = TestApp::start(Arc::new(shared), settings);
    app.admin_token();
    let rows = chain(&app);
    let legacy: Vec<(Option<i64>, &str)> = rows
        .iter()
        .filter(|r| r.detail.as_deref() == Some("legacy"))
        .map(|r| (r.seq, r.action.as_str()))
        .collect();
    assert_eq!(
        legacy,
        vec![
            (Some(1), "user_created"),
            (Some(2), "login"),
            (Some(3), "form_published")
        ]
    );
    let (passed, out) = verify_cli(&app);
    assert!(passed, "{out}");
    assert!(out.contains(&format!("{} rows", rows.len())), "{out}");
    // The old rows keep their plain SHA-256; keying starts after them.
    let key = key(&app).expect("keyed at start");
    assert_eq!(key.keyed_from, 4);
    assert_eq!(
        rows[0].hash.as_deref(),
        Some(unkeyed_hash(&rows[0], GENESIS, 1).as_str())
    );
    let first_keyed = &rows[3];
    assert_ne!(
        first_keyed.hash.as_deref(),
        Some(unkeyed_hash(first_keyed, first_keyed.prev_hash.as_deref().unwrap(), 4).as_str())
    );
    // The plaintext database it started from is encrypted now.
    if !app.shared.db.is_postgres() {
        let file = app.data_dir().join("casesync.db");
        assert!(!casesync::db::encryption::is_plaintext(&file).unwrap());
    }
}

#[test]
fn a_deleted_row_with_the_rest_rehashed_is_found() {
    let (app, ..) = busy_app();
    let rows = chain(&app);
    let n = rows.len() as i64;
    // An editor deletes seq 3, renumbers the rows after it and re-hashes
    // them as the unkeyed chain would, then moves the head: a chain that
    // links perfectly.
    let mut conn = app.conn();
    diesel::delete(audit_log::table.filter(audit_log::seq.eq(3)))
        .execute(&mut conn)
        .unwrap();
    let mut prev = rows[1].hash.clone().unwrap();
    for row in &rows[3..] {
        let seq = row.seq.unwrap() - 1;
        let hash = unkeyed_hash(row, &prev, seq);
        diesel::update(audit_log::table.find(row.id))
            .set((
                audit_log::seq.eq(seq),
                audit_log::prev_hash.eq(&prev),
                audit_log::hash.eq(&hash),
            ))
            .execute(&mut conn)
            .unwrap();
        prev = hash;
    }
    diesel::update(audit_head::table)
        .set((audit_head::seq.eq(n - 1), audit_head::hash.eq(&prev)))
        .execute(&mut conn)
        .unwrap();

    let found = verify(&app);
    // Every re-hashed keyed row is found out.
    let keyed_from = key(&app).unwrap().keyed_from;
    for seq in (3.max(keyed_from))..n {
        assert!(
            found
                .problems
                .iter()
                .any(|p| matches!(p, Problem::Altered { seq: s, .. } if *s == seq)),
            "seq {seq}: {:?}",
            found.problems
        );
    }
    let (passed, out) = verify_cli(&app);
    assert!(!passed, "{out}");
    assert!(out.contains("does not match its hash"), "{out}");

    // Without the key file the keyed part cannot be checked, and verify
    // says so rather than passing.
    let moved = app.data_dir().join("audit.key.elsewhere");
    std::fs::rename(app.data_dir().join("audit.key"), &moved).unwrap();
    let found = audit::verify(&mut app.conn(), None, None).unwrap();
    assert!(found.problems.contains(&Problem::KeyMissing { keyed_from }));
    std::fs::rename(&moved, app.data_dir().join("audit.key")).unwrap();
}

#[test]
fn a_cut_tail_with_the_head_moved_back_is_found_by_the_anchor() {
    let (app, ..) = busy_app();
    let (passed, anchor) = run_cli(&app, &["audit", "anchor"]);
    assert!(passed, "{anchor}");
    let anchor: Anchor = anchor.trim().parse().unwrap();
    let head = chain(&app).last().cloned().unwrap();
    assert_eq!(anchor.seq, head.seq.unwrap());
    assert_eq!(Some(anchor.hash.clone()), head.hash);

    // More activity; the anchor still holds.
    app.token_for("aigerim", USER_PASSWORD);
    let (passed, out) = run_cli(&app, &["audit", "verify", "--anchor", &anchor.to_string()]);
    assert!(passed, "{out}");

    // An editor cuts everything from the anchor's row on and moves the
    // head back to the row before: a shorter chain, intact in itself.
    let keep = anchor.seq - 1;
    let rows = chain(&app);
    let kept = rows.iter().find(|r| r.seq == Some(keep)).unwrap();
    let mut conn = app.conn();
    diesel::delete(audit_log::table.filter(audit_log::seq.gt(keep)))
        .execute(&mut conn)
        .unwrap();
    diesel::update(audit_head::table)
        .set((
            audit_head::seq.eq(keep),
            audit_head::hash.eq(kept.hash.clone().unwrap()),
        ))
        .execute(&mut conn)
        .unwrap();

    let (passed, out) = run_cli(&app, &["audit", "verify", "--anchor", &anchor.to_string()]);
    assert!(!passed, "{out}");
    assert!(
        out.contains(&format!(
            "the anchor's seq {} is no longer in the chain",
            anchor.seq
        )),
        "{out}"
    );
    let found = audit::verify(&mut app.conn(), key(&app).as_ref(), Some(&anchor)).unwrap();
    assert_eq!(
        found.problems,
        vec![Problem::AnchorMissing { seq: anchor.seq }]
    );

    // A rewritten row at the anchor's position is found too.
    let other = Anchor {
        seq: keep,
        hash: "a".repeat(64),
    };
    let found = audit::verify(&mut app.conn(), key(&app).as_ref(), Some(&other)).unwrap();
    assert_eq!(found.problems, vec![Problem::AnchorMismatch { seq: keep }]);

    // A malformed anchor is refused with what it should look like.
    let (passed, out) = run_cli(&app, &["audit", "verify", "--anchor", "12-abc"]);
    assert!(!passed);
    assert!(out.contains("SEQ:HASH"), "{out}");
}

#[test]
fn a_server_without_its_chain_key_refuses_to_start() {
    let (app, ..) = busy_app();
    let settings = app.settings.clone();
    let shared = app.stop();
    let key_file = shared.data_dir.path().join("audit.key");
    let kept = std::fs::read(&key_file).unwrap();
    std::fs::remove_file(&key_file).unwrap();
    let Err(err) = casesync::server::prepare(settings.clone()) else {
        panic!("a keyed chain must not be written without its key");
    };
    let err = err.to_string();
    assert!(err.contains("audit.key is missing"), "{err}");
    assert!(
        err.contains("copy it from the server that keyed it"),
        "{err}"
    );
    // The database does not say what the key is: nothing to rebuild it from.
    let head: (Option<String>, Option<i64>) = audit_head::table
        .select((audit_head::chain_id, audit_head::keyed_from))
        .first(&mut common::open_db(shared.data_dir.path(), &shared.db))
        .unwrap();
    assert!(head.0.is_some() && head.1.is_some());

    std::fs::write(&key_file, kept).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let again = TestApp::start(shared, settings);
    again.token_for("admin", ADMIN_PASSWORD);
    assert!(verify(&again).is_intact());
}

/// Applies the migrations that come before the audit chain's.
fn migrate_before_the_chain(conn: &mut DbConnection) {
    use diesel_migrations::MigrationHarness;
    fn upto<C, DB>(conn: &mut C, source: fn() -> diesel_migrations::EmbeddedMigrations)
    where
        DB: diesel::backend::Backend,
        C: MigrationHarness<DB>,
        diesel_migrations::EmbeddedMigrations: diesel::migration::MigrationSource<DB>,
    {
        loop {
            let pending = conn.pending_migrations(source()).unwrap();
            let next = pending.first().expect("the chain's migration is pending");
            if next.name().to_string().contains("audit_chain") {
                return;
            }
            conn.run_migration(next.as_ref()).unwrap();
        }
    }
    match conn {
        DbConnection::Sqlite(c) => upto(c, || db::SQLITE_MIGRATIONS),
        DbConnection::Pg(c) => upto(c, || db::POSTGRES_MIGRATIONS),
    }
}

#[test]
fn admins_filter_and_page_the_log_and_others_may_not() {
    let (app, admin, worker_id) = busy_app();
    let (coordinator_id, coordinator) = app.user(&admin, "dana", "coordinator", &["KZ-CAM-ALA"]);
    let worker = app.token_for("aigerim", USER_PASSWORD);
    let made = app.post(
        "/api/v1/tokens",
        &coordinator,
        serde_json::json!({ "user_id": worker_id, "label": "phone" }),
    );
    assert_eq!(made.status, 201, "{}", made.text);

    // Every login, newest first, two at a time.
    let logins: BTreeSet<i64> = chain(&app)
        .iter()
        .filter(|r| r.action == "login")
        .filter_map(|r| r.seq)
        .collect();
    assert!(logins.len() >= 5);
    let mut seen = Vec::new();
    let mut path = "/api/v1/audit?action=login&limit=2".to_string();
    loop {
        let res = app.get(&path, &admin);
        assert_eq!(res.status, 200, "{}", res.text);
        let items = res.body["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        for item in items {
            assert_eq!(item["action"], "login");
            assert_eq!(item["hash"].as_str().unwrap().len(), 64);
            assert!(item["occurred_at"].as_str().unwrap().ends_with('Z'));
            seen.push(item["seq"].as_i64().unwrap());
        }
        match res.body["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api/v1/audit?action=login&limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert!(
        seen.windows(2).all(|w| w[0] > w[1]),
        "newest first: {seen:?}"
    );
    assert_eq!(seen.into_iter().collect::<BTreeSet<_>>(), logins);

    // By actor and object; and a range that holds nothing.
    let mine = app.get(&format!("/api/v1/audit?actor={coordinator_id}"), &admin);
    let mine = mine.body["items"].as_array().unwrap();
    assert!(!mine.is_empty());
    assert!(mine
        .iter()
        .all(|r| r["actor_id"] == coordinator_id.as_str()));
    assert_eq!(mine[0]["action"], "device_token_created");
    // The actor's sites when it acted are on record.
    assert_eq!(mine[0]["actor_sites"], app.site_id(&admin, "KZ-CAM-ALA"));
    let created = app.get(
        &format!("/api/v1/audit?object_type=user&object_id={coordinator_id}&action=user_created"),
        &admin,
    );
    assert_eq!(
        created.body["items"].as_array().unwrap().len(),
        1,
        "{}",
        created.text
    );
    let today = chrono::Utc::now().date_naive();
    let future = app.get(
        &format!("/api/v1/audit?from={}", today.succ_opt().unwrap()),
        &admin,
    );
    assert_eq!(future.body["items"], serde_json::json!([]));
    let until_today = app.get(&format!("/api/v1/audit?to={today}&limit=500"), &admin);
    // Every row but the one this read wrote after reading.
    assert_eq!(
        until_today.body["items"].as_array().unwrap().len(),
        chain(&app).len() - 1
    );
    assert_eq!(chain(&app).last().unwrap().action, "audit_read");

    for token in [&coordinator, &worker] {
        app.get("/api/v1/audit", token)
            .assert_problem(403, "forbidden");
        app.get("/api/v1/exports/audit.csv", token)
            .assert_problem(403, "forbidden");
    }

    for (query, param) in [
        ("from=yesterday", "/from"),
        ("to=2026-13-01", "/to"),
        ("from=2026-02-01&to=2026-01-01", "/to"),
        ("limit=0", "/limit"),
        ("limit=many", "/limit"),
        ("cursor=not-ours", "/cursor"),
    ] {
        let res = app.get(&format!("/api/v1/audit?{query}"), &admin);
        res.assert_problem(400, "bad_request");
        assert_eq!(res.error_pointers(), vec![param], "{query}: {}", res.text);
    }
    app.get("/api/v1/audit?colour=red", &admin)
        .assert_problem(400, "bad_request");
}

#[test]
fn the_csv_export_is_complete_and_on_record() {
    let (app, admin, _) = busy_app();
    let logins = chain(&app).iter().filter(|r| r.action == "login").count();
    let res = app.get("/api/v1/exports/audit.csv?action=login", &admin);
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.header("content-type"), Some("text/csv; charset=utf-8"));
    let mut reader = csv::Reader::from_reader(res.text.as_bytes());
    let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(header[0], "seq");
    assert_eq!(header.last().unwrap(), "hash");
    let action = header.iter().position(|h| h == "action").unwrap();
    let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(records.len(), logins);
    assert!(records.iter().all(|r| &r[action] == "login"));
    let seqs: Vec<i64> = records.iter().map(|r| r[0].parse().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "chain order: {seqs:?}"
    );

    let exported = chain(&app)
        .into_iter()
        .rfind(|r| r.action == "audit_exported")
        .expect("the export is on record");
    assert_eq!(exported.actor_role.as_deref(), Some("admin"));
    assert_eq!(exported.detail.as_deref(), Some("action login"));
    assert!(exported.seq.is_some());

    app.get("/api/v1/exports/audit.csv?cursor=abc", &admin)
        .assert_problem(400, "bad_request");
    let (passed, out) = verify_cli(&app);
    assert!(passed, "{out}");
}

#[test]
fn the_shell_exports_the_log_to_a_file() {
    let (app, ..) = busy_app();
    let out = app.data_dir().join("audit.csv");
    let run = app
        .shell()
        .args(["audit", "export", "--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let text = std::fs::read_to_string(&out).unwrap();
    let rows = csv::Reader::from_reader(text.as_bytes()).records().count();
    // Every row before the export's own, which is written after the file.
    assert_eq!(rows + 1, chain(&app).len());
    assert_eq!(chain(&app).last().unwrap().action, "audit_exported");
}

/// docs/api.md "Refusals": every 403 is audited — also an item of a batch,
/// which the refusal middleware cannot see since the batch answers 200.
#[test]
fn each_item_a_batch_refuses_with_403_is_audited_as_a_refusal() {
    use common::phone::{fixture, form_envelope, phone};
    let app = TestApp::spawn();
    let admin = app.admin_token();
    let (_, opener) = app.user(&admin, "opener", "field_worker", &["KZ-CAM-ALA"]);
    let (other_id, other) = app.user(&admin, "other", "field_worker", &["KZ-CAM-ALA"]);
    let case_id = uuid::Uuid::new_v4().to_string();
    let opening = phone(&app, &opener).send(&form_envelope(
        "kz.referral",
        &case_id,
        fixture("kz.referral"),
    ));
    assert_eq!(opening.status, 201, "{}", opening.text);

    // Another worker of the site, not assigned to the case: its follow-ups
    // are refused; a referral of its own is stored.
    let theirs = phone(&app, &other);
    let follow_up = || {
        theirs.encrypt(&form_envelope(
            "kz.initial_assessment",
            &case_id,
            fixture("kz.initial_assessment"),
        ))
    };
    let own = theirs.encrypt(&form_envelope(
        "kz.referral",
        &uuid::Uuid::new_v4().to_string(),
        fixture("kz.referral"),
    ));
    let items = serde_json::json!({ "submissions": [follow_up(), own, follow_up()] });
    let res = app.post("/api/v1/submissions/batch", &other, items);
    assert_eq!(res.status, 200, "{}", res.text);
    let statuses = res.batch_statuses();
    assert_eq!(statuses, [403, 201, 403]);

    let refused: Vec<(Option<String>, Option<String>, Option<String>)> = audit_log::table
        .filter(audit_log::action.eq("access_refused"))
        .order(audit_log::seq)
        .select((audit_log::actor_id, audit_log::object_id, audit_log::detail))
        .load(&mut app.conn())
        .unwrap();
    let route = Some("/api/v1/submissions/batch".to_string());
    assert_eq!(
        refused,
        [
            (
                Some(other_id.clone()),
                route.clone(),
                Some("POST /api/v1/submissions/batch item 0".into())
            ),
            (
                Some(other_id),
                route,
                Some("POST /api/v1/submissions/batch item 2".into())
            ),
        ]
    );
    assert!(verify(&app).is_intact());
}

/// #18: a date range is read newest first from the index on (time,
/// position), a page at a time. Across pages of any size it lists the rows
/// of the range as one read of them all newest first (by position, the
/// order before; the server's clock did not go back), and a cursor is
/// for the filter it was made in.
#[test]
fn a_date_range_pages_through_its_rows_newest_first() {
    let app = TestApp::spawn();
    let admin = app.admin_token();
    let staff = app.staff().other_worker().analyst().by(&admin).build();
    for _ in 0..3 {
        app.token_for("aigerim", USER_PASSWORD);
    }
    let today = chrono::Utc::now().date_naive();
    let from = today.pred_opt().unwrap();
    let walk = |query: &str, limit: usize| -> Vec<i64> {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/api/v1/audit?limit={limit}&{query}");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let page = app.get(&path, &staff.admin);
            assert_eq!(page.status, 200, "{}", page.text);
            seen.extend(
                page.body["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r["seq"].as_i64().unwrap()),
            );
            match page.body["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_string()),
                None => return seen,
            }
        }
    };
    // The rows of the range as the database has them, newest first; the
    // reads of the log add rows as the walk goes, after its first page.
    let in_range = |at_most: i64| -> Vec<i64> {
        audit_log::table
            .filter(audit_log::seq.le(at_most))
            .filter(audit_log::occurred_at.ge(from.and_hms_opt(0, 0, 0).unwrap()))
            .order(audit_log::seq.desc())
            .select(audit_log::seq)
            .load::<Option<i64>>(&mut app.conn())
            .unwrap()
            .into_iter()
            .flatten()
            .collect()
    };
    for limit in [1, 2, 7, 500] {
        let seen = walk(&format!("from={from}&to={today}"), limit);
        let expected = in_range(seen[0]);
        assert!(expected.len() > 10, "{}", expected.len());
        assert_eq!(seen, expected, "limit {limit}");
    }
    // With an action as well: that action's rows only, in the same order.
    let logins = walk(&format!("from={from}&action=login"), 2);
    let all_logins: Vec<i64> = audit_log::table
        .filter(audit_log::action.eq("login"))
        .order(audit_log::seq.desc())
        .select(audit_log::seq)
        .load::<Option<i64>>(&mut app.conn())
        .unwrap()
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(logins, all_logins);
    assert!(logins.len() >= 3);

    // A range after now is empty; a cursor of the undated log is refused
    // in a dated one (the orders differ), with words to act on.
    let tomorrow = today.succ_opt().unwrap();
    assert!(walk(&format!("from={tomorrow}"), 5).is_empty());
    let undated = app.get("/api/v1/audit?limit=1", &staff.admin);
    let cursor = undated.body["next_cursor"].as_str().unwrap();
    let mixed = app.get(
        &format!("/api/v1/audit?limit=1&from={from}&cursor={cursor}"),
        &staff.admin,
    );
    assert_eq!(mixed.status, 400, "{}", mixed.text);
    assert!(mixed.text.contains("start again from the first page"));
}
