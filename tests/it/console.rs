//! The web console over real HTTP, as a browser without JavaScript uses it:
//! a cookie session from the sign-in form, CSRF values on every form, the
//! one-time password first, the morning's deadlines from real submissions.
//! (The journeys in a real Chromium are tests/it/browser.rs.)

use std::collections::BTreeMap;

use crate::common;

use casesync::db::schema::submissions;
use common::build;
use common::phone::phone;
use common::{Response, TestApp, USER_PASSWORD};
use diesel::prelude::*;

/// A browser: its cookies, no redirects followed (each is checked).
pub(crate) struct Browser<'a> {
    app: &'a TestApp,
    agent: ureq::Agent,
    cookies: BTreeMap<String, String>,
    language: &'static str,
}

impl<'a> Browser<'a> {
    pub(crate) fn new(app: &'a TestApp) -> Browser<'a> {
        Browser {
            app,
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .max_redirects(0)
                .build()
                .into(),
            cookies: BTreeMap::new(),
            language: "en",
        }
    }

    /// A browser already holding `token` as its session (the same token
    /// store as the API's).
    pub(crate) fn with_session(app: &'a TestApp, token: &str) -> Browser<'a> {
        let mut browser = Browser::new(app);
        browser
            .cookies
            .insert("casesync_session".into(), token.to_string());
        browser
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn keep_cookies(&mut self, res: &Response) {
        for (name, value) in &res.headers {
            if !name.eq_ignore_ascii_case("set-cookie") {
                continue;
            }
            let (pair, _) = value.split_once(';').unwrap_or((value, ""));
            let (k, v) = pair.split_once('=').unwrap();
            if v.is_empty() || value.contains("Max-Age=0") {
                self.cookies.remove(k);
            } else {
                self.cookies.insert(k.to_string(), v.to_string());
            }
        }
    }

    pub(crate) fn get(&mut self, path: &str) -> Response {
        let res: Response = self
            .agent
            .get(self.app.url(path))
            .header("Cookie", self.cookie_header())
            .header("Accept-Language", self.language)
            .call()
            .expect("the console answers")
            .into();
        self.keep_cookies(&res);
        res
    }

    pub(crate) fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Response {
        let body = serde_urlencoded::to_string(form).unwrap();
        let res: Response = self
            .agent
            .post(self.app.url(path))
            .header("Cookie", self.cookie_header())
            .header("Accept-Language", self.language)
            .content_type("application/x-www-form-urlencoded")
            .send(body.as_bytes())
            .expect("the console answers")
            .into();
        self.keep_cookies(&res);
        res
    }

    /// A form sent as `multipart/form-data` (a file upload): `parts` are
    /// (name, file name or "" for a plain field, content).
    pub(crate) fn post_multipart(&mut self, path: &str, parts: &[(&str, &str, &str)]) -> Response {
        const BOUNDARY: &str = "----casesync-console-test-3f9c";
        let mut body = String::new();
        for (name, file, content) in parts {
            let file = if file.is_empty() {
                String::new()
            } else {
                format!("; filename=\"{file}\"\r\nContent-Type: application/json")
            };
            body.push_str(&format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"{file}\r\n\r\n{content}\r\n"
            ));
        }
        body.push_str(&format!("--{BOUNDARY}--\r\n"));
        let res: Response = self
            .agent
            .post(self.app.url(path))
            .header("Cookie", self.cookie_header())
            .header("Accept-Language", self.language)
            .content_type(format!("multipart/form-data; boundary={BOUNDARY}"))
            .send(body.as_bytes())
            .expect("the console answers")
            .into();
        self.keep_cookies(&res);
        res
    }

    /// The value of the hidden field `name` in `page`.
    pub(crate) fn hidden(page: &Response, name: &str) -> String {
        let marker = format!("name=\"{name}\" value=\"");
        let start = page
            .text
            .find(&marker)
            .unwrap_or_else(|| panic!("no hidden {name} in the page:\n{}", page.text))
            + marker.len();
        page.text[start..].split('"').next().unwrap().to_string()
    }

    pub(crate) fn sign_in(&mut self, username: &str, password: &str) -> Response {
        let form = self.get("/sign-in");
        assert_eq!(form.status, 200, "{}", form.text);
        let nonce = Browser::hidden(&form, "nonce");
        self.post(
            "/sign-in",
            &[
                ("username", username),
                ("password", password),
                ("nonce", &nonce),
            ],
        )
    }
}

fn set_cookie<'r>(res: &'r Response, name: &str) -> &'r str {
    res.headers
        .iter()
        .find(|(k, v)| k.eq_ignore_ascii_case("set-cookie") && v.starts_with(&format!("{name}=")))
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no Set-Cookie for {name}: {:?}", res.headers))
}

