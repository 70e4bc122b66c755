//! Consents and disclosures recorded on the phone. The signed consent forms
//! (BT D-01 child, D-02 caregiver, D-03 statement of a child of 12 and
//! above) and the KZ record of a disclosure (with its 10.4 consents) become
//! consent records and disclosure-log entries when they are stored, so the
//! worker fills the form once. A newer form of the same signatory — or an
//! edit of the form — supersedes what the earlier one said: consent "is not
//! static" (BT §9.1).

use chrono::{DateTime, NaiveDate, Utc};
use diesel::prelude::*;
use serde_json::{Map, Value};

use super::consents::{self as consent_records, ConsentRow};
use super::disclosures::{self, Checked};
use crate::auth::Principal;
use crate::cases::Case;
use crate::db::schema::consents;
use crate::db::DbConnection;
use crate::error::AppResult;

/// The forms that record consents or disclosures.
const FORMS: [&str; 4] = [
    "bt.consent_child",
    "bt.consent_caregiver",
    "bt.consent_statement_12plus",
    "kz.disclosure",
];

/// One consent a form records.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FormConsent {
    subject: &'static str,
    kind: &'static str,
    medium: &'static str,
    scopes: Vec<&'static str>,
    given_on: NaiveDate,
    recipient: Option<String>,
}

fn at<'a>(data: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let mut parts = path.split('/');
    let mut value = data.get(parts.next()?)?;
    for part in parts {
        value = value.get(part)?;
    }
    Some(value)
}

fn yes(data: &Map<String, Value>, path: &str) -> bool {
    match at(data, path) {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s == "agree",
        _ => false,
    }
}

fn date(value: Option<&Value>) -> Option<NaiveDate> {
    let text = value?.as_str()?;
    NaiveDate::parse_from_str(text.get(..10)?, "%Y-%m-%d").ok()
}

fn text(data: &Map<String, Value>, path: &str) -> Option<String> {
    at(data, path)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(String::from)
}

/// BT `consent_type` (the proposed extra field of D-01/D-02, §7.3): who
/// signs, consent or assent, and how.
fn bt_type(
    consent_type: Option<&str>,
    default_subject: &'static str,
) -> (&'static str, &'static str, &'static str) {
    match consent_type {
        Some("written_assent") => (default_subject, "assent", "written"),
        Some("oral_assent") => (default_subject, "assent", "oral"),
        Some("trusted_adult_consent") => ("trusted_adult", "consent", "written"),
        Some("case_manager_consent") => ("case_manager", "consent", "written"),
        _ => (default_subject, "consent", "written"),
    }
}

/// A BT D-01 signatory role in our subjects.
fn bt_subject(role: Option<&str>) -> &'static str {
    match role {
        Some("parent") => "parent",
        Some("legal_representative") => "legal_representative",
        Some("caregiver") => "caregiver",
        Some("other") => "trusted_adult",
        _ => "child",
    }
}

