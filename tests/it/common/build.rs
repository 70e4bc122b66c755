//! Builders the tests share, one copy of each: the people of a site, a
//! referral, sending a form, and the reads most tests check against. A
//! test that needs something different says so at its call (a builder
//! method, a field set on the result), not in a copy of the helper.

use casesync::db::schema::{audit_log, submissions};
use diesel::prelude::*;
use serde_json::{json, Value};

use super::phone::{declarations, fixture, form_envelope, Phone};
use super::TestApp;

/// Sends `form_id` about `case_id` from `phone`, asserts it is stored
/// (201), and returns its instance id.
pub fn submit(phone: &Phone, form_id: &str, case_id: &str, data: Value) -> String {
    let envelope = form_envelope(form_id, case_id, data);
    let res = phone.send(&envelope);
    assert_eq!(res.status, 201, "{form_id} for {case_id}: {}", res.text);
    envelope["instance_id"].as_str().unwrap().to_string()
}

/// A KZ referral (`kz.referral`) of the form fixture, changed where a test
/// needs it to be: `referral(&case_id).child("Dana").envelope()`.
pub struct Referral {
    case_id: String,
    data: Value,
}

pub fn referral(case_id: &str) -> Referral {
    Referral {
        case_id: case_id.to_string(),
        data: fixture("kz.referral"),
    }
}

impl Referral {
    /// The child's name.
    pub fn child(mut self, name: &str) -> Self {
        self.data["child"]["child_name"] = json!(name);
        self
    }

    /// The child's date of birth (`YYYY-MM-DD`).
    pub fn born(mut self, dob: &str) -> Self {
        self.data["child"]["child_dob"] = json!(dob);
        self
    }

    /// The date of birth is known, not estimated.
    pub fn dob_known(mut self) -> Self {
        self.data["child"]["child_dob_estimated"] = json!(false);
        self
    }

    pub fn sex(mut self, sex: &str) -> Self {
        self.data["child"]["child_sex"] = json!(sex);
        self
    }

    /// When the centre received the referral (RFC 3339, with its offset).
    pub fn received_at(mut self, at: &str) -> Self {
        self.data["receipt"]["received_at"] = json!(at);
        self
    }

    /// The referral gives evidence of immediate risk (KZ 8.5: 24-hour clock).
    pub fn immediate_risk(mut self) -> Self {
        self.data["receipt"]["immediate_risk"] = json!(true);
        self
    }

    /// The form's data, for a test that sends it some other way.
    pub fn data(self) -> Value {
        self.data
    }

    /// The envelope a phone sends.
    pub fn envelope(self) -> Value {
        form_envelope("kz.referral", &self.case_id, self.data)
    }
}

/// The people a test signs in as, each a session token; the same
/// usernames in every test. KZ (`TestApp::staff`): at KZ-CAM-ALA the
/// field workers aigerim and bolat, the coordinator manager and the
/// analyst; elsewhere, the coordinator shymkent of KZ-CAM-SHY. BT
/// (`.bt()`): at BT-NCWC karma and dorji, the coordinator pema and the
/// analyst sonam. `admin` is the first administrator, whose password the builder
/// changed. A role not asked for is an empty token (the server answers 401).
#[derive(Debug, Clone)]
pub struct Staff {
    pub admin: String,
    pub worker: String,
    pub other_worker: String,
    pub coordinator: String,
    pub elsewhere: String,
    pub analyst: String,
}

/// Which of a site's people to create: the field worker and the
/// coordinator always, the others when asked.
pub struct StaffBuilder<'a> {
    app: &'a TestApp,
    admin: Option<String>,
    bt: bool,
    other_worker: bool,
    elsewhere: bool,
    analyst: bool,
}

