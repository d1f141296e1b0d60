//! A CycloneDX SBOM of the `everynode` binary: every crate it links (`cargo tree` of its normal
//! dependencies for the image's target, so features resolve as the build does), with licence
//! and the checksum `Cargo.lock` pins.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::Context;
use serde_json::{Value, json};

/// One crate of the binary.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Component {
    name: String,
    version: String,
    licence: Option<String>,
}

/// The SBOM (CycloneDX 1.6 JSON) of package `package` built for `target`.
pub(crate) fn cyclonedx(
    root: &Path,
    package: &str,
    target: &str,
    created: &str,
) -> anyhow::Result<Vec<u8>> {
    let tree = cargo_tree(root, package, target)?;
    let checksums = lock_checksums(&std::fs::read_to_string(root.join("Cargo.lock"))?);
    let mut components = parse_tree(&tree);
    let main = components
        .iter()
        .position(|c| c.name == package)
        .map(|i| components.remove(i))
        .with_context(|| format!("`cargo tree` does not list {package}"))?;
    let entry = |c: &Component, kind: &str| {
        let purl = format!("pkg:cargo/{}@{}", c.name, c.version);
        let mut v = json!({
            "type": kind,
            "bom-ref": purl,
            "name": c.name,
            "version": c.version,
            "purl": purl,
        });
        if let Some(licence) = &c.licence {
            v["licenses"] = json!([{ "expression": licence }]);
        }
        if let Some(sum) = checksums.get(&(c.name.clone(), c.version.clone())) {
            v["hashes"] = json!([{ "alg": "SHA-256", "content": sum }]);
        }
        v
    };
    let bom = json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "version": 1,
        "metadata": {
            "timestamp": created,
            "tools": { "components": [{ "type": "application", "name": "cargo xtask image" }] },
            "component": entry(&main, "application"),
        },
        "components": components.iter().map(|c| entry(c, "library")).collect::<Vec<Value>>(),
    });
    let mut bytes = serde_json::to_vec_pretty(&bom)?;
    bytes.push(b'\n');
    Ok(bytes)
}

fn cargo_tree(root: &Path, package: &str, target: &str) -> anyhow::Result<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = std::process::Command::new(cargo)
        .args([
            "tree", "--locked", "-p", package, "-e", "normal", "--target", target,
        ])
        .args(["--prefix", "none", "--format", "{p}|{l}"])
        .current_dir(root)
        .output()
        .context("running cargo tree")?;
    if !out.status.success() {
        anyhow::bail!(
            "cargo tree failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// Components of `cargo tree --prefix none --format '{p}|{l}'` output, once each, sorted.
fn parse_tree(tree: &str) -> Vec<Component> {
    let mut seen = BTreeSet::new();
    for line in tree.lines() {
        let Some((package, licence)) = line.split_once('|') else {
            continue;
        };
        let mut words = package.split_whitespace();
        let (Some(name), Some(version)) = (words.next(), words.next()) else {
            continue;
        };
        let licence = licence.trim().trim_end_matches("(*)").trim();
        seen.insert(Component {
            name: name.to_owned(),
            version: version.trim_start_matches('v').to_owned(),
            // Old crates write `MIT/Apache-2.0`; SPDX says `OR`.
            licence: (!licence.is_empty()).then(|| licence.replace('/', " OR ")),
        });
    }
    seen.into_iter().collect()
}

/// `(name, version)` → sha256 of every registry package in `Cargo.lock`.
fn lock_checksums(lock: &str) -> BTreeMap<(String, String), String> {
    let mut sums = BTreeMap::new();
    for package in lock.split("[[package]]").skip(1) {
        let field = |key: &str| {
            package.lines().find_map(|l| {
                l.strip_prefix(key)
                    .and_then(|rest| rest.trim().strip_prefix('='))
                    .map(|v| v.trim().trim_matches('"').to_owned())
            })
        };
        if let (Some(name), Some(version), Some(sum)) =
            (field("name "), field("version "), field("checksum "))
        {
            sums.insert((name, version), sum);
        }
    }
    sums
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_lines_become_one_component_each() {
        let tree = "everynode v0.1.0 (/w/crates/everynode)|Apache-2.0\n\
                    serde v1.0.1|MIT OR Apache-2.0\n\
                    serde v1.0.1|MIT OR Apache-2.0 (*)\n\
                    old v0.1.0|MIT/Apache-2.0\n";
        let parsed = parse_tree(tree);
        assert_eq!(parsed.len(), 3);
        assert_eq!(parsed[1].name, "old");
        assert_eq!(parsed[1].licence.as_deref(), Some("MIT OR Apache-2.0"));
        assert_eq!(parsed[2].licence.as_deref(), Some("MIT OR Apache-2.0"));
    }

    #[test]
    fn checksums_come_from_registry_packages_only() {
        let lock = "version = 4\n\n[[package]]\nname = \"a\"\nversion = \"1.0.0\"\n\
                    source = \"registry+https://github.com/rust-lang/crates.io-index\"\n\
                    checksum = \"abc\"\n\n[[package]]\nname = \"local\"\nversion = \"0.1.0\"\n";
        let sums = lock_checksums(lock);
        assert_eq!(sums.len(), 1);
        assert_eq!(sums[&("a".to_owned(), "1.0.0".to_owned())], "abc");
    }
}
