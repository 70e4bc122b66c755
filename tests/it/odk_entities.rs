//! Cases on the phone (ODK Entities, docs/odk.md "Cases on the phone"),
//! end to end without Android: JavaRosa (ODK Collect's engine) fills the
//! XForms the server serves, a follow-up picking its case from the case
//! list the manifest serves; each is encrypted as Collect does and sent to
//! `/submission`. The case folds exactly as the same answers sent as JWE
//! do on another server. The list follows assignments, is audited, and a
//! stale `baseVersion` raises the conflict a stale JSON submission raises.

use std::path::PathBuf;

use crate::common;

use casesync::crypto::{keys, odk};
use casesync::odk::instance::{self, Instance};
use casesync::odk::nodes::FormTable;
use common::odk::{
    basic, comparable, compile_fill, device_token, get, javarosa_fill, media_of, multipart_body,
    parts_of, post_body, validate_jar,
};
use common::phone::{fixture, form_envelope, phone_for};
use common::{Response, TestApp};
use md5::{Digest, Md5};
use serde_json::{json, Map, Value};

const COMPLETED: &str = "2026-03-02T10:40:00.000+05:00";

/// JavaRosa, as built once per test.
struct JavaRosa {
    jar: PathBuf,
    classes: PathBuf,
    dir: tempfile::TempDir,
}

impl JavaRosa {
    fn new() -> Option<JavaRosa> {
        let jar = validate_jar()?;
        let dir = tempfile::tempdir().unwrap();
        let classes = compile_fill(&jar, dir.path());
        Some(JavaRosa { jar, classes, dir })
    }
}

/// One worker's phone running Collect: signed in with Basic and a device
/// token, holding the forms and the case list it downloaded.
struct Collect<'a> {
    app: &'a TestApp,
    programme: &'static str,
    auth: String,
    session: String,
    /// Where the phone keeps a form's attachments (the case list).
    media: PathBuf,
    tools: &'a JavaRosa,
}

/// A form JavaRosa filled, as Collect would send it, and its answers.
struct Filled {
    xml: String,
    read: Instance,
    answers: Value,
}

fn shipped_table(form_id: &str) -> FormTable {
    let set = casesync::forms::definitions::shipped();
    let form = set
        .forms
        .iter()
        .map(|f| casesync::forms::check::check(&f.document, &set.resources).unwrap())
        .find(|f| f.meta.id == form_id)
        .unwrap();
    FormTable::build(&form.document).unwrap()
}

/// The path of a link the server gave (its public address is not this
/// test's loopback one).
fn on_this_server(url: &str) -> &str {
    &url[url.find("/odk/").unwrap()..]
}

fn between<'t>(text: &'t str, start: &str, end: &str) -> Option<&'t str> {
    let (_, rest) = text.split_once(start)?;
    Some(rest.split_once(end)?.0)
}

impl<'a> Collect<'a> {
    /// `username`'s phone, the user made by `admin` at `site`.
    fn new(
        app: &'a TestApp,
        tools: &'a JavaRosa,
        programme: &'static str,
        admin: &str,
        username: &str,
        site: &str,
    ) -> (Collect<'a>, String) {
        let (id, session) = app.user(admin, username, "field_worker", &[site]);
        let device = device_token(app, admin, &id);
        let media = tools.dir.path().join(username);
        std::fs::create_dir_all(&media).unwrap();
        let collect = Collect {
            app,
            programme,
            auth: basic(username, &device),
            session,
            media,
            tools,
        };
        (collect, id)
    }

    fn get(&self, path: &str) -> Response {
        let res = get(self.app, path, Some(&self.auth));
        assert_eq!(res.status, 200, "{path}: {}", res.text);
        res
    }

    /// The form's entry in `formList`.
    fn listed(&self, form_id: &str) -> String {
        let list = self.get(&format!(
            "/odk/{}/formList?formID={form_id}",
            self.programme
        ));
        between(&list.text, "<xform>", "</xform>")
            .unwrap_or_else(|| panic!("{form_id} not listed: {}", list.text))
            .to_string()
    }

    /// Downloads the case list as Collect does for `form_id` (manifest,
    /// then the file it names); checks the manifest's md5 is the file's.
    /// (the md5, the CSV).
    fn case_list(&self, form_id: &str) -> (String, String) {
        let entry = self.listed(form_id);
        let manifest_url = between(&entry, "<manifestUrl>", "</manifestUrl>")
            .unwrap_or_else(|| panic!("{form_id} has no manifest: {entry}"));
        let manifest = self.get(on_this_server(manifest_url));
        assert!(
            manifest.text.contains("<mediaFile type=\"entityList\">"),
            "{}",
            manifest.text
        );
        assert_eq!(
            between(&manifest.text, "<filename>", "</filename>"),
            Some("cases.csv"),
            "{}",
            manifest.text
        );
        let hash = between(&manifest.text, "<hash>md5:", "</hash>")
            .unwrap()
            .to_string();
        let url = between(&manifest.text, "<downloadUrl>", "</downloadUrl>").unwrap();
        let file = self.get(on_this_server(url));
        assert_eq!(hex::encode(Md5::digest(&file.bytes)), hash);
        std::fs::write(self.media.join("cases.csv"), &file.bytes).unwrap();
        (hash, file.text)
    }