/// What the stored form `form_id` with answers `data` consents to.
fn consents_in(form_id: &str, data: &Map<String, Value>) -> Vec<FormConsent> {
    let scopes = |participate: &str, store: &str, share: &str| {
        let mut scopes = Vec::new();
        if yes(data, participate) {
            scopes.push("participate");
        }
        if yes(data, store) {
            scopes.extend(["collect_store", "aggregate"]);
        }
        if yes(data, share) {
            scopes.push("share_providers");
        }
        scopes
    };
    match form_id {
        "bt.consent_child" | "bt.consent_caregiver" => {
            let Some(given_on) = date(at(data, "signatures/date")) else {
                return Vec::new();
            };
            let default = if form_id == "bt.consent_child" {
                bt_subject(at(data, "preamble/signatory_role").and_then(Value::as_str))
            } else {
                "caregiver"
            };
            let (subject, kind, medium) = bt_type(
                at(data, "preamble/consent_type").and_then(Value::as_str),
                default,
            );
            vec![FormConsent {
                subject,
                kind,
                medium,
                scopes: scopes(
                    "consents/consent_participate",
                    "consents/consent_collect_store_aggregate",
                    "consents/consent_share_providers",
                ),
                given_on,
                recipient: None,
            }]
        }
        // The child's own statement (12 and above): written; a consent,
        // which serves where an assent is asked (12–14).
        "bt.consent_statement_12plus" => {
            let Some(given_on) = date(at(data, "signature/date")) else {
                return Vec::new();
            };
            let mut scopes = scopes(
                "statements/s02_participate",
                "statements/s05_collect_store",
                "statements/s10_share_providers",
            );
            if !yes(data, "statements/s06_aggregate") {
                scopes.retain(|s| *s != "aggregate");
            }
            vec![FormConsent {
                subject: "child",
                kind: "consent",
                medium: "written",
                scopes,
                given_on,
                recipient: None,
            }]
        }
        // KZ 10.4: the consents a disclosure rests on, to its recipient.
        "kz.disclosure" => {
            let recipient = text(data, "disclosure/recipient");
            at(data, "consent/consent_records")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter(|r| r.get("given") == Some(&Value::Bool(true)))
                .filter_map(|r| {
                    let subject = match r.get("from")?.as_str()? {
                        "child" => "child",
                        "parent" => "parent",
                        "legal_rep" => "legal_representative",
                        _ => return None,
                    };
                    let medium = match r.get("form").and_then(Value::as_str) {
                        Some("mark") => "mark",
                        Some("thumbprint") => "thumbprint",
                        Some("oral_recording") => "recording",
                        _ => "written",
                    };
                    Some(FormConsent {
                        subject,
                        kind: "consent",
                        medium,
                        scopes: vec!["disclose"],
                        given_on: date(r.get("date"))?,
                        recipient: recipient.clone(),
                    })
                })
                .collect()
        }
        _ => Vec::new(),
    }
}

/// The KZ disclosure form's legal basis in the log's codes.
fn kz_basis(code: &str) -> Option<&'static str> {
    match code {
        "required_by_law_or_manual" => Some("required_by_law"),
        "unicef_coaching_or_me" => Some("unicef_me"),
        "prior_written_consent" => Some("consent"),
        "staff_harm_suspicion" => Some("staff_harm"),
        _ => None,
    }
}

/// Records what submission `instance_id` (form `form_id`, of `case`)
/// says of consents and disclosures. `supersedes` is the submission it
/// edits, whose records it replaces.
#[allow(clippy::too_many_arguments)]
pub fn record(
    conn: &mut DbConnection,
    who: &Principal,
    case: &Case,
    form_id: &str,
    data: &Map<String, Value>,
    instance_id: &str,
    supersedes: Option<&str>,
    now: DateTime<Utc>,
) -> AppResult<()> {
    // Every submission passes here: the others cost nothing.
    if !FORMS.contains(&form_id) {
        return Ok(());
    }
    let found = consents_in(form_id, data);
    if let Some(earlier) = supersedes {
        retire(conn, &case.id, Replaced::Edited(earlier), who, now)?;
    }
    let mut ids = Vec::new();
    for consent in &found {
        // The signatory's earlier form-recorded consents give way to this one.
        retire(
            conn,
            &case.id,
            Replaced::Signatory(consent.subject),
            who,
            now,
        )?;
        let row = ConsentRow {
            id: crate::ids::new_row_id(),
            case_id: case.id.clone(),
            subject: consent.subject.to_string(),
            kind: consent.kind.to_string(),
            medium: consent.medium.to_string(),
            scopes: consent.scopes.join(" "),
            recipient: consent.recipient.clone(),
            given_on: consent.given_on,
            instance_id: Some(instance_id.to_string()),
            recorded_by: who.user_id.clone(),
            recorded_at: now.naive_utc(),
            withdrawn_on: None,
            withdrawn_at: None,
            withdrawn_by: None,
            withdrawal_reason: None,
        };
        consent_records::insert(conn, &row)?;
        ids.push(row.id);
    }
    if form_id == "kz.disclosure" {
        log_kz_disclosure(conn, who, case, data, ids, now)?;
    }
    Ok(())
}

