//! The disclosure log. Identifying data leaves the service only on a legal
//! basis the programme's rules name (KZ P1: required by law, UNICEF M&E,
//! prior written consent, a staff-harm report; BT Annex E: consent, a court
//! order, mandatory reporting, an immediate safety risk, an official under a
//! non-disclosure agreement), and each disclosure records what went, to
//! whom, why and how (KZ P3, P4).

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use serde::{Deserialize, Serialize};

use super::consents;
use crate::auth::{policy, Principal};
use crate::cases::{self, Case};
use crate::db::schema::{disclosure_sites, disclosures};
use crate::db::DbConnection;
use crate::error::{AppError, AppResult, FieldError};

/// A legal basis and what it asks the discloser to name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Basis {
    pub code: &'static str,
    pub source: &'static str,
    /// The provision of law, the court order, the agreement.
    pub needs_provision: bool,
    /// Rests on the consents of one case.
    pub needs_consent: bool,
}

const KZ: &[Basis] = &[
    Basis {
        code: "required_by_law",
        source: "KZ 10.2 (P1 i): name the provision of law or of the Manual",
        needs_provision: true,
        needs_consent: false,
    },
    Basis {
        code: "unicef_me",
        source: "KZ 10.3 (P1 ii): UNICEF and its consultants, coaching or M&E",
        needs_provision: false,
        needs_consent: false,
    },
    Basis {
        code: "consent",
        source: "KZ 10.4 (P1 iii): prior written consent, on file",
        needs_provision: false,
        needs_consent: true,
    },
    Basis {
        code: "staff_harm",
        source: "KZ Part 11 (P1 iv): to the Prosecutor and UNICEF on suspicion of harm by staff",
        needs_provision: false,
        needs_consent: false,
    },
];

const BT: &[Basis] = &[
    Basis {
        code: "consent",
        source: "BT §9.1, Annex E 8.1 II: informed consent, on file",
        needs_provision: false,
        needs_consent: true,
    },
    Basis {
        code: "court_order",
        source: "BT Annex E 6.1 V: the court mandates it; name the order",
        needs_provision: true,
        needs_consent: false,
    },
    Basis {
        code: "mandatory_report",
        source: "BT §6.2: mandatory reporting (DVPA, GBV); name the provision",
        needs_provision: true,
        needs_consent: false,
    },
    Basis {
        code: "immediate_safety_risk",
        source: "BT Annex A: an immediate safety risk to the child",
        needs_provision: false,
        needs_consent: false,
    },
    Basis {
        code: "non_disclosure_agreement",
        source: "BT Annex E 6.1 VII–VIII: an official under a signed NDA; name it",
        needs_provision: true,
        needs_consent: false,
    },
];

/// The legal bases of `programme`.
pub fn bases(programme: &str) -> &'static [Basis] {
    match programme {
        "kz" => KZ,
        _ => BT,
    }
}

/// The terms of a disclosure: what a caller says of an identifying export
/// or of a share. The one list of them, read from a share's JSON body, an
/// export's query string (beside its filters: [`with_terms`]) and the
/// command line (`casesync export`, flattened into its options; these
/// comments are its help).
#[derive(
    Debug,
    Clone,
    Default,
    PartialEq,
    Eq,
    Deserialize,
    clap::Args,
    utoipa::ToSchema,
    utoipa::IntoParams,
)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DisclosureTerms {
    /// KZ: required_by_law, unicef_me, consent, staff_harm. BT: consent,
    /// court_order, mandatory_report, immediate_safety_risk,
    /// non_disclosure_agreement.
    #[arg(long)]
    pub legal_basis: Option<String>,
    /// The provision of law, court order or agreement, where the basis
    /// needs one.
    #[arg(long)]
    pub provision: Option<String>,
    /// Consent record ids, comma-separated (a disclosure by consent).
    #[arg(long)]
    pub consent: Option<String>,
    /// To whom the data goes.
    #[arg(long)]
    pub recipient: Option<String>,
    /// Why (at least 10 characters).
    #[arg(long)]
    pub purpose: Option<String>,
    /// How it is handed over (an export's default: "CSV download").
    #[arg(long)]
    pub method: Option<String>,
}

