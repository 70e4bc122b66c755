//! A submission's repeat groups stored at ingest beside it
//! (`submission_repeats`, #19 item 3), so the .zip export writes each
//! repeat group's file from one range of a small table ordered like its
//! pages, instead of reading every envelope again for every group (a
//! random page read and decryption per submission and group).
//!
//! What is stored is the answers themselves, cut down to what a repeat
//! file reads: the subtree of each of the version's repeat groups and the
//! form's event time (`x-form.occurred_at`, for ages), each at its place.
//! The export makes its rows from that exactly as from the envelope
//! (`columns::repeat_items`, `columns::cell`), so de-identification and
//! keys cannot differ. `kept` names the places kept; an export that needs
//! another place (a version that moved a group) reads the envelope, as it
//! does for submissions stored before the table existed (until
//! [`backfill`] has filled it).

use chrono::NaiveDateTime;
use diesel::prelude::*;
use serde_json::{Map, Value};

use crate::db::schema::{counters, form_versions, submission_repeats, submissions};
use crate::db::{write_tx, DbConnection};
use crate::error::{AppError, AppResult};
use crate::forms::model::{self, Field, FieldKind};

/// What ingest stores for a submission whose version has repeat groups.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoredRepeats {
    /// The places kept, `a/b` each, one a line (sorted).
    pub kept: String,
    /// The answers at those places, as JSON.
    pub data: String,
}

/// The place of a repeat group's answers (`child/siblings[]` →
/// `child/siblings`): its path up to its first repeat, since a group
/// inside another is inside that one's subtree.
pub fn place_of_group(path: &str) -> String {
    let mut place = Vec::new();
    for segment in path.split('/') {
        place.push(segment.trim_end_matches("[]"));
        if segment.ends_with("[]") {
            break;
        }
    }
    place.join("/")
}

/// The place a JSON pointer (`/referral/date`) reads.
pub fn place_of_pointer(pointer: &str) -> String {
    pointer
        .trim_start_matches('/')
        .split('/')
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect::<Vec<_>>()
        .join("/")
}

/// The places a version's repeat files read: its repeat groups' and its
/// event time's. None when it has no repeat group (nothing is stored).
pub fn places(fields: &[Field], occurred_at: &str) -> Option<Vec<String>> {
    let mut places: Vec<String> = fields
        .iter()
        .filter(|f| f.kind == FieldKind::Repeat)
        .map(|f| place_of_group(&f.path))
        .collect();
    if places.is_empty() {
        return None;
    }
    if !occurred_at.is_empty() {
        places.push(place_of_pointer(occurred_at));
    }
    places.sort();
    places.dedup();
    Some(places)
}

/// `data` cut down to `places`, each subtree copied whole.
pub fn stored(places: &[String], data: &Value) -> StoredRepeats {
    let mut out = Value::Object(Map::new());
    for place in places {
        let segments: Vec<&str> = place.split('/').collect();
        let mut node = data;
        let mut found = true;
        for segment in &segments {
            // Objects only: a repeat file and the event time read
            // through objects (`columns::repeat_items`, `Value::pointer`
            // outside repeat groups).
            match node.as_object().and_then(|o| o.get(*segment)) {
                Some(child) => node = child,
                None => {
                    found = false;
                    break;
                }
            }
        }
        if !found {
            continue;
        }
        let mut target = &mut out;
        let (last, parents) = segments.split_last().expect("split gives one");
        for segment in parents {
            target = target
                .as_object_mut()
                .expect("built of objects")
                .entry(segment.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
        }
        target
            .as_object_mut()
            .expect("built of objects")
            .insert(last.to_string(), node.clone());
    }
    StoredRepeats {
        kept: places.join("\n"),
        data: out.to_string(),
    }
}

/// The answers at `places` of `text` (a submission's answers, or what
/// [`stored`] kept of them) as [`stored`] cuts them, parsed without
/// building the rest: a repeat file reads one group of several, and
/// making every group a `Value` for every file cost as much as the file.
pub fn parse_places(text: &str, places: &[String]) -> serde_json::Result<Value> {
    use serde::de::DeserializeSeed;
    let paths: Vec<Vec<&str>> = places.iter().map(|p| p.split('/').collect()).collect();
    let paths: Vec<&[&str]> = paths.iter().map(Vec::as_slice).collect();
    let mut reader = serde_json::Deserializer::from_str(text);
    let picked = Pick(&paths).deserialize(&mut reader)?;
    reader.end()?;
    Ok(Value::Object(picked.unwrap_or_default()))
}

/// Keeps what lies at `paths` (segments below the node read): the whole
/// value where a path ends; through objects only, as [`stored`] walks.
struct Pick<'a>(&'a [&'a [&'a str]]);

