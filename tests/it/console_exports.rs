//! The console's exports page (`/exports`, docs/console.md) over real
//! HTTP: each role gets from it what the API gives it; a de-identified
//! download is the API's CSV for the same query; an identifying one needs
//! the disclosure form, is refused (nothing recorded) while a term is
//! missing, and is recorded with it, as the API records it; its POST
//! without the session's CSRF value is refused. (The journey in Chromium
//! is tests/it/browser_exports.rs.)

use crate::common;
use crate::console::Browser;

use casesync::db::schema::disclosures;
use common::build;
use common::phone::phone;
use common::{Response, TestApp};
use diesel::prelude::*;
use serde_json::json;

/// Two KZ referrals at the Almaty centre in November 2026; returns the
/// staff and the first case's id (a child of 12).
pub(crate) fn two_referrals(app: &TestApp) -> (build::Staff, String) {
    let staff = app.staff().analyst().elsewhere().build();
    let first = uuid::Uuid::new_v4().to_string();
    for (case, name, born) in [
        (first.clone(), "Madina Exportova", "2014-05-01"),
        (
            uuid::Uuid::new_v4().to_string(),
            "Arman Exportov",
            "2011-02-03",
        ),
    ] {
        let referral = build::referral(&case)
            .received_at("2026-11-20T17:00:00+05:00")
            .child(name)
            .born(born)
            .dob_known()
            .envelope();
        let res = phone(app, &staff.worker).send(&referral);
        assert_eq!(res.status, 201, "{}", res.text);
    }
    (staff, first)
}

fn count_disclosures(app: &TestApp) -> i64 {
    disclosures::table
        .count()
        .get_result(&mut app.conn())
        .unwrap()
}