#[test]
fn a_coordinator_signs_in_with_a_cookie_and_signs_out_and_the_session_ends() {
    // No https address, and a proxy is configured that this request did
    // not come through: nothing says TLS, so the cookie cannot ask for it.
    let app = TestApp::spawn_with(|s| {
        s.public_url = None;
        s.trusted_proxies = vec!["10.0.0.9".parse().unwrap()];
    });
    let staff = app.staff().build();
    let mut browser = Browser::new(&app);

    assert_eq!(browser.get("/").header("location"), Some("/sign-in"));
    let wrong = browser.sign_in("manager", "not the password");
    assert_eq!(wrong.status, 401);
    assert!(wrong.text.contains("The username or password is wrong."));
    assert!(!browser.cookies.contains_key("casesync_session"));

    let signed = browser.sign_in("manager", USER_PASSWORD);
    assert_eq!(signed.status, 303, "{}", signed.text);
    assert_eq!(signed.header("location"), Some("/"));
    let cookie = set_cookie(&signed, "casesync_session");
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Strict"), "{cookie}");
    assert!(
        !cookie.contains("Secure"),
        "plain http on loopback: {cookie}"
    );
    let token = browser.cookies["casesync_session"].clone();
    assert!(token.starts_with("cs_"));

    let today = browser.get("/today");
    assert_eq!(today.status, 200, "{}", today.text);
    assert!(today.text.contains("manager"));
    let csp = today.header("content-security-policy").unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"));
    assert!(!csp.contains("unsafe-inline"));

    // Sign-out without the form's CSRF value: refused, still signed in.
    let forged = browser.post("/sign-out", &[("csrf", "0123456789abcdef0123456789abcdef")]);
    assert_eq!(forged.status, 403);
    assert_eq!(browser.get("/today").status, 200);

    let csrf = Browser::hidden(&today, "csrf");
    let out = browser.post("/sign-out", &[("csrf", &csrf)]);
    assert_eq!(out.status, 303);
    assert_eq!(out.header("location"), Some("/sign-in"));
    assert!(set_cookie(&out, "casesync_session").contains("Max-Age=0"));
    // The session itself is revoked, not only forgotten by the browser.
    app.get("/api/v1/me", &token)
        .assert_problem(401, "unauthorized");
    assert_eq!(
        Browser::with_session(&app, &token)
            .get("/today")
            .header("location"),
        Some("/sign-in")
    );
    assert!(app.audit_count("login") >= 2);
    assert_eq!(app.audit_count("logout"), 1);
    drop(staff);
}

#[test]
fn a_sign_in_form_from_elsewhere_is_refused() {
    let app = TestApp::spawn();
    app.staff().build();
    let mut browser = Browser::new(&app);
    // No nonce cookie: a form posted from another site.
    let forged = browser.post(
        "/sign-in",
        &[
            ("username", "manager"),
            ("password", USER_PASSWORD),
            ("nonce", "x"),
        ],
    );
    assert_eq!(forged.status, 403);
    assert!(!browser.cookies.contains_key("casesync_session"));
}

