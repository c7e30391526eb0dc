//! YAML text to [`Config`], before the semantic checks, with every error turned into the
//! user's terms: the key path, the line, what was written and what is expected, without
//! serde's Rust type names, plus a suggestion for an unknown or misplaced key.

use super::{invalid, locate, schema, Config, ConfigError};

/// Parses `text` into a config without validating it.
pub fn parse_unvalidated(text: &str) -> Result<Config, ConfigError> {
    // Look at the shape first: for an empty document or a scalar/sequence at the top
    // level serde's messages ("invalid type: unit value") do not say what is wrong.
    let value: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| syntax(text, &e))?;
    let top = "(top level)";
    let got = match value {
        serde_yaml::Value::Mapping(_) => None,
        serde_yaml::Value::Null => {
            return Err(invalid(
                top,
                None,
                "the configuration is empty: a mapping with `listeners:` (and optionally \
                 `workers:`, `connection:`) expected",
            ))
        }
        serde_yaml::Value::Sequence(_) => Some("a list".to_string()),
        serde_yaml::Value::Tagged(_) => Some("a tagged value".to_string()),
        other => Some(format!(
            "`{}`",
            serde_yaml::to_string(&other).unwrap_or_default().trim()
        )),
    };
    if let Some(got) = got {
        return Err(invalid(
            top,
            locate::first_content_line(text),
            format!("a mapping with `listeners:`, `workers:`, `connection:` expected, got {got}"),
        ));
    }

    let de = serde_yaml::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let mut key = e.path().to_string();
        let inner = e.into_inner();
        let raw = strip_location(&inner.to_string());
        // Depending on where serde stops, an unknown field is reported at its parent;
        // name the field itself either way.
        let unknown = unknown_field(&raw).map(str::to_string);
        if let Some(field) = unknown.as_deref().filter(|f| !ends_with_segment(&key, f)) {
            key = if key == "." {
                field.to_string()
            } else {
                format!("{key}.{field}")
            };
        }
        let missing = missing_field(&raw).map(str::to_string);
        if let Some(field) = &missing {
            key = if key == "." {
                field.clone()
            } else {
                format!("{key}.{field}")
            };
        }
        if key == "." {
            key = top.to_string();
        }
        let message = match (&unknown, &missing) {
            (Some(field), _) => unknown_message(&key, field),
            (_, Some(field)) => missing_message(field),
            _ => rewrite(&raw),
        };
        // The key's own line when it is written out: serde's location is where the
        // deserializer stopped, which for buffered values is the parent.
        let line = locate::locate(text, &key)
            .filter(|l| l.exact)
            .map(|l| l.line)
            .or_else(|| inner.location().map(|l| l.line()))
            .or_else(|| locate::line_of(text, &key));
        invalid(&key, line, message)
    })
}

/// A YAML syntax error, with the line's text and a plain explanation for the usual ones.
fn syntax(text: &str, e: &serde_yaml::Error) -> ConfigError {
    let raw = e.to_string();
    let mut line = e.location().map(|l| l.line());
    let mut message = scrub_types(&strip_location(&raw));
    // A number past what YAML integers hold: serde_yaml says "integer `N` as u128".
    if let Some(n) = raw
        .split_once("invalid type: integer `")
        .and_then(|(_, rest)| rest.split('`').next())
    {
        message = format!("the number {n} is too large");
    }
    // An unclosed `[` or `{` is found at the end of the file; the line that opened it is
    // the one to fix.
    if let Some(opened) = raw
        .split_once("while parsing a flow")
        .and_then(|(_, rest)| rest.split_once(" at line "))
        .and_then(|(_, n)| n.split(' ').next()?.parse().ok())
    {
        line = Some(opened);
    }
    // A duplicate key is reported at its mapping; point at the second occurrence.
    if let Some(key) = raw
        .split_once("duplicate entry with key \"")
        .and_then(|(_, rest)| rest.split('"').next())
    {
        if let Some((first, second)) = duplicate_lines(text, line.unwrap_or(1), key) {
            line = Some(second);
            message = format!("duplicate key `{key}` (first at line {first})");
        }
    }
    let leading_tab = |l: &str| {
        l.chars()
            .take_while(|c| *c == ' ' || *c == '\t')
            .any(|c| c == '\t')
    };
    let lines: Vec<&str> = text.lines().collect();
    let at = |n: Option<usize>| n.and_then(|n| lines.get(n.wrapping_sub(1)).copied());
    if message.contains("cannot start any token") || message.contains("tab character") {
        let tabbed = at(line)
            .filter(|l| leading_tab(l))
            .map(|_| line)
            .or_else(|| {
                lines
                    .iter()
                    .position(|l| leading_tab(l))
                    .map(|i| Some(i + 1))
            });
        if let Some(tab_line) = tabbed {
            line = tab_line;
            message = "tab characters are not allowed in YAML indentation; use spaces".to_string();
        } else {
            message.push_str(" (a plain value cannot start with `@`, `` ` `` or `%`: quote it)");
        }
    } else if message.contains("while scanning an alias") || message.contains("an anchor") {
        message.push_str(
            " (`*` and `&` start YAML aliases and anchors: quote the value, e.g. \"*:8443\")",
        );
    }
    if let Some(l) = at(line).filter(|l| !l.trim().is_empty()) {
        message = format!("{message}: `{}`", l.trim_end().replace('\t', "\\t"));
    }
    ConfigError::Syntax { line, message }
}

