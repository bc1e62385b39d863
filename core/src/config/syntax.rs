//! Where a TOML error is: its line and column, and the key whose value it is in when that is certain.

use super::ConfigIssue;

/// Where `offset` is in `text`: (line, column, where the line starts), 1-based as editors count.
fn place(text: &str, offset: usize) -> Option<(usize, usize, usize)> {
    let before = text.get(..offset.min(text.len()))?;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..)?.chars().count() + 1;
    Some((before.matches('\n').count() + 1, column, line_start))
}

/// The key `line` assigns (`key = value`), and where its `=` is; `None` when it is not an assignment.
fn assignment(line: &str) -> Option<(String, usize)> {
    let equals = line.find('=')?;
    let key = line.get(..equals)?.trim();
    let plain =
        |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ' ' | '"' | '\'');
    if key.is_empty() || !key.chars().all(plain) {
        return None;
    }
    Some((key.trim_matches(['"', '\'']).to_owned(), equals))
}

/// The starts of the lines of `text` before `end`, last first.
fn line_starts_before(text: &str, end: usize) -> impl Iterator<Item = usize> + '_ {
    let before = text.get(..end).unwrap_or("");
    let starts: Vec<usize> = std::iter::once(0)
        .chain(before.match_indices('\n').map(|(i, _)| i + 1))
        .filter(|&i| i < end)
        .collect();
    starts.into_iter().rev()
}

/// The key whose value a syntax error at `offset` (on the line starting at `line_start`) is in, when that
/// can be told for sure; `None` otherwise. The line the parser stopped at is not enough: an unclosed array
/// is only noticed on the next line, which has a key of its own. So the statement that is open is found by
/// parsing what comes before: text up to the start of a statement parses on its own, text that ends inside
/// one (an open array or string) does not.
fn syntax_error_key(text: &str, offset: usize, line_start: usize) -> Option<String> {
    let parses = |end: usize| {
        text.get(..end)
            .is_some_and(|t| t.parse::<toml::Table>().is_ok())
    };
    let line_at = |start: usize| {
        text.get(start..)
            .and_then(|t| t.lines().next())
            .unwrap_or("")
    };
    let start = if parses(line_start) {
        // The statement starts on the error line: its key, if the error is in the value, not the key.
        let (_, equals) = assignment(line_at(line_start))?;
        if offset <= line_start + equals {
            return None;
        }
        line_start
    } else {
        // A statement begun on an earlier line is still open: the nearest earlier line that looks like the
        // start of one, if text up to it parses (otherwise it is part of the open value, and it is unclear
        // which statement is open).
        let start = line_starts_before(text, line_start).find(|&start| {
            let line = line_at(start).trim();
            !line.is_empty()
                && !line.starts_with('#')
                && (line.contains('=') || line.starts_with('['))
        })?;
        if !parses(start) {
            return None;
        }
        start
    };
    let (key, _) = assignment(line_at(start))?;
    // Inside a `[section]`, the key is dotted with it.
    let section = line_starts_before(text, start).find_map(|s| {
        let line = line_at(s).trim();
        let name = line.strip_prefix('[')?.split_once(']')?.0.trim();
        let ok = !name.is_empty() && !name.starts_with('[') && parses(s);
        Some(ok.then(|| name.trim_matches(['"', '\'']).to_owned()))
    });
    match section {
        None => Some(key),
        Some(Some(section)) => Some(format!("{section}.{key}")),
        Some(None) => None,
    }
}