    /// JavaRosa fills the served XForm of `form_id` with `answers`; a
    /// follow-up picks `case` from the case list last downloaded.
    fn fill(&self, form_id: &str, answers: &Value, case: Option<&str>) -> Filled {
        let xform = self.get(&format!("/odk/{}/forms/{form_id}.xml", self.programme));
        let form_path = self.media.join(format!("{form_id}.xml"));
        std::fs::write(&form_path, &xform.bytes).unwrap();
        let table = shipped_table(form_id);
        // Collect stamps timeEnd when the form is finalised; JavaRosa's
        // walk stops before that, so the test stamps it.
        let mut more = vec![format!("H\t/data[1]/meta[1]/timeEnd[1]\t{COMPLETED}")];
        more.extend(case.map(|c| format!("Q\t/data[1]/meta[1]/case_id[1]\t{c}")));
        let xml = javarosa_fill(
            &self.tools.jar,
            &self.tools.classes,
            &form_path,
            &table,
            answers.as_object().unwrap(),
            &more,
            Some(&self.media),
        )
        .unwrap();
        let read = instance::read(&table, &xml).unwrap_or_else(|e| panic!("{e}\n{xml}"));
        // The answers as the phone holds them (date-times in its zone).
        let answers = Value::Object(read.answers.clone());
        Filled { xml, read, answers }
    }

    /// The filled form encrypted as Collect does, POSTed to /submission.
    fn send(&self, filled: &Filled) -> Response {
        let jwk = self
            .app
            .get(
                &format!("/api/v1/programmes/{}/keys/current", self.programme),
                &self.session,
            )
            .body;
        let key = keys::public_key_from_jwk(&jwk).unwrap();
        let media = media_of(&filled.answers);
        let media: Vec<(&str, &[u8])> = media
            .iter()
            .map(|(n, b)| (n.as_str(), b.as_slice()))
            .collect();
        let instance_id = filled.read.meta.instance_id.as_deref().unwrap();
        let encrypted = odk::encrypt(
            &key,
            &filled.read.form_id,
            filled.read.version.as_deref(),
            &format!("uuid:{instance_id}"),
            filled.xml.as_bytes(),
            &media,
        );
        post_body(
            self.app,
            &format!("/odk/{}/submission?deviceID=tablet-7", self.programme),
            &self.auth,
            &multipart_body(&parts_of(&encrypted)),
        )
    }
}

/// The same answers sent as a JWE (and its files) by `session` on `app`:
/// the same instance, case, times and base version as the ODK form.
fn send_as_jwe(app: &TestApp, session: &str, programme: &str, filled: &Filled) {
    let meta = &filled.read.meta;
    let case_id = meta.entity_id.as_deref().unwrap();
    let mut envelope = form_envelope(&filled.read.form_id, case_id, filled.answers.clone());
    envelope["instance_id"] = json!(meta.instance_id.as_deref().unwrap());
    envelope["started_at"] = json!(meta.time_start.as_deref().unwrap());
    envelope["completed_at"] = json!(meta.time_end.as_deref().unwrap());
    if let Some(base) = &meta.entity_base_version {
        envelope["base_case_version"] = json!(base.parse::<i64>().unwrap());
    }
    let p = phone_for(app, session, programme);
    let res = p.send(&envelope);
    assert_eq!(res.status, 201, "{}", res.text);
    for (name, content) in media_of(&filled.answers) {
        let res = p.attach(meta.instance_id.as_deref().unwrap(), &name, &content);
        assert_eq!(res.status, 201, "{}", res.text);
    }
}

fn assert_created(res: &Response) {
    assert_eq!(res.status, 201, "{}", res.text);
    assert!(res.text.contains("Received"), "{}", res.text);
}

/// The row of `case_id` in a case list: (label, version, number, state).
fn row<'t>(csv: &'t str, case_id: &str) -> Option<Vec<&'t str>> {
    csv.lines()
        .find(|l| l.starts_with(case_id))
        .map(|l| l.split(',').skip(1).collect())
}

/// Opens a case from Collect, then follows it up from the case list, on
/// one server; the same answers as JWE on another; both cases and
/// timelines agree. Returns what a test goes on with.
struct RoundTrip<'a> {
    collect: Collect<'a>,
    case_id: String,
    twin_session: String,
    /// The first administrator's session on `app`.
    admin: String,
}