/// Which of a case's form-recorded consents a new form replaces.
enum Replaced<'a> {
    /// Those of the submission it edits.
    Edited(&'a str),
    /// Those of the same signatory.
    Signatory(&'static str),
}

/// Marks the case's current consents that `replaced` names as withdrawn:
/// a newer form (or an edit) replaced them. Consents recorded by hand
/// (no form) are withdrawn by hand only.
fn retire(
    conn: &mut DbConnection,
    case_id: &str,
    replaced: Replaced<'_>,
    who: &Principal,
    now: DateTime<Utc>,
) -> AppResult<()> {
    let mut query = consents::table
        .filter(consents::case_id.eq(case_id.to_string()))
        .filter(consents::withdrawn_at.is_null())
        .filter(consents::instance_id.is_not_null())
        .select(consents::id)
        .into_boxed();
    query = match replaced {
        Replaced::Edited(instance) => query.filter(consents::instance_id.eq(instance.to_string())),
        Replaced::Signatory(subject) => query.filter(consents::subject.eq(subject)),
    };
    let ids: Vec<String> = query.load(conn)?;
    if ids.is_empty() {
        return Ok(());
    }
    diesel::update(consents::table.filter(consents::id.eq_any(&ids)))
        .set((
            consents::withdrawn_on.eq(now.date_naive()),
            consents::withdrawn_at.eq(now.naive_utc()),
            consents::withdrawn_by.eq(&who.user_id),
            consents::withdrawal_reason.eq("superseded by a later form"),
        ))
        .execute(conn)?;
    Ok(())
}

/// The KZ record of a disclosure (made in the field) goes to the log as it
/// was recorded: what, to whom, why, how, on which basis (P4).
fn log_kz_disclosure(
    conn: &mut DbConnection,
    who: &Principal,
    case: &Case,
    data: &Map<String, Value>,
    consent_ids: Vec<String>,
    now: DateTime<Utc>,
) -> AppResult<()> {
    let Some(basis) = at(data, "disclosure/legal_basis")
        .and_then(Value::as_str)
        .and_then(kz_basis)
    else {
        return Ok(());
    };
    let checked = Checked {
        programme: case.programme.clone(),
        case_id: Some(case.id.clone()),
        basis,
        provision: text(data, "disclosure/legal_provision"),
        consent_ids,
        recipient: text(data, "disclosure/recipient").unwrap_or_else(|| "not recorded".into()),
        purpose: text(data, "disclosure/reasons").unwrap_or_else(|| "not recorded".into()),
        method: text(data, "disclosure/method").unwrap_or_else(|| "not recorded".into()),
    };
    let what = text(data, "disclosure/personal_details_disclosed")
        .unwrap_or_else(|| "not recorded".into());
    disclosures::record(
        conn,
        Some(who),
        &checked,
        std::slice::from_ref(&case.site_id),
        &what,
        now,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn data(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn a_bt_child_form_consents_item_by_item() {
        let d = data(json!({
            "preamble": { "consent_type": "oral_assent" },
            "consents": {
                "consent_participate": true,
                "consent_collect_store_aggregate": false,
                "consent_share_providers": true,
            },
            "signatures": { "date": "2026-11-02" },
        }));
        let found = consents_in("bt.consent_child", &d);
        assert_eq!(
            found,
            [FormConsent {
                subject: "child",
                kind: "assent",
                medium: "oral",
                scopes: vec!["participate", "share_providers"],
                given_on: NaiveDate::from_ymd_opt(2026, 11, 2).unwrap(),
                recipient: None,
            }]
        );
        let caregiver = consents_in(
            "bt.consent_caregiver",
            &data(json!({ "signatures": { "date": "2026-11-02" } })),
        );
        assert_eq!(caregiver[0].subject, "caregiver");
        assert!(caregiver[0].scopes.is_empty());
    }

    #[test]
    fn a_kz_disclosure_records_the_consents_it_rests_on() {
        let d = data(json!({
            "disclosure": { "legal_basis": "prior_written_consent", "recipient": "Red Crescent" },
            "consent": { "child_under_16": true, "consent_records": [
                { "from": "legal_rep", "given": true, "form": "thumbprint", "date": "2026-10-01" },
                { "from": "child", "given": false, "form": "written", "date": "2026-10-01" },
            ]},
        }));
        let found = consents_in("kz.disclosure", &d);
        assert_eq!(found.len(), 1, "a refusal is no consent");
        assert_eq!(found[0].subject, "legal_representative");
        assert_eq!(found[0].medium, "thumbprint");
        assert_eq!(found[0].recipient.as_deref(), Some("Red Crescent"));
        assert_eq!(kz_basis("prior_written_consent"), Some("consent"));
    }
}
