//! The access policy: which role may do what, per the design's access table.
//! Handlers ask here before they call a domain function.

use super::{Principal, Role};
use crate::error::{AppError, AppResult};

fn deny(what: &str) -> AppError {
    AppError::Forbidden(format!("your role may not {what}"))
}

/// What a missing case is told; a case the caller may not see is told the
/// same (#16: no existence oracle), and audited as a refusal.
const NO_SUCH_CASE: &str = "no such case";

/// The refusal of an act on `case`: 403 saying why to whoever may see the
/// case, and to anyone else the answer a missing case gets.
fn refuse_on_case(p: &Principal, case: CaseRef<'_>, why: &str) -> AppError {
    if case_role(p, case).is_some() {
        AppError::Forbidden(why.into())
    } else {
        AppError::Hidden(NO_SUCH_CASE.into())
    }
}

/// Users, sites and form versions are administered by admins only.
pub fn administer(p: &Principal, what: &str) -> AppResult<()> {
    if p.role == Role::Admin {
        Ok(())
    } else {
        Err(deny(what))
    }
}

/// The audit log is read and exported by admins only: it shows who read
/// which case, which is itself sensitive.
pub fn read_audit(p: &Principal) -> AppResult<()> {
    administer(p, "read the audit log")
}

/// Which users the caller may see: `None` for all (admins), or only those of
/// the given sites (coordinators, who assign cases and make device tokens).
pub fn visible_user_sites(p: &Principal) -> AppResult<Option<Vec<String>>> {
    match p.role {
        Role::Admin => Ok(None),
        Role::Coordinator => Ok(Some(p.site_ids.clone())),
        _ => Err(deny("list users")),
    }
}

/// Whether the caller may make a device token for a user working at
/// `user_sites`: a token acts with all of the user's rights, so a
/// coordinator makes one only for someone all of whose sites are theirs.
pub fn issue_device_token_for(p: &Principal, user_sites: &[String]) -> AppResult<()> {
    match p.role {
        Role::Admin => Ok(()),
        Role::Coordinator if user_sites.iter().all(|s| p.is_at_site(s)) => Ok(()),
        Role::Coordinator => Err(AppError::Forbidden(
            "the user also works at a site you do not coordinate; ask an admin or a coordinator of all their sites to make the token".into(),
        )),
        _ => Err(deny("make device tokens")),
    }
}

/// Whether the caller may see or manage a user working at `user_sites`.
pub fn may_manage_user_at(p: &Principal, user_sites: &[String]) -> AppResult<()> {
    match p.role {
        Role::Admin => Ok(()),
        Role::Coordinator if user_sites.iter().any(|s| p.is_at_site(s)) => Ok(()),
        Role::Coordinator => Err(AppError::Forbidden(
            "the user does not work at any of your sites".into(),
        )),
        _ => Err(deny("manage users or their devices")),
    }
}

/// What the policy needs to know about a case: where it is and who works on
/// it. Everything else about a case is content, which the policy never reads.
#[derive(Debug, Clone, Copy)]
pub struct CaseRef<'a> {
    pub site_id: &'a str,
    pub assigned_to: Option<&'a str>,
}

/// Why a read of a case's content was allowed; a break-glass read is
/// audited as such.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaseAccess {
    /// The field worker the case is assigned to.
    Assigned,
    /// A coordinator of the case's site.
    SiteCoordinator,
    /// A coordinator of another site, under a time-limited grant.
    BreakGlass,
}

impl CaseAccess {
    pub fn as_str(self) -> &'static str {
        match self {
            CaseAccess::Assigned => "assigned",
            CaseAccess::SiteCoordinator => "site_coordinator",
            CaseAccess::BreakGlass => "break_glass",
        }
    }
}

/// Need to know (KZ A1, BT §6.2): the assigned field worker and the
/// coordinators of the case's site; anyone else only under break-glass.
/// Site membership is the boundary for both: a worker moved off a site
/// loses its cases at once, assigned or not.
fn case_role(p: &Principal, case: CaseRef<'_>) -> Option<CaseAccess> {
    match p.role {
        Role::FieldWorker
            if case.assigned_to == Some(p.user_id.as_str()) && p.is_at_site(case.site_id) =>
        {
            Some(CaseAccess::Assigned)
        }
        Role::Coordinator if p.is_at_site(case.site_id) => Some(CaseAccess::SiteCoordinator),
        _ => None,
    }
}