impl TestApp {
    /// The staff of CAM Almaty (KZ): `app.staff().analyst().build()`.
    pub fn staff(&self) -> StaffBuilder<'_> {
        StaffBuilder {
            app: self,
            admin: None,
            bt: false,
            other_worker: false,
            elsewhere: false,
            analyst: false,
        }
    }

    /// The case as its staff read it (`GET /cases/{id}`, 200).
    pub fn case(&self, token: &str, case_id: &str) -> Value {
        let res = self.get(&format!("/api/v1/cases/{case_id}"), token);
        assert_eq!(res.status, 200, "{}", res.text);
        res.body
    }

    /// How many audit rows record `action`.
    pub fn audit_count(&self, action: &str) -> i64 {
        audit_log::table
            .filter(audit_log::action.eq(action))
            .count()
            .get_result(&mut self.conn())
            .unwrap()
    }

    /// The detail of the newest audit row recording `action` (empty if none
    /// was written).
    pub fn last_audit_detail(&self, action: &str) -> String {
        audit_log::table
            .filter(audit_log::action.eq(action))
            .order(audit_log::id.desc())
            .select(audit_log::detail)
            .first::<Option<String>>(&mut self.conn())
            .unwrap()
            .unwrap_or_default()
    }

    /// Submissions stored, read from the database.
    pub fn stored_submissions(&self) -> i64 {
        submissions::table
            .count()
            .get_result(&mut self.conn())
            .unwrap()
    }

    /// Forms kept but held out of their case for a coordinator (202).
    pub fn quarantined_submissions(&self) -> i64 {
        submissions::table
            .filter(submissions::status.eq("quarantined"))
            .count()
            .get_result(&mut self.conn())
            .unwrap()
    }
}

impl StaffBuilder<'_> {
    /// The NCWC's staff (BT) instead of Almaty's.
    pub fn bt(mut self) -> Self {
        self.bt = true;
        self
    }

    pub fn other_worker(mut self) -> Self {
        self.other_worker = true;
        self
    }

    /// A coordinator of another site (KZ only).
    pub fn elsewhere(mut self) -> Self {
        assert!(!self.bt, "the BT staff have no other site here");
        self.elsewhere = true;
        self
    }

    pub fn analyst(mut self) -> Self {
        self.analyst = true;
        self
    }

    /// Made by an admin already signed in (the first admin's one-time
    /// password is gone once a builder has changed it).
    pub fn by(mut self, admin: &str) -> Self {
        self.admin = Some(admin.to_string());
        self
    }

    pub fn build(self) -> Staff {
        let app = self.app;
        let admin = self.admin.unwrap_or_else(|| app.admin_token());
        let (site, worker, other_worker, coordinator, analyst) = if self.bt {
            ("BT-NCWC", "karma", "dorji", "pema", "sonam")
        } else {
            ("KZ-CAM-ALA", "aigerim", "bolat", "manager", "analyst")
        };
        let make = |wanted: bool, username: &str, role: &str, site: &str| {
            if wanted {
                app.user(&admin, username, role, &[site]).1
            } else {
                String::new()
            }
        };
        let worker = make(true, worker, "field_worker", site);
        let other_worker = make(self.other_worker, other_worker, "field_worker", site);
        let coordinator = make(true, coordinator, "coordinator", site);
        let elsewhere = make(self.elsewhere, "shymkent", "coordinator", "KZ-CAM-SHY");
        let analyst = make(self.analyst, analyst, "analyst", site);
        Staff {
            admin,
            worker,
            other_worker,
            coordinator,
            elsewhere,
            analyst,
        }
    }
}

/// A coordinator's approval of `subject` on the case, recorded as made at `at`.
pub fn approve_at(app: &TestApp, coordinator: &str, case_id: &str, subject: &str, at: &str) {
    let res = app.post(
        &format!("/api/v1/cases/{case_id}/approvals"),
        coordinator,
        json!({ "subject": subject, "decision": "approved", "occurred_at": at }),
    );
    assert_eq!(res.status, 200, "{subject} of {case_id}: {}", res.text);
}

/// A KZ child record setting the child's sex, made on a phone offline from
/// case version `base` (two of these from one version raise a conflict).
pub fn offline_child_record(case_id: &str, base: i64, sex: &str, day: &str) -> Value {
    let mut data = fixture("kz.child");
    data["identity"]["sex"] = json!(sex);
    data["record"]["recorded_date"] = json!(day);
    let mut env = form_envelope("kz.child", case_id, data.clone());
    env["base_case_version"] = json!(base);
    env["attachments"] = json!(declarations(&data));
    env
}
