#![allow(dead_code)]
//! What the database benchmarks share: a fresh SQLite database with the
//! default sites, the shipped forms and a field worker of CAM Almaty.
//! `BENCH_DATABASE_URL=postgres://…` (an empty database, as
//! `DATABASE=postgres scripts/bench-export.sh` makes one) puts it on
//! PostgreSQL instead.

use casesync::auth::{sites, users, Principal, Role};
use casesync::config::{DatabaseTarget, Secret};
use casesync::crypto::kek::Kek;
use casesync::db::{self, Database, DatabaseKey, DbConnection};
use casesync::forms::{definitions, registry};

pub struct BenchDb {
    /// Removed (with the database) when dropped.
    pub dir: tempfile::TempDir,
    pub conn: DbConnection,
    pub site: sites::Site,
    pub worker: users::User,
    pub who: Principal,
}

/// The benchmark's database in `dir`, encrypted as the server's is (a
/// fixed bench key); `BENCH_PLAINTEXT=1` leaves it plaintext, for the
/// cost of the encryption. With `BENCH_DATABASE_URL` the PostgreSQL
/// database it names instead (`dir` then holds nothing).
pub fn bench_database(dir: &std::path::Path) -> Database {
    if let Ok(url) = std::env::var("BENCH_DATABASE_URL") {
        return Database::new(DatabaseTarget::Postgres(Secret::new(url)), None);
    }
    let target = DatabaseTarget::Sqlite(dir.join("bench.db"));
    let key = std::env::var("BENCH_PLAINTEXT")
        .is_err()
        .then(|| DatabaseKey::derived_from(&Kek::from_bytes(&[7u8; 32]).unwrap()));
    Database::new(target, key)
}

pub fn bench_db() -> BenchDb {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = db::open_one(bench_database(dir.path())).unwrap();
    casesync::server::prepare_database(&mut conn).unwrap();
    registry::publish_shipped(&mut conn, &definitions::shipped()).unwrap();
    let site = sites::find_by_code(&mut conn, "KZ-CAM-ALA")
        .unwrap()
        .unwrap();
    let worker = users::create(
        &mut conn,
        users::NewUser {
            username: "bench".into(),
            display_name: Some("Bench Worker".into()),
            initials: None,
            role: Role::FieldWorker,
            site_ids: vec![site.id.clone()],
            password: None,
        },
        casesync::auth::passwords::NewPassword::hashed(Some("a long bench password".into())),
    )
    .unwrap()
    .user;
    let who = Principal {
        user_id: worker.id.clone(),
        username: worker.username.clone(),
        role: Role::FieldWorker,
        site_ids: vec![site.id.clone()],
        token_id: "bench".into(),
        token_created_by: None,
        must_change_password: false,
    };
    BenchDb {
        dir,
        conn,
        site,
        worker,
        who,
    }
}