/// Whether `p` may read the content of `case`. `break_glass` says whether
/// `p` holds an unexpired break-glass grant for it.
pub fn read_case(p: &Principal, case: CaseRef<'_>, break_glass: bool) -> AppResult<CaseAccess> {
    match case_role(p, case) {
        Some(access) => Ok(access),
        None if break_glass && p.role == Role::Coordinator => Ok(CaseAccess::BreakGlass),
        None => Err(AppError::Hidden(NO_SUCH_CASE.into())),
    }
}

/// Whether `p` may submit forms for `case` (a break-glass grant reads, it
/// never writes).
pub fn work_on_case(p: &Principal, case: CaseRef<'_>) -> AppResult<()> {
    case_role(p, case)
        .map(|_| ())
        .ok_or_else(|| refuse_on_case(p, case, "you may not submit forms for this case"))
}

/// Whether `p` may submit forms at all (and so open cases).
pub fn submit_forms(p: &Principal) -> AppResult<()> {
    match p.role {
        Role::FieldWorker | Role::Coordinator => Ok(()),
        _ => Err(deny("submit forms")),
    }
}

/// Assigning, approving, linking siblings, resolving conflicts: the
/// coordinators of the case's site.
pub fn manage_case(p: &Principal, case: CaseRef<'_>) -> AppResult<()> {
    if p.role == Role::Coordinator && p.is_at_site(case.site_id) {
        Ok(())
    } else {
        Err(refuse_on_case(
            p,
            case,
            "only a coordinator of the case's site may do this",
        ))
    }
}

/// Whether `p` may manage cases at all (asked before looking anything up,
/// so a role that never may is refused the same way whatever it names).
pub fn manage_cases(p: &Principal) -> AppResult<()> {
    if p.role == Role::Coordinator {
        Ok(())
    } else {
        Err(deny("manage cases; only coordinators may"))
    }
}

/// Reviewing a child's or parent's request for the case file, redactions
/// included (KZ 10.5, A2/A3): the Manager, a coordinator of the case's site.
pub fn review_access_request(p: &Principal, case: CaseRef<'_>) -> AppResult<()> {
    if p.role == Role::Coordinator && p.is_at_site(case.site_id) {
        Ok(())
    } else {
        Err(refuse_on_case(
            p,
            case,
            "only a coordinator of the case's site may review access requests",
        ))
    }
}

/// Recording a request for the case file, handing over an approved copy or
/// the family's copy of minutes (8.7.22(d)): those who work on the case,
/// never under a break-glass grant.
pub fn handle_access_request(p: &Principal, case: CaseRef<'_>) -> AppResult<()> {
    case_role(p, case).map(|_| ()).ok_or_else(|| {
        refuse_on_case(
            p,
            case,
            "only the assigned worker or a coordinator of the case's site may do this",
        )
    })
}

/// Which cases a list (cases, deadlines, conflicts) may show `p`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaseScope {
    /// Those assigned to this user at these sites (theirs).
    Assignee {
        user_id: String,
        site_ids: Vec<String>,
    },
    /// Those of these sites.
    Sites(Vec<String>),
}

pub fn list_cases(p: &Principal) -> AppResult<CaseScope> {
    match p.role {
        Role::FieldWorker => Ok(CaseScope::Assignee {
            user_id: p.user_id.clone(),
            site_ids: p.site_ids.clone(),
        }),
        Role::Coordinator => Ok(CaseScope::Sites(p.site_ids.clone())),
        _ => Err(AppError::Forbidden(
            "only field workers and coordinators read cases".into(),
        )),
    }
}

/// Possible duplicate children: the coordinators of the pair's site.
pub fn review_duplicates(p: &Principal, site_id: Option<&str>) -> AppResult<()> {
    if p.role != Role::Coordinator {
        return Err(AppError::Forbidden(
            "possible duplicates are for coordinators".into(),
        ));
    }
    match site_id {
        // Told as a missing pair: the pairs of other sites are not yours
        // to know of.
        Some(site) if !p.is_at_site(site) => {
            Err(AppError::Hidden("no such possible duplicate".into()))
        }
        _ => Ok(()),
    }
}

/// Whether `p` may break the glass at all (asked before the case is looked
/// up, so other roles are refused alike whatever case they name).
pub fn may_break_glass(p: &Principal) -> AppResult<()> {
    match p.role {
        Role::Coordinator => Ok(()),
        _ => Err(deny("break the glass; only coordinators may")),
    }
}

/// A break-glass grant: a coordinator opening a case of a site they do not
/// coordinate (their own sites need none).
pub fn break_glass(p: &Principal, case: CaseRef<'_>) -> AppResult<()> {
    may_break_glass(p)?;
    if p.is_at_site(case.site_id) {
        return Err(AppError::Conflict(
            "the case is at one of your sites: you may read it without breaking the glass".into(),
        ));
    }
    Ok(())
}