/// A de-identified export's cells with each pseudonym (16 hex digits,
/// drawn afresh for every export by design: two exports cannot be linked)
/// replaced by a mark.
fn without_pseudonyms(csv: &str) -> String {
    csv.split('\n')
        .map(|line| {
            line.split(',')
                .map(|cell| {
                    if cell.len() == 16 && cell.bytes().all(|b| b.is_ascii_hexdigit()) {
                        "<pseudonym>"
                    } else {
                        cell
                    }
                })
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

const FORM_QUERY: &str = "site=KZ-CAM-ALA&from=2020-01-01";
const TERMS: &[(&str, &str)] = &[
    ("legal_basis", "required_by_law"),
    ("provision", "Code on Marriage art. 76"),
    ("recipient", "Almaty district court"),
    ("purpose", "court report for case 1"),
];

fn api_terms() -> String {
    serde_urlencoded::to_string(TERMS).unwrap()
}

fn assert_attachment(res: &Response, file: &str) {
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(
        res.header("content-disposition"),
        Some(format!("attachment; filename=\"{file}\"").as_str())
    );
    assert_eq!(res.header("cache-control"), Some("no-store"));
}

/// Every role gets the page, its header link and its downloads as the API
/// lets it export: the one access rule (`policy::export`).
#[test]
fn each_roles_access_matches_the_apis() {
    let app = TestApp::spawn();
    let (staff, _) = two_referrals(&app);
    let (_, viewer) = app.user(&staff.admin, "observer", "viewer", &[]);
    let api = format!("/api/v1/exports/forms/kz.referral.csv?{FORM_QUERY}");
    let api_identifying = format!("{api}&identifying=true&{}", api_terms());
    let download = format!("/exports/download?what=form%3Akz.referral&{FORM_QUERY}");
    let disclosure = format!("/exports/disclosure?what=form%3Akz.referral&{FORM_QUERY}");
    // (who, token, page, de-identified, identifying, header link)
    for (who, token, page, plain, identifying, link) in [
        ("admin", &staff.admin, 403, 403, 403, false),
        ("coordinator", &staff.coordinator, 200, 200, 200, true),
        (
            "coordinator of another site",
            &staff.elsewhere,
            200,
            403,
            403,
            true,
        ),
        ("field worker", &staff.worker, 403, 403, 403, false),
        ("analyst", &staff.analyst, 200, 200, 403, true),
        ("viewer", &viewer, 403, 403, 403, false),
    ] {
        assert_eq!(app.get(&api, token).status, plain, "API, {who}");
        let api_id = app.get(&api_identifying, token).status;
        assert_eq!(api_id, identifying, "API identifying, {who}");

        let mut browser = Browser::with_session(&app, token);
        let res = browser.get("/exports");
        assert_eq!(res.status, page, "page, {who}: {}", res.text);
        assert_eq!(
            res.text.contains("formaction=\"/exports/disclosure\""),
            page == 200 && who.starts_with("coordinator"),
            "the identifying button, {who}"
        );
        assert_eq!(browser.get(&download).status, plain, "download, {who}");
        // The disclosure form is the coordinators' (of any site: the
        // export itself then refuses another site's data).
        let form = browser.get(&disclosure);
        let form_status = if who.starts_with("coordinator") {
            200
        } else {
            403
        };
        assert_eq!(form.status, form_status, "disclosure form, {who}");
        let csrf = if form.status == 200 {
            Browser::hidden(&form, "csrf")
        } else {
            // Another page of theirs carries the session's value.
            Browser::hidden(&browser.get("/today"), "csrf")
        };
        let mut post = vec![
            ("csrf", csrf.as_str()),
            ("what", "form:kz.referral"),
            ("site", "KZ-CAM-ALA"),
            ("from", "2020-01-01"),
        ];
        post.extend_from_slice(TERMS);
        let res = browser.post("/exports/download", &post);
        assert_eq!(res.status, identifying, "identifying download, {who}");
        let has_link = browser.get("/today").text.contains("href=\"/exports\"");
        assert_eq!(has_link, link, "the header link, {who}");
    }
}

/// A de-identified download is the API's export for the same query: the
/// same file name, type, header row and cells (its pseudonyms differ, as
/// any two exports' do), and the same audit row.
#[test]
fn a_deidentified_download_is_the_apis_csv() {
    let app = TestApp::spawn();
    let (staff, _) = two_referrals(&app);
    let mut browser = Browser::with_session(&app, &staff.coordinator);

    for (api, console, file, action) in [
        (
            format!("/api/v1/exports/forms/kz.referral.csv?{FORM_QUERY}&bom=true"),
            format!("/exports/download?what=form%3Akz.referral&{FORM_QUERY}&bom=true"),
            "kz.referral.csv",
            "form_exported",
        ),
        (
            format!("/api/v1/exports/cases.csv?programme=kz&{FORM_QUERY}"),
            format!("/exports/download?what=cases%3Akz&{FORM_QUERY}&version=&case="),
            "kz-cases.csv",
            "cases_exported",
        ),
    ] {
        let from_api = app.get(&api, &staff.coordinator);
        assert_attachment(&from_api, file);
        let before = app.audit_count(action);
        let from_page = browser.get(&console);
        assert_attachment(&from_page, file);
        assert_eq!(
            from_page.header("content-type"),
            from_api.header("content-type")
        );
        assert_eq!(app.audit_count(action), before + 1, "audited once");
        assert_eq!(app.last_audit_detail(action), "de-identified");
        assert_eq!(from_page.bytes.len(), from_api.bytes.len(), "{file}");
        let header = |text: &str| text.lines().next().unwrap().to_string();
        assert_eq!(header(&from_page.text), header(&from_api.text));
        assert_eq!(
            without_pseudonyms(&from_page.text),
            without_pseudonyms(&from_api.text),
            "{file}"
        );
        assert_eq!(from_page.text.lines().count(), 3, "{}", from_page.text);
        assert!(!from_page.text.contains("Exportov"), "{}", from_page.text);
    }

    // A GET cannot be made identifying: the terms in a link are ignored,
    // nothing is disclosed.
    let disclosed = count_disclosures(&app);
    let link = format!(
        "/exports/download?what=form%3Akz.referral&{FORM_QUERY}&identifying=true&{}",
        api_terms()
    );
    let res = browser.get(&link);
    assert_attachment(&res, "kz.referral.csv");
    assert!(!res.text.contains("Madina"), "{}", res.text);
    assert_eq!(count_disclosures(&app), disclosed);

    // A filter written badly re-shows the page with what was wrong, and
    // starts (and records) nothing.
    let before = app.audit_count("form_exported");
    let res = browser.get("/exports/download?what=form%3Akz.referral&from=20.11.2026");
    assert_eq!(res.status, 422, "{}", res.text);
    assert!(res.text.contains("role=\"alert\""), "{}", res.text);
    assert!(
        res.text
            .contains("<strong>From (day, UTC)</strong>: a date (YYYY-MM-DD)"),
        "{}",
        res.text
    );
    assert!(res.text.contains("value=\"20.11.2026\""), "kept as typed");
    let res = browser.get("/exports/download?what=form%3Akz.nothing");
    assert_eq!(res.status, 404, "the API's answer: {}", res.text);
    assert_eq!(app.audit_count("form_exported"), before);
}

/// The form's fields of an identifying export of the referral form.
fn identifying_post<'a>(csrf: &'a str, terms: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut post = vec![
        ("csrf", csrf),
        ("what", "form:kz.referral"),
        ("site", "KZ-CAM-ALA"),
        ("from", "2020-01-01"),
    ];
    post.extend_from_slice(terms);
    post
}

#[test]
fn an_identifying_export_needs_the_disclosure_form_and_is_recorded_with_it() {
    let app = TestApp::spawn();
    let (staff, case_id) = two_referrals(&app);
    let mut browser = Browser::with_session(&app, &staff.coordinator);

    // The form: the programme's legal bases, the terms' fields, the choice
    // carried, the CSRF value.
    let form = browser.get(&format!(
        "/exports/disclosure?what=form%3Akz.referral&{FORM_QUERY}"
    ));
    assert_eq!(form.status, 200, "{}", form.text);
    for basis in ["required_by_law", "unicef_me", "consent", "staff_harm"] {
        assert!(
            form.text.contains(&format!(
                "<input type=\"radio\" name=\"legal_basis\" value=\"{basis}\""
            )),
            "{basis}"
        );
    }
    assert!(
        !form.text.contains("court_order"),
        "BT's bases are not KZ's"
    );
    for field in ["provision", "recipient", "purpose", "method", "case"] {
        assert!(
            form.text.contains(&format!("<label for=\"{field}\">")),
            "{field}"
        );
    }
    assert!(form
        .text
        .contains("method=\"post\" action=\"/exports/download\""));
    assert_eq!(Browser::hidden(&form, "what"), "form:kz.referral");
    let csrf = Browser::hidden(&form, "csrf");

    // Missing terms: the form again, each problem named in the API's
    // words, the terms given kept; nothing disclosed, nothing audited.
    let (disclosed, exported) = (count_disclosures(&app), app.audit_count("form_exported"));
    let res = browser.post(
        "/exports/download",
        &identifying_post(&csrf, &[("recipient", "Almaty district court")]),
    );
    assert_eq!(res.status, 422, "{}", res.text);
    assert!(res.text.contains("Nothing was disclosed or recorded"));
    assert!(
        res.text.contains("<strong>Legal basis</strong>: an identifying disclosure needs a legal basis: one of required_by_law, unicef_me, consent, staff_harm"),
        "{}",
        res.text
    );
    assert!(res
        .text
        .contains("<strong>Purpose</strong>: state the reasons (at least 10 characters)"));
    assert!(res.text.contains("value=\"Almaty district court\""));
    assert_eq!(Browser::hidden(&res, "what"), "form:kz.referral");
    // A basis that needs its provision, without it.
    let res = browser.post(
        "/exports/download",
        &identifying_post(
            &csrf,
            &[
                ("legal_basis", "required_by_law"),
                ("recipient", "Almaty district court"),
                ("purpose", "court report for case 1"),
            ],
        ),
    );
    assert_eq!(res.status, 422, "{}", res.text);
    assert!(
        res.text
            .contains("<strong>Provision, court order or agreement</strong>"),
        "{}",
        res.text
    );
    assert_eq!(count_disclosures(&app), disclosed);
    assert_eq!(app.audit_count("form_exported"), exported);

    // With the terms: the download, recorded as the API records it, and
    // the API's file byte for byte (no pseudonyms when identifying).
    let res = browser.post("/exports/download", &identifying_post(&csrf, TERMS));
    assert_attachment(&res, "kz.referral.csv");
    assert!(res.text.contains("Madina Exportova"), "{}", res.text);
    assert_eq!(count_disclosures(&app), disclosed + 1);
    assert_eq!(app.audit_count("form_exported"), exported + 1);
    let detail = app.last_audit_detail("form_exported");
    assert!(
        detail.starts_with("identifying; disclosure ") && detail.ends_with("(required_by_law)"),
        "{detail}"
    );
    let log = app.get("/api/v1/disclosures", &staff.coordinator);
    assert_eq!(log.status, 200, "{}", log.text);
    let entry = &log.body["items"][0];
    assert_eq!(entry["recipient"], "Almaty district court");
    assert_eq!(entry["purpose"], "court report for case 1");
    assert_eq!(entry["legal_provision"], "Code on Marriage art. 76");
    assert_eq!(entry["method"], "CSV download");
    let api = app.get(
        &format!(
            "/api/v1/exports/forms/kz.referral.csv?{FORM_QUERY}&identifying=true&{}",
            api_terms()
        ),
        &staff.coordinator,
    );
    assert_attachment(&api, "kz.referral.csv");
    assert_eq!(res.bytes, api.bytes, "the API's file");

    // By consent: of one case, its consent records listed on the form to
    // be ticked (read as the API reads them: `consents_read`).
    let res = browser.post(
        "/exports/download",
        &identifying_post(
            &csrf,
            &[
                ("legal_basis", "consent"),
                ("recipient", "Kazakh Red Crescent"),
                ("purpose", "family tracing abroad"),
            ],
        ),
    );
    assert_eq!(res.status, 422, "{}", res.text);
    assert!(res.text.contains(
        "<strong>Only this case</strong>: a disclosure by consent is of one case: name it"
    ));
    let mut ids = Vec::new();
    for subject in ["parent", "child"] {
        let given = app.post(
            &format!("/api/v1/cases/{case_id}/consents"),
            &staff.worker,
            json!({
                "subject": subject, "kind": "consent", "medium": "written",
                "scopes": ["disclose"], "given_on": "2026-11-20",
                "recipient": "Kazakh Red Crescent family tracing",
            }),
        );
        assert_eq!(given.status, 201, "{}", given.text);
        ids.push(given.body["id"].as_str().unwrap().to_string());
    }
    let reads = app.audit_count("consents_read");
    let form = browser.get(&format!(
        "/exports/disclosure?what=form%3Akz.referral&{FORM_QUERY}&case={case_id}"
    ));
    assert_eq!(form.status, 200, "{}", form.text);
    assert_eq!(app.audit_count("consents_read"), reads + 1);
    for id in &ids {
        assert!(
            form.text.contains(&format!(
                "<input type=\"checkbox\" name=\"consent\" value=\"{id}\""
            )),
            "{id}: {}",
            form.text
        );
    }
    // The child's consent alone is not enough at 12 (KZ 10.4).
    let mut post = identifying_post(
        &csrf,
        &[
            ("case", &case_id),
            ("legal_basis", "consent"),
            ("recipient", "Kazakh Red Crescent"),
            ("purpose", "family tracing abroad"),
            ("consent", &ids[1]),
        ],
    );
    let res = browser.post("/exports/download", &post);
    assert_eq!(res.status, 422, "{}", res.text);
    assert!(res.text.contains("<strong>Consent records</strong>"));
    assert!(res.text.contains("parent or legal representative"));
    assert_eq!(count_disclosures(&app), disclosed + 2);
    post.push(("consent", &ids[0]));
    let res = browser.post("/exports/download", &post);
    assert_attachment(&res, "kz.referral.csv");
    assert!(res.text.contains("Madina Exportova"));
    assert!(!res.text.contains("Arman Exportov"), "only the case");
    assert_eq!(count_disclosures(&app), disclosed + 3);
    let log = app.get(
        &format!("/api/v1/disclosures?case={case_id}"),
        &staff.coordinator,
    );
    assert_eq!(log.body["items"][0]["legal_basis"], "consent");
    assert_eq!(log.body["items"][0]["consent_ids"], json!([ids[1], ids[0]]));
}

#[test]
fn an_identifying_post_without_the_sessions_csrf_value_is_refused() {
    let app = TestApp::spawn();
    let (staff, _) = two_referrals(&app);
    let mut browser = Browser::with_session(&app, &staff.coordinator);
    let (disclosed, exported) = (count_disclosures(&app), app.audit_count("form_exported"));
    // No value, a wrong one, and another session's.
    let other = Browser::hidden(
        &Browser::with_session(&app, &staff.elsewhere).get("/today"),
        "csrf",
    );
    for csrf in [
        None,
        Some("0123456789abcdef0123456789abcdef"),
        Some(&*other),
    ] {
        let mut post = identifying_post(csrf.unwrap_or(""), TERMS);
        if csrf.is_none() {
            post.remove(0);
        }
        let res = browser.post("/exports/download", &post);
        assert_eq!(res.status, 403, "{csrf:?}: {}", res.text);
        assert!(res.text.contains("<h1>"), "the console's page");
        assert!(!res.text.contains("Madina"));
    }
    assert_eq!(count_disclosures(&app), disclosed);
    assert_eq!(app.audit_count("form_exported"), exported);
}