#[test]
fn a_one_time_password_must_be_changed_first_and_a_weak_one_is_refused_with_why() {
    let app = TestApp::spawn();
    let initial = app.initial_admin_password();
    let mut browser = Browser::new(&app);
    let signed = browser.sign_in("admin", &initial);
    assert_eq!(signed.header("location"), Some("/password"));
    let old_token = browser.cookies["casesync_session"].clone();
    assert_eq!(browser.get("/today").header("location"), Some("/password"));

    let form = browser.get("/password");
    assert!(form.text.contains("one-time password"));
    let csrf = Browser::hidden(&form, "csrf");
    // Without the CSRF value nothing changes.
    let forged = browser.post(
        "/password",
        &[
            ("csrf", ""),
            ("current_password", &initial),
            ("new_password", "amber kettle orbit lantern"),
            ("repeat_password", "amber kettle orbit lantern"),
        ],
    );
    assert_eq!(forged.status, 403);
    let weak = browser.post(
        "/password",
        &[
            ("csrf", &csrf),
            ("current_password", &initial),
            ("new_password", "password12"),
            ("repeat_password", "password12"),
        ],
    );
    assert_eq!(weak.status, 422);
    assert!(weak.text.contains("too easy to guess"), "{}", weak.text);
    let changed = browser.post(
        "/password",
        &[
            ("csrf", &csrf),
            ("current_password", &initial),
            ("new_password", "amber kettle orbit lantern"),
            ("repeat_password", "amber kettle orbit lantern"),
        ],
    );
    assert_eq!(changed.status, 200, "{}", changed.text);
    assert!(changed.text.contains("Your password is changed"));
    // The one-time session ended; this browser holds the fresh one.
    app.get("/api/v1/me", &old_token)
        .assert_problem(401, "unauthorized");
    assert_ne!(browser.cookies["casesync_session"], old_token);
    assert_eq!(browser.get("/today").status, 200);
    assert_eq!(app.audit_count("password_changed"), 1);
}

#[test]
fn the_morning_list_shows_an_overdue_deadline_made_by_a_real_submission_to_its_people_only() {
    let app = TestApp::spawn();
    let staff = app.staff().other_worker().build();
    let case_id = uuid::Uuid::new_v4().to_string();
    // Received weeks ago with an immediate risk: the manual's first visit
    // (D7) is long overdue.
    let referral = build::referral(&case_id)
        .received_at("2026-11-20T17:00:00+05:00")
        .immediate_risk()
        .child("Child A")
        .envelope();
    let sent = phone(&app, &staff.worker).send(&referral);
    assert_eq!(sent.status, 201, "{}", sent.text);
    let number = app.case(&staff.coordinator, &case_id)["number"]
        .as_str()
        .unwrap()
        .to_string();

    let before = app.audit_count("deadlines_listed");
    let mut coordinator = Browser::with_session(&app, &staff.coordinator);
    let today = coordinator.get("/today");
    assert_eq!(today.status, 200, "{}", today.text);
    let overdue = today.text.split("id=\"due-soon\"").next().unwrap();
    assert!(
        overdue.contains(&format!("href=\"/cases/{case_id}\">{number}</a>")),
        "{}",
        today.text
    );
    assert!(overdue.contains("aigerim"), "the assigned worker by name");
    assert!(
        overdue.contains(" days") || overdue.contains(" hours"),
        "how late:\n{overdue}"
    );
    assert!(
        !today.text.contains("Child A"),
        "no child's name on the list"
    );
    assert_eq!(app.audit_count("deadlines_listed"), before + 1);

    // The worker it is assigned to sees it; another worker does not.
    assert!(Browser::with_session(&app, &staff.worker)
        .get("/today")
        .text
        .contains(&case_id));
    assert!(!Browser::with_session(&app, &staff.other_worker)
        .get("/today")
        .text
        .contains(&case_id));

    // In Russian when the browser asks for it.
    coordinator.language = "ru-RU, en;q=0.5";
    let russian = coordinator.get("/today");
    assert!(russian.text.contains("Просрочено"), "{}", russian.text);
    assert!(russian.text.contains("<html lang=\"ru\">"));
}

