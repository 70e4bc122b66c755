//! What a phone sends: the envelope it encrypts and the attachments it
//! declares (docs/api.md § Submissions). Shared by the server's ingest and
//! the reference client, which builds the same envelope.

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

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

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AttachmentDeclaration {
    pub name: String,
    pub media_type: String,
    pub size: u64,
    pub sha256: String,
}

impl AttachmentDeclaration {
    /// How a phone declares a file it attaches: the media type its name
    /// implies, its size and SHA-256.
    pub fn of(name: &str, bytes: &[u8]) -> AttachmentDeclaration {
        AttachmentDeclaration {
            name: name.to_string(),
            media_type: media_type_of(name).to_string(),
            size: bytes.len() as u64,
            sha256: hex::encode(Sha256::digest(bytes)),
        }
    }

    /// As the envelope's JSON carries it.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).expect("a declaration is plain JSON")
    }
}

/// The media type a file name implies (phones, Collect among them, name
/// files by what the widget recorded).
pub fn media_type_of(name: &str) -> &'static str {
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("png") => "image/png",
        Some("gif") => "image/gif",
        Some("webp") => "image/webp",
        Some("svg") => "image/svg+xml",
        Some("pdf") => "application/pdf",
        Some("m4a") => "audio/mp4",
        Some("mp3") => "audio/mpeg",
        Some("ogg") => "audio/ogg",
        Some("amr") => "audio/amr",
        Some("wav") => "audio/wav",
        Some("mp4") => "video/mp4",
        _ => "application/octet-stream",
    }
}