impl<'de> serde::de::DeserializeSeed<'de> for Pick<'_> {
    /// The object's kept members; None when the node is not an object.
    type Value = Option<Map<String, Value>>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Pick<'_> {
    type Value = Option<Map<String, Value>>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("answers")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let whole = self.0.iter().any(|p| p.len() == 1 && p[0] == key);
            let below: Vec<&[&str]> = self
                .0
                .iter()
                .filter(|p| p.len() > 1 && p[0] == key)
                .map(|p| &p[1..])
                .collect();
            if whole {
                out.insert(key, map.next_value::<Value>()?);
            } else if !below.is_empty() {
                match map.next_value_seed(Pick(&below))? {
                    Some(inner) => {
                        out.insert(key, Value::Object(inner));
                    }
                    // Not an object: nothing below it is read.
                    None => {
                        out.remove(&key);
                    }
                }
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(Some(out))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

/// Whether a row that kept `kept` holds every place in `needed`.
pub fn holds(kept: &str, needed: &[String]) -> bool {
    needed.iter().all(|n| kept.lines().any(|k| k == n))
}

/// Stores a new submission's repeat groups.
pub fn insert(
    conn: &mut DbConnection,
    form_id: &str,
    received_at: NaiveDateTime,
    instance_id: &str,
    repeats: &StoredRepeats,
) -> AppResult<()> {
    write(conn, form_id, received_at, instance_id, repeats, false)
}

/// Stores a row; `unless_stored`: for the start's backfill, a row another
/// server's backfill stored meanwhile (servers starting together on
/// PostgreSQL) is left as it is (the same answers of the same envelope)
/// instead of failing the start.
fn write(
    conn: &mut DbConnection,
    form_id: &str,
    received_at: NaiveDateTime,
    instance_id: &str,
    repeats: &StoredRepeats,
    unless_stored: bool,
) -> AppResult<()> {
    let insert = diesel::insert_into(submission_repeats::table).values((
        submission_repeats::form_id.eq(form_id),
        submission_repeats::received_at.eq(received_at),
        submission_repeats::instance_id.eq(instance_id),
        submission_repeats::kept.eq(&repeats.kept),
        submission_repeats::data.eq(&repeats.data),
    ));
    match (conn, unless_stored) {
        (DbConnection::Sqlite(c), true) => insert.on_conflict_do_nothing().execute(c)?,
        (DbConnection::Pg(c), true) => insert.on_conflict_do_nothing().execute(c)?,
        (conn, false) => insert.execute(conn)?,
    };
    Ok(())
}

/// The stored repeat groups of `form_id`'s submissions received from
/// `first` to `last` (inclusive), by instance id: (kept, data). One range
/// of the table, which is ordered like the export's pages.
pub fn in_range(
    conn: &mut DbConnection,
    form_id: &str,
    first: NaiveDateTime,
    last: NaiveDateTime,
) -> AppResult<Vec<(String, (String, String))>> {
    Ok(submission_repeats::table
        .filter(submission_repeats::form_id.eq(form_id))
        .filter(submission_repeats::received_at.between(first, last))
        .select((
            submission_repeats::instance_id,
            (submission_repeats::kept, submission_repeats::data),
        ))
        .load(conn)?)
}

/// The counter migration 000032 sets while submissions stored before it
/// have no stored repeat groups.
const PENDING: &str = "submission_repeats_backfill";

/// Stores the repeat groups of the submissions stored before migration
/// 000032 (their envelopes read once, a thousand a transaction), once:
/// the migration leaves a counter that this removes when done. Until then
/// (and if it stops half way) the export reads their envelopes, so the
/// files are the same either way. Returns how many it stored.
pub fn backfill(conn: &mut DbConnection) -> AppResult<u64> {
    let pending = counters::table
        .find(PENDING)
        .select(counters::name)
        .first::<String>(conn)
        .optional()?;
    if pending.is_none() {
        return Ok(0);
    }
    let documents: Vec<(String, String, String)> = form_versions::table
        .select((
            form_versions::form_id,
            form_versions::version,
            form_versions::document,
        ))
        .load(conn)?;
    let mut stored = 0;
    for (form_id, version, document) in documents {
        let document: Value = serde_json::from_str(&document).map_err(AppError::internal)?;
        let occurred_at = model::meta(&document)
            .map(|m| m.occurred_at)
            .unwrap_or_default();
        let Some(places) = places(&model::fields(&document), &occurred_at) else {
            continue;
        };
        stored += backfill_version(conn, &form_id, &version, &places)?;
    }
    diesel::delete(counters::table.find(PENDING)).execute(conn)?;
    Ok(stored)
}

/// The backfill of one version's submissions that have no stored repeat
/// groups (all but the quarantined ones, whose answers no export reads,
/// as ingest stores them).
fn backfill_version(
    conn: &mut DbConnection,
    form_id: &str,
    version: &str,
    places: &[String],
) -> AppResult<u64> {
    use crate::submissions::{CORRECTED, DISMISSED, QUARANTINED};
    let mut after: Option<(NaiveDateTime, String)> = None;
    let mut stored = 0;
    loop {
        let page = write_tx(conn, |conn| {
            let mut query = submissions::table
                .left_join(
                    // By its whole key: no other index needed.
                    submission_repeats::table.on(submission_repeats::form_id
                        .eq(submissions::form_id)
                        .and(submission_repeats::received_at.eq(submissions::received_at))
                        .and(submission_repeats::instance_id.eq(submissions::instance_id))),
                )
                .filter(submissions::form_id.eq(form_id))
                .filter(submissions::form_version.eq(version))
                .filter(submissions::status.ne_all([QUARANTINED, DISMISSED, CORRECTED]))
                .filter(submission_repeats::instance_id.nullable().is_null())
                .into_boxed();
            if let Some((at, id)) = &after {
                query = query.filter(
                    submissions::received_at.gt(*at).or(submissions::received_at
                        .eq(*at)
                        .and(submissions::instance_id.gt(id.clone()))),
                );
            }
            let rows: Vec<(String, NaiveDateTime, String)> = query
                .order((submissions::received_at, submissions::instance_id))
                .limit(1000)
                .select((
                    submissions::instance_id,
                    submissions::received_at,
                    submissions::payload,
                ))
                .load(conn)?;
            for (instance_id, received_at, payload) in &rows {
                let envelope: Value = serde_json::from_str(payload).map_err(AppError::internal)?;
                let repeats = self::stored(places, &envelope["data"]);
                write(conn, form_id, *received_at, instance_id, &repeats, true)?;
            }
            stored += rows.len() as u64;
            Ok::<_, AppError>(rows.last().map(|r| (r.1, r.0.clone())))
        })?;
        match page {
            Some(last) => after = Some(last),
            None => break,
        }
    }
    Ok(stored)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_group_inside_another_is_kept_with_it() {
        assert_eq!(place_of_group("child/siblings[]"), "child/siblings");
        assert_eq!(place_of_group("visits[]/people[]"), "visits");
        assert_eq!(place_of_pointer("/referral/a~1b"), "referral/a/b");
    }

    #[test]
    fn only_the_places_are_kept_each_whole() {
        let data = json!({
            "child": {"name": "Aruzhan", "siblings": [{"name": "B", "dob": "2015-01-02"}]},
            "parents": [{"name": "M"}],
            "receipt": {"date": "2026-03-02", "by": "x"},
            "other": "left out"
        });
        let places = vec![
            "child/siblings".to_string(),
            "missing/group".to_string(),
            "parents".to_string(),
            "receipt/date".to_string(),
        ];
        let kept = stored(&places, &data);
        let back: Value = serde_json::from_str(&kept.data).unwrap();
        assert_eq!(
            back,
            json!({
                "child": {"siblings": [{"name": "B", "dob": "2015-01-02"}]},
                "parents": [{"name": "M"}],
                "receipt": {"date": "2026-03-02"}
            })
        );
        assert!(holds(
            &kept.kept,
            &["parents".into(), "receipt/date".into()]
        ));
        // Parsed back at some of its places: those alone, as cut.
        let text = data.to_string();
        for some in [&places[..1], &places[2..], &places[..]] {
            assert_eq!(
                parse_places(&text, some).unwrap(),
                serde_json::from_str::<Value>(&stored(some, &data).data).unwrap(),
                "{some:?}"
            );
        }
        // A place under something that is not an object: nothing.
        let odd = json!({"child": "a string", "parents": [1]});
        assert_eq!(
            parse_places(&odd.to_string(), &places).unwrap(),
            json!({"parents": [1]})
        );
        assert_eq!(
            parse_places(&odd.to_string(), &places).unwrap(),
            serde_json::from_str::<Value>(&stored(&places, &odd).data).unwrap()
        );
        assert!(!holds(&kept.kept, &["carers".into()]));
    }
}