#[test]
fn behind_an_https_address_the_session_cookie_is_secure() {
    let app = TestApp::spawn_with(|s| s.public_url = Some("https://casesync.example".into()));
    app.staff().build();
    let mut browser = Browser::new(&app);
    let signed = browser.sign_in("manager", USER_PASSWORD);
    assert!(set_cookie(&signed, "casesync_session").contains("Secure"));
    // Unknown API paths still answer as the API does, not as a page.
    let missing = app.get("/api/v1/no-such-thing", &staff_token(&app));
    assert_eq!(
        missing.header("content-type"),
        Some("application/problem+json")
    );
}

fn staff_token(app: &TestApp) -> String {
    app.token_for("manager", USER_PASSWORD)
}

#[test]
fn a_coordinator_reads_a_case_with_its_child_and_assigns_it_and_others_are_refused() {
    let app = TestApp::spawn();
    let staff = app.staff().other_worker().build();
    let case_id = uuid::Uuid::new_v4().to_string();
    let referral = build::referral(&case_id)
        .received_at("2026-11-20T17:00:00+05:00")
        .immediate_risk()
        .child("Child A")
        .envelope();
    assert_eq!(phone(&app, &staff.worker).send(&referral).status, 201);

    let mut coordinator = Browser::with_session(&app, &staff.coordinator);
    let before = app.audit_count("case_read");
    let page = coordinator.get(&format!("/cases/{case_id}"));
    assert_eq!(page.status, 200, "{}", page.text);
    assert!(
        page.text.contains("Child A"),
        "the coordinator sees the child's name"
    );
    assert!(page.text.contains("overdue"), "the deadlines' verdicts");
    assert!(page.text.contains("referral_received"), "the timeline");
    assert_eq!(app.audit_count("case_read"), before + 1);

    // Assign it to the other worker, through the form.
    let bolat = app.get("/api/v1/users", &staff.coordinator).body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == "bolat")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let forged = coordinator.post(
        &format!("/cases/{case_id}/assignment"),
        &[("csrf", "nope"), ("assignee", &bolat)],
    );
    assert_eq!(forged.status, 403);
    let csrf = Browser::hidden(&page, "csrf");
    let assigned = coordinator.post(
        &format!("/cases/{case_id}/assignment"),
        &[("csrf", &csrf), ("assignee", &bolat)],
    );
    assert_eq!(assigned.status, 303, "{}", assigned.text);
    let after = coordinator.get(assigned.header("location").unwrap());
    assert!(after.text.contains("The case is assigned."));
    assert_eq!(
        app.case(&staff.coordinator, &case_id)["assigned_to"],
        bolat.as_str()
    );
    assert_eq!(app.audit_count("case_assigned"), 1);

    // The former worker no longer reads it; the new one does.
    let former = Browser::with_session(&app, &staff.worker).get(&format!("/cases/{case_id}"));
    assert_eq!(former.status, 404);
    assert!(former.text.contains("There is no such page."));
    assert!(!former.text.contains("Child A"));
    let new = Browser::with_session(&app, &staff.other_worker).get(&format!("/cases/{case_id}"));
    assert_eq!(new.status, 200);
    assert!(
        !new.text.contains("Assign the case"),
        "only coordinators assign"
    );
}

