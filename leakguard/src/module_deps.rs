//! The crate's top-level modules depend on each other one way: no module imports one that
//! imports it back, directly or through others (docs/architecture.md, "Modules and the way they
//! depend").
//!
//! The test reads the sources at test time and builds the import graph: a node per top-level
//! module (a directory such as `guard/` or `cache/` is one node with all its files), an edge
//! for every `crate::X` path (`use crate::X`, `use crate::{X, …}`, `crate::X::f()`, `$crate::X`
//! in macros), for names re-exported at the root (`crate::Result` is `error`'s) and for
//! `super::` paths that climb to the crate root. Comments, string literals and `#[cfg(test)]`
//! items are left out: tests may reach anywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Edges: from module → to module → the files (relative to `src/`) that make the edge.
type Graph = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// `text` with comments blanked out and string and character literals emptied (their quotes
/// kept), newlines kept, so braces and paths inside them are not taken for code.
fn code_only(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if chars[i] == '\n' {
                        out.push('\n');
                    }
                    i += 1;
                }
            }
            out.push(' ');
        } else if c == 'r'
            && (next == Some('"') || next == Some('#'))
            && !chars
                .get(i.wrapping_sub(1))
                .is_some_and(|p| p.is_alphanumeric() || *p == '_')
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
            j += 1;
            loop {
                match chars.get(j) {
                    None => break,
                    Some('"') if (1..=hashes).all(|k| chars.get(j + k) == Some(&'#')) => {
                        j += 1 + hashes;
                        break;
                    }
                    Some('\n') => out.push('\n'),
                    Some(_) => {}
                }
                j += 1;
            }
            out.push_str("\"\"");
            i = j;
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    i += 1;
                } else if chars[i] == '\n' {
                    out.push('\n');
                }
                i += 1;
            }
            out.push_str("\"\"");
            i += 1;
        } else if c == '\'' && next == Some('\\') {
            // An escaped character literal: '\n', '\'', '\u{1F4CA}'.
            i += 2;
            while i < chars.len() && chars[i] != '\'' {
                i += 1;
            }
            out.push_str("' '");
            i += 1;
        } else if c == '\'' && chars.get(i + 2) == Some(&'\'') {
            out.push_str("' '");
            i += 3;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// `code` (from [`code_only`]) with every `#[cfg(test)]` item blanked out, and the names of
/// the modules declared test-only there (`#[cfg(test)] mod tests;`).
fn without_test_items(code: &str) -> (String, Vec<String>) {
    const ATTR: &str = "#[cfg(test)]";
    let mut out = String::with_capacity(code.len());
    let mut test_mods = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find(ATTR) {
        out.push_str(&rest[..at]);
        let item = &rest[at + ATTR.len()..];
        // The item ends at its first `;` outside brackets, or with the block its first `{`
        // opens.
        let mut depth = 0usize;
        let mut end = item.len();
        let mut block = false;
        for (i, c) in item.char_indices() {
            match c {
                '(' | '[' => depth += 1,
                ')' | ']' => depth = depth.saturating_sub(1),
                ';' if depth == 0 => {
                    end = i + 1;
                    break;
                }
                '{' if depth == 0 => {
                    block = true;
                    end = i;
                    break;
                }
                _ => {}
            }
        }
        if block {
            let mut braces = 0usize;
            for (i, c) in item[end..].char_indices() {
                match c {
                    '{' => braces += 1,
                    '}' => {
                        braces -= 1;
                        if braces == 0 {
                            end += i + 1;
                            break;
                        }
                    }
                    _ => {}
                }
            }
        } else {
            let words: Vec<&str> = item[..end]
                .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                .filter(|w| !w.is_empty())
                .collect();
            if let Some(pos) = words.iter().position(|w| *w == "mod")
                && let Some(name) = words.get(pos + 1)
            {
                test_mods.push((*name).to_owned());
            }
        }
        out.extend(item[..end].chars().filter(|&c| c == '\n'));
        rest = &item[end..];
    }
    out.push_str(rest);
    (out, test_mods)
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The first segment of each path a `{…}` group starts with: `{a::{B, C}, d}` gives `a`, `d`.
fn group_heads(group: &str) -> Vec<String> {
    let mut heads = Vec::new();
    let mut depth = 0usize;
    // Whether the next identifier at depth 1 starts a path.
    let mut expecting = false;
    let mut word = String::new();
    for c in group.chars() {
        if is_ident(c) {
            if expecting && depth == 1 {
                word.push(c);
            }
            continue;
        }
        if !word.is_empty() {
            heads.push(std::mem::take(&mut word));
            expecting = false;
        }
        match c {
            '{' => {
                depth += 1;
                expecting = depth == 1;
            }
            '}' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    break;
                }
            }
            ',' if depth == 1 => expecting = true,
            _ => {}
        }
    }
    heads
}

