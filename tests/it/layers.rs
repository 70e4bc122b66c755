//! Dependencies point one way (#16): every `crate::…` and `super::…` path
//! in server/src is checked against the one list of layers, the fenced
//! `layers` block in ARCHITECTURE.md. A module may name only modules listed
//! below it; an entry with `only:` may name only those. The list must name
//! every module of the crate, and nothing that is not one, so the document
//! cannot drift from the code.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// One line of the list: a module path (`audit`, `crypto::kek`) and, for a
/// side branch, the only entries it may use.
#[derive(Debug)]
struct Layer {
    path: Vec<String>,
    only: Option<Vec<String>>,
}

impl Layer {
    fn name(&self) -> String {
        self.path.join("::")
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Reads the fenced `layers` block: top first, one entry a line, `#`
/// starts a comment, `name only: a, b` restricts a side branch.
fn parse_layers(doc: &str) -> Vec<Layer> {
    let start = doc
        .find("```layers\n")
        .expect("ARCHITECTURE.md has a fenced `layers` block");
    let body = &doc[start + "```layers\n".len()..];
    let body = &body[..body.find("```").expect("the layers block is closed")];
    let mut layers = Vec::new();
    for line in body.lines() {
        let line = line.split('#').next().unwrap().trim();
        if line.is_empty() {
            continue;
        }
        let (name, only) = match line.split_once("only:") {
            Some((name, only)) => (
                name.trim(),
                Some(
                    only.split([',', ' '])
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect(),
                ),
            ),
            None => (line, None),
        };
        assert!(
            !name.contains(char::is_whitespace),
            "layers: one module a line, not {name:?}"
        );
        layers.push(Layer {
            path: name.split("::").map(str::to_string).collect(),
            only,
        });
    }
    layers
}

/// The module a file under server/src is: `a/b/mod.rs` and `a/b.rs` are
/// `a::b`.
fn module_of(relative: &Path) -> Vec<String> {
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap();
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" {
        parts.push(stem.to_string());
    }
    parts
}

/// The entry that holds `path`: the longest one it starts with.
fn entry_of(layers: &[Layer], path: &[String]) -> Option<usize> {
    layers
        .iter()
        .enumerate()
        .filter(|(_, l)| path.starts_with(&l.path))
        .max_by_key(|(_, l)| l.path.len())
        .map(|(i, _)| i)
}

/// The code of a file with comments blanked and string and char literals
/// emptied, so that braces and paths in them are not read; line breaks
/// are kept, so offsets still give line numbers.
fn code_only(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let keep_lines = |c: char| if c == '\n' { '\n' } else { ' ' };
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(keep_lines(chars[i]));
                    i += 1;
                }
            }
        } else if c == 'r'
            && (next == Some('"') || next == Some('#'))
            && (i == 0 || !(chars[i - 1].is_alphanumeric() || chars[i - 1] == '_'))
        {
            // A raw string: r"…", r#"…"#.
            let mut j = i + 1;
            let mut hashes = 0;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if chars.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            out.push_str("\"\"");
            j += 1;
            loop {
                if j >= chars.len() {
                    break;
                }
                if chars[j] == '"' && (0..hashes).all(|k| chars.get(j + 1 + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                out.push(keep_lines(chars[j]));
                j += 1;
            }
            i = j;
        } else if c == '"' {
            out.push('"');
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < chars.len() {
                    out.push(keep_lines(chars[i]));
                    i += 1;
                }
            }
            out.push('"');
            i += 1;
        } else if c == '\'' {
            // A char literal ('x', '\n', '\u{7b}'), else a lifetime.
            let end = if next == Some('\\') {
                (i + 2..chars.len().min(i + 12)).find(|&k| chars[k] == '\'')
            } else if chars.get(i + 2) == Some(&'\'') {
                Some(i + 2)
            } else {
                None
            };
            match end {
                Some(end) => {
                    out.push_str("' '");
                    for _ in i + 3..=end {
                        out.push(' ');
                    }
                    i = end + 1;
                }
                None => {
                    out.push(c);
                    i += 1;
                }
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// Reads a path after `crate::` or `super::` at `pos` (just past the
/// keyword and its `::`) and expands `{a, b::c}` groups: the paths it names.
fn read_paths(code: &[u8], pos: &mut usize, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    let skip_space = |pos: &mut usize| {
        while *pos < code.len() && code[*pos].is_ascii_whitespace() {
            *pos += 1;
        }
    };
    let mut path = prefix;
    loop {
        skip_space(pos);
        if *pos < code.len() && code[*pos] == b'{' {
            *pos += 1;
            loop {
                skip_space(pos);
                if *pos >= code.len() || code[*pos] == b'}' {
                    *pos += 1;
                    break;
                }
                if code[*pos] == b',' {
                    *pos += 1;
                    continue;
                }
                read_paths(code, pos, path.clone(), out);
                // `as alias` and anything else up to the next item.
                while *pos < code.len() && code[*pos] != b',' && code[*pos] != b'}' {
                    *pos += 1;
                }
            }
            return;
        }
        let start = *pos;
        while *pos < code.len() && (code[*pos].is_ascii_alphanumeric() || code[*pos] == b'_') {
            *pos += 1;
        }
        if start == *pos {
            // `*` or the end of the path.
            out.push(path);
            return;
        }
        let segment = std::str::from_utf8(&code[start..*pos]).unwrap();
        if segment != "self" {
            path.push(segment.to_string());
        }
        skip_space(pos);
        if code[*pos..].starts_with(b"::") {
            *pos += 2;
        } else {
            out.push(path);
            return;
        }
    }
}

/// Every module path a file's code names, with its line: `crate::` paths
/// as written, `super::` paths resolved from the module they appear in
/// (inline `mod name { … }` blocks included).
fn references(module: &[String], code: &str) -> Vec<(usize, Vec<String>)> {
    let bytes = code.as_bytes();
    let mut found = Vec::new();
    // The inline modules open at each point: (name, brace depth inside).
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut line = 1;
    let mut i = 0;
    let word_at = |i: usize, word: &[u8]| {
        bytes[i..].starts_with(word)
            && (i == 0
                || !(bytes[i - 1].is_ascii_alphanumeric()
                    || matches!(bytes[i - 1], b'_' | b'$' | b':')))
    };
    while i < bytes.len() {
        match bytes[i] {
            b'\n' => line += 1,
            b'{' => depth += 1,
            b'}' => {
                depth = depth.saturating_sub(1);
                if inline.last().is_some_and(|(_, d)| *d > depth) {
                    inline.pop();
                }
            }
            _ => {}
        }
        if word_at(i, b"mod ") {
            let rest = &code[i + 4..];
            let name: String = rest
                .trim_start()
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            let after = rest.trim_start()[name.len()..].trim_start();
            if after.starts_with('{') {
                inline.push((name, depth + 1));
            }
        }
        let start_line = line;
        if word_at(i, b"crate::") {
            let mut pos = i + "crate::".len();
            let mut paths = Vec::new();
            read_paths(bytes, &mut pos, Vec::new(), &mut paths);
            line += code[i..pos].matches('\n').count();
            found.extend(paths.into_iter().map(|p| (start_line, p)));
            i = pos;
            continue;
        }
        if word_at(i, b"super::") {
            let mut base: Vec<String> = module
                .iter()
                .cloned()
                .chain(inline.iter().map(|(n, _)| n.clone()))
                .collect();
            let mut pos = i;
            while bytes[pos..].starts_with(b"super::") {
                base.pop();
                pos += "super::".len();
                while pos < bytes.len() && bytes[pos].is_ascii_whitespace() {
                    pos += 1;
                }
            }
            let mut paths = Vec::new();
            read_paths(bytes, &mut pos, base, &mut paths);
            line += code[i..pos].matches('\n').count();
            found.extend(paths.into_iter().map(|p| (start_line, p)));
            i = pos;
            continue;
        }
        i += 1;
    }
    found
}

/// Every import that breaks the list: file, line, both modules.
fn violations(layers: &[Layer], files: &[(PathBuf, String)]) -> Vec<String> {
    let mut problems = Vec::new();
    for (relative, text) in files {
        let module = module_of(relative);
        let shown = Path::new("server/src").join(relative);
        let Some(from) = entry_of(layers, &module) else {
            problems.push(format!(
                "{}: module `{}` is in no layer of ARCHITECTURE.md",
                shown.display(),
                module.join("::")
            ));
            continue;
        };
        for (line, path) in references(&module, &code_only(text)) {
            let Some(to) = entry_of(layers, &path) else {
                problems.push(format!(
                    "{}:{line}: `{}` names `crate::{}`, which is in no layer",
                    shown.display(),
                    layers[from].name(),
                    path.join("::")
                ));
                continue;
            };
            if to == from {
                continue;
            }
            let refused = match &layers[from].only {
                Some(only) => !only.contains(&layers[to].name()),
                // Top first: a module may use only entries listed after it.
                None => to < from,
            };
            if refused {
                problems.push(format!(
                    "{}:{line}: `{}` imports `{}` (`{}`), which {}",
                    shown.display(),
                    layers[from].name(),
                    layers[to].name(),
                    path.join("::"),
                    if layers[from].only.is_some() {
                        "its `only:` list does not name"
                    } else {
                        "is above it"
                    }
                ));
            }
        }
    }
    problems
}

/// Every .rs file under server/src but the binary's and the library's
/// roots, relative to it, with its text.
fn sources() -> Vec<(PathBuf, String)> {
    fn walk(dir: &Path, base: &Path, out: &mut Vec<(PathBuf, String)>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                walk(&path, base, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let relative = path.strip_prefix(base).unwrap().to_path_buf();
                if relative != Path::new("main.rs") && relative != Path::new("lib.rs") {
                    let text = std::fs::read_to_string(&path).unwrap();
                    out.push((relative, text));
                }
            }
        }
    }
    let base = root().join("server/src");
    let mut out = Vec::new();
    walk(&base, &base, &mut out);
    out
}

fn architecture() -> Vec<Layer> {
    parse_layers(&std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap())
}

#[test]
fn no_module_imports_one_above_it() {
    let layers = architecture();
    let files = sources();
    assert!(files.len() > 100, "{} files", files.len());
    let problems = violations(&layers, &files);
    assert!(
        problems.is_empty(),
        "{} import(s) against the layers in ARCHITECTURE.md:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// The list names every module of the crate once and nothing else.
#[test]
fn the_layer_list_names_every_module_and_only_modules() {
    let layers = architecture();
    let mut seen = BTreeSet::new();
    for layer in &layers {
        assert!(
            seen.insert(layer.name()),
            "`{}` is listed twice",
            layer.name()
        );
        let dir = root().join("server/src").join(layer.path.join("/"));
        let file = dir.with_extension("rs");
        assert!(
            dir.join("mod.rs").exists() || file.exists(),
            "`{}` is listed but no such module exists",
            layer.name()
        );
        for name in layer.only.iter().flatten() {
            assert!(
                layers.iter().any(|l| &l.name() == name),
                "`{}` may use `{name}`, which is not listed",
                layer.name()
            );
        }
    }
    let lib = std::fs::read_to_string(root().join("server/src/lib.rs")).unwrap();
    for line in lib.lines() {
        if let Some(name) = line
            .trim()
            .strip_prefix("pub mod ")
            .or(line.trim().strip_prefix("mod "))
        {
            let name = name.trim_end_matches(';');
            assert!(
                seen.contains(name),
                "module `{name}` (lib.rs) is in no layer of ARCHITECTURE.md"
            );
        }
    }
}

/// The check itself: it sees `use` groups, `super::` paths that leave a
/// module and paths inside functions; it ignores comments and strings.
#[test]
fn the_check_reads_groups_super_paths_and_skips_comments() {
    let layers = parse_layers("```layers\nhigh\nmid\nmid::leaf\nlow\nside only: low\n```\n");
    let file = |path: &str, text: &str| (PathBuf::from(path), text.to_string());
    let files = [
        file("low.rs", "use crate::{mid::x, high};\n"),
        file(
            "mid/leaf.rs",
            "// crate::high\nfn f() { let s = \"crate::high\"; super::y(); }\n",
        ),
        file(
            "mid/mod.rs",
            "use crate::low;\nmod tests {\n    use super::super::high::z;\n}\n",
        ),
        file(
            "side.rs",
            "use crate::low::a;\nfn g() { crate::mid::leaf::f(); }\n",
        ),
        file(
            "high.rs",
            "use crate::mid::{self, leaf::{a, b as c}};\nuse crate::low::*;\n",
        ),
    ];
    let problems = violations(&layers, &files);
    let expected = [
        "server/src/low.rs:1: `low` imports `mid` (`mid::x`), which is above it",
        "server/src/low.rs:1: `low` imports `high` (`high`), which is above it",
        "server/src/mid/leaf.rs:2: `mid::leaf` imports `mid` (`mid::y`), which is above it",
        "server/src/mid/mod.rs:3: `mid` imports `high` (`high::z`), which is above it",
        "server/src/side.rs:2: `side` imports `mid::leaf` (`mid::leaf::f`), which its `only:` list does not name",
    ];
    assert_eq!(problems, expected);
}
