//! The access policy: which role may do what, per the design's access table.
//! Handlers ask here before they call a domain function.

use super::{Principal, Role};
use crate::error::{AppError, AppResult};

fn deny(what: &str) -> AppError {
    AppError::Forbidden(format!("your role may not {what}"))
}

/// Users, sites and form versions are administered by admins only.
pub fn administer(p: &Principal, what: &str) -> AppResult<()> {
    if p.role == Role::Admin {
        Ok(())
    } else {
        Err(deny(what))
    }
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
            must_change_password: false,
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
        assert!(visible_user_sites(&principal(Role::Analyst, &["a"])).is_err());
    }
}
