//! Form exports over real HTTP: one row per current submission, the union
//! of the form's fields, de-identified unless a coordinator states why.

mod common;

use casesync::db::schema::audit_log;
use casesync::forms::{check, definitions, model::Pii};
use common::phone::{fixture, form_envelope, phone};
use common::TestApp;
use diesel::prelude::*;
use serde_json::{json, Value};

/// Every direct identifier the referral `data` holds (names, addresses,
/// phone numbers…), as the form marks them.
fn direct_values(data: &Value) -> Vec<String> {
    let set = definitions::shipped();
    let file = set
        .forms
        .iter()
        .find(|f| f.document["x-form"]["id"] == "kz.referral")
        .unwrap();
    let form = check::check(&file.document, &set.resources).unwrap();
    let mut out = Vec::new();
    for field in form.fields.iter().filter(|f| f.pii == Some(Pii::Direct)) {
        for (_, value) in field.values_in(data) {
            fn strings(v: &Value, out: &mut Vec<String>) {
                match v {
                    Value::String(s) if s.len() > 3 && s != "unknown" => out.push(s.clone()),
                    Value::Array(items) => items.iter().for_each(|i| strings(i, out)),
                    Value::Object(map) => map.values().for_each(|i| strings(i, out)),
                    _ => {}
                }
            }
            strings(value, &mut out);
        }
    }
    out
}

fn referral(case_id: &str, name: &str) -> Value {
    let mut data = fixture("kz.referral");
    data["receipt"]["received_at"] = json!("2026-11-20T17:00:00+05:00");
    data["child"]["child_name"] = json!(name);
    data["child"]["child_dob"] = json!("2012-05-14");
    form_envelope("kz.referral", case_id, data)
}

fn rows(text: &str) -> Vec<csv::StringRecord> {
    csv::Reader::from_reader(text.trim_start_matches('\u{feff}').as_bytes())
        .records()
        .map(Result::unwrap)
        .collect()
}

fn header(text: &str) -> Vec<String> {
    csv::Reader::from_reader(text.trim_start_matches('\u{feff}').as_bytes())
        .headers()
        .unwrap()
        .iter()
        .map(str::to_string)
        .collect()
}