/// Whether `p` may read what a worker at `sender_sites` sent about no case
/// (a form of no case, such as a supervision record): the coordinators of
/// a site of the sender.
pub fn read_caseless_submission(p: &Principal, sender_sites: &[String]) -> bool {
    p.role == Role::Coordinator && sender_sites.iter().any(|s| p.is_at_site(s))
}

/// Who reviews break-glass grants: admins all of them (`None`);
/// coordinators those on their sites' cases (and their own).
pub fn review_break_glass(p: &Principal) -> AppResult<Option<Vec<String>>> {
    match p.role {
        Role::Admin => Ok(None),
        Role::Coordinator => Ok(Some(p.site_ids.clone())),
        _ => Err(deny("review break-glass grants")),
    }
}

/// The disclosure log: admins all of it (`None`); coordinators (the KZ
/// Manager, the BT supervisor, who decide disclosures) what carried data
/// of their sites.
pub fn read_disclosures(p: &Principal) -> AppResult<Option<Vec<String>>> {
    match p.role {
        Role::Admin => Ok(None),
        Role::Coordinator => Ok(Some(p.site_ids.clone())),
        _ => Err(deny("read the disclosure log")),
    }
}

/// What `p` may export: the sites, and whether identifying data at all
/// (which then also needs a legal basis and a purpose).
#[derive(Debug, Clone)]
pub struct ExportRights {
    pub site_ids: Vec<String>,
    pub may_identify: bool,
}

/// Coordinators (their sites, identifying allowed) and analysts (their
/// sites, de-identified only); nobody else exports case data.
pub fn export(p: &Principal) -> AppResult<ExportRights> {
    match p.role {
        Role::Coordinator | Role::Analyst => Ok(ExportRights {
            site_ids: p.site_ids.clone(),
            may_identify: p.role == Role::Coordinator,
        }),
        _ => Err(AppError::Forbidden(
            "only coordinators and analysts export case data".into(),
        )),
    }
}

/// The retention report over HTTP: coordinators, for their sites. Not
/// admins: a KZ retain-until date is the child's 18th birthday, so the
/// report reveals dates of birth (case content). The server's shell
/// (`casesync retention report`) covers every site.
pub fn retention_report(p: &Principal) -> AppResult<Option<Vec<String>>> {
    match p.role {
        Role::Coordinator => Ok(Some(p.site_ids.clone())),
        _ => Err(deny(
            "read the retention report; coordinators may, for their sites",
        )),
    }
}

