//! Children: one row per child, holding the identity used to propose
//! possible duplicates (normalised name, date of birth, sex) and, for KZ,
//! the number of the child's first admission. Owns `children` and
//! `duplicate_candidates`.

use diesel::prelude::*;
use serde_json::Value;

use crate::auth::now;
use crate::db::schema::children;
use crate::db::DbConnection;
use crate::error::AppResult;
use crate::programmes::Programme;

/// Where the case-opening forms of both programmes ask for the child's name.
pub const CHILD_NAME: &str = "/child/child_name";

/// What identifies a child well enough to suspect a duplicate.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Identity {
    pub name_key: Option<String>,
    pub date_of_birth: Option<String>,
    pub sex: Option<String>,
}

impl Identity {
    /// From the opening form's data and facts.
    pub fn of(data: &Value, facts: &serde_json::Map<String, Value>) -> Identity {
        let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
        Identity {
            name_key: text(data.pointer(CHILD_NAME))
                .map(|n| name_key(&n))
                .filter(|k| !k.is_empty()),
            date_of_birth: text(facts.get("child.date_of_birth")),
            sex: text(facts.get("child.sex")),
        }
    }
}

/// A name reduced to what survives spelling habits: lower case, letters and
/// digits only, words sorted (so "Aliyev Timur" matches "Timur Aliyev").
pub fn name_key(name: &str) -> String {
    let mut words: Vec<String> = name
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| w.to_lowercase())
        .collect();
    words.sort();
    words.join(" ")
}

/// Records a new child at `site_id`; returns its id.
pub fn create(
    conn: &mut DbConnection,
    programme: &Programme,
    site_id: &str,
    identity: &Identity,
) -> AppResult<String> {
    let id = uuid::Uuid::new_v4().to_string();
    diesel::insert_into(children::table)
        .values((
            children::id.eq(&id),
            children::programme.eq(&programme.id),
            children::site_id.eq(site_id),
            children::admissions.eq(1),
            children::name_key.eq(&identity.name_key),
            children::date_of_birth.eq(&identity.date_of_birth),
            children::sex.eq(&identity.sex),
            children::created_at.eq(now()),
        ))
        .execute(conn)?;
    Ok(id)
}

pub fn set_root_number(conn: &mut DbConnection, child_id: &str, root: &str) -> AppResult<()> {
    diesel::update(children::table.find(child_id))
        .set(children::root_number.eq(root))
        .execute(conn)?;
    Ok(())
}