/// The lines of the first two `key:` entries at one indentation from line `from` on.
fn duplicate_lines(text: &str, from: usize, key: &str) -> Option<(usize, usize)> {
    let mut seen: Vec<(usize, usize)> = Vec::new(); // (indent, line)
    for (i, l) in text.lines().enumerate().skip(from.saturating_sub(1)) {
        let body = l.trim_start_matches(' ').trim_start_matches("- ");
        let indent = l.len() - body.len();
        let is_key = body
            .strip_prefix(key)
            .is_some_and(|r| r.trim_start().starts_with(':'));
        if is_key {
            if let Some(&(_, first)) = seen.iter().find(|(ind, _)| *ind == indent) {
                return Some((first, i + 1));
            }
            seen.push((indent, i + 1));
        }
    }
    None
}

/// An unknown key, with the closest valid key or where a key of that name belongs.
fn unknown_message(key: &str, field: &str) -> String {
    let parent = key
        .strip_suffix(field)
        .map(|p| p.trim_end_matches('.'))
        .unwrap_or("");
    let mut m = format!("unknown key `{field}`");
    match schema::suggest(parent, field) {
        // "`max_active` does not go directly under `connection`: ..." says it all.
        Some(hint) if hint.starts_with('`') => return hint,
        Some(hint) => {
            m.push_str(": ");
            m.push_str(&hint);
        }
        None => {
            let valid = schema::children(&schema::normalize(parent));
            if !valid.is_empty() {
                m.push_str(&format!("; valid keys here: {}", valid.join(", ")));
            }
        }
    }
    m
}

/// A required key that is missing (only listeners have any).
fn missing_message(field: &str) -> String {
    let example = match field {
        "name" => " (e.g. `name: web`)",
        "listen" => " (e.g. `listen: 127.0.0.1:8443`)",
        "upstreams" => " (e.g. `upstreams: [127.0.0.1:9000]`)",
        _ => "",
    };
    format!("`{field}` is required and missing{example}")
}

/// serde's remaining `invalid type: X, expected Y` as `Y expected, got X`, in YAML terms.
fn rewrite(message: &str) -> String {
    let scrubbed = scrub_types(message);
    let Some(rest) = scrubbed
        .strip_prefix("invalid type: ")
        .or_else(|| scrubbed.strip_prefix("invalid value: "))
    else {
        return scrubbed;
    };
    let Some((got, expected)) = rest.split_once(", expected ") else {
        return scrubbed;
    };
    let got = if let Some(s) = got.strip_prefix("string ") {
        format!("`{}`", s.trim_matches('"'))
    } else if let Some(v) = ["integer ", "floating point ", "boolean "]
        .iter()
        .find_map(|p| got.strip_prefix(p))
    {
        format!("`{}`", v.trim_matches('`'))
    } else {
        match got {
            "map" => "a mapping".to_string(),
            "sequence" => "a list".to_string(),
            "unit value" => "nothing (the key has no value)".to_string(),
            other => other.to_string(),
        }
    };
    let expected = match expected {
        "a sequence" => "a list",
        "a string" => "text",
        other => other,
    };
    format!("{expected} expected, got {got}")
}

