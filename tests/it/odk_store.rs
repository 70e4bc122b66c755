//! The stored XForms (`odk::store`, migration 000023): made at start for
//! the shipped versions and at publish for new ones, never made again for
//! the same version and key, a new suffixed ODK version after a key
//! rotation (or a new XForm writer that changes the bytes) that maps back
//! to the JSON-Schema version; a draft Collect cannot ask is refused at
//! upload.

use crate::common;

use casesync::crypto::kek::Kek;
use casesync::crypto::keys;
use casesync::odk::store;
use common::TestApp;
use md5::{Digest, Md5};
use serde_json::{json, Value};

fn referral_source() -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/form-definitions/kz/referral.json"
        ))
        .unwrap(),
    )
    .unwrap()
}

#[test]
fn shipped_versions_have_their_xform_from_start_and_keep_it() {
    let app = TestApp::spawn();
    let mut conn = app.conn();
    let kz = store::current(&mut conn, "kz").unwrap();
    let bt = store::current(&mut conn, "bt").unwrap();
    let shipped = casesync::forms::definitions::shipped().forms.len();
    assert_eq!(kz.len() + bt.len(), shipped);
    let key = keys::current(&mut conn, "kz").unwrap();
    let referral = kz.iter().find(|x| x.form_id == "kz.referral").unwrap();
    assert_eq!(referral.version, "2021.1.1");
    assert_eq!(referral.odk_version, "2021.1.1");
    assert_eq!(referral.key_id, key.kid);
    assert_eq!(
        referral.md5,
        hex::encode(Md5::digest(referral.xml.as_bytes()))
    );
    assert!(referral
        .xml
        .contains("<data id=\"kz.referral\" version=\"2021.1.1\">"));
    assert!(referral.xml.contains("base64RsaPublicKey=\""));
    // Asked again (a restart, a formList): the same row, not a new XForm.
    let again = store::ensure(&mut conn, "kz.referral", "2021.1.1").unwrap();
    assert_eq!(&again, referral);
    assert_eq!(
        store::get(&mut conn, "kz.referral", "2021.1.1").unwrap(),
        again
    );
    assert_eq!(
        store::schema_version(&mut conn, "kz.referral", "2021.1.1").unwrap(),
        "2021.1.1"
    );
    assert!(store::get(&mut conn, "kz.referral", "1999.1").is_err());
}

#[test]
fn a_key_rotation_makes_a_suffixed_version_that_maps_back() {
    let app = TestApp::spawn();
    let mut conn = app.conn();
    let before = store::ensure(&mut conn, "kz.referral", "2021.1.1").unwrap();
    let rotated = keys::rotate(&mut conn, &Kek::from_bytes(&[7; 32]).unwrap(), "kz", 2048).unwrap();
    let after = store::current(&mut conn, "kz").unwrap();
    let referral = after.iter().find(|x| x.form_id == "kz.referral").unwrap();
    assert_eq!(referral.odk_version, "2021.1.1~k2");
    assert_eq!(referral.version, "2021.1.1");
    assert_eq!(referral.key_id, rotated.kid);
    assert_ne!(referral.md5, before.md5);
    assert!(referral.xml.contains("version=\"2021.1.1~k2\""));
    assert_eq!(
        store::schema_version(&mut conn, "kz.referral", "2021.1.1~k2").unwrap(),
        "2021.1.1"
    );
    // The first XForm is still served as it was (phones that have it).
    assert_eq!(
        store::get(&mut conn, "kz.referral", "2021.1.1").unwrap(),
        before
    );
    // bt's key did not change: its XForms did not either.
    assert!(store::current(&mut conn, "bt")
        .unwrap()
        .iter()
        .all(|x| !x.odk_version.contains('~')));
}

