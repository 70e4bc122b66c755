//! Several servers on one PostgreSQL database (#19 items 5 and 6): servers
//! started together on a new database from the shared key files of
//! `casesync keys shared` come up on one set of keys; a server with another
//! key-encryption key is refused with the fix; and phones spread over two
//! servers, one killed with SIGKILL mid-push, go on to the other and lose
//! nothing acknowledged (`casesync cases check`, the check of
//! scripts/bench-scaleout.sh). SQLite has one server: these skip there.

use crate::common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use casesync::config::{Secret, Settings};
use casesync::crypto::audit_key::AUDIT_KEY_FILE;
use casesync::crypto::kek::MASTER_KEY_FILE;
use casesync::db::schema::{cases, keys, submissions};
use common::bin::{cli, serve, BIN};
use common::{TestDb, ADMIN_PASSWORD, USER_PASSWORD};
use diesel::prelude::*;
use serde_json::json;

/// A private data directory `<root>/data` holding copies of `files`.
fn data_dir_with(root: &Path, files: &[PathBuf]) -> PathBuf {
    let dir = root.join("data");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    for file in files {
        let to = dir.join(file.file_name().unwrap());
        std::fs::copy(file, &to).unwrap();
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    dir
}

fn settings_for(data_dir: &Path, db: &TestDb) -> Settings {
    Settings {
        data_dir: data_dir.to_path_buf(),
        database_url: db.url.as_ref().map(Secret::new),
        db_pool_size: 2,
        ..Settings::default()
    }
}

#[test]
fn servers_started_together_on_a_new_database_share_one_set_of_keys() {
    let db = TestDb::new();
    if !db.is_postgres() {
        eprintln!("skipped: several servers share a PostgreSQL database, not SQLite");
        return;
    }
    let work = common::private_tempdir();
    let shared = work.path().join("shared-keys");
    let files = casesync::server::make_shared_keys(&Settings::default(), &shared).unwrap();
    assert_eq!(
        files,
        vec![shared.join(MASTER_KEY_FILE), shared.join(AUDIT_KEY_FILE)]
    );
    // Never over an existing directory: no key file is ever overwritten.
    assert!(casesync::server::make_shared_keys(&Settings::default(), &shared).is_err());

    // Two servers, each with its own copy, start at the same moment.
    let dirs: Vec<PathBuf> = ["a", "b"]
        .iter()
        .map(|name| data_dir_with(&work.path().join(name), &files))
        .collect();
    let started: Vec<Result<_, String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = dirs
            .iter()
            .map(|dir| {
                let settings = settings_for(dir, &db);
                scope.spawn(move || casesync::server::prepare(settings).map_err(|e| e.to_string()))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for outcome in &started {
        assert!(outcome.is_ok(), "{:?}", outcome.as_ref().err());
    }
    drop(started);
    let mut conn = common::open_db(&dirs[0], &db);
    // One key per programme: the second server found the first's.
    let made: Vec<(String, bool)> = keys::table
        .select((keys::programme, keys::current))
        .order(keys::programme)
        .load(&mut conn)
        .unwrap();
    assert_eq!(
        made,
        vec![("bt".to_string(), true), ("kz".to_string(), true)]
    );
    // Both hold the same audit.key, which keys the one chain.
    let key = |dir: &Path| std::fs::read(dir.join(AUDIT_KEY_FILE)).unwrap();
    assert_eq!(key(&dirs[0]), key(&dirs[1]));
    let chain_key = casesync::server::audit_key(&settings_for(&dirs[1], &db))
        .unwrap()
        .unwrap();
    let verified = casesync::audit::verify(&mut conn, Some(&chain_key), None).unwrap();
    assert!(verified.is_intact(), "{:?}", verified.problems);

    // A third server started with nothing is refused (it does not make a
    // master.key of its own), and told which files to copy from where.
    let bare = data_dir_with(&work.path().join("c"), &[]);
    let Err(err) = casesync::server::prepare(settings_for(&bare, &db)) else {
        panic!("a server without the deployment's keys must not start");
    };
    let err = err.to_string();
    assert!(err.contains("master.key is missing"), "{err}");
    assert!(!bare.join(MASTER_KEY_FILE).exists());
    // With a master.key of its own (one it made before the database had
    // keys), the audit.key it lacks is named.
    std::fs::copy(other_files_for(&work), bare.join(MASTER_KEY_FILE)).unwrap();
    let Err(err) = casesync::server::prepare(settings_for(&bare, &db)) else {
        panic!("a server without the deployment's audit.key must not start");
    };
    let err = err.to_string();
    assert!(err.contains("audit.key is missing"), "{err}");
    assert!(err.contains("copy master.key"), "{err}");
    assert!(err.contains("Several servers"), "{err}");

    // A fourth with the audit.key but another master.key: refused too.
    let other_files = [other_files_for(&work)];
    let mixed = data_dir_with(
        &work.path().join("d"),
        &[other_files[0].clone(), shared.join(AUDIT_KEY_FILE)],
    );
    let Err(err) = casesync::server::prepare(settings_for(&mixed, &db)) else {
        panic!("a server with another key-encryption key must not start");
    };
    let err = err.to_string();
    assert!(
        err.contains("does not open with this key-encryption key"),
        "{err}"
    );
    assert!(err.contains("copy master.key"), "{err}");
}

/// The master.key of another deployment (made once per test directory).
fn other_files_for(work: &tempfile::TempDir) -> PathBuf {
    let other = work.path().join("other-keys");
    if !other.exists() {
        casesync::server::make_shared_keys(&Settings::default(), &other).unwrap();
    }
    other.join(MASTER_KEY_FILE)
}

fn collect(phone: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("collect")
        .arg("--dir")
        .arg(phone)
        .args(args)
        .env("CASESYNC_COLLECT_PASSWORD", USER_PASSWORD)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

fn succeeded(out: &Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn acknowledged(phone: &Path) -> usize {
    casesync::client::acknowledged(phone).unwrap().len()
}

#[test]
fn two_servers_one_killed_mid_push_lose_nothing_acknowledged() {
    const PER_PHONE: usize = 60;
    let db = TestDb::new();
    if !db.is_postgres() {
        eprintln!("skipped: several servers share a PostgreSQL database, not SQLite");
        return;
    }
    let work = common::private_tempdir();
    let files = casesync::server::make_shared_keys(&Settings::default(), &work.path().join("keys"))
        .unwrap();
    let roots: Vec<PathBuf> = ["a", "b"].iter().map(|n| work.path().join(n)).collect();
    for root in &roots {
        data_dir_with(root, &files);
    }
    let a = serve(&roots[0], &db, &[]);
    let mut b = serve(&roots[1], &db, &[]);

    // The first admin is made by whichever server started first.
    let initial = roots
        .iter()
        .find_map(|r| std::fs::read_to_string(r.join("data/initial-admin-password")).ok())
        .unwrap();
    let token = a.login("admin", initial.trim()).body["token"]
        .as_str()
        .unwrap()
        .to_string();
    let changed = b.post(
        "/api/v1/me/password",
        Some(&token),
        json!({"current_password": initial.trim(), "new_password": ADMIN_PASSWORD}),
    );
    assert_eq!(changed.status, 200, "{}", changed.text);
    let token = changed.body["token"].as_str().unwrap().to_string();
    let site = a.get("/api/v1/sites", &token).body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["code"] == "KZ-CAM-ALA")
        .unwrap()["id"]
        .clone();
    let created = a.post(
        "/api/v1/users",
        Some(&token),
        json!({"username": "aigerim", "role": "field_worker", "site_ids": [site], "password": USER_PASSWORD}),
    );
    assert_eq!(created.status, 201, "{}", created.text);

    // Two phones, one signed in to each server, each knowing both.
    let referral = work.path().join("referral.json");
    let mut answers = common::phone::fixture("kz.referral");
    answers["signoff"]["referrer_signature"]
        .as_object_mut()
        .unwrap()
        .remove("signature");
    std::fs::write(&referral, answers.to_string()).unwrap();
    let phones: Vec<PathBuf> = ["phone-a", "phone-b"]
        .iter()
        .map(|n| work.path().join(n))
        .collect();
    for (phone, server) in phones.iter().zip([&a.base, &b.base]) {
        let login = collect(
            phone,
            &["login", "--server", server, "--username", "aigerim"],
        )
        .output()
        .unwrap();
        succeeded(&login, "login");
        succeeded(&collect(phone, &["pull"]).output().unwrap(), "pull");
        let fill = collect(
            phone,
            &[
                "fill",
                "kz.referral",
                referral.to_str().unwrap(),
                "--count",
                &PER_PHONE.to_string(),
            ],
        )
        .output()
        .unwrap();
        succeeded(&fill, "fill");
    }
    let push = |phone: &Path, first: &str, second: &str| {
        collect(
            phone,
            &[
                "push",
                "--batch",
                "5",
                "--concurrency",
                "2",
                "--retries",
                "3",
                "--server",
                first,
                "--server",
                second,
            ],
        )
        .spawn()
        .unwrap()
    };
    let push_a = push(&phones[0], &a.base, &b.base);
    let push_b = push(&phones[1], &b.base, &a.base);

    // Server b dies (SIGKILL: no drain) once its phone is a third through.
    let started = Instant::now();
    while acknowledged(&phones[1]) < PER_PHONE / 3 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the push makes progress"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    b.child.kill().unwrap();
    b.child.wait().unwrap();
    let out_b = succeeded(&push_b.wait_with_output().unwrap(), "push to b, then a");
    let out_a = succeeded(&push_a.wait_with_output().unwrap(), "push to a");
    for out in [&out_a, &out_b] {
        assert!(out.contains("0 refused"), "{out}");
        assert!(out.contains("0 still queued"), "{out}");
    }

    // With b down for certain, more from phone b: every request goes to b
    // first, finds nothing there and is sent to a.
    let fill = collect(
        &phones[1],
        &[
            "fill",
            "kz.referral",
            referral.to_str().unwrap(),
            "--count",
            "10",
        ],
    )
    .output()
    .unwrap();
    succeeded(&fill, "fill");
    let out = succeeded(
        &push(&phones[1], &b.base, &a.base)
            .wait_with_output()
            .unwrap(),
        "push after b died",
    );
    assert!(out.contains("0 still queued"), "{out}");

    // Every acknowledged submission stored exactly once, case numbers
    // unique and without gaps (KZ §3.5 F3: "1", "2", … per site), every
    // case equal to its refold: the check of scripts/bench-scaleout.sh.
    let total = 2 * PER_PHONE + 10;
    assert_eq!(acknowledged(&phones[0]) + acknowledged(&phones[1]), total);
    let check = cli(
        &roots[0],
        &db,
        &[
            "cases",
            "check",
            "--acknowledged-by",
            phones[0].to_str().unwrap(),
            "--acknowledged-by",
            phones[1].to_str().unwrap(),
        ],
        None,
    );
    assert!(
        check.contains(&format!(
            "{total} acknowledged submission(s), {total} stored"
        )),
        "{check}"
    );
    assert!(check.contains("every case equal to its refold"), "{check}");
    let stored: i64 = submissions::table
        .count()
        .get_result(&mut common::open_db(&roots[0].join("data"), &db))
        .unwrap();
    assert_eq!(stored as usize, total);
    a.terminate();
    a.wait(Duration::from_secs(30));
}

#[test]
fn the_check_finds_a_lost_submission_a_gap_in_the_case_numbers_and_a_stale_fold() {
    // The check itself reads any database: it runs on SQLite too.
    let app = common::TestApp::spawn();
    let admin = app.admin_token();
    let (_, worker) = app.user(&admin, "aigerim", "field_worker", &["KZ-CAM-ALA"]);
    let phone = common::phone::phone(&app, &worker);
    let sent: Vec<String> = (0..3)
        .map(|_| {
            let case = uuid::Uuid::new_v4().to_string();
            common::build::submit(
                &phone,
                "kz.referral",
                &case,
                common::build::referral(&case).data(),
            )
        })
        .collect();
    let mut conn = app.conn();
    let report = casesync::cases::check::run(&mut conn, &sent).unwrap();
    assert!(report.passed(), "{:?}", report.problems);
    assert_eq!(
        (report.acknowledged, report.stored, report.cases),
        (3, 3, 3)
    );
    assert_eq!((report.numbers, report.counters), (3, 1));

    // KZ §3.5 F3 numbers cases 1, 2, … per site: a number gone from the
    // middle is a gap; a case whose state is not its events' fold is stale;
    // a receipt for a submission the database lacks is a loss.
    let (second, _) = cases::table
        .filter(cases::number.eq("2"))
        .select((cases::id, cases::state))
        .first::<(String, String)>(&mut conn)
        .unwrap();
    diesel::update(cases::table.find(&second))
        .set((cases::number.eq("7"), cases::state.eq("closed_by_hand")))
        .execute(&mut conn)
        .unwrap();
    let mut asked = sent.clone();
    asked.push("never-stored".to_string());
    let report = casesync::cases::check::run(&mut conn, &asked).unwrap();
    let problems = report.problems.join("\n");
    assert!(
        problems.contains("acknowledged submission never-stored is not stored"),
        "{problems}"
    );
    assert!(
        problems.contains("without gaps (missing [2])"),
        "{problems}"
    );
    assert!(
        problems.contains(&format!("case {second}: state closed_by_hand")),
        "{problems}"
    );
    assert_eq!(report.problems.len(), 3, "{problems}");
}
