//! The shape of the workspace, checked on every run of the test command so that it
//! stays the shape `docs/architecture.md` describes: no source file over
//! `FILE_LINES_MAX` lines, no crate over `CRATE_LINES_MAX` lines of Rust, no import
//! circle among the top-level modules of a crate, every crate on the workspace lints,
//! and `#![forbid(unsafe_code)]` in every crate that has no unsafe code.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const FILE_LINES_MAX: usize = 800;
const CRATE_LINES_MAX: usize = 5_000;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// The folders of the workspace's members, from the root `Cargo.toml`.
fn members() -> Vec<PathBuf> {
    let root = workspace_root();
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let list = manifest.split("members = [").nth(1).unwrap().split(']').next().unwrap();
    let members: Vec<PathBuf> =
        list.split(',').map(|m| m.trim().trim_matches('"')).filter(|m| !m.is_empty()).map(|m| root.join(m)).collect();
    assert!(members.len() > 10, "members not found in the root Cargo.toml");
    members
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.map(Result::unwrap) {
        let path = entry.path();
        if entry.file_type().unwrap().is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn crate_files(member: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for sub in ["src", "tests", "benches"] {
        rust_files(&member.join(sub), &mut files);
    }
    files.sort();
    files
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path).unwrap().lines().count()
}

#[test]
fn no_source_file_is_over_the_line_limit() {
    let long: Vec<String> = members()
        .iter()
        .flat_map(|m| crate_files(m))
        .filter(|f| lines(f) > FILE_LINES_MAX)
        .map(|f| format!("{} ({} lines)", f.display(), lines(&f)))
        .collect();
    assert!(long.is_empty(), "split these by responsibility (over {FILE_LINES_MAX} lines): {long:#?}");
}

#[test]
fn no_crate_is_over_the_line_limit() {
    let big: Vec<String> = members()
        .iter()
        .map(|m| (m, crate_files(m).iter().map(|f| lines(f)).sum::<usize>()))
        .filter(|(_, n)| *n > CRATE_LINES_MAX)
        .map(|(m, n)| format!("{} ({n} lines)", m.display()))
        .collect();
    assert!(big.is_empty(), "split these crates along a seam (over {CRATE_LINES_MAX} lines): {big:#?}");
}

/// Top-level module → the top-level modules it names as `crate::…`, outside its tests.
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let rel = file.strip_prefix(src).unwrap();
        let first = rel.components().next().unwrap().as_os_str().to_string_lossy().into_owned();
        let module = first.trim_end_matches(".rs").to_string();
        if ["lib", "main", "bin"].contains(&module.as_str()) {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap();
        let uses = graph.entry(module.clone()).or_default();
        for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
            for (i, _) in line.match_indices("crate::") {
                let name: String = line[i + 7..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_' || c.is_ascii_digit())
                    .collect();
                if !name.is_empty() && name != module {
                    uses.insert(name);
                }
            }
        }
    }
    graph
}

/// A circle through `start`, if there is one.
fn circle_from(graph: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    fn visit(
        graph: &BTreeMap<String, BTreeSet<String>>,
        start: &str,
        at: &str,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        for next in graph.get(at).into_iter().flatten() {
            if next == start {
                return true;
            }
            if graph.contains_key(next) && seen.insert(next.clone()) {
                path.push(next.clone());
                if visit(graph, start, next, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start.to_string()];
    visit(graph, start, start, &mut path, &mut BTreeSet::new()).then_some(path)
}

#[test]
fn the_modules_of_each_crate_import_each_other_in_one_direction() {
    let mut circles = Vec::new();
    for member in members() {
        let graph = module_graph(&member.join("src"));
        if let Some(circle) = graph.keys().find_map(|m| circle_from(&graph, m)) {
            circles.push(format!("{}: {}", member.display(), circle.join(" -> ")));
        }
    }
    assert!(circles.is_empty(), "import circles (move the shared types into a module of their own): {circles:#?}");
}

#[test]
fn the_circle_check_finds_a_circle() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a".to_string(), BTreeSet::from(["b".to_string()])),
        ("b".to_string(), BTreeSet::from(["c".to_string()])),
        ("c".to_string(), BTreeSet::from(["a".to_string()])),
        ("d".to_string(), BTreeSet::from(["a".to_string()])),
    ]
    .into();
    assert_eq!(circle_from(&graph, "a"), Some(vec!["a".into(), "b".into(), "c".into()]));
    assert_eq!(circle_from(&graph, "d"), None);
}

#[test]
fn every_crate_takes_the_workspace_lints_and_forbids_unsafe_code_where_it_has_none() {
    let mut wrong = Vec::new();
    for member in members() {
        let manifest = std::fs::read_to_string(member.join("Cargo.toml")).unwrap();
        if !manifest.contains("[lints]\nworkspace = true") {
            wrong.push(format!("{}: no `[lints] workspace = true`", member.display()));
        }
        let has_unsafe = crate_files(&member).iter().any(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .any(|l| l.contains("unsafe {") || l.contains("unsafe fn") || l.contains("unsafe impl"))
        });
        if !has_unsafe {
            for root in ["src/lib.rs", "src/main.rs"] {
                let path = member.join(root);
                if path.exists() && !std::fs::read_to_string(&path).unwrap().contains("#![forbid(unsafe_code)]") {
                    wrong.push(format!("{}: no unsafe code, but no #![forbid(unsafe_code)]", path.display()));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}
