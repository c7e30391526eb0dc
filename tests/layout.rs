//! The source layout the design asks for: no import cycle between the crate's top-level
//! modules, no file in `src/` much over 600 lines, and `unsafe` only where the crate root
//! allows it (`driver/`, `buffer/`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The code of a file without comments and without its test module.
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    text.lines()
        .map(|l| l.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level module a file belongs to (`session` for `src/session/relay.rs`).
fn top_module(path: &Path) -> String {
    let rel = path.strip_prefix(src()).expect("under src");
    let first = rel.components().next().expect("a component");
    first
        .as_os_str()
        .to_string_lossy()
        .trim_end_matches(".rs")
        .to_string()
}

#[test]
fn no_import_cycle_between_top_level_modules() {
    let mut files = Vec::new();
    sources(&src(), &mut files);
    let mut deps: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let top = top_module(f);
        if top == "lib" || top == "main" || f.ends_with("tests.rs") {
            continue;
        }
        let text = code(&std::fs::read_to_string(f).expect("read"));
        for (i, _) in text.match_indices("crate::") {
            let name: String = text[i + 7..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            if !name.is_empty() && name != top {
                deps.entry(top.clone()).or_default().insert(name);
            }
        }
    }
    fn reaches(
        deps: &BTreeMap<String, BTreeSet<String>>,
        from: &str,
        to: &str,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        for d in deps.get(from).into_iter().flatten() {
            if d == to || (seen.insert(d.clone()) && reaches(deps, d, to, seen)) {
                return true;
            }
        }
        false
    }
    let mut cycles = BTreeSet::new();
    for (a, bs) in &deps {
        for b in bs {
            if reaches(&deps, b, a, &mut BTreeSet::new()) {
                cycles.insert(if a < b { (a, b) } else { (b, a) });
            }
        }
    }
    assert!(
        cycles.is_empty(),
        "modules that import each other: {cycles:?}"
    );
}

#[test]
fn no_source_file_is_much_over_600_lines() {
    let mut files = Vec::new();
    sources(&src(), &mut files);
    let long: Vec<(String, usize)> = files
        .iter()
        .map(|f| {
            let n = std::fs::read_to_string(f).expect("read").lines().count();
            (f.display().to_string(), n)
        })
        .filter(|(_, n)| *n > 650)
        .collect();
    assert!(long.is_empty(), "split these: {long:?}");
}

#[test]
fn unsafe_lives_only_in_the_driver_and_the_buffers() {
    let mut files = Vec::new();
    sources(&src(), &mut files);
    let lib = std::fs::read_to_string(src().join("lib.rs")).expect("lib.rs");
    assert!(
        lib.contains("#![deny(unsafe_code)]"),
        "the crate root denies unsafe"
    );
    let outside: Vec<String> = files
        .iter()
        .filter(|f| !matches!(top_module(f).as_str(), "driver" | "buffer"))
        .filter(|f| code(&std::fs::read_to_string(f).expect("read")).contains("unsafe "))
        .map(|f| f.display().to_string())
        .collect();
    assert!(
        outside.is_empty(),
        "unsafe outside driver/ and buffer/: {outside:?}"
    );
}
