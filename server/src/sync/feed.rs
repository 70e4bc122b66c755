//! What a phone hears on `GET /sync`: the form versions, programme keys and
//! assigned cases it needs, then only what changed since its cursor. The
//! cursor is the change log's sequence, read before the data, so a change
//! committed meanwhile is sent (again) next time rather than lost.

use serde::Serialize;

use crate::auth::{sites, Principal};
use crate::cases::{self, PhoneCase};
use crate::changes::{changes_for, decode_cursor, encode_cursor, latest, ChangeKind};
use crate::crypto::keys;
use crate::db::DbConnection;
use crate::error::{AppError, AppResult};
use crate::forms::registry;

/// Changes answered per call; `more` says to call again.
pub const PAGE: i64 = 500;

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct SyncForm {
    pub form_id: String,
    pub programme: String,
    pub version: String,
    pub sha256: String,
    /// `published`, or `retired`: stop offering it for new submissions.
    pub status: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct SyncKey {
    pub programme: String,
    pub kid: String,
    pub jwk: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Feed {
    /// Pass back as `?cursor=` next time.
    pub cursor: String,
    /// Everything the phone should hold (no cursor given): replace, not merge.
    pub full: bool,
    /// More changes are waiting: call again with the new cursor.
    pub more: bool,
    pub forms: Vec<SyncForm>,
    pub keys: Vec<SyncKey>,
    pub cases: Vec<PhoneCase>,
    /// Cases to remove from the phone: closed, or assigned to someone else.
    pub dropped_cases: Vec<String>,
}

/// The programmes whose forms and keys `who` needs: those of their sites,
/// or all for someone attached to no site.
fn programmes_of(conn: &mut DbConnection, who: &Principal) -> AppResult<Vec<String>> {
    let mut programmes: Vec<String> = if who.site_ids.is_empty() {
        sites::PROGRAMMES.iter().map(|p| p.to_string()).collect()
    } else {
        sites::list(conn, Some(&who.site_ids))?
            .into_iter()
            .map(|s| s.programme)
            .collect()
    };
    programmes.sort();
    programmes.dedup();
    Ok(programmes)
}

fn current_key(conn: &mut DbConnection, programme: &str) -> AppResult<Option<SyncKey>> {
    match keys::current(conn, programme) {
        Ok(k) => Ok(Some(SyncKey {
            programme: k.programme,
            kid: k.kid,
            jwk: k.jwk,
        })),
        Err(AppError::NotFound(_)) => Ok(None),
        Err(other) => Err(other),
    }
}

/// The feed for `who` since `cursor` (everything when `None`).
pub fn feed(conn: &mut DbConnection, who: &Principal, cursor: Option<&str>) -> AppResult<Feed> {
    let after = cursor.map(decode_cursor).transpose()?;
    let upto = latest(conn)?;
    if after.is_some_and(|after| after > upto) {
        return Err(AppError::bad_request(
            "cursor: ahead of this server's changes; sync again without one",
        ));
    }
    let programmes = programmes_of(conn, who)?;
    let mut feed = Feed {
        cursor: encode_cursor(upto),
        full: after.is_none(),
        more: false,
        forms: Vec::new(),
        keys: Vec::new(),
        cases: Vec::new(),
        dropped_cases: Vec::new(),
    };
    let Some(after) = after else {
        feed.forms = registry::published_in(conn, &programmes)?
            .into_iter()
            .map(|(programme, v)| SyncForm {
                form_id: v.form_id,
                programme,
                version: v.version,
                sha256: v.sha256,
                status: v.status,
            })
            .collect();
        for programme in &programmes {
            feed.keys.extend(current_key(conn, programme)?);
        }
        let held = cases::assigned_open(conn, who)?;
        feed.cases = PhoneCase::of_all(conn, held)?;
        return Ok(feed);
    };

    let changes = changes_for(conn, &who.user_id, after, upto, PAGE)?;
    if changes.len() as i64 == PAGE {
        feed.more = true;
        feed.cursor = encode_cursor(changes.last().map_or(after, |c| c.0));
    }
    let mut seen = std::collections::HashSet::new();
    let mut changed = Vec::new();
    for (_, kind, object) in changes {
        if !seen.insert((kind.clone(), object.clone())) {
            continue;
        }
        if kind == ChangeKind::Form.as_str() {
            if let Some((programme, v)) = registry::by_sync_object(conn, &object)? {
                if programmes.contains(&programme) {
                    feed.forms.push(SyncForm {
                        form_id: v.form_id,
                        programme,
                        version: v.version,
                        sha256: v.sha256,
                        status: v.status,
                    });
                }
            }
        } else if kind == ChangeKind::Key.as_str() {
            if let Some(programme) = keys::programme_of(conn, &object)? {
                let known = feed.keys.iter().any(|k| k.programme == programme);
                if programmes.contains(&programme) && !known {
                    feed.keys.extend(current_key(conn, &programme)?);
                }
            }
        } else if kind == ChangeKind::Case.as_str() {
            match cases::find(conn, &object)? {
                Some(case) if cases::belongs_on_phone_of(&case, who) => changed.push(case),
                _ => feed.dropped_cases.push(object),
            }
        }
    }
    feed.cases = PhoneCase::of_all(conn, changed)?;
    Ok(feed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;

    #[test]
    fn cursors_round_trip_and_refuse_what_we_did_not_make() {
        assert_eq!(decode_cursor(&encode_cursor(42)).unwrap(), 42);
        for bad in ["", "42", "djE6LTE", "!!!", &URL_SAFE_NO_PAD.encode("v2:5")] {
            assert!(decode_cursor(bad).is_err(), "{bad}");
        }
    }
}