#[allow(clippy::too_many_arguments)]
fn round_trip<'a>(
    app: &'a TestApp,
    twin: &TestApp,
    tools: &'a JavaRosa,
    programme: &'static str,
    site: &str,
    username: &str,
    opening: (&str, Value),
    follow_up: (&str, Value),
) -> RoundTrip<'a> {
    let admin = app.admin_token();
    let (collect, _) = Collect::new(app, tools, programme, &admin, username, site);

    // Only the follow-up has a manifest; the list is empty at first.
    assert!(!collect.listed(opening.0).contains("<manifestUrl>"));
    let (empty_hash, empty) = collect.case_list(follow_up.0);
    assert_eq!(empty, "name,label,__version,number,state\r\n");

    // The opening form: a new entity, the new case, under a neutral label.
    let opened = collect.fill(opening.0, &opening.1, None);
    let case_id = opened.read.meta.entity_id.clone().unwrap();
    assert_eq!(opened.read.meta.case_id.as_deref(), Some(case_id.as_str()));
    assert!(uuid::Uuid::parse_str(&case_id).is_ok());
    assert!(opened.xml.contains("create=\"1\""), "{}", opened.xml);
    assert!(
        opened.xml.contains("<label>New case, opened 20"),
        "{}",
        opened.xml
    );
    assert_created(&collect.send(&opened));

    // The list now holds the case, by number, with its version; its hash
    // changed, so Collect fetches it again.
    let (hash, csv) = collect.case_list(follow_up.0);
    assert_ne!(hash, empty_hash);
    let case = app.case(&collect.session, &case_id);
    let number = case["number"].as_str().unwrap();
    let version = case["version"].as_i64().unwrap().to_string();
    assert_eq!(
        row(&csv, &case_id),
        Some(vec![
            number,
            version.as_str(),
            number,
            case["state"].as_str().unwrap()
        ]),
        "{csv}"
    );

    // The follow-up picks it: case id and base version from the list.
    let followed = collect.fill(follow_up.0, &follow_up.1, Some(&case_id));
    let meta = &followed.read.meta;
    assert_eq!(meta.case_id.as_deref(), Some(case_id.as_str()));
    assert_eq!(meta.entity_id.as_deref(), Some(case_id.as_str()));
    assert_eq!(meta.base_case_version.as_deref(), Some(version.as_str()));
    assert_eq!(meta.entity_base_version.as_deref(), Some(version.as_str()));
    assert!(followed.xml.contains("update=\"1\""), "{}", followed.xml);
    assert_created(&collect.send(&followed));

    // The same answers as JWE, on another server.
    let twin_admin = twin.admin_token();
    let (_, twin_session) = twin.user(&twin_admin, username, "field_worker", &[site]);
    send_as_jwe(twin, &twin_session, programme, &opened);
    send_as_jwe(twin, &twin_session, programme, &followed);
    assert_same_case(app, &collect.session, twin, &twin_session, &case_id);
    RoundTrip {
        collect,
        case_id,
        twin_session,
        admin,
    }
}

fn assert_same_case(app: &TestApp, session: &str, twin: &TestApp, twin_session: &str, id: &str) {
    let timeline = format!("/api/v1/cases/{id}/timeline");
    assert_eq!(
        comparable(app.case(session, id)),
        comparable(twin.case(twin_session, id))
    );
    assert_eq!(
        comparable(app.get(&timeline, session).body),
        comparable(twin.get(&timeline, twin_session).body)
    );
}

fn answers(form_id: &str, change: impl FnOnce(&mut Map<String, Value>)) -> Value {
    let mut data = fixture(form_id);
    change(data.as_object_mut().unwrap());
    data
}