/// The query-string names of [`DisclosureTerms`] (a test holds them to
/// serde's).
const TERMS: [&str; 6] = [
    "legal_basis",
    "provision",
    "consent",
    "recipient",
    "purpose",
    "method",
];

/// Reads a query string that carries the disclosure terms beside a
/// filter's own parameters, all in one flat list
/// (`?identifying=true&legal_basis=…&recipient=…`): the terms go to
/// [`DisclosureTerms`], the rest to `own`, the filter's serde derive
/// (`#[serde(remote = "Self")]`, its `terms` field skipped).
///
/// `#[serde(flatten)]` would do it for serde, but a flattened struct refuses
/// an unknown parameter without the list of those it accepts (an error that
/// leaves a caller guessing, the more so as the name sent is not repeated),
/// and it hands the flattened fields their values as text, so no term could
/// ever be a number or a flag. Here each side reads its values as
/// serde_urlencoded does (a flag from `true`/`false`, a number from its
/// digits); an unknown parameter is refused with both lists; a parameter
/// given twice is refused as before (`consent` takes its ids
/// comma-separated, once).
pub(crate) fn with_terms<'de, D, T>(
    deserializer: D,
    own: fn(QueryParameters) -> Result<T, QueryError>,
) -> Result<(T, DisclosureTerms), D::Error>
where
    D: serde::Deserializer<'de>,
{
    struct Pairs;
    impl<'de> serde::de::Visitor<'de> for Pairs {
        type Value = Vec<(String, String)>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("query parameters")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut pairs = Vec::new();
            while let Some(pair) = map.next_entry()? {
                pairs.push(pair);
            }
            Ok(pairs)
        }
    }
    let (terms, rest): (Vec<_>, Vec<_>) = deserializer
        .deserialize_map(Pairs)?
        .into_iter()
        .map(|(name, value)| (name, QueryValue(value)))
        .partition(|(name, _)| TERMS.contains(&name.as_str()));
    let read = || -> Result<_, QueryError> {
        let terms = DisclosureTerms::deserialize(QueryParameters::new(terms.into_iter()))?;
        Ok((own(QueryParameters::new(rest.into_iter()))?, terms))
    };
    read().map_err(|e| serde::de::Error::custom(e.0))
}

/// A filter's own query parameters, for its serde derive ([`with_terms`]).
pub(crate) type QueryParameters = serde::de::value::MapDeserializer<
    'static,
    std::vec::IntoIter<(String, QueryValue)>,
    QueryError,
>;

/// What a query string could not be read as: serde's words, except that an
/// unknown parameter is answered with the disclosure terms among the names
/// expected.
#[derive(Debug)]
pub(crate) struct QueryError(String);

impl std::fmt::Display for QueryError {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for QueryError {}

impl serde::de::Error for QueryError {
    fn custom<M: std::fmt::Display>(message: M) -> Self {
        QueryError(message.to_string())
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        let names: Vec<String> = expected
            .iter()
            .chain(&TERMS)
            .map(|name| format!("`{name}`"))
            .collect();
        QueryError(format!(
            "unknown field `{field}`, expected one of {}",
            names.join(", ")
        ))
    }
}

/// One query parameter's value, read as the field asks, as serde_urlencoded
/// reads it: a flag from `true`/`false`, a number from its digits, an
/// optional value as present, anything else as text.
#[derive(Debug)]
pub(crate) struct QueryValue(String);

impl serde::de::IntoDeserializer<'static, QueryError> for QueryValue {
    type Deserializer = Self;
    fn into_deserializer(self) -> Self {
        self
    }
}

macro_rules! parse_value {
    ($($method:ident => $visit:ident),* $(,)?) => {$(
        fn $method<V: serde::de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, QueryError> {
            visitor.$visit(self.0.parse().map_err(serde::de::Error::custom)?)
        }
    )*};
}

