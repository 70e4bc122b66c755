//! Form definitions and the registry: every shipped form checks, bundles and
//! passes its fixtures; drafts, publishing, retiring and diffs over HTTP.

use crate::common;

use std::path::Path;

use casesync::forms::{check, definitions, fixtures};
use common::TestApp;
use serde_json::{json, Value};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn every_shipped_form_checks_and_bundles_into_one_self_contained_document() {
    let set = definitions::shipped();
    assert!(set.problems.is_empty(), "{:?}", set.problems);
    assert!(set.forms.len() >= 2, "the shipped forms are embedded");
    let mut ids = Vec::new();
    for file in &set.forms {
        let compiled = check::check(&file.document, &set.resources)
            .unwrap_or_else(|p| panic!("{}:\n  {}", file.path.display(), p.join("\n  ")));
        let text = compiled.document.to_string();
        assert!(
            !text.contains("\"$ref\""),
            "{} still has a $ref after bundling",
            compiled.meta.id
        );
        assert!(
            !text.contains("\"$defs\""),
            "{} still has $defs",
            compiled.meta.id
        );
        assert_eq!(compiled.sha256.len(), 64);
        let expected_file = format!("{}.json", compiled.meta.id.split_once('.').unwrap().1);
        assert!(
            file.path
                .ends_with(Path::new(&compiled.meta.programme).join(&expected_file)),
            "{} should live in {}/{}",
            compiled.meta.id,
            compiled.meta.programme,
            expected_file
        );
        ids.push(compiled.meta.id.clone());
    }
    let before = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), before, "form ids are unique");
}

/// For every form: its filled example passes, each broken variant fails at
/// exactly the expected pointers, and every field of the extract's table
/// (fields.txt) is in the schema, so none is silently dropped.
#[test]
fn every_shipped_form_passes_its_fixtures_and_keeps_every_extract_field() {
    let set = definitions::shipped();
    let mut failures = Vec::new();
    let mut total_cases = 0;
    for file in &set.forms {
        let compiled = check::check(&file.document, &set.resources).expect("checked above");
        let dir = root().join("tests/fixtures/forms").join(&compiled.meta.id);
        if !dir.is_dir() {
            failures.push(format!(
                "{}: no fixtures in {}",
                compiled.meta.id,
                dir.display()
            ));
            continue;
        }
        let report = fixtures::run(&compiled, &dir);
        assert!(
            report.cases >= 2 || !report.failures.is_empty(),
            "{}: too few broken cases",
            compiled.meta.id
        );
        assert!(
            report.fields_listed > 0 || !report.failures.is_empty(),
            "{}: empty fields.txt",
            compiled.meta.id
        );
        total_cases += report.cases;
        for f in report.failures {
            failures.push(format!("{}: {f}", compiled.meta.id));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    assert!(total_cases >= set.forms.len() * 2);
}

#[test]
fn the_model_form_reports_errors_where_they_are() {
    let set = definitions::shipped();
    let referral = set
        .forms
        .iter()
        .find(|f| f.document["x-form"]["id"] == "kz.referral")
        .unwrap();
    let form = check::check(&referral.document, &set.resources).unwrap();
    let valid: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/fixtures/forms/kz.referral/valid.json"))
            .unwrap(),
    )
    .unwrap();
    assert!(form.validate(&valid).is_empty());

    let mut data = valid.clone();
    data["child"]["child_dob"] = json!("2012-02-30");
    data["receipt"]["received_at"] = json!("2026-03-02 10:15");
    data["child"]["child_languages"] = json!(["uz", "klingon"]);
    let errors = form.validate(&data);
    let at: Vec<&str> = errors.iter().map(|e| e.pointer.as_str()).collect();
    assert!(at.contains(&"/child/child_dob"), "{errors:?}");
    assert!(at.contains(&"/receipt/received_at"), "{errors:?}");
    assert!(at.contains(&"/child/child_languages/1"), "{errors:?}");
    // Messages never quote the submitted value.
    assert!(
        errors.iter().all(|e| !e.message.contains("klingon")),
        "{errors:?}"
    );

    // "unknown" is accepted where the manual says "to the extent ascertainable".
    let mut data = valid;
    data["child"]["child_dob"] = json!("unknown");
    data["child"]["child_name"] = json!("unknown");
    assert!(form.validate(&data).is_empty());
}

fn referral_source() -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(root().join("form-definitions/kz/referral.json")).unwrap(),
    )
    .unwrap()
}

