//! The collector's directory, laid out like a phone's storage:
//!
//! ```text
//! session.json            server, user, token (0600)
//! state.json              sync cursor, form versions, keys, cases
//! forms/<id>@<v>.json     bundled form documents
//! queue/<n>-<id>.json     encrypted submissions waiting to be sent
//! sent/<n>-<id>.json      acknowledged, with the server's receipt
//! failed/<n>-<id>.json    refused by the server, with its problem
//!                         (`collect retry` puts them back in the queue)
//! ```
//!
//! Every file is written to a temporary name, synced and renamed, so a
//! crash leaves the old or the new file, never half of one.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    pub server: String,
    pub username: String,
    pub token: String,
    /// Names this collector in every envelope, like a phone's device id.
    pub device_id: String,
    /// Signed in with a device token rather than a password.
    #[serde(default)]
    pub device_token: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SyncState {
    pub cursor: Option<String>,
    pub forms: Vec<Value>,
    pub keys: Vec<Value>,
    pub cases: Vec<Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueuedAttachment {
    pub name: String,
    pub jwe: String,
    pub acknowledged: bool,
}

/// One encrypted submission and what the server said of it so far.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Queued {
    pub instance_id: String,
    pub form_id: String,
    pub form_version: String,
    pub case_id: Option<String>,
    pub submission: String,
    pub attachments: Vec<QueuedAttachment>,
    /// Set once the server acknowledged the submission: from then on only
    /// attachments still unacknowledged are sent.
    pub receipt: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supersedes: Option<String>,
    /// When it was filled (RFC 3339), for `status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued_at: Option<String>,
}

impl Queued {
    pub fn done(&self) -> bool {
        self.receipt.is_some() && self.attachments.iter().all(|a| a.acknowledged)
    }
}

#[derive(Debug, Clone)]
pub struct Dir {
    root: PathBuf,
}

pub type StoreResult<T> = Result<T, String>;

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> String + '_ {
    move |e| format!("{}: {e}", path.display())
}

impl Dir {
    pub fn open(root: &Path) -> StoreResult<Dir> {
        for sub in ["forms", "queue", "sent", "failed"] {
            let path = root.join(sub);
            fs::create_dir_all(&path).map_err(io_err(&path))?;
        }
        Ok(Dir {
            root: root.to_path_buf(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Writes `value` as JSON to `relative`, atomically and durably.
    pub fn write<T: Serialize>(&self, relative: &str, value: &T, private: bool) -> StoreResult<()> {
        let path = self.root.join(relative);
        let tmp = path.with_extension("tmp");
        let mut options = fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        if private {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        #[cfg(not(unix))]
        let _ = private;
        let mut file = options.open(&tmp).map_err(io_err(&tmp))?;
        let bytes = serde_json::to_vec_pretty(value).map_err(|e| e.to_string())?;
        file.write_all(&bytes).map_err(io_err(&tmp))?;
        file.sync_all().map_err(io_err(&tmp))?;
        fs::rename(&tmp, &path).map_err(io_err(&path))?;
        self.sync_dir(path.parent().unwrap_or(&self.root))
    }

    fn sync_dir(&self, dir: &Path) -> StoreResult<()> {
        #[cfg(unix)]
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(dir))?;
        Ok(())
    }

    pub fn read<T: DeserializeOwned>(&self, relative: &str) -> StoreResult<Option<T>> {
        let path = self.root.join(relative);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    pub fn session(&self) -> StoreResult<Session> {
        self.read("session.json")?
            .ok_or_else(|| "not signed in: run `casesync collect login` first".to_string())
    }

    pub fn state(&self) -> StoreResult<SyncState> {
        Ok(self.read("state.json")?.unwrap_or_default())
    }

    /// File names in `sub` (queue, sent, failed), in queueing order.
    pub fn list(&self, sub: &str) -> StoreResult<Vec<String>> {
        let path = self.root.join(sub);
        let mut names: Vec<String> = fs::read_dir(&path)
            .map_err(io_err(&path))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".json"))
            .collect();
        names.sort();
        Ok(names)
    }

    /// How many items were ever queued: numbers queue files so the queue
    /// is sent in the order it was filled.
    pub fn items_ever_queued(&self) -> StoreResult<usize> {
        ["queue", "sent", "failed"]
            .iter()
            .map(|sub| self.list(sub).map(|l| l.len()))
            .sum()
    }

    /// Moves a refused item back to the queue, its problem forgotten.
    pub fn requeue(&self, name: &str, item: &mut Queued) -> StoreResult<()> {
        item.problem = None;
        self.write(&format!("queue/{name}"), item, true)?;
        self.remove("failed", name)
    }

    /// Deletes `sub/name` (durably).
    pub fn remove(&self, sub: &str, name: &str) -> StoreResult<()> {
        let path = self.root.join(sub).join(name);
        fs::remove_file(&path).map_err(io_err(&path))?;
        self.sync_dir(&self.root.join(sub))
    }

    /// Moves a queue file to `sent` or `failed`, with its latest content.
    pub fn settle(&self, name: &str, item: &Queued, to: &str) -> StoreResult<()> {
        self.write(&format!("{to}/{name}"), item, true)?;
        let queued = self.root.join("queue").join(name);
        fs::remove_file(&queued).map_err(io_err(&queued))?;
        self.sync_dir(&self.root.join("queue"))
    }
}