impl<'de> serde::Deserializer<'de> for QueryValue {
    type Error = QueryError;

    fn deserialize_any<V: serde::de::Visitor<'de>>(
        self,
        visitor: V,
    ) -> Result<V::Value, QueryError> {
        visitor.visit_string(self.0)
    }

    fn deserialize_option<V: serde::de::Visitor<'de>>(
        self,
        visitor: V,
    ) -> Result<V::Value, QueryError> {
        visitor.visit_some(self)
    }

    parse_value! {
        deserialize_bool => visit_bool,
        deserialize_i8 => visit_i8, deserialize_i16 => visit_i16,
        deserialize_i32 => visit_i32, deserialize_i64 => visit_i64,
        deserialize_u8 => visit_u8, deserialize_u16 => visit_u16,
        deserialize_u32 => visit_u32, deserialize_u64 => visit_u64,
        deserialize_f32 => visit_f32, deserialize_f64 => visit_f64,
    }

    fn deserialize_enum<V: serde::de::Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, QueryError> {
        use serde::de::IntoDeserializer;
        visitor.visit_enum(IntoDeserializer::<QueryError>::into_deserializer(self.0))
    }

    serde::forward_to_deserialize_any! {
        i128 u128 char str string bytes byte_buf unit unit_struct newtype_struct
        seq tuple tuple_struct map struct identifier ignored_any
    }
}

/// Terms that passed [`check`], ready to be logged.
#[derive(Debug, Clone)]
pub struct Checked {
    pub programme: String,
    pub case_id: Option<String>,
    pub basis: &'static str,
    pub provision: Option<String>,
    pub consent_ids: Vec<String>,
    pub recipient: String,
    pub purpose: String,
    pub method: String,
}