/// The heads of the paths that follow position `at` (just past `crate::`): one identifier or
/// the heads of a `{…}` group.
fn heads_at(code: &str, at: usize) -> Vec<String> {
    let rest = code[at..].trim_start();
    if rest.starts_with('{') {
        group_heads(rest)
    } else {
        let word: String = rest.chars().take_while(|&c| is_ident(c)).collect();
        if word.is_empty() { vec![] } else { vec![word] }
    }
}

/// The top-level names one file's code reaches through the crate root. `depth` is how deep
/// the file's module sits below the root: 1 for `config.rs` and `guard/mod.rs`, 2 for
/// `guard/tick.rs`. Inline modules (`mod x { … }`) add one inside their braces.
fn root_paths(code: &str, depth: usize) -> Vec<String> {
    let mut found = Vec::new();
    // Brace depths at which inline modules opened.
    let mut inline: Vec<usize> = Vec::new();
    let mut braces = 0usize;
    let bytes = code.as_bytes();
    let mut i = 0;
    while i < code.len() {
        let rest = &code[i..];
        let word_start = i == 0 || !is_ident(bytes[i - 1] as char);
        if rest.starts_with('{') {
            braces += 1;
        } else if rest.starts_with('}') {
            braces = braces.saturating_sub(1);
            if inline.last() == Some(&braces) {
                inline.pop();
            }
        } else if word_start && rest.starts_with("mod ") {
            let after = rest[4..].trim_start();
            let name_len = after.chars().take_while(|&c| is_ident(c)).count();
            if after[name_len..].trim_start().starts_with('{') {
                inline.push(braces);
            }
        } else if word_start && rest.starts_with("crate::") {
            found.extend(heads_at(code, i + "crate::".len()));
            i += "crate::".len();
            continue;
        } else if word_start && rest.starts_with("super::") {
            let mut climbs = 0;
            let mut j = i;
            while code[j..].starts_with("super::") {
                climbs += 1;
                j += "super::".len();
            }
            if climbs == depth + inline.len() {
                found.extend(heads_at(code, j));
            }
            i = j;
            continue;
        }
        i += rest.chars().next().map_or(1, char::len_utf8);
    }
    found
}

/// The names `lib.rs` re-exports at the root, each with the module it comes from
/// (`pub use self::error::{Error, Result}` gives `Error` and `Result` → `error`).
fn root_names(lib: &str) -> BTreeMap<String, String> {
    let mut names = BTreeMap::new();
    let mut rest = lib;
    while let Some(at) = rest.find("use self::") {
        let stmt = &rest[at + "use self::".len()..];
        let end = stmt.find(';').unwrap_or(stmt.len());
        let mut words = stmt[..end]
            .split(|c: char| !is_ident(c))
            .filter(|w| !w.is_empty());
        if let Some(module) = words.next() {
            for name in words.filter(|w| *w != "as" && *w != "self") {
                names.insert(name.to_owned(), module.to_owned());
            }
        }
        rest = &stmt[end..];
    }
    names
}

/// The modules `lib.rs` declares (`mod x;`, `pub mod x;`), whatever their `cfg`.
fn top_modules(lib: &str) -> Vec<String> {
    lib.lines()
        .filter_map(|line| {
            let line = line.trim();
            let decl = line.strip_suffix(';')?;
            let name = decl.rsplit_once("mod ")?.1.trim();
            let visibility = decl.rsplit_once("mod ")?.0.trim();
            (visibility.is_empty() || visibility.starts_with("pub"))
                .then(|| name.to_owned())
                .filter(|n| n.chars().all(is_ident))
        })
        .collect()
}