/// The diff reports what a phone shows, not only what it checks: a form's
/// title and description, and a field's title, description, `x-labels` and
/// option labels (docs/api.md, Forms).
#[test]
fn the_version_diff_reports_changed_titles_descriptions_and_labels() {
    let app = TestApp::spawn();
    let admin = app.admin_token();
    let source = referral_source();
    let mut draft = source.clone();
    draft["x-form"]["version"] = json!("2026.3");
    draft["title"] = json!("Referral");
    draft["description"] = json!("A new description of the referral form.");
    let category = &mut draft["properties"]["referrer"]["properties"]["referrer_category"];
    category["title"] = json!("Who referred the child");
    category["description"] = json!("Public or professional.");
    category["x-labels"] = json!({"ru": "Кто направил ребёнка"});
    category["oneOf"][1]["title"] = json!("A professional");
    let uploaded = app.post("/api/v1/forms/kz.referral/draft", &admin, draft);
    assert_eq!(uploaded.status, 201, "{}", uploaded.text);
    let published = app.request(
        "POST",
        "/api/v1/forms/kz.referral/draft/publish",
        Some(&admin),
        None,
    );
    assert_eq!(published.status, 201, "{}", published.text);

    let diff = app.get(
        "/api/v1/forms/kz.referral/versions/2021.1.1/diff/2026.3",
        &admin,
    );
    assert_eq!(diff.status, 200, "{}", diff.text);
    assert_eq!(diff.body["title"], json!([source["title"], "Referral"]));
    assert_eq!(
        diff.body["description"],
        json!([
            source["description"],
            "A new description of the referral form."
        ])
    );
    assert!(diff.body.get("x-labels").is_none(), "{}", diff.text);
    assert_eq!(diff.body["added"], json!([]));
    assert_eq!(diff.body["removed"], json!([]));
    let old = &source["properties"]["referrer"]["properties"]["referrer_category"];
    assert_eq!(
        diff.body["changed"],
        json!([{
            "path": "referrer/referrer_category",
            "title": [old["title"], "Who referred the child"],
            "description": [old.get("description"), "Public or professional."],
            "x-labels": [null, {"ru": "Кто направил ребёнка"}],
            "options_relabelled": [{
                "value": old["oneOf"][1]["const"],
                "title": [old["oneOf"][1]["title"], "A professional"],
            }],
        }]),
        "{}",
        diff.text
    );

    // The same version against itself: nothing changed.
    let same = app.get(
        "/api/v1/forms/kz.referral/versions/2026.3/diff/2026.3",
        &admin,
    );
    assert_eq!(same.status, 200, "{}", same.text);
    assert!(same.body.get("title").is_none(), "{}", same.text);
    assert_eq!(same.body["changed"], json!([]));
}