#[test]
fn form_exports_are_deidentified_unless_a_coordinator_states_a_purpose() {
    let app = TestApp::spawn();
    let admin = app.admin_token();
    let (_, worker) = app.user(&admin, "aigerim", "field_worker", &["KZ-CAM-ALA"]);
    let (_, coordinator) = app.user(&admin, "manager", "coordinator", &["KZ-CAM-ALA"]);
    let (_, analyst) = app.user(&admin, "analyst", "analyst", &["KZ-CAM-ALA"]);
    let phone = phone(&app, &worker);

    let first = uuid::Uuid::new_v4().to_string();
    let original = referral(&first, "Timur Aliyev");
    assert_eq!(phone.send(&original).status, 201);
    // An edit: only the current version is exported.
    let mut edit = referral(&first, "Timur Aliyev");
    edit["supersedes"] = original["instance_id"].clone();
    edit["data"]["child"]["child_languages"] = json!(["kk"]);
    edit["data"]["child"]
        .as_object_mut()
        .unwrap()
        .remove("child_languages_other");
    let res = phone.send(&edit);
    assert_eq!(res.status, 201, "{}", res.text);
    let second = uuid::Uuid::new_v4().to_string();
    assert_eq!(phone.send(&referral(&second, "Aruzhan Bekova")).status, 201);

    let res = app.get("/api/v1/exports/forms/kz.referral.csv", &coordinator);
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.header("content-type"), Some("text/csv; charset=utf-8"));
    assert_eq!(
        res.header("content-disposition"),
        Some("attachment; filename=\"kz.referral.csv\"")
    );
    let text = &res.text;
    let columns = header(text);
    let records = rows(text);
    assert_eq!(records.len(), 2);
    let col = |name: &str| {
        columns
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("no column {name} in {columns:?}"))
    };
    for meta in [
        "instance_id",
        "case_number",
        "site",
        "form_version",
        "submitted_by",
        "received_at",
    ] {
        col(meta);
    }
    assert!(!columns
        .iter()
        .any(|h| h == "child/child_name" || h == "child/child_dob"));
    let timur = records
        .iter()
        .find(|r| r[col("instance_id")] == *edit["instance_id"].as_str().unwrap())
        .expect("the edit, not the original");
    assert_eq!(&timur[col("case_number")], "1");
    assert_eq!(&timur[col("site")], "KZ-CAM-ALA");
    assert_eq!(&timur[col("submitted_by")], "aigerim");
    assert_eq!(&timur[col("child/child_sex")], "female");
    // Born 14 May 2012, referred 20 November 2026: 14.
    assert_eq!(&timur[col("child/child_dob_age_years")], "14");
    assert_eq!(&timur[col("child/child_languages")], "kk");
    assert_eq!(&timur[col("child/child_languages/kk")], "1");
    assert_eq!(&timur[col("child/child_languages/ru")], "0");
    // No direct identifier of either child, the referrer or the family.
    for value in direct_values(&original["data"])
        .into_iter()
        .chain(["Timur Aliyev".to_string(), "Aruzhan Bekova".to_string()])
    {
        assert!(
            !text.contains(&value),
            "{value:?} leaked into a de-identified export"
        );
    }

    // Identifying: coordinators only, on a legal basis, to a recipient,
    // with a purpose; in the disclosure log and on the audit log.
    let res = app.get(
        "/api/v1/exports/forms/kz.referral.csv?identifying=true",
        &coordinator,
    );
    assert_eq!(
        res.error_pointers(),
        ["/legal_basis", "/recipient", "/purpose"]
    );
    let res = app.get(
        "/api/v1/exports/forms/kz.referral.csv?identifying=true&legal_basis=required_by_law\
         &recipient=court&purpose=court%20report%20for%20case%201",
        &coordinator,
    );
    assert_eq!(res.error_pointers(), ["/provision"]);
    let purpose = "court report for case 1";
    let res = app.get(
        &format!(
            "/api/v1/exports/forms/kz.referral.csv?identifying=true&legal_basis=required_by_law\
             &provision=Code%20on%20Marriage%20art.%2076&recipient=Almaty%20district%20court\
             &purpose={}",
            purpose.replace(' ', "%20")
        ),
        &coordinator,
    );
    assert_eq!(res.status, 200, "{}", res.text);
    assert!(res.text.contains("Timur Aliyev"));
    let audited: Vec<(Option<String>, Option<String>)> = audit_log::table
        .filter(audit_log::action.eq("form_exported"))
        .select((audit_log::detail, audit_log::purpose))
        .load(&mut app.conn())
        .unwrap();
    let log = app.get("/api/v1/disclosures", &coordinator);
    assert_eq!(log.status, 200, "{}", log.text);
    let logged = &log.body["items"][0];
    assert_eq!(logged["legal_basis"], "required_by_law");
    assert_eq!(logged["legal_provision"], "Code on Marriage art. 76");
    assert_eq!(logged["recipient"], "Almaty district court");
    assert_eq!(logged["method"], "CSV download");
    assert!(logged["what"]
        .as_str()
        .unwrap()
        .starts_with("form kz.referral, columns: instance_id case_number"));
    let id = logged["id"].as_str().unwrap();
    assert!(audited.contains(&(
        Some(format!("identifying; disclosure {id} (required_by_law)")),
        Some(purpose.to_string())
    )));
    assert!(audited.contains(&(Some("de-identified".to_string()), None)));
    app.get(
        "/api/v1/exports/forms/kz.referral.csv?identifying=true&purpose=for%20my%20own%20research",
        &analyst,
    )
    .assert_problem(403, "forbidden");
    app.get("/api/v1/exports/forms/kz.referral.csv", &worker)
        .assert_problem(403, "forbidden");
    app.get("/api/v1/exports/forms/kz.referral.csv", &admin)
        .assert_problem(403, "forbidden");

    // Analysts get the de-identified file; filters and Excel's BOM.
    let res = app.get(
        "/api/v1/exports/forms/kz.referral.csv?bom=true&version=2021.1.1",
        &analyst,
    );
    assert_eq!(res.status, 200, "{}", res.text);
    assert!(res.text.starts_with('\u{feff}'));
    assert_eq!(rows(&res.text).len(), 2);
    let res = app.get(
        "/api/v1/exports/forms/kz.referral.csv?from=2099-01-01",
        &analyst,
    );
    assert_eq!(rows(&res.text).len(), 0);
    assert_eq!(header(&res.text)[0], "instance_id");
    app.get(
        "/api/v1/exports/forms/kz.referral.csv?site=BT-NCWC",
        &analyst,
    )
    .assert_problem(403, "forbidden");
    app.get("/api/v1/exports/forms/kz.nothing.csv", &analyst)
        .assert_problem(404, "not_found");
}

