//! Finds the line of a key path (`listeners[1].upstreams`, `connection.pool.max_idle`) in YAML text.
//!
//! serde_yaml reports a location only for errors it raises itself; checks done after
//! deserialization (ranges, cross-field rules, DNS) only know the key path. This scanner
//! maps such a path back to a line by indentation, the way a reader of the file would.
//! It understands block mappings, block sequences (`- name: x`, also at the parent's
//! indentation), comments, blank lines, quoted keys and block scalars (`|`, `>`). Flow
//! collections (`[a, b]`, `{a: 1}`) are not entered: a path into one resolves to the
//! line of the key holding it, which is the nearest existing parent.

/// One path segment: a mapping key or a sequence index.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

/// What a line (or part of a line, for `- key: v`) opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind<'a> {
    Key(&'a str),
    Item,
}

#[derive(Debug, Clone, Copy)]
struct Entry<'a> {
    line: usize,
    col: usize,
    kind: Kind<'a>,
}

/// Where a key path was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Located {
    /// 1-based line of the deepest segment found.
    pub line: usize,
    /// Whether every segment was found (false: `line` is a parent's).
    pub exact: bool,
}

/// The line of `path` in `text`, or of its nearest existing parent; `None` when not even
/// the first segment exists (or the path cannot be read).
pub fn line_of(text: &str, path: &str) -> Option<usize> {
    locate(text, path).map(|l| l.line)
}

/// Whether `path` is written out in `text` (so a default was overridden there).
pub fn is_present(text: &str, path: &str) -> bool {
    locate(text, path).is_some_and(|l| l.exact)
}

/// The first line that holds content (not blank, not a comment, not a document marker).
pub fn first_content_line(text: &str) -> Option<usize> {
    entries(text).first().map(|e| e.line).or_else(|| {
        text.lines()
            .position(|l| {
                let t = l.trim();
                !t.is_empty() && !t.starts_with('#') && t != "---"
            })
            .map(|i| i + 1)
    })
}

/// Looks `path` up segment by segment; see [`Located`].
pub fn locate(text: &str, path: &str) -> Option<Located> {
    let segs = parse_path(path)?;
    let entries = entries(text);
    // The current block is `entries[start..]` up to the end rule of its parent.
    let mut start = 0;
    let mut parent: Option<Entry> = None;
    let mut best: Option<usize> = None;
    for seg in &segs {
        let block = block_after(&entries, start, parent);
        let Some(first) = block.first() else {
            return best.map(|line| Located { line, exact: false });
        };
        let child_col = first.col;
        let found = match seg {
            Seg::Key(k) => block
                .iter()
                .position(|e| e.col == child_col && e.kind == Kind::Key(k)),
            Seg::Index(n) => {
                if first.kind != Kind::Item {
                    None
                } else {
                    block
                        .iter()
                        .enumerate()
                        .filter(|(_, e)| e.col == child_col && e.kind == Kind::Item)
                        .nth(*n)
                        .map(|(i, _)| i)
                }
            }
        };
        match found {
            Some(i) => {
                let e = block[i];
                best = Some(e.line);
                start += i + 1;
                parent = Some(e);
            }
            None => return best.map(|line| Located { line, exact: false }),
        }
    }
    best.map(|line| Located { line, exact: true })
}

/// The entries that belong to `parent`'s value, starting at `start`.
fn block_after<'e, 'a>(
    entries: &'e [Entry<'a>],
    start: usize,
    parent: Option<Entry<'a>>,
) -> &'e [Entry<'a>] {
    let rest = entries.get(start..).unwrap_or(&[]);
    let Some(p) = parent else {
        return rest;
    };
    let end = rest
        .iter()
        .position(|e| match p.kind {
            // A key's value may be a sequence at the key's own indentation
            // (`listeners:\n- name: a`), so only a sibling key or a dedent ends it.
            Kind::Key(_) => e.col < p.col || (e.col == p.col && e.kind != Kind::Item),
            // An item's content is indented past its dash; the next dash at the same
            // column starts a sibling item.
            Kind::Item => e.col <= p.col,
        })
        .unwrap_or(rest.len());
    &rest[..end]
}

/// `a.b[2].c` -> `[Key(a), Key(b), Index(2), Key(c)]`.
fn parse_path(path: &str) -> Option<Vec<Seg<'_>>> {
    let mut segs = Vec::new();
    for part in path.split('.') {
        let (key, mut indices) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            segs.push(Seg::Key(key));
        }
        while let Some(rest) = indices.strip_prefix('[') {
            let close = rest.find(']')?;
            segs.push(Seg::Index(rest[..close].parse().ok()?));
            indices = &rest[close + 1..];
        }
        if !indices.is_empty() {
            return None;
        }
    }
    if segs.is_empty() {
        None
    } else {
        Some(segs)
    }
}