#[test]
fn the_case_list_filters_by_number_overdue_and_worker_and_pages() {
    let app = TestApp::spawn();
    let staff = app.staff().other_worker().build();
    let worker = phone(&app, &staff.worker);
    let mut ids = Vec::new();
    for i in 0..3 {
        let case_id = uuid::Uuid::new_v4().to_string();
        let referral = build::referral(&case_id)
            .received_at("2026-11-20T17:00:00+05:00")
            .immediate_risk()
            .child(&format!("Child {i}"))
            .envelope();
        assert_eq!(worker.send(&referral).status, 201);
        ids.push(case_id);
    }
    let mut coordinator = Browser::with_session(&app, &staff.coordinator);
    let all = coordinator.get("/cases");
    assert_eq!(all.status, 200, "{}", all.text);
    for id in &ids {
        assert!(all.text.contains(&format!("/cases/{id}\"")), "{id}");
    }
    assert!(!all.text.contains("Child 0"), "no names on the list");
    let one = coordinator.get("/cases?number=2&site=&worker=");
    assert_eq!(
        one.text.matches("href=\"/cases/").count(),
        1,
        "{}",
        one.text
    );
    assert!(one.text.contains(&format!("/cases/{}\"", ids[1])));
    let overdue = coordinator.get("/cases?overdue=on");
    assert_eq!(overdue.text.matches("href=\"/cases/").count(), 3);
    let theirs = coordinator.get("/cases?worker=bolat");
    assert!(theirs.text.contains("No case matches."));
    // A field worker's list holds their own cases only.
    let other = Browser::with_session(&app, &staff.other_worker).get("/cases");
    assert!(other.text.contains("No case matches."));
    // An unknown worker is the API's 422, as a page.
    let unknown = coordinator.get("/cases?worker=nobody-here");
    assert_eq!(unknown.status, 422);
    assert!(unknown.text.contains("The form could not be read."));
}

#[test]
fn a_coordinators_morning_shows_what_waits_on_them() {
    let app = TestApp::spawn();
    let staff = app.staff().build();
    let worker = phone(&app, &staff.worker);
    // Two referrals of what may be the same child.
    let (first, second) = (
        uuid::Uuid::new_v4().to_string(),
        uuid::Uuid::new_v4().to_string(),
    );
    for id in [&first, &second] {
        let referral = build::referral(id)
            .received_at("2026-11-20T17:00:00+05:00")
            .child("Aliya Nurlanovna")
            .envelope();
        assert_eq!(worker.send(&referral).status, 201);
    }
    // A form about a case the server has not seen: held.
    let unseen = uuid::Uuid::new_v4().to_string();
    let held = common::phone::form_envelope(
        "kz.initial_assessment",
        &unseen,
        common::phone::fixture("kz.initial_assessment"),
    );
    let sent = worker.send(&held);
    assert_eq!(sent.status, 201, "{}", sent.text);
    assert_eq!(sent.body["status"], "pending_case");
    // Waiting longer than pending_case_days (14 by default).
    let waiting = held["instance_id"].as_str().unwrap().to_string();
    let received: chrono::NaiveDateTime = submissions::table
        .find(&waiting)
        .select(submissions::received_at)
        .first(&mut app.conn())
        .unwrap();
    diesel::update(submissions::table.find(&waiting))
        .set(submissions::received_at.eq(received - chrono::Duration::days(15)))
        .execute(&mut app.conn())
        .unwrap();

    let mut coordinator = Browser::with_session(&app, &staff.coordinator);
    // Unassign the first: it now needs an assignee.
    let page = coordinator.get(&format!("/cases/{first}"));
    let csrf = Browser::hidden(&page, "csrf");
    let done = coordinator.post(
        &format!("/cases/{first}/assignment"),
        &[("csrf", &csrf), ("assignee", "")],
    );
    assert_eq!(done.status, 303);

    let today = coordinator.get("/today");
    assert_eq!(today.status, 200, "{}", today.text);
    let section = |id: &str| {
        let start = today.text.find(&format!("id=\"{id}\"")).unwrap();
        today.text[start..]
            .split("</section>")
            .next()
            .unwrap()
            .to_string()
    };
    assert!(section("needs-assignee").contains(&format!("/cases/{first}")));
    assert!(!section("needs-assignee").contains(&format!("/cases/{second}")));
    let held_part = section("held");
    assert!(held_part.contains("kz.initial_assessment"), "{held_part}");
    assert!(held_part.contains(&unseen));
    assert!(held_part.contains("aigerim"));
    let duplicates = section("duplicates");
    assert!(
        duplicates.contains(&format!("/cases/{first}"))
            && duplicates.contains(&format!("/cases/{second}")),
        "{duplicates}"
    );
    assert!(
        !today.text.contains("Aliya"),
        "no names on the morning list"
    );
    for action in [
        "deadlines_listed",
        "cases_listed",
        "conflicts_listed",
        "duplicates_listed",
    ] {
        assert!(app.audit_count(action) >= 1, "{action} audited");
    }
}