/// Who reads indicators and whether always suppressed: coordinators and
/// analysts (their sites), viewers (national level, or their sites if they
/// have any; always suppressed, KZ P10).
pub fn indicators(p: &Principal) -> AppResult<(Option<Vec<String>>, bool)> {
    match p.role {
        Role::Coordinator | Role::Analyst => Ok((Some(p.site_ids.clone()), false)),
        Role::Viewer => Ok(((!p.site_ids.is_empty()).then(|| p.site_ids.clone()), true)),
        _ => Err(AppError::Forbidden(
            "indicators are for coordinators, analysts and viewers".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(role: Role, sites: &[&str]) -> Principal {
        Principal {
            user_id: "u".into(),
            username: "u".into(),
            role,
            site_ids: sites.iter().map(|s| s.to_string()).collect(),
            token_id: "t".into(),
            token_created_by: None,
            must_change_password: false,
        }
    }

    #[test]
    fn case_content_is_need_to_know() {
        let case = CaseRef {
            site_id: "a",
            assigned_to: Some("w"),
        };
        let mut worker = principal(Role::FieldWorker, &["a"]);
        worker.user_id = "w".into();
        let other_worker = principal(Role::FieldWorker, &["a"]);
        let coordinator = principal(Role::Coordinator, &["a"]);
        let elsewhere = principal(Role::Coordinator, &["b"]);
        assert_eq!(
            read_case(&worker, case, false).unwrap(),
            CaseAccess::Assigned
        );
        assert!(read_case(&other_worker, case, false).is_err());
        assert_eq!(
            read_case(&coordinator, case, false).unwrap(),
            CaseAccess::SiteCoordinator
        );
        assert!(read_case(&elsewhere, case, false).is_err());
        assert_eq!(
            read_case(&elsewhere, case, true).unwrap(),
            CaseAccess::BreakGlass
        );
        // A grant reads; it never writes or manages.
        assert!(work_on_case(&elsewhere, case).is_err());
        assert!(manage_case(&elsewhere, case).is_err());
        assert!(break_glass(&elsewhere, case).is_ok());
        assert!(break_glass(&coordinator, case).is_err());
        // Only coordinators can hold a grant, whatever the table says.
        for role in [Role::Admin, Role::Analyst, Role::Viewer, Role::FieldWorker] {
            assert!(read_case(&principal(role, &["a"]), case, true).is_err());
        }
        assert!(work_on_case(&worker, case).is_ok());
        assert!(manage_case(&worker, case).is_err());
        // Moved off the site: the assignment no longer opens the case.
        let mut moved = worker.clone();
        moved.site_ids = vec!["b".into()];
        assert!(read_case(&moved, case, false).is_err());
        assert!(work_on_case(&moved, case).is_err());
        assert!(manage_case(&coordinator, case).is_ok());
        // Who may not see the case is told it does not exist; who may see
        // it and not do this is told why.
        for refused in [
            read_case(&other_worker, case, false),
            read_case(&elsewhere, case, false),
            read_case(&principal(Role::Admin, &["a"]), case, false),
        ] {
            assert!(matches!(refused, Err(AppError::Hidden(_))), "{refused:?}");
        }
        assert!(matches!(
            manage_case(&elsewhere, case),
            Err(AppError::Hidden(_))
        ));
        assert!(matches!(
            manage_case(&worker, case),
            Err(AppError::Forbidden(_))
        ));
    }

    #[test]
    fn exports_and_indicators_by_role() {
        for role in Role::ALL {
            let p = principal(role, &["a"]);
            match export(&p) {
                Ok(rights) => {
                    assert!(matches!(role, Role::Coordinator | Role::Analyst));
                    assert_eq!(rights.may_identify, role == Role::Coordinator);
                    assert_eq!(rights.site_ids, vec!["a".to_string()]);
                }
                Err(_) => assert!(!matches!(role, Role::Coordinator | Role::Analyst)),
            }
            match indicators(&p) {
                Ok((_, suppressed)) => assert_eq!(suppressed, role == Role::Viewer),
                Err(_) => assert!(matches!(role, Role::Admin | Role::FieldWorker)),
            }
        }
        assert_eq!(
            indicators(&principal(Role::Viewer, &[])).unwrap(),
            (None, true)
        );
    }

    #[test]
    fn access_requests_are_for_those_who_work_on_the_case() {
        let case = CaseRef {
            site_id: "a",
            assigned_to: Some("w"),
        };
        let mut worker = principal(Role::FieldWorker, &["a"]);
        worker.user_id = "w".into();
        let coordinator = principal(Role::Coordinator, &["a"]);
        assert!(handle_access_request(&worker, case).is_ok());
        assert!(handle_access_request(&coordinator, case).is_ok());
        assert!(review_access_request(&coordinator, case).is_ok());
        // The Manager reviews; the worker records and hands over.
        assert!(review_access_request(&worker, case).is_err());
        for p in [
            principal(Role::FieldWorker, &["a"]),
            principal(Role::Coordinator, &["b"]),
            principal(Role::Analyst, &["a"]),
            principal(Role::Admin, &["a"]),
        ] {
            assert!(handle_access_request(&p, case).is_err());
            assert!(review_access_request(&p, case).is_err());
        }
    }

    #[test]
    fn only_admins_administer() {
        for role in Role::ALL {
            assert_eq!(
                administer(&principal(role, &[]), "x").is_ok(),
                role == Role::Admin
            );
        }
    }

    #[test]
    fn coordinators_manage_users_of_their_sites_only() {
        let c = principal(Role::Coordinator, &["a"]);
        assert!(may_manage_user_at(&c, &["a".into(), "b".into()]).is_ok());
        assert!(may_manage_user_at(&c, &["b".into()]).is_err());
        assert!(may_manage_user_at(&principal(Role::FieldWorker, &["a"]), &["a".into()]).is_err());
        assert_eq!(visible_user_sites(&c).unwrap(), Some(vec!["a".to_string()]));
        // Device tokens: only for users all of whose sites are the maker's.
        assert!(issue_device_token_for(&c, &["a".into()]).is_ok());
        assert!(issue_device_token_for(&c, &["a".into(), "b".into()]).is_err());
        assert!(issue_device_token_for(&principal(Role::Admin, &[]), &["b".into()]).is_ok());
        assert!(
            issue_device_token_for(&principal(Role::FieldWorker, &["a"]), &["a".into()]).is_err()
        );
        assert!(visible_user_sites(&principal(Role::Analyst, &["a"])).is_err());
    }
}
