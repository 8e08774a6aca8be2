//! The repository explains itself: `docs/` holds the four reference files, the README links
//! them, and every citation of `docs/behaviour.md` — `§N` or `§N.M` in a code comment, or a
//! `behaviour.md#anchor` link in the Markdown — points at a heading that exists.
//!
//! Headings of `docs/behaviour.md` are `## N. Title` and `### N.M Title`; their numbers are
//! what code comments cite, so renumbering a section means fixing every citation (this test
//! lists them).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

const DOCS: [&str; 4] = ["behaviour.md", "architecture.md", "providers.md", "decisions.md"];

/// The sections that code comments may cite: every numbered heading of the text.
fn sections(behaviour: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in behaviour.lines() {
        if let Some(rest) = line.strip_prefix("## ") {
            // `## N. Title`
            let (n, tail) = number(rest);
            if !n.is_empty() && !n.contains('.') && tail.starts_with(". ") {
                out.insert(n.to_string());
            }
        } else if let Some(rest) = line.strip_prefix("### ") {
            // `### N.M Title`
            let (n, tail) = number(rest);
            if n.contains('.') && tail.starts_with(' ') {
                out.insert(n.to_string());
            }
        }
    }
    out
}

/// GitHub's anchor of every heading of the text (`### 4.3 tencent dialect` → `43-tencent-dialect`).
fn anchors(markdown: &str) -> BTreeSet<String> {
    markdown
        .lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| slug(l.trim_start_matches('#').trim()))
        .collect()
}

fn slug(heading: &str) -> String {
    heading
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '_' || c == '-' => Some(c),
            _ => None,
        })
        .flat_map(char::to_lowercase)
        .collect()
}

/// A section number at the start of `s` (`4`, `4.2`; a trailing `.` is not part of it), and
/// what follows it.
fn number(s: &str) -> (&str, &str) {
    let digits = |s: &str| s.bytes().take_while(u8::is_ascii_digit).count();
    let mut end = digits(s);
    if end > 0 && s[end..].starts_with('.') {
        let more = digits(&s[end + 1..]);
        if more > 0 {
            end += 1 + more;
        }
    }
    s.split_at(end)
}

/// What may stand between a citation and the next section number of the same list:
/// `behaviour.md §4.1, §4.2`, `§1–§5`, `§3 and §7`, a list wrapped onto the next comment line.
fn skip_separators(mut s: &str) -> &str {
    loop {
        let before = s.len();
        s = s.trim_start_matches(|c: char| c.is_whitespace() || ",;&–—-".contains(c));
        for prefix in ["//!", "///", "//", "*", "and ", "or "] {
            if let Some(rest) = s.strip_prefix(prefix) {
                s = rest;
            }
        }
        if s.len() == before {
            return s;
        }
    }
}

/// Every section cited after a mention of `behaviour.md` in `text`, with its line number.
fn citations(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (at, mention) in text.match_indices("behaviour.md") {
        let line = text[..at].matches('\n').count() + 1;
        let mut rest = &text[at + mention.len()..];
        loop {
            rest = skip_separators(rest);
            let Some(after) = rest.strip_prefix('§') else { break };
            let (n, tail) = number(after);
            if n.is_empty() {
                break;
            }
            out.push((line, n.to_string()));
            rest = tail;
        }
    }
    out
}

