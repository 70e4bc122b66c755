//! Programme keys: made on first start, sealed at rest, served as JWKs,
//! rotated with old keys kept for decryption.

use crate::common;

use std::os::unix::fs::PermissionsExt;

use casesync::crypto::{jwe, kek::Kek, keys};
use casesync::db::schema::sync_changes;
use common::phone::seal;
use common::TestApp;
use diesel::prelude::*;

#[test]
fn first_start_makes_a_sealed_key_per_programme_and_serves_its_jwk() {
    let app = TestApp::spawn();
    let master = app.data_dir().join("master.key");
    assert_eq!(
        std::fs::metadata(&master).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let admin = app.admin_token();
    let (_, worker) = app.user(&admin, "worker", "field_worker", &["BT-NCWC"]);
    let mut kids = Vec::new();
    for programme in ["kz", "bt"] {
        let res = app.get(
            &format!("/api/v1/programmes/{programme}/keys/current"),
            &worker,
        );
        assert_eq!(res.status, 200, "{}", res.text);
        let jwk = &res.body;
        assert_eq!(jwk["kty"], "RSA");
        assert_eq!(jwk["alg"], "RSA-OAEP-256");
        assert_eq!(jwk["use"], "enc");
        assert!(jwk["kid"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{programme}-")));
        assert!(jwk.get("d").is_none(), "never a private part");
        let public = keys::public_key_from_jwk(jwk).unwrap();
        assert_eq!(public.key_size_bits(), 2048);
        kids.push(jwk["kid"].as_str().unwrap().to_string());
    }
    app.request("GET", "/api/v1/programmes/kz/keys/current", None, None)
        .assert_problem(401, "unauthorized");
    app.get("/api/v1/programmes/xx/keys/current", &admin)
        .assert_problem(404, "not_found");

    // The private key is stored sealed: the database never holds PKCS#8.
    let sealed: Vec<String> = casesync::db::schema::keys::table
        .select(casesync::db::schema::keys::sealed_private)
        .load(&mut app.conn())
        .unwrap();
    assert_eq!(sealed.len(), 2);
    // Both keys were announced to phones through the sync change log.
    let changes: Vec<(String, String)> = sync_changes::table
        .filter(sync_changes::kind.eq("key"))
        .select((sync_changes::kind, sync_changes::object_id))
        .order(sync_changes::seq)
        .load(&mut app.conn())
        .unwrap();
    assert_eq!(
        changes,
        vec![
            ("key".to_string(), kids[0].clone()),
            ("key".to_string(), kids[1].clone())
        ]
    );
}

#[test]
fn what_phones_encrypt_for_the_served_key_decrypts_with_the_sealed_private_key() {
    let app = TestApp::spawn();
    let admin = app.admin_token();
    let jwk = app.get("/api/v1/programmes/kz/keys/current", &admin).body;
    let kid = jwk["kid"].as_str().unwrap();
    let token = seal(&jwk, b"{\"hello\":\"world\"}");

    let ring = keys::KeyRing::new(Kek::load(&app.settings).unwrap());
    let mut conn = app.conn();
    let (programme, private) = ring.get(&mut conn, kid).unwrap().expect("the key exists");
    assert_eq!(programme, "kz");
    assert_eq!(
        jwe::parse(&token).unwrap().decrypt(&private).unwrap(),
        b"{\"hello\":\"world\"}"
    );
    assert!(ring.get(&mut conn, "kz-unknown").unwrap().is_none());

    // Rotation: a new current key; the old one still decrypts.
    let rotated = keys::rotate(&mut conn, ring.kek(), "kz", 2048).unwrap();
    assert_ne!(rotated.kid, kid);
    let served = app.get("/api/v1/programmes/kz/keys/current", &admin).body;
    assert_eq!(served["kid"], rotated.kid.as_str());
    let fresh = keys::KeyRing::new(Kek::load(&app.settings).unwrap());
    let (_, old) = fresh.get(&mut conn, kid).unwrap().unwrap();
    assert_eq!(
        jwe::parse(&token).unwrap().decrypt(&old).unwrap(),
        b"{\"hello\":\"world\"}"
    );
}

#[test]
fn a_restart_keeps_the_keys_and_a_wrong_master_key_is_refused() {
    let app = TestApp::spawn();
    let admin = app.admin_token();
    let before = app.get("/api/v1/programmes/bt/keys/current", &admin).body["kid"].clone();
    let shared = app.stop();

    let again = TestApp::start(shared.clone(), common::test_settings(&shared));
    assert_eq!(
        again.get("/api/v1/programmes/bt/keys/current", &admin).body["kid"],
        before
    );
    let settings = again.settings.clone();
    drop(again.stop());

    // Another master key cannot open the sealed private keys: refuse to start.
    let master = settings.data_dir.join("master.key");
    std::fs::remove_file(&master).unwrap();
    let Err(err) = casesync::server::prepare(settings) else {
        panic!("a server with the wrong master key must not start");
    };
    let err = err.to_string();
    assert!(err.contains("does not open"), "{err}");
    assert!(!master.exists(), "no new key is made beside the old data");
}