/// A module's files with the depth of each below the root, test-only files left out.
fn module_files(src: &Path, module: &str) -> Vec<(PathBuf, usize)> {
    let file = src.join(format!("{module}.rs"));
    if file.is_file() {
        return vec![(file, 1)];
    }
    let mut files = Vec::new();
    let mut dirs = vec![(src.join(module), 1)];
    while let Some((dir, depth)) = dirs.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("a source directory is readable").path();
            if path.is_dir() {
                dirs.push((path, depth + 1));
            } else if path.extension().is_some_and(|e| e == "rs") {
                let d = if path.file_name().is_some_and(|n| n == "mod.rs") {
                    depth
                } else {
                    depth + 1
                };
                files.push((path, d));
            }
        }
    }
    files.sort();
    files
}

/// The import graph of the crate whose sources are under `src`.
fn import_graph(src: &Path) -> Graph {
    let lib = code_only(&fs::read_to_string(src.join("lib.rs")).expect("lib.rs is readable"));
    let modules: BTreeSet<String> = top_modules(&lib).into_iter().collect();
    let aliases = root_names(&lib);
    let mut graph = Graph::new();
    for module in &modules {
        let files = module_files(src, module);
        let mut test_only = BTreeSet::new();
        let mut scanned = Vec::new();
        for (path, depth) in &files {
            let text = fs::read_to_string(path).expect("a source file is readable");
            let (code, tests) = without_test_items(&code_only(&text));
            let dir = path.parent().expect("a file has a directory");
            for name in tests {
                test_only.insert(dir.join(format!("{name}.rs")));
                test_only.insert(dir.join(&name).join("mod.rs"));
            }
            scanned.push((path.clone(), *depth, code));
        }
        let node = graph.entry(module.clone()).or_default();
        for (path, depth, code) in scanned {
            if test_only.contains(&path) {
                continue;
            }
            let shown = path
                .strip_prefix(src)
                .unwrap_or(&path)
                .display()
                .to_string();
            for head in root_paths(&code, depth) {
                let target = if modules.contains(&head) {
                    head
                } else if let Some(m) = aliases.get(&head) {
                    m.clone()
                } else {
                    continue;
                };
                if &target != module {
                    node.entry(target).or_default().insert(shown.clone());
                }
            }
        }
    }
    graph
}

/// Every cycle of the graph, one per strongly connected group of modules, each written
/// `a → b → c → a` with the files that make each step.
fn cycles(graph: &Graph) -> Vec<String> {
    let reach = |from: &str| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.to_owned()];
        while let Some(m) = stack.pop() {
            for next in graph.get(&m).into_iter().flat_map(BTreeMap::keys) {
                if seen.insert(next.clone()) {
                    stack.push(next.clone());
                }
            }
        }
        seen
    };
    let reachable: BTreeMap<&String, BTreeSet<String>> =
        graph.keys().map(|m| (m, reach(m))).collect();
    let mut reported: BTreeSet<String> = BTreeSet::new();
    let mut found = Vec::new();
    for start in graph.keys() {
        if reported.contains(start) || !reachable[start].contains(start) {
            continue;
        }
        // The group: every module on a cycle through `start`.
        let group: BTreeSet<&String> = graph
            .keys()
            .filter(|m| reachable[start].contains(*m) && reachable[*m].contains(start))
            .collect();
        reported.extend(group.iter().map(|m| (*m).clone()));
        // A shortest way back to `start`, breadth first.
        let mut came_from: BTreeMap<String, String> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([start.clone()]);
        'search: while let Some(m) = queue.pop_front() {
            for next in graph.get(&m).into_iter().flat_map(BTreeMap::keys) {
                if next == start {
                    came_from.insert(format!("{start}'"), m.clone());
                    break 'search;
                }
                if group.contains(next) && !came_from.contains_key(next) {
                    came_from.insert(next.clone(), m.clone());
                    queue.push_back(next.clone());
                }
            }
        }
        let mut path = vec![start.clone()];
        let mut at = came_from[&format!("{start}'")].clone();
        while &at != start {
            path.push(at.clone());
            at = came_from[&at].clone();
        }
        path.push(start.clone());
        path.reverse();
        let steps: Vec<String> = path
            .windows(2)
            .map(|w| {
                let files: Vec<&str> = graph[&w[0]][&w[1]].iter().map(String::as_str).collect();
                format!("  {} → {} ({})", w[0], w[1], files.join(", "))
            })
            .collect();
        let names: Vec<String> = group.iter().map(|m| (*m).clone()).collect();
        found.push(format!(
            "{} (modules on this cycle or beside it: {})\n{}",
            path.join(" → "),
            names.join(", "),
            steps.join("\n")
        ));
    }
    found
}