#[test]
fn the_reader_chooses_a_language_and_comes_back_to_the_same_page_of_this_server_only() {
    let app = TestApp::spawn();
    let mut browser = Browser::new(&app);
    let page = browser.get("/sign-in");
    assert!(
        page.text.contains("href=\"/language/ru?back=/sign-in\""),
        "{}",
        page.text
    );
    let chosen = browser.get("/language/ru?back=/sign-in");
    assert_eq!(chosen.status, 303);
    assert_eq!(chosen.header("location"), Some("/sign-in"));
    assert_eq!(browser.cookies["casesync_lang"], "ru");
    assert!(browser.get("/sign-in").text.contains("Вход"));
    // Never sent elsewhere.
    for back in ["https://evil.example/", "//evil.example/", "evil"] {
        let res = browser.get(&format!(
            "/language/en?back={}",
            serde_urlencoded::to_string([("x", back)])
                .unwrap()
                .trim_start_matches("x=")
        ));
        assert_eq!(res.header("location"), Some("/"), "{back}");
    }
    assert!(browser.get("/sign-in").text.contains("Sign in"));
    // A language the console does not speak changes nothing.
    browser.get("/language/xx");
    assert_eq!(browser.cookies["casesync_lang"], "en");
}

#[test]
fn a_form_reads_in_labelled_sections_for_those_who_may_read_its_case_only() {
    let app = TestApp::spawn();
    let staff = app.staff().other_worker().build();
    let case_id = uuid::Uuid::new_v4().to_string();
    let referral = build::referral(&case_id)
        .received_at("2026-11-20T17:00:00+05:00")
        .child("Child A")
        .envelope();
    let instance = referral["instance_id"].as_str().unwrap().to_string();
    assert_eq!(phone(&app, &staff.worker).send(&referral).status, 201);

    let mut coordinator = Browser::with_session(&app, &staff.coordinator);
    let case = coordinator.get(&format!("/cases/{case_id}"));
    assert!(
        case.text
            .contains(&format!("href=\"/submissions/{instance}\"")),
        "the timeline links the form"
    );
    let before = app.audit_count("submission_read");
    let form = coordinator.get(&format!("/submissions/{instance}"));
    assert_eq!(form.status, 200, "{}", form.text);
    assert!(form.text.contains("Child A"));
    // Questions by their titles, sections as headings, choices by title.
    let kz: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/form-definitions/kz/referral.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let child_title = kz["properties"]["child"]["title"].as_str().unwrap();
    assert!(
        form.text.contains(&format!("heading\">{child_title}")),
        "{}",
        form.text
    );
    assert_eq!(app.audit_count("submission_read"), before + 1);

    // A worker the case is not assigned to: as if it were not there.
    let other =
        Browser::with_session(&app, &staff.other_worker).get(&format!("/submissions/{instance}"));
    assert_eq!(other.status, 404);
    assert!(!other.text.contains("Child A"));
    let unknown = coordinator.get("/submissions/no-such-form");
    assert_eq!(unknown.status, 404);
}

