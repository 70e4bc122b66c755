//! Reading form definitions: the set shipped inside the binary, or a
//! directory laid out like `form-definitions/`. Files with an `x-form` are
//! forms; other schemas with an `$id` are shared resources; `programme.json`
//! holds a programme's rules; anything else is skipped.

use std::path::{Path, PathBuf};

use include_dir::{include_dir, Dir};
use serde_json::Value;

use super::bundle::Resources;

static SHIPPED: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/form-definitions");

/// One form file, not yet checked.
#[derive(Debug, Clone)]
pub struct FormFile {
    pub path: PathBuf,
    pub document: Value,
}

#[derive(Debug, Default)]
pub struct DefinitionSet {
    pub resources: Resources,
    pub forms: Vec<FormFile>,
    /// The `programme.json` files: rules of each programme (`programmes`).
    pub programmes: Vec<FormFile>,
    /// Files that could not be read or parsed.
    pub problems: Vec<String>,
}

impl DefinitionSet {
    fn add(&mut self, path: PathBuf, text: &str) {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if !name.ends_with(".json") {
            return;
        }
        let document: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                self.problems
                    .push(format!("{}: not valid JSON: {e}", path.display()));
                return;
            }
        };
        if name == "programme.json" {
            self.programmes.push(FormFile { path, document });
        } else if document.get("x-form").is_some() {
            self.forms.push(FormFile { path, document });
        } else if document.get("$id").is_some() {
            if let Err(why) = self.resources.add(document) {
                self.problems.push(format!("{}: {why}", path.display()));
            }
        }
    }
}

/// The shared blocks shipped in this binary, parsed once: drafts uploaded by
/// admins resolve their `$ref`s against them.
pub fn shipped_resources() -> &'static Resources {
    static RESOURCES: std::sync::OnceLock<Resources> = std::sync::OnceLock::new();
    RESOURCES.get_or_init(|| shipped().resources)
}

/// The definitions compiled into this binary from `form-definitions/`.
pub fn shipped() -> DefinitionSet {
    let mut set = DefinitionSet::default();
    let mut files = Vec::new();
    collect_embedded(&SHIPPED, &mut files);
    files.sort_by(|a, b| a.0.cmp(&b.0));
    for (path, text) in files {
        set.add(path, text);
    }
    set
}

fn collect_embedded<'a>(dir: &'a Dir<'a>, out: &mut Vec<(PathBuf, &'a str)>) {
    for file in dir.files() {
        if let Some(text) = file.contents_utf8() {
            out.push((file.path().to_path_buf(), text));
        }
    }
    for sub in dir.dirs() {
        collect_embedded(sub, out);
    }
}

/// Definitions from a directory on disk (recursively), for `forms validate`
/// and for admins trying a new version before uploading it.
pub fn from_dir(root: &Path) -> std::io::Result<DefinitionSet> {
    let mut paths = Vec::new();
    collect_dir(root, &mut paths)?;
    paths.sort();
    let mut set = DefinitionSet::default();
    for path in paths {
        let text = std::fs::read_to_string(&path)?;
        set.add(path, &text);
    }
    Ok(set)
}

fn collect_dir(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_dir(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}