#[test]
fn draft_publish_retire_and_diff_over_http() {
    let app = TestApp::spawn();
    let admin = app.admin_token();
    let (_, worker) = app.user(&admin, "worker", "field_worker", &["KZ-CAM-ALA"]);

    // Shipped forms are published on first start, and phones may read them.
    let list = app.get("/api/v1/forms", &worker);
    assert_eq!(list.status, 200, "{}", list.text);
    let referral = list.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == "kz.referral")
        .expect("kz.referral published at start")
        .clone();
    assert_eq!(referral["current_version"], "2021.1.1");
    let first_sha = referral["current_sha256"].as_str().unwrap().to_string();

    // A new version: one field added, one removed, an option added.
    let mut draft = referral_source();
    draft["x-form"]["version"] = json!("2026.2");
    draft["properties"]["child"]["properties"]["child_religion"] =
        json!({"title": "Religion", "type": "string", "x-sensitive": true});
    draft["properties"]["signoff"]["properties"]
        .as_object_mut()
        .unwrap()
        .shift_remove("referrer_retained_copy");
    draft["properties"]["referrer"]["properties"]["referrer_category"]["oneOf"]
        .as_array_mut()
        .unwrap()
        .push(json!({"const": "anonymous", "title": "Anonymous"}));

    app.post("/api/v1/forms/kz.referral/draft", &worker, draft.clone())
        .assert_problem(403, "forbidden");
    let uploaded = app.post("/api/v1/forms/kz.referral/draft", &admin, draft.clone());
    assert_eq!(uploaded.status, 201, "{}", uploaded.text);
    assert_eq!(uploaded.body["version"], "2026.2");
    assert_eq!(
        app.get("/api/v1/forms/kz.referral/draft", &admin).status,
        200
    );

    app.request(
        "POST",
        "/api/v1/forms/kz.referral/draft/publish",
        Some(&worker),
        None,
    )
    .assert_problem(403, "forbidden");
    let published = app.request(
        "POST",
        "/api/v1/forms/kz.referral/draft/publish",
        Some(&admin),
        None,
    );
    assert_eq!(published.status, 201, "{}", published.text);
    let second_sha = published.body["sha256"].as_str().unwrap().to_string();
    assert_ne!(second_sha, first_sha);

    // Current is now the new version; the old one is unchanged.
    let current = app.get("/api/v1/forms/kz.referral", &worker);
    assert_eq!(
        current.header("etag"),
        Some(format!("\"{second_sha}\"").as_str())
    );
    assert!(current.text.contains("child_religion"));
    assert!(!current.text.contains("$ref"));
    let old = app.get("/api/v1/forms/kz.referral/versions/2021.1.1", &worker);
    assert_eq!(
        old.header("etag"),
        Some(format!("\"{first_sha}\"").as_str())
    );

    // The same version again is refused: published versions never change.
    let again = app.post("/api/v1/forms/kz.referral/draft", &admin, draft);
    assert_eq!(again.status, 201);
    app.request(
        "POST",
        "/api/v1/forms/kz.referral/draft/publish",
        Some(&admin),
        None,
    )
    .assert_problem(409, "conflict");

    let diff = app.get(
        "/api/v1/forms/kz.referral/versions/2021.1.1/diff/2026.2",
        &admin,
    );
    assert_eq!(diff.status, 200, "{}", diff.text);
    assert_eq!(diff.body["added"], json!(["child/child_religion"]));
    assert_eq!(
        diff.body["removed"],
        json!(["signoff/referrer_retained_copy"])
    );
    let changed = diff.body["changed"].as_array().unwrap();
    assert_eq!(changed.len(), 1, "{changed:?}");
    assert_eq!(changed[0]["path"], "referrer/referrer_category");
    assert_eq!(changed[0]["options_added"], json!(["anonymous"]));

    // Retiring: admin only; the version stays readable, current falls back.
    app.request(
        "POST",
        "/api/v1/forms/kz.referral/versions/2026.2/retire",
        Some(&worker),
        None,
    )
    .assert_problem(403, "forbidden");
    let retired = app.request(
        "POST",
        "/api/v1/forms/kz.referral/versions/2026.2/retire",
        Some(&admin),
        None,
    );
    assert_eq!(retired.status, 200, "{}", retired.text);
    assert_eq!(retired.body["status"], "retired");
    let current = app.get("/api/v1/forms/kz.referral", &worker);
    assert_eq!(current.header("x-form-version"), Some("2021.1.1"));
    let gone = app.get("/api/v1/forms/kz.referral/versions/2026.2", &worker);
    assert_eq!(gone.header("x-form-status"), Some("retired"));
}

#[test]
fn etag_and_if_none_match() {
    let app = TestApp::spawn();
    let admin = app.admin_token();
    // Every shipped form is published on first start.
    let listed = app.get("/api/v1/forms", &admin).body["items"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(listed, definitions::shipped().forms.len());
    let first = app.get("/api/v1/forms/kz.referral", &admin);
    assert_eq!(first.status, 200);
    assert_eq!(
        first.header("content-type"),
        Some("application/schema+json")
    );
    let etag = first.header("etag").unwrap().to_string();
    let res = common::agent()
        .get(app.url("/api/v1/forms/kz.referral"))
        .header("Authorization", format!("Bearer {admin}"))
        .header("If-None-Match", &etag)
        .call()
        .unwrap();
    assert_eq!(res.status().as_u16(), 304);
    app.get("/api/v1/forms/kz.nothing", &admin)
        .assert_problem(404, "not_found");
}

#[test]
fn published_versions_never_change_across_restarts_and_newer_versions() {
    let app = TestApp::spawn();
    let admin = app.admin_token();
    let before = app.get("/api/v1/forms", &admin).body["items"].clone();
    let mut draft = referral_source();
    draft["x-form"]["version"] = json!("2027.1");
    assert_eq!(
        app.post("/api/v1/forms/kz.referral/draft", &admin, draft)
            .status,
        201
    );
    assert_eq!(
        app.request(
            "POST",
            "/api/v1/forms/kz.referral/draft/publish",
            Some(&admin),
            None
        )
        .status,
        201
    );
    let shared = app.stop();
    let again = TestApp::start(shared.clone(), common::test_settings(&shared));
    let after = again.get("/api/v1/forms", &admin).body["items"].clone();
    for form in before.as_array().unwrap() {
        let later = after
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["id"] == form["id"])
            .unwrap();
        for v in form["versions"].as_array().unwrap() {
            let same = later["versions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|w| w["version"] == v["version"])
                .unwrap();
            assert_eq!(
                same["sha256"], v["sha256"],
                "{} {}",
                form["id"], v["version"]
            );
        }
    }
    let referral = after
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == "kz.referral")
        .unwrap();
    assert_eq!(referral["versions"].as_array().unwrap().len(), 2);
    assert_eq!(referral["current_version"], "2027.1");
}

