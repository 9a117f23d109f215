//! Label selectors: which nodes a group (or a node listing) takes, by the
//! nodes' labels. Pure: parsing and matching.
//!
//! Grammar: terms separated by `,`, all of which must hold (AND).
//! `key=value` (the label is set to value), `key!=value` (the label is not
//! set to value, or not set at all), `key` (the label is set), `!key` (the
//! label is not set). Spaces around terms, keys and values are ignored.
//! Keys and values are `[A-Za-z0-9._/-]+`.

use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Term {
    Eq(String, String),
    Ne(String, String),
    Has(String),
    Lacks(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selector(Vec<Term>);

fn word(s: &str, what: &str, term: &str) -> Result<String, String> {
    let w = s.trim();
    if w.is_empty() {
        return Err(format!("{term:?}: the {what} is empty"));
    }
    if let Some(c) = w
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | '-')))
    {
        return Err(format!(
            "{term:?}: {c:?} is not allowed in a label {what} (letters, digits, . _ / -)"
        ));
    }
    Ok(w.to_string())
}

impl Selector {
    /// Parses a selector; the error names the offending term.
    pub fn parse(text: &str) -> Result<Selector, String> {
        let mut terms = Vec::new();
        for raw in text.split(',') {
            let t = raw.trim();
            if t.is_empty() {
                return Err(format!(
                    "{text:?}: empty term (terms are separated by single commas)"
                ));
            }
            let term = if let Some((k, v)) = t.split_once("!=") {
                Term::Ne(word(k, "key", t)?, word(v, "value", t)?)
            } else if let Some((k, v)) = t.split_once('=') {
                Term::Eq(word(k, "key", t)?, word(v, "value", t)?)
            } else if let Some(k) = t.strip_prefix('!') {
                Term::Lacks(word(k, "key", t)?)
            } else {
                Term::Has(word(t, "key", t)?)
            };
            terms.push(term);
        }
        Ok(Selector(terms))
    }

    /// `None` for an empty (or blank) text: no selection.
    pub fn parse_opt(text: &str) -> Result<Option<Selector>, String> {
        if text.trim().is_empty() {
            Ok(None)
        } else {
            Selector::parse(text).map(Some)
        }
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|t| match t {
            Term::Eq(k, v) => labels.get(k) == Some(v),
            Term::Ne(k, v) => labels.get(k) != Some(v),
            Term::Has(k) => labels.contains_key(k),
            Term::Lacks(k) => !labels.contains_key(k),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn matching() {
        let web_bj = labels(&[("role", "web"), ("dc", "bj")]);
        let web_sh = labels(&[("role", "web"), ("dc", "sh")]);
        let db = labels(&[("role", "db"), ("canary", "yes")]);
        let none = labels(&[]);
        // (selector, [web_bj, web_sh, db, none])
        let cases = [
            ("role=web", [true, true, false, false]),
            ("role=web,dc!=sh", [true, false, false, false]),
            ("dc!=sh", [true, false, true, true]),
            ("canary", [false, false, true, false]),
            ("!canary", [true, true, false, true]),
            ("!dc,!canary", [false, false, false, true]),
            (" role = web , dc = bj ", [true, false, false, false]),
            ("role=db,canary=yes", [false, false, true, false]),
            ("role=Web", [false, false, false, false]),
        ];
        for (text, want) in cases {
            let s = Selector::parse(text).expect(text);
            let got = [&web_bj, &web_sh, &db, &none].map(|l| s.matches(l));
            assert_eq!(got, want, "{text}");
        }
    }

    #[test]
    fn bad_selectors_name_the_term() {
        let cases = [
            ("", "empty term"),
            ("role=web,", "empty term"),
            ("role=web,,dc=sh", "empty term"),
            ("=web", "key is empty"),
            ("role=", "value is empty"),
            ("role!=", "value is empty"),
            ("!", "key is empty"),
            ("role==web", "'=' is not allowed"),
            ("ro le=web", "' ' is not allowed"),
            ("role=w;b", "';' is not allowed"),
            ("!role=web", "'!' is not allowed"),
        ];
        for (text, want) in cases {
            let e = Selector::parse(text).unwrap_err();
            assert!(e.contains(want), "{text:?}: {e}");
        }
        assert_eq!(Selector::parse_opt("  ").expect("blank"), None);
        assert!(Selector::parse_opt("a").expect("one").is_some());
    }
}