/// The anchors of `behaviour.md#anchor` links in `text`, with their line numbers.
fn anchor_links(text: &str) -> Vec<(usize, String)> {
    text.match_indices("behaviour.md#")
        .map(|(at, m)| {
            let line = text[..at].matches('\n').count() + 1;
            let rest = &text[at + m.len()..];
            let end = rest
                .find(|c: char| c == ')' || c == '>' || c == '"' || c.is_whitespace())
                .unwrap_or(rest.len());
            (line, rest[..end].to_string())
        })
        .collect()
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Every file under `dir`, recursively (none if it does not exist).
fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// The files whose citations are checked: the code (src/, and tests/, examples/, bench/ —
/// except this file, whose own tests cite sections that do not exist), the README and docs/.
fn cited_files() -> Vec<PathBuf> {
    let root = root();
    let mut out = Vec::new();
    for dir in ["src", "tests", "examples", "bench", "docs"] {
        files(&root.join(dir), &mut out);
    }
    out.push(root.join("README.md"));
    let this = root.join("tests").join("docs.rs");
    out.retain(|p| *p != this && fs::read(p).is_ok_and(|b| std::str::from_utf8(&b).is_ok()));
    out.sort();
    out
}

#[test]
fn docs_has_the_four_files_and_the_readme_links_them() {
    let root = root();
    let readme = read(&root.join("README.md"));
    for name in DOCS {
        let path = root.join("docs").join(name);
        let text = read(&path);
        assert!(
            text.trim_start().starts_with("# "),
            "{} must start with a title",
            path.display()
        );
        assert!(
            readme.contains(&format!("](docs/{name})")),
            "README.md must link docs/{name}"
        );
    }
}

#[test]
fn behaviour_has_the_numbered_sections_code_cites() {
    let text = read(&root().join("docs").join("behaviour.md"));
    let found = sections(&text);
    let wanted = (1..=10)
        .map(|n| n.to_string())
        .chain(["4.1", "4.2", "4.3", "8.1", "8.2", "8.3"].map(String::from));
    for n in wanted {
        assert!(
            found.contains(&n),
            "docs/behaviour.md has no heading for §{n}; found {found:?}"
        );
    }
}

#[test]
fn every_cited_section_of_behaviour_exists() {
    let root = root();
    let behaviour = read(&root.join("docs").join("behaviour.md"));
    let sections = sections(&behaviour);
    let anchors = anchors(&behaviour);
    let mut missing = Vec::new();
    let mut checked = 0;
    for path in cited_files() {
        let text = read(&path);
        let shown = path.strip_prefix(&root).unwrap_or(&path).display().to_string();
        for (line, n) in citations(&text) {
            checked += 1;
            if !sections.contains(&n) {
                missing.push(format!("{shown}:{line}: §{n}"));
            }
        }
        for (line, anchor) in anchor_links(&text) {
            checked += 1;
            if !anchors.contains(&anchor) {
                missing.push(format!("{shown}:{line}: #{anchor}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "these cite docs/behaviour.md sections that have no heading there (of {checked} citations; \
         headings are `## N. Title` and `### N.M Title`):\n{}",
        missing.join("\n")
    );
}

#[test]
fn citations_are_read_as_a_maintainer_writes_them() {
    let text = "/// Retried once (docs/behaviour.md §4.1, §5).\n\
                //! See docs/behaviour.md §1–§3 and §8.3.\n\
                // wrapped: docs/behaviour.md §4.2,\n// §6.\n\
                /// docs/behaviour.md §12 is not a section; 2.5 § here is not a citation.\n\
                /// a link: [x](docs/behaviour.md#43-tencent-dialect), docs/behaviour.md alone.";
    let cited = citations(text);
    let got: Vec<(usize, &str)> = cited.iter().map(|(l, n)| (*l, n.as_str())).collect();
    assert_eq!(
        got,
        [
            (1, "4.1"),
            (1, "5"),
            (2, "1"),
            (2, "3"),
            (2, "8.3"),
            (3, "4.2"),
            (3, "6"),
            (5, "12")
        ]
    );
    assert_eq!(anchor_links(text), [(6, "43-tencent-dialect".to_string())]);

    let doc = "# Title\n## 1. Vocabulary\n### 4.3 tencent dialect\n## 10. Quality bars\n### 8.1 `GET /x/{id}/info`\n## Notes\n";
    assert_eq!(sections(doc).into_iter().collect::<Vec<_>>(), ["1", "10", "4.3", "8.1"]);
    let anchors = anchors(doc);
    assert!(anchors.contains("43-tencent-dialect"), "{anchors:?}");
    assert!(anchors.contains("81-get-xidinfo"), "{anchors:?}");
    assert!(anchors.contains("10-quality-bars"), "{anchors:?}");
}

/// The repository paths a Markdown text names in backticks (`src/…`, `tests/…`, `bench/…`,
/// `examples/…`, `docs/…`), with their line numbers.
fn named_paths(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        for (j, span) in line.split('`').enumerate() {
            let top = span.split('/').next().unwrap_or("");
            let pathlike = span.contains('/')
                && ["src", "tests", "bench", "examples", "docs"].contains(&top)
                && span.chars().all(|c| c.is_ascii_alphanumeric() || "_-./".contains(c));
            if j % 2 == 1 && pathlike {
                out.push((i + 1, span.trim_end_matches('/').to_string()));
            }
        }
    }
    out
}

#[test]
fn every_path_the_docs_name_exists() {
    let root = root();
    let mut texts: Vec<PathBuf> = DOCS.iter().map(|n| root.join("docs").join(n)).collect();
    texts.push(root.join("README.md"));
    let mut missing = Vec::new();
    let mut checked = 0;
    for path in texts {
        let text = read(&path);
        let shown = path.strip_prefix(&root).unwrap_or(&path).display().to_string();
        for (line, named) in named_paths(&text) {
            checked += 1;
            // A module may be named without its `.rs`.
            let exists = root.join(&named).exists() || root.join(format!("{named}.rs")).exists();
            if !exists {
                missing.push(format!("{shown}:{line}: {named}"));
            }
        }
    }
    assert!(
        checked > 50,
        "only {checked} paths found: is named_paths reading the docs?"
    );
    assert!(
        missing.is_empty(),
        "these name files or folders that do not exist (of {checked} named):\n{}",
        missing.join("\n")
    );
}

#[test]
fn named_paths_are_read_from_backticks_only() {
    let text = "see `src/transport/alert.rs` and `src/store`\nnot src/x.rs, not `a/b`, \
                not `src/x.rs --flag`; `tests/it/`";
    assert_eq!(
        named_paths(text),
        [
            (1, "src/transport/alert.rs".to_string()),
            (1, "src/store".to_string()),
            (2, "tests/it".to_string())
        ]
    );
}