/// Replaces Rust type names that serde may put in a message with what they mean here.
fn scrub_types(message: &str) -> String {
    let mut out = message.to_string();
    if let Some(i) = out.find("struct ") {
        // "expected struct PoolConfig": a section, i.e. a YAML mapping.
        let after = &out[i + 7..];
        let len = after
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        out.replace_range(i..i + 7 + len, "a mapping");
    }
    for (rust, plain) in [
        ("usize", "a non-negative whole number"),
        ("u64", "a non-negative whole number"),
        ("u32", "a non-negative whole number"),
        ("u16", "a whole number 0..65535"),
        ("i64", "a whole number"),
        ("f64", "a number"),
        ("variant", "value"),
    ] {
        out = replace_word(&out, rust, plain);
    }
    out
}

/// `text` with every whole-word `word` replaced.
fn replace_word(text: &str, word: &str, with: &str) -> String {
    let is_word = |c: char| c.is_alphanumeric() || c == '_';
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(word) {
        let before = rest[..i].chars().next_back();
        let after = rest[i + word.len()..].chars().next();
        out.push_str(&rest[..i]);
        if before.is_some_and(is_word) || after.is_some_and(is_word) {
            out.push_str(word);
        } else {
            out.push_str(with);
        }
        rest = &rest[i + word.len()..];
    }
    out.push_str(rest);
    out
}

/// Whether the dotted `path` ends with the key `field`.
fn ends_with_segment(path: &str, field: &str) -> bool {
    path == field || path.ends_with(&format!(".{field}"))
}

/// serde_yaml's message without its own `path: ` prefix and `at line L column C` part:
/// both are reported in our own format.
pub fn strip_location(message: &str) -> String {
    let mut owned = message.to_string();
    // " at line 2 column 1" may end the message or sit before ", while parsing ...", and
    // may come more than once.
    let mut from = 0;
    while let Some(found) = owned[from..].find(" at line ") {
        let i = from + found;
        let tail = &owned[i + " at line ".len()..];
        let mut words = tail.splitn(4, ' ');
        let line_no = words.next().unwrap_or("");
        let column = words.next().unwrap_or("");
        let col_no = words.next().unwrap_or("").trim_end_matches(',');
        if line_no.parse::<usize>().is_ok() && column == "column" && col_no.parse::<usize>().is_ok()
        {
            let consumed = " at line ".len() + line_no.len() + 1 + column.len() + 1 + col_no.len();
            owned.replace_range(i..i + consumed, "");
            from = i;
        } else {
            from = i + 1;
        }
    }
    let mut m = owned.as_str();
    // serde_yaml prefixes nested errors with its own path (`connection.pool: ...`).
    if let Some((prefix, rest)) = m.split_once(": ") {
        let path_like = !prefix.is_empty()
            && !prefix.contains(' ')
            && prefix
                .chars()
                .all(|c| c.is_alphanumeric() || "_.[]-".contains(c));
        if path_like {
            m = rest;
        }
    }
    m.to_string()
}

/// The field of an "unknown field `x`, expected ..." message.
fn unknown_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split('`').next()
}

/// The field of a "missing field `x`" message.
fn missing_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("missing field `")?;
    rest.split('`').next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_serde_type_errors() {
        assert_eq!(
            rewrite("invalid type: string \"yes\", expected struct PoolConfig"),
            "a mapping expected, got `yes`"
        );
        assert_eq!(
            rewrite("invalid type: integer `5`, expected a sequence"),
            "a list expected, got `5`"
        );
        assert_eq!(
            rewrite("invalid type: map, expected a string"),
            "text expected, got a mapping"
        );
        assert_eq!(
            rewrite("invalid type: integer `-1`, expected usize"),
            "a non-negative whole number expected, got `-1`"
        );
    }

    #[test]
    fn tabs_are_named() {
        let text = "listeners:\n\t- name: a\n";
        match parse_unvalidated(text) {
            Err(ConfigError::Syntax { line, message }) => {
                assert_eq!(line, Some(2));
                assert!(
                    message.starts_with("tab characters are not allowed"),
                    "{message}"
                );
                assert!(message.contains("`\\t- name: a`"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        // A tab inside a mapping's indentation takes another path in the YAML scanner.
        let text = "listeners:\n  - name: a\n\tlisten: 127.0.0.1:8443\n";
        match parse_unvalidated(text) {
            Err(ConfigError::Syntax { line, message }) => {
                assert_eq!(line, Some(3));
                assert!(
                    message.starts_with(
                        "tab characters are not allowed in YAML indentation; use spaces"
                    ),
                    "{message}"
                );
            }
            other => panic!("{other:?}"),
        }
    }
}