/// Turns a toml error into an issue. A syntax error (the text is not TOML) says where it is, and names
/// the key only when the value it is in is certain ([`syntax_error_key`]); an error in a value names the
/// key on its line.
pub(super) fn toml_issue(source: &str, text: &str, err: &toml::de::Error) -> ConfigIssue {
    let syntax = text.parse::<toml::Table>().err();
    let err = syntax.as_ref().unwrap_or(err);
    let place = err.span().and_then(|span| place(text, span.start));
    // Some messages take several lines ("invalid array\nexpected `]`"); an issue is one line.
    let message = err
        .message()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(": ");
    if syntax.is_some() {
        let key = err
            .span()
            .zip(place)
            .and_then(|(span, (_, _, line_start))| syntax_error_key(text, span.start, line_start))
            .unwrap_or_default();
        let reason = match (message.as_str(), place) {
            // toml has no message for some syntax errors (a value missing at the end of the text).
            ("", Some((line, column, _))) => {
                format!("syntax error at line {line}, column {column}")
            }
            (message, Some((line, column, _))) => {
                format!("syntax error at line {line}, column {column}: {message}")
            }
            ("", None) => "syntax error".to_owned(),
            (message, None) => format!("syntax error: {message}"),
        };
        return ConfigIssue::new(source, key, reason);
    }
    let key = place
        .and_then(|(_, _, line_start)| text.get(line_start..)?.lines().next())
        .and_then(|line| line.split_once('='))
        .map(|(key, _)| key.trim().trim_matches('"').to_owned())
        .unwrap_or_default();
    let reason = match (message.as_str(), place) {
        ("", _) => {
            let first = err.to_string();
            match first.lines().next().map(str::trim) {
                Some(line) if !line.is_empty() => line.to_owned(),
                _ => "invalid TOML".to_owned(),
            }
        }
        (message, Some((line, column, _))) => format!("{message} (line {line}, column {column})"),
        (message, None) => message.to_owned(),
    };
    ConfigIssue::new(source, key, reason)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::*;
    use crate::config::*;
    use serde::Deserialize;

    #[test]
    fn a_syntax_error_says_where() {
        let e = server("domains = [\"a\"]\nthis is [not toml\n").unwrap_err();
        assert_eq!(e.0.len(), 1, "{e}");
        assert_eq!(keys(e.clone()), vec![""], "no key on that line: {e}");
        assert!(
            e.0[0]
                .reason
                .starts_with("syntax error at line 2, column 6: "),
            "{e}"
        );
        assert!(
            e.to_string()
                .starts_with("servers/lobby.toml: syntax error at line 2"),
            "{e}"
        );
        let e = server("domains = [\"é\", ]\naddresses = [\"a:1\"\n").unwrap_err();
        assert_eq!(keys(e.clone()), vec!["addresses"]);
        assert_eq!(
            e.0[0].reason, "syntax error at line 3, column 1: invalid array: expected `]`",
            "{e}"
        );
    }

    #[test]
    fn a_syntax_error_names_the_key_whose_value_is_open_not_the_next_line() {
        // The unclosed array is noticed on the next line, which has a key of its own.
        let e = server("domains = [\"b.test\"\naddresses = 5\n").unwrap_err();
        assert_eq!(keys(e.clone()), vec!["domains"], "{e}");
        assert_eq!(
            e.0[0].reason, "syntax error at line 2, column 1: invalid array: expected `]`",
            "{e}"
        );
        // Over several lines, and in a section.
        let e = server("domains = [\n  \"a.test\",\n  \"b.test\"\n\naddresses = [\"a:1\"]\n")
            .unwrap_err();
        assert_eq!(keys(e.clone()), vec!["domains"], "{e}");
        let e = server(
            "domains = [\"a\"]\naddresses = [\"a:1\"]\n[timeouts]\nconnect = [\"5s\"\nread = \"1s\"\n",
        )
        .unwrap_err();
        assert_eq!(keys(e.clone()), vec!["timeouts.connect"], "{e}");
        // Not sure which value is open (a line of an unclosed string looks like an assignment): no key.
        let e = server("disconnect_message = \"\"\"\nmax_players = 3\n").unwrap_err();
        assert_eq!(keys(e.clone()), vec![""], "{e}");
        assert!(e.0[0].reason.starts_with("syntax error at line "), "{e}");
        // The error in the key itself, not in a value.
        let e = server("domains = [\"a\"]\nmax players = 3\n").unwrap_err();
        assert_eq!(keys(e.clone()), vec![""], "{e}");
        let e = server("domains = [\"a\"]\n        max players = 3\n").unwrap_err();
        assert_eq!(keys(e.clone()), vec![""], "indented: {e}");
        // An indented key whose value is open.
        let e = server("[timeouts]\n  connect = \"5s\n").unwrap_err();
        assert_eq!(keys(e.clone()), vec!["timeouts.connect"], "{e}");
    }

    #[test]
    fn an_error_in_a_value_names_its_key() {
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Strict {
            domains: Vec<String>,
            max_players: u32,
        }
        let text = "domains = [\"a\"]\nmax_players = \"ten\"\n";
        let err = toml::from_str::<Strict>(text).unwrap_err();
        let issue = toml_issue("s.toml", text, &err);
        assert_eq!(issue.key, "max_players", "{issue}");
        assert!(
            issue.reason.ends_with("(line 2, column 15)") && !issue.reason.contains("syntax"),
            "{issue}"
        );
    }

    #[test]
    fn value_missing_at_the_end_is_reported_with_a_reason() {
        // Found by the `config` fuzz target: toml gives an empty message for this one.
        let e = server("domains = [\"a\"]\naddresses = [\"a:1\"]\nmax_players =").unwrap_err();
        assert_eq!(keys(e.clone()), vec!["max_players"]);
        assert_eq!(e.0[0].reason, "syntax error at line 3, column 14");
        let e = MainConfig::from_toml(Path::new("n.toml"), "[ip_filter]\nallow = ").unwrap_err();
        assert_eq!(keys(e.clone()), vec!["ip_filter.allow"]);
        assert!(e.0[0].reason.contains("line 2"), "{e}");
    }
}