#[test]
fn the_case_export_has_a_row_per_case_with_its_facts_and_deadlines() {
    let app = TestApp::spawn();
    let admin = app.admin_token();
    let (_, worker) = app.user(&admin, "aigerim", "field_worker", &["KZ-CAM-ALA"]);
    let (_, coordinator) = app.user(&admin, "manager", "coordinator", &["KZ-CAM-ALA"]);
    let (_, viewer) = app.user(&admin, "viewer", "viewer", &[]);
    let phone = phone(&app, &worker);
    for name in ["Timur Aliyev", "Aruzhan Bekova"] {
        let id = uuid::Uuid::new_v4().to_string();
        assert_eq!(phone.send(&referral(&id, name)).status, 201);
    }
    let res = app.get("/api/v1/exports/cases.csv?programme=kz", &coordinator);
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(
        res.header("content-disposition"),
        Some("attachment; filename=\"kz-cases.csv\"")
    );
    let columns = header(&res.text);
    let records = rows(&res.text);
    assert_eq!(records.len(), 2);
    let col = |name: &str| {
        columns
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("{name} in {columns:?}"))
    };
    let numbers: Vec<&str> = records.iter().map(|r| &r[col("case_number")]).collect();
    assert_eq!(numbers, ["1", "2"]);
    for r in &records {
        assert_eq!(&r[col("state")], "referred");
        assert_eq!(&r[col("site")], "KZ-CAM-ALA");
        assert_eq!(&r[col("child.sex")], "female");
        assert_eq!(&r[col("child.date_of_birth_age_years")], "14");
        assert_eq!(&r[col("readmission")], "0");
        // Referred on 20 November 2026 and nothing since: the 24-hour and
        // 48-hour rules are past due.
        assert!(
            r[col("deadlines_overdue")].parse::<u32>().unwrap() >= 2,
            "{r:?}"
        );
    }
    assert!(!columns.iter().any(|c| c == "child.date_of_birth"));
    assert!(!res.text.contains("Timur") && !res.text.contains("Aruzhan"));
    app.get("/api/v1/exports/cases.csv?programme=kz", &viewer)
        .assert_problem(403, "forbidden");
    let res = app.get("/api/v1/exports/cases.csv?programme=xx", &coordinator);
    assert_eq!(res.error_pointers(), ["/programme"]);
}

