//! The source layout rules `docs/architecture.md` states, checked on the sources: no module of a
//! crate imports a module that imports it back, and no function of the planner (`everynode-core`)
//! is longer than 120 lines.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The crates whose modules must not import each other both ways.
const CRATES: [&str; 4] = [
    "everynode-api",
    "everynode-core",
    "everynode-runtime",
    "everynode",
];

/// The longest function the planner may have, in lines.
const MAX_CORE_FUNCTION_LINES: usize = 120;

fn crate_src(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../crates")
        .join(name)
        .join("src")
}

/// Every `.rs` file under `dir`.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("read source dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The top-level module a file belongs to (`plan/steps.rs` → `plan`; `lib.rs` → none).
fn top_module(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.trim_end_matches(".rs");
    (!matches!(name, "lib" | "main")).then(|| name.to_owned())
}

/// The code of a file without comments and without its `#[cfg(test)]` tail.
fn code(text: &str) -> String {
    let body = text.split("#[cfg(test)]").next().unwrap_or_default();
    body.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level modules a file's code names with `crate::`.
fn crate_refs(code: &str) -> BTreeSet<String> {
    code.match_indices("crate::")
        .filter(|(i, _)| {
            // A bare `crate::`, not the end of a longer name (`my_crate::`).
            code[..*i]
                .chars()
                .next_back()
                .is_none_or(|c| !(c.is_alphanumeric() || c == '_'))
        })
        .map(|(i, m)| {
            code[i + m.len()..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect::<String>()
        })
        .filter(|name| !name.is_empty())
        .collect()
}

#[test]
fn no_module_imports_a_module_that_imports_it_back() {
    let mut circles = Vec::new();
    for krate in CRATES {
        let src = crate_src(krate);
        let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for file in sources(&src) {
            let Some(module) = top_module(&src, &file) else {
                continue;
            };
            let text = std::fs::read_to_string(&file).expect("read source");
            let refs = crate_refs(&code(&text));
            edges
                .entry(module.clone())
                .or_default()
                .extend(refs.into_iter().filter(|r| *r != module));
        }
        for (a, targets) in &edges {
            for b in targets {
                if a < b && edges.get(b).is_some_and(|back| back.contains(a)) {
                    circles.push(format!("{krate}: {a} ⇄ {b}"));
                }
            }
        }
    }
    assert!(circles.is_empty(), "import circles: {circles:#?}");
}

/// `(lines, name)` of every function in `text`: from its `fn` line to the closing brace at the
/// same indentation.
fn functions(text: &str) -> Vec<(usize, String)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        let signature = ["pub(crate) fn ", "pub(super) fn ", "pub fn ", "fn "]
            .iter()
            .find_map(|p| trimmed.strip_prefix(p));
        let Some(rest) = signature else { continue };
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let closing = format!("{indent}}}");
        let Some(open) = (i..lines.len()).find(|&j| {
            let l = lines[j].trim_end();
            l.ends_with('{') || l.ends_with(';')
        }) else {
            continue;
        };
        if lines[open].trim_end().ends_with(';') {
            continue;
        }
        if let Some(end) = (open + 1..lines.len()).find(|&j| lines[j] == closing) {
            out.push((end - i + 1, name));
        }
    }
    out
}

#[test]
fn no_planner_function_is_longer_than_a_screen() {
    let src = crate_src("everynode-core");
    let mut long = Vec::new();
    for file in sources(&src) {
        let text = std::fs::read_to_string(&file).expect("read source");
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        for (lines, name) in functions(code) {
            if lines > MAX_CORE_FUNCTION_LINES {
                long.push(format!("{}: {name} ({lines} lines)", file.display()));
            }
        }
    }
    assert!(
        long.is_empty(),
        "functions longer than {MAX_CORE_FUNCTION_LINES} lines: {long:#?}"
    );
}

#[test]
fn the_checks_see_what_they_check() {
    let refs = crate_refs("use crate::plan::Plan;\nlet x = everynode_core::plan(&i);\nsuper::x();");
    assert_eq!(refs, BTreeSet::from(["plan".to_owned()]));
    let fns = functions("fn a() {\n    x();\n}\n    pub fn b(\n        y: u8,\n    ) {\n    }\n");
    assert_eq!(fns, vec![(3, "a".to_owned()), (4, "b".to_owned())]);
}