fn text(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

/// Checks `terms` for a disclosure of `programme` data — of `case` alone
/// when given — and says everything that is missing at once.
pub fn check(
    conn: &mut DbConnection,
    programme: &str,
    case: Option<&Case>,
    terms: &DisclosureTerms,
    default_method: &str,
    now: DateTime<Utc>,
) -> AppResult<Checked> {
    let mut errors = Vec::new();
    let basis = match text(&terms.legal_basis) {
        None => {
            errors.push(FieldError::new(
                "/legal_basis",
                format!(
                    "an identifying disclosure needs a legal basis: one of {}",
                    codes(programme)
                ),
            ));
            None
        }
        Some(code) => {
            let found = bases(programme).iter().find(|b| b.code == code);
            if found.is_none() {
                errors.push(FieldError::new(
                    "/legal_basis",
                    format!("must be one of {}", codes(programme)),
                ));
            }
            found
        }
    };
    let provision = text(&terms.provision).map(String::from);
    if basis.is_some_and(|b| b.needs_provision) && provision.is_none() {
        errors.push(FieldError::new(
            "/provision",
            format!("{} requires it", basis.map_or("", |b| b.source)),
        ));
    }
    let recipient = text(&terms.recipient).map(String::from);
    if recipient.is_none() {
        errors.push(FieldError::new(
            "/recipient",
            "say to whom the data goes (KZ P4)",
        ));
    }
    let purpose = text(&terms.purpose).map(String::from);
    if purpose.as_deref().is_none_or(|p| p.chars().count() < 10) {
        errors.push(FieldError::new(
            "/purpose",
            "state the reasons (at least 10 characters)",
        ));
    }
    let consent_ids: Vec<String> = text(&terms.consent)
        .map(|ids| {
            ids.split(',')
                .map(str::trim)
                .filter(|id| !id.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    if basis.is_some_and(|b| b.needs_consent) && case.is_none() {
        errors.push(FieldError::new(
            "/case",
            "a disclosure by consent is of one case: name it",
        ));
    }
    if !errors.is_empty() {
        return Err(AppError::Validation {
            detail: "the disclosure's terms are incomplete".into(),
            errors,
        });
    }
    let basis = basis.expect("checked above");
    if basis.needs_consent {
        let case = case.expect("checked above");
        consents::allow_disclosure(conn, programme, case, &consent_ids, now.date_naive())?;
    }
    Ok(Checked {
        programme: programme.to_string(),
        case_id: case.map(|c| c.id.clone()),
        basis: basis.code,
        provision,
        consent_ids: if basis.needs_consent {
            consent_ids
        } else {
            Vec::new()
        },
        recipient: recipient.expect("checked above"),
        purpose: purpose.expect("checked above"),
        method: text(&terms.method).unwrap_or(default_method).to_string(),
    })
}

fn codes(programme: &str) -> String {
    bases(programme)
        .iter()
        .map(|b| b.code)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Logs a checked disclosure of the data of `site_ids`; `what` says what
/// went (the export and its columns, or the documents shared). Returns its
/// id, for the audit row.
pub fn record(
    conn: &mut DbConnection,
    actor: Option<&Principal>,
    checked: &Checked,
    site_ids: &[String],
    what: &str,
    now: DateTime<Utc>,
) -> AppResult<String> {
    let id = crate::ids::new_row_id();
    let consent_ids = (!checked.consent_ids.is_empty()).then(|| checked.consent_ids.join(" "));
    diesel::insert_into(disclosures::table)
        .values((
            disclosures::id.eq(&id),
            disclosures::occurred_at.eq(now.naive_utc()),
            disclosures::actor_id.eq(actor.map(|a| a.user_id.as_str())),
            disclosures::programme.eq(&checked.programme),
            disclosures::case_id.eq(&checked.case_id),
            disclosures::legal_basis.eq(checked.basis),
            disclosures::legal_provision.eq(&checked.provision),
            disclosures::consent_ids.eq(consent_ids),
            disclosures::recipient.eq(&checked.recipient),
            disclosures::purpose.eq(&checked.purpose),
            disclosures::method.eq(&checked.method),
            disclosures::what.eq(what),
        ))
        .execute(conn)?;
    for site_id in site_ids {
        diesel::insert_into(disclosure_sites::table)
            .values((
                disclosure_sites::disclosure_id.eq(&id),
                disclosure_sites::site_id.eq(site_id),
            ))
            .execute(conn)?;
    }
    Ok(id)
}

/// A share made outside the server (a copy handed to the police, a call
/// to a service provider), recorded by the one who made it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Share {
    #[serde(flatten)]
    pub terms: DisclosureTerms,
    /// What was shared (documents, fields), never the data itself.
    pub what: String,
}

// One object: the terms' fields and `what`, nothing else (a derived
// schema would be `allOf` two closed objects, which nothing satisfies).
impl utoipa::PartialSchema for Share {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{AdditionalProperties, Object, Schema, Type};
        use utoipa::openapi::RefOr;
        let mut object = match DisclosureTerms::schema() {
            RefOr::T(Schema::Object(terms)) => terms,
            _ => Object::new(),
        };
        object.description = Some(
            "A share made outside the server, on the terms an identifying export takes".into(),
        );
        object.properties.insert(
            "what".into(),
            Object::builder()
                .schema_type(Type::String)
                .description(Some(
                    "What was shared (documents, fields), never the data itself.",
                ))
                .into(),
        );
        object.required.push("what".into());
        object.additional_properties = Some(Box::new(AdditionalProperties::FreeForm(false)));
        RefOr::T(Schema::Object(object))
    }
}

impl utoipa::ToSchema for Share {}

/// Records a share of case `case_id`'s data, after the same checks as an
/// identifying export.
pub fn share(
    conn: &mut DbConnection,
    who: &Principal,
    case_id: &str,
    share: &Share,
    now: DateTime<Utc>,
) -> AppResult<Disclosure> {
    let case =
        cases::find(conn, case_id)?.ok_or_else(|| AppError::NotFound("no such case".into()))?;
    policy::work_on_case(who, case.scope())?;
    if share.what.trim().is_empty() {
        return Err(AppError::invalid_field(
            "/what",
            "say what was shared (KZ P3: only what the purpose needs)",
        ));
    }
    let checked = check(conn, &case.programme, Some(&case), &share.terms, "", now)?;
    if checked.method.is_empty() {
        return Err(AppError::invalid_field(
            "/method",
            "say how it was handed over (KZ P4)",
        ));
    }
    let id = record(
        conn,
        Some(who),
        &checked,
        std::slice::from_ref(&case.site_id),
        share.what.trim(),
        now,
    )?;
    one(conn, &id)
}

#[derive(Debug, Clone, Serialize, Queryable, Selectable)]
#[diesel(table_name = disclosures)]
pub struct DisclosureRow {
    pub id: String,
    #[serde(serialize_with = "crate::json::utc")]
    pub occurred_at: NaiveDateTime,
    pub actor_id: Option<String>,
    pub programme: String,
    pub case_id: Option<String>,
    pub legal_basis: String,
    pub legal_provision: Option<String>,
    pub consent_ids: Option<String>,
    pub recipient: String,
    pub purpose: String,
    pub method: String,
    pub what: String,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Disclosure {
    pub id: String,
    pub occurred_at: DateTime<Utc>,
    pub actor_id: Option<String>,
    pub programme: String,
    pub case_id: Option<String>,
    pub legal_basis: String,
    pub legal_provision: Option<String>,
    pub consent_ids: Vec<String>,
    pub recipient: String,
    pub purpose: String,
    pub method: String,
    pub what: String,
}

impl From<DisclosureRow> for Disclosure {
    fn from(r: DisclosureRow) -> Self {
        Disclosure {
            occurred_at: r.occurred_at.and_utc(),
            consent_ids: r
                .consent_ids
                .as_deref()
                .unwrap_or("")
                .split_whitespace()
                .map(String::from)
                .collect(),
            id: r.id,
            actor_id: r.actor_id,
            programme: r.programme,
            case_id: r.case_id,
            legal_basis: r.legal_basis,
            legal_provision: r.legal_provision,
            recipient: r.recipient,
            purpose: r.purpose,
            method: r.method,
            what: r.what,
        }
    }
}

fn one(conn: &mut DbConnection, id: &str) -> AppResult<Disclosure> {
    Ok(disclosures::table
        .find(id)
        .select(DisclosureRow::as_select())
        .first(conn)?
        .into())
}

/// The disclosure log, newest first, at most 500: admins all of it;
/// coordinators those that carried data of their sites.
pub fn list(
    conn: &mut DbConnection,
    who: &Principal,
    case_id: Option<&str>,
) -> AppResult<Vec<Disclosure>> {
    let sites = policy::read_disclosures(who)?;
    let mut query = disclosures::table
        .select(DisclosureRow::as_select())
        .into_boxed();
    if let Some(sites) = sites {
        let of_sites = disclosure_sites::table
            .filter(disclosure_sites::site_id.eq_any(sites))
            .select(disclosure_sites::disclosure_id);
        query = query.filter(disclosures::id.eq_any(of_sites));
    }
    if let Some(case_id) = case_id {
        query = query.filter(disclosures::case_id.eq(case_id.to_string()));
    }
    let rows: Vec<DisclosureRow> = query
        .order(disclosures::occurred_at.desc())
        .limit(500)
        .load(conn)?;
    Ok(rows.into_iter().map(Disclosure::from).collect())
}

#[cfg(test)]
mod tests {
    use super::{DisclosureTerms, TERMS};

    #[test]
    fn the_query_names_of_the_terms_are_its_fields() {
        // serde lists a struct's fields when it refuses another.
        let refused = serde_json::from_str::<DisclosureTerms>(r#"{"x": ""}"#).unwrap_err();
        let listed: Vec<String> = TERMS.iter().map(|t| format!("`{t}`")).collect();
        assert!(
            refused.to_string().starts_with(&format!(
                "unknown field `x`, expected one of {}",
                listed.join(", ")
            )),
            "{refused}"
        );
    }
}