#[test]
fn exports_from_the_shell_write_private_files_and_are_audited() {
    use std::os::unix::fs::PermissionsExt;
    let app = TestApp::spawn();
    let admin = app.admin_token();
    let (_, worker) = app.user(&admin, "aigerim", "field_worker", &["KZ-CAM-ALA"]);
    let phone = phone(&app, &worker);
    let id = uuid::Uuid::new_v4().to_string();
    assert_eq!(phone.send(&referral(&id, "Timur Aliyev")).status, 201);

    let out = app.data_dir().join("referrals.csv");
    let run = |args: &[&str]| {
        common::bin::command(app.data_dir(), &app.shared.db)
            .env("CASESYNC_DATA_DIR", app.data_dir())
            .args(args)
            .output()
            .unwrap()
    };
    let done = run(&[
        "export",
        "forms",
        "kz.referral",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert!(String::from_utf8_lossy(&done.stderr).contains("1 rows written"));
    let text = std::fs::read_to_string(&out).unwrap();
    assert_eq!(rows(&text).len(), 1);
    assert!(!text.contains("Timur"));
    let mode = std::fs::metadata(&out).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    let refused = run(&[
        "export",
        "cases",
        "--programme",
        "kz",
        "--identifying",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("legal_basis"));
    let cases_file = app.data_dir().join("cases.csv");
    let done = run(&[
        "export",
        "cases",
        "--programme",
        "kz",
        "--identifying",
        "--legal-basis",
        "unicef_me",
        "--recipient",
        "UNICEF M&E consultant",
        "--purpose",
        "transfer of the file to the court",
        "--out",
        cases_file.to_str().unwrap(),
    ]);
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert_eq!(
        rows(&std::fs::read_to_string(&cases_file).unwrap()).len(),
        1
    );
    let details: Vec<Option<String>> = audit_log::table
        .filter(audit_log::action.eq("exported"))
        .select(audit_log::detail)
        .load(&mut app.conn())
        .unwrap();
    assert!(details.contains(&Some("form kz.referral, de-identified".into())));
    assert!(details
        .iter()
        .flatten()
        .any(|d| d.starts_with("cases of kz, identifying; disclosure ")
            && d.ends_with("(unicef_me)")));

    // The indicators of the month of the referral, by sex, on stdout.
    let done = run(&[
        "indicators",
        "kz",
        "--from",
        "2026-11-01",
        "--to",
        "2026-11-30",
        "--by",
        "sex",
        "--indicator",
        "IND-01,IND-02",
    ]);
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let text = String::from_utf8(done.stdout).unwrap();
    assert_eq!(
        header(&text),
        [
            "indicator",
            "label",
            "period",
            "sex",
            "cases",
            "children",
            "numerator",
            "denominator",
            "percent",
            "median_delay_hours",
            "suppression"
        ]
    );
    let cells: Vec<(String, String, String)> = rows(&text)
        .iter()
        .map(|r| (r[0].to_string(), r[3].to_string(), r[4].to_string()))
        .collect();
    // The fixture's child is a girl whose separation nobody has assessed
    // yet: one case in IND-01, none in IND-02 (its total row says 0).
    let cell = |id: &str, sex: &str, n: &str| (id.to_string(), sex.to_string(), n.to_string());
    assert_eq!(
        cells,
        [
            cell("IND-01", "total", "1"),
            cell("IND-01", "female", "1"),
            cell("IND-02", "total", "0"),
        ]
    );
    let reported: i64 = audit_log::table
        .filter(audit_log::action.eq("indicators_reported"))
        .count()
        .get_result(&mut app.conn())
        .unwrap();
    assert_eq!(reported, 1);
}

/// kz.referral 2026.2: `child/child_religion` added, the signoff's
/// `referrer_retained_copy` dropped.
fn publish_second_referral_version(app: &TestApp, admin: &str) {
    let mut draft: Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("form-definitions/kz/referral.json"),
        )
        .unwrap(),
    )
    .unwrap();
    draft["x-form"]["version"] = json!("2026.2");
    draft["properties"]["child"]["properties"]["child_religion"] =
        json!({"title": "Religion", "type": "string", "enum": ["islam", "christianity", "other"]});
    draft["properties"]["signoff"]["properties"]
        .as_object_mut()
        .unwrap()
        .shift_remove("referrer_retained_copy");
    let res = app.post("/api/v1/forms/kz.referral/draft", admin, draft);
    assert_eq!(res.status, 201, "{}", res.text);
    let res = app.request(
        "POST",
        "/api/v1/forms/kz.referral/draft/publish",
        Some(admin),
        None,
    );
    assert_eq!(res.status, 201, "{}", res.text);
}

#[test]
fn a_new_form_version_gives_the_union_of_columns_and_the_zip_joins_repeat_groups() {
    let app = TestApp::spawn();
    let admin = app.admin_token();
    let (_, worker) = app.user(&admin, "aigerim", "field_worker", &["KZ-CAM-ALA"]);
    let (_, coordinator) = app.user(&admin, "manager", "coordinator", &["KZ-CAM-ALA"]);
    let phone = phone(&app, &worker);
    publish_second_referral_version(&app, &admin);

    let old = referral(&uuid::Uuid::new_v4().to_string(), "Timur Aliyev");
    assert_eq!(phone.send(&old).status, 201);
    let mut new = referral(&uuid::Uuid::new_v4().to_string(), "Aruzhan Bekova");
    new["form_version"] = json!("2026.2");
    new["data"]["child"]["child_religion"] = json!("islam");
    new["data"]["signoff"]
        .as_object_mut()
        .unwrap()
        .remove("referrer_retained_copy");
    let res = phone.send(&new);
    assert_eq!(res.status, 201, "{}", res.text);

    // The CSV: both versions' fields, the newest version's order first.
    let res = app.get("/api/v1/exports/forms/kz.referral.csv", &coordinator);
    assert_eq!(res.status, 200, "{}", res.text);
    let columns = header(&res.text);
    let records = rows(&res.text);
    let col = |name: &str| columns.iter().position(|h| h == name).unwrap();
    let religion = col("child/child_religion");
    let retained = col("signoff/referrer_retained_copy");
    assert!(
        religion < retained,
        "the dropped field comes after: {columns:?}"
    );
    let row_of = |envelope: &Value| {
        records
            .iter()
            .find(|r| r[0] == *envelope["instance_id"].as_str().unwrap())
            .unwrap()
    };
    assert_eq!(&row_of(&old)[col("form_version")], "2021.1.1");
    assert_eq!(&row_of(&old)[religion], "");
    assert_eq!(&row_of(&old)[retained], "true");
    assert_eq!(&row_of(&new)[col("form_version")], "2026.2");
    assert_eq!(&row_of(&new)[religion], "islam");
    assert_eq!(&row_of(&new)[retained], "");
    // Rows stored before ingest kept export cells (or under another
    // release's column rules) are read from their envelope: same file.
    use casesync::db::schema::submission_cells;
    diesel::delete(
        submission_cells::table
            .filter(submission_cells::instance_id.eq(old["instance_id"].as_str().unwrap())),
    )
    .execute(&mut app.conn())
    .unwrap();
    diesel::update(submission_cells::table)
        .filter(submission_cells::instance_id.eq(new["instance_id"].as_str().unwrap()))
        .set((
            submission_cells::layout.eq("v0:an-older-layout"),
            submission_cells::identifying.eq("x"),
        ))
        .execute(&mut app.conn())
        .unwrap();
    let again = app.get("/api/v1/exports/forms/kz.referral.csv", &coordinator);
    assert_eq!(again.text, res.text);
    // Without a second connection to read on, one reads it all: same file.
    use casesync::exports::{forms as form_exports, Scope};
    let mut conn = app.conn();
    let plan = form_exports::plan(
        &mut conn,
        &Scope::shell(),
        "kz.referral",
        &Default::default(),
    )
    .unwrap();
    let mut alone = Vec::new();
    form_exports::write(&mut conn, None, &plan, |chunk| {
        alone.extend(chunk);
        true
    })
    .unwrap();
    assert_eq!(String::from_utf8(alone).unwrap(), res.text);
    // Only one version when asked.
    let only = app.get(
        "/api/v1/exports/forms/kz.referral.csv?version=2026.2",
        &coordinator,
    );
    assert_eq!(rows(&only.text).len(), 1);

    // The .zip: the same CSV, plus one file per repeat group whose rows
    // point at their submission.
    let res = app.get("/api/v1/exports/forms/kz.referral.zip", &coordinator);
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.header("content-type"), Some("application/zip"));
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(res.bytes.clone())).unwrap();
    let mut files = std::collections::BTreeMap::new();
    for i in 0..archive.len() {
        let mut file = archive.by_index(i).unwrap();
        let mut text = String::new();
        std::io::Read::read_to_string(&mut file, &mut text).unwrap();
        files.insert(file.name().to_string(), text);
    }
    assert!(
        files.contains_key("kz.referral-child-siblings.csv"),
        "{:?}",
        files.keys()
    );
    assert_eq!(
        rows(&files["kz.referral.csv"]).len(),
        2,
        "the main file is the CSV export"
    );
    assert_eq!(header(&files["kz.referral.csv"]), columns);
    let parents = &files["kz.referral-parents_legal_reps.csv"];
    let parent_columns = header(parents);
    assert_eq!(
        parent_columns[parent_columns.len() - 2..],
        ["PARENT_KEY".to_string(), "KEY".to_string()]
    );
    assert!(parent_columns.contains(&"relationship".to_string()));
    let parent_rows = rows(parents);
    assert_eq!(parent_rows.len(), 4, "two parents in each referral");
    let first = old["instance_id"].as_str().unwrap();
    let keys: Vec<(String, String)> = parent_rows
        .iter()
        .filter(|r| &r[parent_columns.len() - 2] == first)
        .map(|r| {
            (
                r[parent_columns.len() - 2].to_string(),
                r[parent_columns.len() - 1].to_string(),
            )
        })
        .collect();
    assert_eq!(
        keys,
        vec![
            (first.to_string(), format!("{first}/parents_legal_reps[1]")),
            (first.to_string(), format!("{first}/parents_legal_reps[2]")),
        ]
    );
    // De-identified like the CSV: no name of a parent, sibling or child.
    let everything: String = files.values().cloned().collect();
    for value in direct_values(&old["data"])
        .into_iter()
        .chain(["Mother D".to_string(), "Sibling B".to_string()])
    {
        assert!(!everything.contains(&value), "{value:?} in the zip");
    }
}