/// Every key and sequence dash in the text, in order, with line and column.
fn entries(text: &str) -> Vec<Entry<'_>> {
    let mut out = Vec::new();
    // Inside a block scalar (`key: |`) lines are text, not keys, until a line at or
    // left of the column of the key that opened it.
    let mut scalar_owner: Option<usize> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let body = raw.trim_start_matches(' ');
        let mut col = raw.len() - body.len();
        let mut rest = body.trim_end();
        if let Some(owner) = scalar_owner {
            if rest.is_empty() || col > owner {
                continue;
            }
            scalar_owner = None;
        }
        if rest.is_empty()
            || rest.starts_with('#')
            || rest.starts_with("---")
            || rest.starts_with("...")
            || rest.starts_with('%')
        {
            continue;
        }
        loop {
            if rest == "-" || rest.starts_with("- ") || rest.starts_with("-\t") {
                out.push(Entry {
                    line,
                    col,
                    kind: Kind::Item,
                });
                let after = &rest[1..];
                let trimmed = after.trim_start();
                col += 1 + (after.len() - trimmed.len());
                rest = trimmed;
                if rest.is_empty() || rest.starts_with('#') {
                    break;
                }
                continue;
            }
            if let Some((key, value)) = split_key(rest) {
                out.push(Entry {
                    line,
                    col,
                    kind: Kind::Key(key),
                });
                if value.starts_with('|') || value.starts_with('>') {
                    scalar_owner = Some(col);
                }
            }
            break;
        }
    }
    out
}

/// `key: value` -> `(key, value)`; quoted keys lose their quotes. `None` for plain
/// scalars and flow collections.
fn split_key(s: &str) -> Option<(&str, &str)> {
    if s.starts_with('[') || s.starts_with('{') || s.starts_with('?') {
        return None;
    }
    let (key, after) = match s.chars().next() {
        Some(q @ ('"' | '\'')) => {
            let close = s[1..].find(q)? + 1;
            (&s[1..close], &s[close + 1..])
        }
        _ => {
            let mut from = 0;
            loop {
                let i = s[from..].find(':')? + from;
                let next = s[i + 1..].chars().next();
                if next.is_none() || next == Some(' ') || next == Some('\t') {
                    break (s[..i].trim_end(), &s[i..]);
                }
                from = i + 1;
            }
        }
    };
    let value = after.trim_start().strip_prefix(':')?;
    if !(value.is_empty() || value.starts_with(' ') || value.starts_with('\t')) {
        return None;
    }
    Some((key, value.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
# top comment
listeners:
  - name: a          # first
    listen: 127.0.0.1:1
    upstreams:
      - 127.0.0.1:2

  - name: b
    listen: 127.0.0.1:3
    upstreams: [127.0.0.1:4]
workers: auto
connection:
  pool:
    # comment inside
    max_idle: 10
  buffer:
    size: 100
";

    #[test]
    fn finds_keys_and_items() {
        assert_eq!(line_of(DOC, "listeners"), Some(2));
        assert_eq!(line_of(DOC, "listeners[0]"), Some(3));
        assert_eq!(line_of(DOC, "listeners[0].name"), Some(3));
        assert_eq!(line_of(DOC, "listeners[0].upstreams[0]"), Some(6));
        assert_eq!(line_of(DOC, "listeners[1].name"), Some(8));
        assert_eq!(line_of(DOC, "listeners[1].listen"), Some(9));
        assert_eq!(line_of(DOC, "workers"), Some(11));
        assert_eq!(line_of(DOC, "connection.pool.max_idle"), Some(15));
        assert_eq!(line_of(DOC, "connection.buffer.size"), Some(17));
    }

    #[test]
    fn falls_back_to_parent() {
        // Flow sequence: the key holding it.
        assert_eq!(
            locate(DOC, "listeners[1].upstreams[0]"),
            Some(Located {
                line: 10,
                exact: false
            })
        );
        assert_eq!(line_of(DOC, "connection.pool.max_active"), Some(13));
        assert_eq!(line_of(DOC, "connection.monitoring.enabled"), Some(12));
        assert_eq!(line_of(DOC, "nothing.here"), None);
        assert!(!is_present(DOC, "connection.pool.max_active"));
        assert!(is_present(DOC, "connection.pool.max_idle"));
    }

    #[test]
    fn sequence_at_parent_indent_and_block_scalars() {
        let doc =
            "listeners:\n- name: a\n  note: |\n    size: 1\n  listen: x\n- name: b\nworkers: 2\n";
        assert_eq!(line_of(doc, "listeners[1].name"), Some(6));
        assert_eq!(line_of(doc, "listeners[0].listen"), Some(5));
        assert_eq!(line_of(doc, "listeners[0].size"), Some(2));
        assert_eq!(line_of(doc, "workers"), Some(7));
    }

    #[test]
    fn nested_keys_do_not_leak_into_siblings() {
        let doc = "a:\n  b:\n    c: 1\n  d: 2\nc: 3\n";
        assert_eq!(
            locate(doc, "a.c"),
            Some(Located {
                line: 1,
                exact: false
            })
        );
        assert_eq!(line_of(doc, "c"), Some(5));
        assert_eq!(line_of(doc, "a.d"), Some(4));
    }

    #[test]
    fn quoted_keys_and_odd_paths() {
        assert_eq!(line_of("\"a\": 1\n'b': 2\n", "b"), Some(2));
        assert_eq!(line_of("a: 1\n", "(top level)"), None);
        assert_eq!(line_of("a: 1\n", "--listen"), None);
        assert_eq!(first_content_line("# c\n\n- x\n"), Some(3));
    }
}
