//! Identity: sites, users, passwords, bearer tokens, login throttling and the
//! access policy every handler consults.

pub mod collect_settings;
pub mod passwords;
pub mod policy;
pub mod sites;
pub mod throttle;
pub mod tokens;
pub mod users;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The five roles of the design's access table. A user has exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    Coordinator,
    FieldWorker,
    Analyst,
    Viewer,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Admin,
        Role::Coordinator,
        Role::FieldWorker,
        Role::Analyst,
        Role::Viewer,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Coordinator => "coordinator",
            Role::FieldWorker => "field_worker",
            Role::Analyst => "analyst",
            Role::Viewer => "viewer",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                format!("unknown role {s:?}; expected one of admin, coordinator, field_worker, analyst, viewer")
            })
    }
}

/// Who is calling: resolved from a bearer token on every request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Principal {
    pub user_id: String,
    pub username: String,
    pub role: Role,
    pub site_ids: Vec<String>,
    pub token_id: String,
    /// Who made the device token this request came with (`None` for a
    /// login session): audited beside the user, since the token acts with
    /// their say-so.
    pub token_created_by: Option<String>,
    pub must_change_password: bool,
}

impl Principal {
    pub fn is_at_site(&self, site_id: &str) -> bool {
        self.site_ids.iter().any(|s| s == site_id)
    }
}
