//! The benches' command-line arguments: `--quick`, and numbers given as `--name V` or `--name=V`.
//!
//! Unknown arguments (cargo bench's own `--bench`) are ignored on purpose.

/// Whether `--quick` was given.
pub fn quick(args: &[String]) -> bool {
    args.iter().any(|a| a == "--quick")
}

/// The value of `--name V` or `--name=V`, parsed as a whole number >= `min`; the last one
/// given wins.
pub fn number_arg(args: &[String], name: &str, min: usize) -> Result<Option<usize>, String> {
    let mut found = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let v = if a == name {
            Some(it.next().ok_or(format!("{name} needs a value"))?.as_str())
        } else {
            a.strip_prefix(name).and_then(|rest| rest.strip_prefix('='))
        };
        if let Some(v) = v {
            match v.parse::<usize>() {
                Ok(n) if n >= min => found = Some(n),
                _ => return Err(format!("{name} wants a whole number >= {min}, not {v:?}")),
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn numbers_both_spellings() {
        let a = args(&["--bench", "--rounds", "5", "--gap-ms=2"]);
        assert_eq!(number_arg(&a, "--rounds", 1), Ok(Some(5)));
        assert_eq!(number_arg(&a, "--gap-ms", 0), Ok(Some(2)));
        assert_eq!(number_arg(&a, "--burst", 1), Ok(None));
        assert!(!quick(&a));
        assert!(quick(&args(&["--quick"])));
    }

    #[test]
    fn bad_numbers_are_errors() {
        assert!(number_arg(&args(&["--rounds", "0"]), "--rounds", 1).is_err());
        assert!(number_arg(&args(&["--rounds=x"]), "--rounds", 1).is_err());
        assert!(number_arg(&args(&["--rounds"]), "--rounds", 1).is_err());
        // Another flag that merely starts with the name is not it.
        assert_eq!(number_arg(&args(&["--roundsx=3"]), "--rounds", 1), Ok(None));
    }
}
