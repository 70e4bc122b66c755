//! Backup and restore (#14 item 17): `casesync backup` copies the live
//! embedded database (still encrypted) with the sealed keys but never the
//! key-encryption key; `casesync restore` unpacks it into a new directory
//! only. A backup taken while submissions arrive restores every one that
//! was acknowledged before it began, with the audit chain intact and a
//! server starting on it.

use crate::common;

use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use casesync::audit;
use casesync::config::Settings;
use casesync::db::schema::submissions;
use common::phone::{envelope, fixture, phone};
use common::{private_tempdir, Shared, TestApp, TestDb, ADMIN_PASSWORD};
use diesel::prelude::*;

/// Runs the binary on a data directory: (passed, stdout and stderr).
fn run(dir: &Path, db: &TestDb, args: &[&str]) -> (bool, String) {
    let out = common::bin::command(dir, db)
        .env("CASESYNC_DATA_DIR", dir)
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn archive_names(file: &Path) -> Vec<String> {
    let zip = zip::ZipArchive::new(std::fs::File::open(file).unwrap()).unwrap();
    zip.file_names().map(String::from).collect()
}

#[test]
fn a_backup_during_ingest_restores_every_acknowledged_submission() {
    let app = TestApp::spawn();
    let admin = app.admin_token();
    let (_, worker) = app.user(&admin, "aigerim", "field_worker", &["KZ-CAM-ALA"]);

    // A phone keeps submitting referrals over HTTP until told to stop.
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = AtomicBool::new(false);
    let out_dir = private_tempdir();
    let file = out_dir.path().join("casesync-backup.zip");
    let (before, output) = std::thread::scope(|s| {
        let sender = s.spawn(|| {
            let phone = phone(&app, &worker);
            let mut sent = 0;
            while !stop.load(Ordering::SeqCst) && sent < 400 {
                let env = envelope(&uuid::Uuid::new_v4().to_string(), fixture("kz.referral"));
                let res = phone.send(&env);
                assert_eq!(res.status, 201, "{}", res.text);
                acknowledged
                    .lock()
                    .unwrap()
                    .push(env["instance_id"].as_str().unwrap().to_string());
                sent += 1;
            }
        });
        while acknowledged.lock().unwrap().len() < 5 {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // Everything acknowledged before the backup starts must be in it.
        let before = acknowledged.lock().unwrap().clone();
        let output = run(
            app.data_dir(),
            &app.shared.db,
            &["backup", "--out", file.to_str().unwrap()],
        );
        stop.store(true, Ordering::SeqCst);
        sender.join().unwrap();
        (before, output)
    });
    let (passed, text) = output;
    assert!(passed, "{text}");
    assert!(text.contains("backup written to"), "{text}");

    // The key-encryption key is never in a backup.
    let names = archive_names(&file);
    assert!(names.contains(&"manifest.json".to_string()), "{names:?}");
    assert!(names.contains(&"audit.key".to_string()), "{names:?}");
    assert!(!names.iter().any(|n| n.contains("master")), "{names:?}");
    let postgres = app.shared.db.is_postgres();
    assert_eq!(names.contains(&"casesync.db".to_string()), !postgres);
    if !postgres {
        // Still encrypted inside the archive.
        let mut zip = zip::ZipArchive::new(std::fs::File::open(&file).unwrap()).unwrap();
        let mut header = [0u8; 16];
        zip.by_name("casesync.db")
            .unwrap()
            .read_exact(&mut header)
            .unwrap();
        assert_ne!(&header, b"SQLite format 3\0");
    }

    // A restore never overwrites a data directory, live or not.
    let (passed, text) = run(
        app.data_dir(),
        &app.shared.db,
        &[
            "restore",
            file.to_str().unwrap(),
            "--data-dir",
            app.data_dir().to_str().unwrap(),
        ],
    );
    assert!(!passed);
    assert!(text.contains("is not empty"), "{text}");

    // Into a fresh directory, with the master.key kept apart.
    let restored = private_tempdir();
    let master = app.data_dir().join("master.key");
    let (passed, text) = run(
        restored.path(),
        &app.shared.db,
        &[
            "restore",
            file.to_str().unwrap(),
            "--data-dir",
            restored.path().to_str().unwrap(),
            "--master-key",
            master.to_str().unwrap(),
        ],
    );
    assert!(passed, "{text}");

    if postgres {
        // The database itself is PostgreSQL's to back up (pg_dump, PITR);
        // the restored keys open it: a server starts on them.
        assert!(
            text.contains("not in this file") || text.contains("next:"),
            "{text}"
        );
        let settings = Settings {
            data_dir: restored.path().to_path_buf(),
            ..app.settings.clone()
        };
        casesync::server::prepare(settings).expect("a server starts on the restored keys");
        return;
    }
    assert!(text.contains("audit chain intact"), "{text}");

    let shared = Arc::new(Shared {
        data_dir: restored,
        db: TestDb::new(),
    });
    let settings = common::test_settings(&shared);
    let again = TestApp::start(shared, settings);
    let found: Vec<String> = submissions::table
        .select(submissions::instance_id)
        .load(&mut again.conn())
        .unwrap();
    for id in &before {
        assert!(found.contains(id), "acknowledged {id} is not in the backup");
    }
    // The chain verifies against the head the backup recorded, and the
    // restored server works: the admin signs in and it is audited.
    let manifest: serde_json::Value = {
        let mut zip = zip::ZipArchive::new(std::fs::File::open(&file).unwrap()).unwrap();
        serde_json::from_reader(zip.by_name("manifest.json").unwrap()).unwrap()
    };
    let anchor: audit::Anchor = manifest["audit_head"].as_str().unwrap().parse().unwrap();
    again.token_for("admin", ADMIN_PASSWORD);
    let key = casesync::server::audit_key(&again.settings).unwrap();
    let verified = audit::verify(&mut again.conn(), key.as_ref(), Some(&anchor)).unwrap();
    assert!(verified.is_intact(), "{:?}", verified.problems);
}

#[test]
fn a_restore_checks_what_it_unpacks() {
    let app = TestApp::spawn();
    app.admin_token();
    let out_dir = private_tempdir();
    let file = out_dir.path().join("b.zip");
    let (passed, text) = run(
        app.data_dir(),
        &app.shared.db,
        &["backup", "--out", file.to_str().unwrap()],
    );
    assert!(passed, "{text}");
    // A backup never replaces a file.
    let (passed, text) = run(
        app.data_dir(),
        &app.shared.db,
        &["backup", "--out", file.to_str().unwrap()],
    );
    assert!(!passed);
    assert!(text.contains("exists"), "{text}");

    // Not a backup at all.
    let junk = out_dir.path().join("junk.zip");
    std::fs::write(&junk, b"not a zip").unwrap();
    let target = out_dir.path().join("restored");
    let (passed, text) = run(
        app.data_dir(),
        &app.shared.db,
        &[
            "restore",
            junk.to_str().unwrap(),
            "--data-dir",
            target.to_str().unwrap(),
        ],
    );
    assert!(!passed);
    assert!(text.contains("is not a casesync backup"), "{text}");
    assert!(!target.join("audit.key").exists());

    // Without the KEK the restored directory is inert, and says what is missing.
    let (passed, text) = run(
        app.data_dir(),
        &app.shared.db,
        &[
            "restore",
            file.to_str().unwrap(),
            "--data-dir",
            target.to_str().unwrap(),
        ],
    );
    assert!(passed, "{text}");
    assert!(text.contains("put the key-encryption key"), "{text}");
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&target), 0o700);
    for entry in std::fs::read_dir(&target).unwrap() {
        assert_eq!(mode(&entry.unwrap().path()), 0o600);
    }
    assert!(!target.join("master.key").exists());
}