#[test]
fn top_level_modules_depend_one_way() {
    let graph = import_graph(&src_dir());
    // The graph was really read: the guard uses the detector and the settings.
    for (from, to) in [("guard", "trend"), ("guard", "config"), ("config", "units")] {
        assert!(
            graph.get(from).is_some_and(|m| m.contains_key(to)),
            "{from} → {to} not found; the scan is broken: {graph:#?}"
        );
    }
    let found = cycles(&graph);
    assert!(
        found.is_empty(),
        "modules that import each other back (move the shared type into a leaf module, or \
         pass the data in):\n{}",
        found.join("\n")
    );
}

#[test]
fn cycles_are_named_with_their_files() {
    let edge = |from: &str, to: &str, file: &str| {
        (
            from.to_owned(),
            BTreeMap::from([(to.to_owned(), BTreeSet::from([file.to_owned()]))]),
        )
    };
    let mut graph: Graph = [
        edge("cache", "exposition", "cache/registry.rs"),
        edge("exposition", "snapshot", "exposition.rs"),
        edge("snapshot", "cache", "snapshot.rs"),
        edge("trend", "units", "trend/mod.rs"),
    ]
    .into_iter()
    .collect();
    graph.insert("units".into(), BTreeMap::new());
    let found = cycles(&graph);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("cache → exposition → snapshot → cache"),
        "{}",
        found[0]
    );
    assert!(
        found[0].contains("snapshot → cache (snapshot.rs)"),
        "{}",
        found[0]
    );
    graph.get_mut("snapshot").map(BTreeMap::clear);
    assert!(cycles(&graph).is_empty());
}

#[test]
fn imports_are_read_from_code_only() {
    let source = r##"
//! See [`x`](crate::docs_only).
use crate::{config::{Config, LimitSetting}, error};
use super::sibling;
fn f() -> crate::Result<()> {
    let _ = "crate::in_a_string {";
    let _ = r#"crate::in_a_raw_string"#;
    let _ = '{';
    crate::units::parse_size("1")?;
    $crate::event::Event::new();
    Ok(())
}
/* crate::in_a_block_comment */
mod inline {
    use super::super::trend;
    use super::helper;
}
#[cfg(test)]
fn rings() -> [(usize, usize); 3] { crate::test_helper_fn() }
#[cfg(test)]
mod tests {
    use crate::guard;
}
#[cfg(test)]
mod more_tests;
"##;
    let (code, test_mods) = without_test_items(&code_only(source));
    assert_eq!(test_mods, ["more_tests"]);
    // A file one level below the root (`guard/tick.rs`): `super::` is its own directory.
    assert_eq!(
        root_paths(&code, 2),
        ["config", "error", "Result", "units", "event"]
    );
    // A top-level file: `super::` is the root, and `super::super::` from an inline module.
    assert_eq!(
        root_paths(&code, 1),
        [
            "config", "error", "sibling", "Result", "units", "event", "trend"
        ]
    );
    let lib = "pub use self::error::{Error, Result};\npub use self::extensions as extend;\n";
    let names = root_names(lib);
    assert_eq!(names["Result"], "error");
    assert_eq!(names["extend"], "extensions");
    assert_eq!(
        top_modules("pub mod a;\nmod b;\n#[cfg(test)]\nmod c;\npub use self::a::X;\n"),
        ["a", "b", "c"]
    );
}