/// Breaks a copy of the model form in one way.
type Breaker = Box<dyn Fn(&mut Value)>;

#[test]
fn bad_drafts_are_refused_with_their_locations() {
    let app = TestApp::spawn();
    let admin = app.admin_token();
    let cases: Vec<(&str, Breaker, &str)> = vec![
        ("not a schema", Box::new(|d| d["type"] = json!(5)), "/type"),
        (
            "unknown keyword",
            Box::new(|d| d["properties"]["child"]["x-colour"] = json!("red")),
            "/properties/child/x-colour",
        ),
        (
            "unresolved reference",
            Box::new(|d| {
                d["properties"]["child"]["properties"]["child_sex"] =
                    json!({"$ref": "urn:casesync:core:nothing#/x"})
            }),
            "/properties/child/properties/child_sex/$ref",
        ),
        (
            "open object",
            Box::new(|d| {
                d["properties"]["migration"]
                    .as_object_mut()
                    .unwrap()
                    .shift_remove("additionalProperties");
            }),
            "/properties/migration",
        ),
        (
            "relevance on a missing field",
            Box::new(|d| {
                d["properties"]["child"]["properties"]["education_details"]["x-relevant"] =
                    json!({"field": "0/nope", "eq": true})
            }),
            "/properties/child/properties/education_details/x-relevant",
        ),
        (
            "bad pii class",
            Box::new(|d| {
                d["properties"]["child"]["properties"]["child_name"]["x-pii"] = json!("very")
            }),
            "/properties/child/properties/child_name/x-pii",
        ),
    ];
    for (name, break_it, pointer) in cases {
        let mut draft = referral_source();
        draft["x-form"]["version"] = json!("2030.1");
        break_it(&mut draft);
        let res = app.post("/api/v1/forms/kz.referral/draft", &admin, draft);
        res.assert_problem(422, "validation");
        let pointers = res.error_pointers();
        assert!(
            pointers.contains(&pointer),
            "{name}: {pointers:?} in {}",
            res.text
        );
    }
    // Wrong form in the address.
    let res = app.post("/api/v1/forms/kz.other/draft", &admin, referral_source());
    assert_eq!(
        res.assert_problem(422, "validation")["errors"][0]["pointer"],
        "/x-form/id"
    );
    app.get("/api/v1/forms/kz.referral/draft", &admin)
        .assert_problem(404, "not_found");
}

#[test]
fn the_validation_service_answers_with_pointers() {
    let app = TestApp::spawn();
    let admin = app.admin_token();
    let valid: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/fixtures/forms/kz.referral/valid.json"))
            .unwrap(),
    )
    .unwrap();
    let ok = app.post(
        "/api/v1/forms/kz.referral/versions/2021.1.1/validate",
        &admin,
        valid.clone(),
    );
    assert_eq!(
        ok.body,
        json!({"valid": true, "errors": [], "unlisted_errors": 0}),
        "{}",
        ok.text
    );
    let mut broken = valid;
    broken["child"]
        .as_object_mut()
        .unwrap()
        .shift_remove("child_sex");
    let res = app.post(
        "/api/v1/forms/kz.referral/versions/2021.1.1/validate",
        &admin,
        broken,
    );
    assert_eq!(res.body["valid"], false);
    assert_eq!(res.body["errors"][0]["pointer"], "/child/child_sex");
}
