//! What every request and every login costs: resolving a bearer token on the
//! embedded database, a full authenticated round trip over loopback HTTP,
//! and the Argon2id check of a login.
//!
//! `cargo bench --bench auth`; set CASESYNC_TEST_DATABASE_URL to measure the
//! database-bound parts on PostgreSQL instead of SQLite.

use std::sync::mpsc;

use casesync::auth::{passwords, tokens, users, Role};
use casesync::config::{Secret, Settings};
use casesync::db::write_tx;
use criterion::{criterion_group, criterion_main, Criterion};

fn settings(dir: &std::path::Path) -> Settings {
    Settings {
        bind: "127.0.0.1:0".into(),
        data_dir: dir.to_path_buf(),
        database_url: std::env::var("CASESYNC_TEST_DATABASE_URL")
            .ok()
            .filter(|u| !u.is_empty())
            .map(Secret::new),
        workers: 1,
        ..Settings::default()
    }
}

fn bench(c: &mut Criterion) {
    // Private, as the server requires of its data directory.
    let dir = {
        use std::os::unix::fs::PermissionsExt;
        tempfile::Builder::new()
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir()
            .unwrap()
    };
    let settings = settings(dir.path());
    let state = casesync::server::prepare(settings).expect("server prepares");
    let mut conn = state.pool.get().unwrap();
    let user = write_tx(&mut conn, |conn| {
        users::create(
            conn,
            users::NewUser {
                username: format!("bench{}", uuid::Uuid::new_v4().simple()),
                display_name: None,
                initials: None,
                role: Role::Viewer,
                site_ids: Vec::new(),
                password: None,
            },
            casesync::auth::passwords::NewPassword::hashed(Some("bench-password-1".into())),
        )
    })
    .unwrap()
    .user;
    let issued = tokens::issue_session(&mut conn, &user.id, 1).unwrap();

    c.bench_function("authenticate bearer token (db)", |b| {
        b.iter(|| {
            tokens::authenticate(&mut conn, &issued.token)
                .unwrap()
                .unwrap()
                .0
        })
    });
    drop(conn);

    let (tx, rx) = mpsc::channel();
    let server_state = state.clone();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let bound = casesync::server::bind(server_state).unwrap();
            tx.send(bound.addr).unwrap();
            bound.server.await.unwrap();
        })
    });
    let addr = rx.recv().unwrap();
    let agent = ureq::Agent::new_with_defaults();
    let url = format!("http://{addr}/api/v1/me");
    let header = format!("Bearer {}", issued.token);
    c.bench_function("GET /api/v1/me over loopback", |b| {
        b.iter(|| {
            let res = agent
                .get(&url)
                .header("Authorization", &header)
                .call()
                .unwrap();
            assert_eq!(res.status(), 200);
        })
    });

    let hash = passwords::hash("bench-password-1");
    let mut group = c.benchmark_group("login");
    group.sample_size(10);
    group.bench_function("argon2id verify", |b| {
        b.iter(|| assert!(passwords::verify("bench-password-1", &hash)))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
