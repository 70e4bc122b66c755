//! What a phone sends: the envelope it encrypts and the attachments it
//! declares (docs/api.md § Submissions). Shared by the server's ingest and
//! the reference client, which builds the same envelope.

use chrono::{DateTime, FixedOffset};
use serde::Deserialize;
use serde_json::{Map, Value};

/// What a phone encrypts (see docs/api.md § Submissions).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    pub instance_id: uuid::Uuid,
    pub form_id: String,
    pub form_version: String,
    #[serde(default)]
    pub case_id: Option<uuid::Uuid>,
    #[serde(default)]
    pub base_case_version: Option<i64>,
    #[serde(default)]
    pub supersedes: Option<uuid::Uuid>,
    pub device_id: String,
    #[serde(default)]
    pub started_at: Option<DateTime<FixedOffset>>,
    pub completed_at: DateTime<FixedOffset>,
    pub data: Map<String, Value>,
    #[serde(default)]
    pub attachments: Vec<AttachmentDeclaration>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachmentDeclaration {
    pub name: String,
    pub media_type: String,
    pub size: u64,
    pub sha256: String,
}