#[test]
fn a_published_draft_gets_its_xform_and_an_unaskable_one_is_refused_at_upload() {
    let app = TestApp::spawn();
    let admin = app.admin_token();
    let mut draft = referral_source();
    draft["x-form"]["version"] = json!("2026.5");
    draft["properties"]["child"]["properties"]["child_age_claimed"] =
        json!({"title": "Age", "type": "integer", "minimum": 0, "multipleOf": 2});
    let refused = app.post("/api/v1/forms/kz.referral/draft", &admin, draft.clone());
    assert_eq!(refused.status, 422, "{}", refused.text);
    assert!(
        refused
            .text
            .contains("/properties/child/properties/child_age_claimed/multipleOf"),
        "{}",
        refused.text
    );
    assert!(refused.text.contains("ODK Collect"), "{}", refused.text);

    draft["properties"]["child"]["properties"]["child_age_claimed"] =
        json!({"title": "Age", "type": "integer", "minimum": 0, "x-labels": {"ru": "Возраст"}});
    let uploaded = app.post("/api/v1/forms/kz.referral/draft", &admin, draft);
    assert_eq!(uploaded.status, 201, "{}", uploaded.text);
    let published = app.request(
        "POST",
        "/api/v1/forms/kz.referral/draft/publish",
        Some(&admin),
        None,
    );
    assert_eq!(published.status, 201, "{}", published.text);
    let mut conn = app.conn();
    let stored = store::get(&mut conn, "kz.referral", "2026.5").unwrap();
    assert_eq!(stored.version, "2026.5");
    assert!(
        stored.xml.contains("<translation lang=\"ru\">"),
        "{}",
        stored.xml
    );
    assert!(stored.xml.contains("Возраст"));
    let current = store::current(&mut conn, "kz").unwrap();
    let referral = current.iter().find(|x| x.form_id == "kz.referral").unwrap();
    assert_eq!(referral.odk_version, "2026.5");
}

/// A new XForm writer (`store::GENERATOR`; ODK Entities was one) leaves a
/// stored XForm as it is: a version whose bytes it changes gets a new
/// suffixed ODK version beside the old one; a version it writes the same
/// keeps its ODK version.
#[test]
fn a_new_writer_adds_a_version_only_where_the_bytes_change() {
    use casesync::db::schema::odk_xforms;
    use diesel::prelude::*;
    let app = TestApp::spawn();
    let mut conn = app.conn();
    let ia = crate::common::phone::shipped_version("kz.initial_assessment");
    let ia_k2 = format!("{ia}~k2");
    let older = |conn: &mut _, form: &str, xml: Option<&str>| {
        let target = odk_xforms::table.filter(odk_xforms::form_id.eq(form));
        diesel::update(target)
            .set(odk_xforms::generator.eq(1))
            .execute(conn)
            .unwrap();
        if let Some(xml) = xml {
            diesel::update(target)
                .set((
                    odk_xforms::xml.eq(xml),
                    odk_xforms::md5.eq(hex::encode(Md5::digest(xml.as_bytes()))),
                ))
                .execute(conn)
                .unwrap();
        }
    };
    // Written differently before: the old bytes stay, a new version is made.
    let now = store::ensure(&mut conn, "kz.initial_assessment", &ia).unwrap();
    let before = now.xml.replace("Which case is this about?", "Case");
    older(&mut conn, "kz.initial_assessment", Some(&before));
    // formList offers the new one, with its manifest (the case list).
    let offered = store::offered(&mut conn, "kz").unwrap();
    let listed = offered
        .iter()
        .find(|l| l.form_id == "kz.initial_assessment")
        .unwrap();
    assert_eq!(listed.odk_version, ia_k2);
    assert!(listed.case_list);
    let made = store::get(&mut conn, "kz.initial_assessment", &ia_k2).unwrap();
    assert_eq!(made.md5, listed.md5);
    assert_eq!(made.generator, store::GENERATOR);
    assert!(made.xml.contains("Which case is this about?"));
    let kept = store::get(&mut conn, "kz.initial_assessment", &ia).unwrap();
    assert_eq!(kept.xml, before);
    assert_eq!(
        store::schema_version(&mut conn, "kz.initial_assessment", &ia_k2).unwrap(),
        ia
    );
    // Asked again: the new one, not a third.
    assert_eq!(
        store::ensure(&mut conn, "kz.initial_assessment", &ia).unwrap(),
        made
    );
    // Written the same: the stored XForm stays current, now of this writer.
    let referral = store::ensure(&mut conn, "kz.referral", "2021.1.1").unwrap();
    older(&mut conn, "kz.referral", None);
    let same = store::ensure(&mut conn, "kz.referral", "2021.1.1").unwrap();
    assert_eq!(same.odk_version, "2021.1.1");
    assert_eq!(same.xml, referral.xml);
    assert_eq!(same.generator, store::GENERATOR);
    assert!(!same.case_list, "a referral opens its case: no list");
}