/// #18 ("every console page < 100 ms p99 on a database of 100,000
/// cases"): a site with tens of thousands of deadlines overdue cannot list
/// them all each morning. Today shows each rule's count and its most
/// overdue ten, and links to the site's whole list by deadline. Here 12
/// referrals with evidence of immediate risk leave §2.2 D7 (initial
/// assessment, manual 8.2.4) overdue on 12 cases.
#[test]
fn today_shows_each_rules_count_and_its_ten_most_overdue_with_a_link_to_all() {
    let app = TestApp::spawn();
    let staff = app.staff().build();
    let worker = phone(&app, &staff.worker);
    let mut ids = Vec::new();
    for i in 0..12 {
        let case_id = uuid::Uuid::new_v4().to_string();
        let referral = build::referral(&case_id)
            .received_at(&format!("2026-11-{:02}T09:00:00+05:00", 20 - i / 4))
            .immediate_risk()
            .child("Child")
            .envelope();
        assert_eq!(worker.send(&referral).status, 201);
        ids.push((20 - i / 4, case_id));
    }
    let mut coordinator = Browser::with_session(&app, &staff.coordinator);
    let today = coordinator.get("/today");
    assert_eq!(today.status, 200, "{}", today.text);
    let overdue = today.text.split("id=\"due-soon\"").next().unwrap();
    let title = "Initial assessment completed (evidence of immediate risk, or removal)";
    let group = overdue
        .split("<tbody>")
        .find(|g| g.contains(title))
        .unwrap_or_else(|| panic!("no D7 group:\n{overdue}"));
    assert!(
        group.contains("(the most urgent 10 / 12)"),
        "the count and how many are shown:\n{group}"
    );
    // The ten most overdue: received earliest. Cases due at the same time
    // come in the order the index keeps them (the order written, on
    // SQLite), so of the four received last, any two.
    ids.sort();
    let shown: Vec<&str> = group
        .split("href=\"/cases/")
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap())
        .collect();
    assert_eq!(shown.len(), 10, "{group}");
    let day_of = |id: &str| ids.iter().find(|(_, i)| i == id).unwrap().0;
    let days: Vec<_> = shown.iter().map(|id| day_of(id)).collect();
    assert_eq!(
        days,
        [18, 18, 18, 18, 19, 19, 19, 19, 20, 20],
        "most overdue first"
    );
    let mut first_eight: Vec<&str> = shown[..8].to_vec();
    first_eight.sort();
    let mut expected: Vec<&str> = ids[..8].iter().map(|(_, id)| id.as_str()).collect();
    expected.sort();
    assert_eq!(first_eight, expected);
    // The whole list: the site's overdue cases by deadline, all twelve.
    let link = overdue
        .split("class=\"all-deadlines\" href=\"")
        .nth(1)
        .expect("a link to the whole list")
        .split('"')
        .next()
        .unwrap()
        .replace("&#38;", "&");
    assert_eq!(link, "/cases?site=KZ-CAM-ALA&overdue=on&sort=due");
    let all = coordinator.get(&link);
    assert_eq!(all.status, 200, "{}", all.text);
    for (_, id) in &ids {
        assert!(all.text.contains(&format!("/cases/{id}\"")), "{id}");
    }

    // A rule counts up to a bound (Today's is 1,000); past it the count
    // says "more than" (the page: "1000+").
    use casesync::auth::{Principal, Role};
    use casesync::cases::views::{self, DueStatus};
    use casesync::db::schema::{user_sites, users};
    let (user_id, site_id): (String, String) = users::table
        .inner_join(user_sites::table)
        .filter(users::username.eq("manager"))
        .select((users::id, user_sites::site_id))
        .first(&mut app.conn())
        .unwrap();
    let who = Principal {
        user_id,
        username: "manager".into(),
        role: Role::Coordinator,
        site_ids: vec![site_id],
        token_id: String::new(),
        token_created_by: None,
        must_change_password: false,
    };
    let d7 = |count_up_to: i64| {
        views::due_by_rule(&mut app.conn(), &who, chrono::Utc::now(), 10, count_up_to)
            .unwrap()
            .into_iter()
            .find(|g| g.rule == "D7" && g.status == DueStatus::Overdue)
            .unwrap()
    };
    let capped = d7(11);
    assert_eq!(
        (capped.count, capped.more, capped.items.len()),
        (11, true, 10)
    );
    let exact = d7(12);
    assert_eq!(
        (exact.count, exact.more, exact.items.len()),
        (12, false, 10)
    );
}
