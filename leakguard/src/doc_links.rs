//! Every relative link in the README, the guides under `docs/`, `BENCHMARKS.md` and `FUZZING.md`
//! must name a file of the repository, and every `#anchor` a heading of that file (GitHub's
//! anchors: lower case, punctuation dropped, spaces as hyphens, `-1`, `-2` for repeats).

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the crate lives in the workspace")
        .to_path_buf()
}

fn documents(root: &Path) -> Vec<PathBuf> {
    let mut docs: Vec<PathBuf> = ["README.md", "BENCHMARKS.md", "FUZZING.md"]
        .iter()
        .map(|name| root.join(name))
        .collect();
    let mut guides: Vec<PathBuf> = fs::read_dir(root.join("docs"))
        .expect("docs/ exists")
        .map(|entry| entry.expect("docs/ is readable").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    guides.sort();
    docs.extend(guides);
    docs
}

/// The lines of a Markdown text outside fenced code blocks.
fn prose_lines(text: &str) -> Vec<&str> {
    let mut fenced = false;
    let mut lines = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            lines.push(line);
        }
    }
    lines
}

/// GitHub's anchor for a heading's text.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

fn anchors(text: &str) -> HashSet<String> {
    let mut seen = HashSet::new();
    for line in prose_lines(text) {
        let hashes = line.chars().take_while(|&c| c == '#').count();
        if hashes == 0 || !line[hashes..].starts_with(' ') {
            continue;
        }
        let base = slug(&line[hashes..]);
        let mut anchor = base.clone();
        let mut n = 0;
        while seen.contains(&anchor) {
            n += 1;
            anchor = format!("{base}-{n}");
        }
        seen.insert(anchor);
    }
    seen
}

/// Strips inline code spans, so that `[a](b)` written as code is not taken for a link.
fn without_code_spans(line: &str) -> String {
    let mut out = String::new();
    let mut in_code = false;
    for c in line.chars() {
        if c == '`' {
            in_code = !in_code;
        } else if !in_code {
            out.push(c);
        }
    }
    out
}

/// The targets of inline links `[text](target)` and of reference definitions `[x]: target`.
fn link_targets(text: &str) -> Vec<String> {
    let mut targets = Vec::new();
    for line in prose_lines(text) {
        let line = without_code_spans(line);
        let trimmed = line.trim_start();
        if let Some(target) = trimmed
            .strip_prefix('[')
            .and_then(|t| t.split_once("]:"))
            .and_then(|(_, rest)| rest.split_whitespace().next())
        {
            targets.push(target.to_string());
        }
        let mut rest = line.as_str();
        while let Some(start) = rest.find("](") {
            let after = &rest[start + 2..];
            match after.find(')') {
                Some(end) => {
                    let target = after[..end].split_whitespace().next().unwrap_or("");
                    targets.push(target.to_string());
                    rest = &after[end..];
                }
                None => break,
            }
        }
    }
    targets
}

#[test]
fn links_between_documents_resolve() {
    let root = repo_root();
    let mut broken = Vec::new();
    let mut checked = 0;
    for doc in documents(&root) {
        let text = fs::read_to_string(&doc).expect("a document is readable");
        let dir = doc.parent().expect("a document has a directory");
        for target in link_targets(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            checked += 1;
            let (path, anchor) = match target.split_once('#') {
                Some((path, anchor)) => (path, Some(anchor)),
                None => (target.as_str(), None),
            };
            let file = if path.is_empty() {
                doc.clone()
            } else {
                dir.join(path)
            };
            let shown = doc
                .strip_prefix(&root)
                .unwrap_or(&doc)
                .display()
                .to_string();
            if !file.exists() {
                broken.push(format!("{shown}: {target}: no such file"));
                continue;
            }
            if let Some(anchor) = anchor {
                let heads = fs::read_to_string(&file)
                    .map(|t| anchors(&t))
                    .unwrap_or_default();
                if !heads.contains(anchor) {
                    broken.push(format!("{shown}: {target}: no such heading"));
                }
            }
        }
    }
    assert!(
        checked > 0,
        "no relative link was found, so nothing was checked"
    );
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn anchors_follow_github() {
    let text =
        "# A\n## 1. Cost of one sample\n```\n# not a heading\n```\n## The `leakguard` CLI\n## A\n";
    let found = anchors(text);
    for expected in ["a", "1-cost-of-one-sample", "the-leakguard-cli", "a-1"] {
        assert!(
            found.contains(expected),
            "{expected} missing from {found:?}"
        );
    }
    assert!(!found.contains("not-a-heading"));
    assert_eq!(
        link_targets("see [x](a.md#b) and `[y](c.md)`\n[r]: d.md\n"),
        ["a.md#b", "d.md"]
    );
}