/// The KZ referral and initial assessment from Collect fold as their JWE
/// twins; two edits of the child's record from the same (now stale) list
/// raise the conflict JSON raises; a reassigned case leaves the list.
#[test]
fn a_kz_case_opened_and_followed_up_from_collect_folds_as_jwe_and_leaves_the_list_when_reassigned()
{
    let Some(tools) = JavaRosa::new() else { return };
    let app = TestApp::spawn();
    let twin = TestApp::spawn();
    let referral = common::build::referral("-").child("Dana Entity").data();
    let assessment = answers("kz.initial_assessment", |d| {
        d["admin"]["child_removed"] = json!(false);
        d["admin"].as_object_mut().unwrap().remove("removal_at");
    });
    let trip = round_trip(
        &app,
        &twin,
        &tools,
        "kz",
        "KZ-CAM-ALA",
        "aigerim",
        ("kz.referral", referral),
        ("kz.initial_assessment", assessment),
    );
    let (collect, case_id) = (&trip.collect, trip.case_id.as_str());

    // Two edits of the child's record from one download of the list: the
    // second's baseVersion is stale, as a JSON submission's would be.
    let (_, csv) = collect.case_list("kz.child");
    assert!(row(&csv, case_id).is_some(), "{csv}");
    let record = |sex: &str| {
        answers("kz.child", |d| {
            d["identity"]["sex"] = json!(sex);
        })
    };
    let first = collect.fill("kz.child", &record("male"), Some(case_id));
    let second = collect.fill("kz.child", &record("female"), Some(case_id));
    assert_eq!(
        first.read.meta.entity_base_version,
        second.read.meta.entity_base_version
    );
    assert_created(&collect.send(&first));
    assert_created(&collect.send(&second));
    send_as_jwe(&twin, &trip.twin_session, "kz", &first);
    send_as_jwe(&twin, &trip.twin_session, "kz", &second);
    let case = app.case(&collect.session, case_id);
    assert!(case["open_conflicts"].as_i64().unwrap() >= 1, "{case:#}");
    assert_same_case(&app, &collect.session, &twin, &trip.twin_session, case_id);

    // Reading the list is audited as a sync is.
    let admin = trip.admin.clone();
    let audit = app.get("/api/v1/audit?action=cases_synced", &admin);
    assert!(audit.text.contains("(ODK case list)"), "{}", audit.text);

    // Reassigned to bolat: it leaves aigerim's list (a new hash) and
    // joins bolat's.
    let (hash, _) = collect.case_list("kz.child");
    let (bolat, bolat_id) = Collect::new(&app, &tools, "kz", &admin, "bolat", "KZ-CAM-ALA");
    let (_, manager) = app.user(&admin, "manager", "coordinator", &["KZ-CAM-ALA"]);
    let res = app.post(
        &format!("/api/v1/cases/{case_id}/assignment"),
        &manager,
        json!({ "assignee": bolat_id }),
    );
    assert_eq!(res.status, 200, "{}", res.text);
    let (after, csv) = collect.case_list("kz.child");
    assert_ne!(after, hash);
    assert!(row(&csv, case_id).is_none(), "{csv}");
    let (_, csv) = bolat.case_list("kz.child");
    assert!(row(&csv, case_id).is_some(), "{csv}");
    // Collect's integrity check drops it from aigerim's phone, not bolat's;
    // an id the server does not know (a case made offline) stays.
    let unknown = uuid::Uuid::new_v4().to_string();
    let path = format!("/odk/kz/entities/cases/integrity?id={case_id},{unknown}");
    let gone = format!("<entity id=\"{case_id}\"><deleted>true</deleted></entity>");
    let kept = format!("<entity id=\"{unknown}\"><deleted>false</deleted></entity>");
    let aigerim = collect.get(&path);
    assert!(
        aigerim.text.contains(&gone) && aigerim.text.contains(&kept),
        "{}",
        aigerim.text
    );
    assert_eq!(aigerim.header("x-openrosa-version"), Some("1.0"));
    let theirs = bolat.get(&path).text;
    assert!(
        theirs.contains(&format!(
            "<entity id=\"{case_id}\"><deleted>false</deleted>"
        )),
        "{theirs}"
    );
}

/// The BT registration and a follow-up from Collect fold as their JWE
/// twins.
#[test]
fn a_bt_case_registered_and_followed_up_from_collect_folds_as_jwe() {
    let Some(tools) = JavaRosa::new() else { return };
    let app = TestApp::spawn();
    let twin = TestApp::spawn();
    round_trip(
        &app,
        &twin,
        &tools,
        "bt",
        "BT-NCWC",
        "karma",
        ("bt.registration", fixture("bt.registration")),
        ("bt.follow_up", fixture("bt.follow_up")),
    );
}

/// A follow-up whose entity and hidden case fields disagree was altered
/// after the phone made it: refused, nothing stored.
#[test]
fn an_entity_that_names_another_case_than_the_form_is_refused() {
    let Some(tools) = JavaRosa::new() else { return };
    let app = TestApp::spawn();
    let admin = app.admin_token();
    let (collect, _) = Collect::new(&app, &tools, "kz", &admin, "aigerim", "KZ-CAM-ALA");
    let mut opened = collect.fill("kz.referral", &common::build::referral("-").data(), None);
    let case_id = opened.read.meta.entity_id.clone().unwrap();
    let other = uuid::Uuid::new_v4().to_string();
    opened.xml = opened
        .xml
        .replacen(&format!("id=\"{case_id}\""), &format!("id=\"{other}\""), 1);
    let before = app.stored_submissions();
    let res = collect.send(&opened);
    assert_eq!(res.status, 400, "{}", res.text);
    assert!(res.text.contains("meta/entity id"), "{}", res.text);
    assert_eq!(app.stored_submissions(), before);
}
