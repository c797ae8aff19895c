//! Search URL parameters -> a typed [`SearchQuery`].
//!
//! Covers what conditional create/update/delete and simple searches need today: `_id` and
//! every token parameter (`code`, `system|code`, `|code`, `system|`), OR by comma, AND by
//! repetition, with the spec's escaping (`\,` `\|` `\$` `\\`). Result parameters (`_count`,
//! `_format`, ...) are the caller's business and must be removed before parsing.

use bastion_fhir::definitions::{self, SearchParamType};
use thiserror::Error;

/// What a query parameter could not be turned into.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SearchError {
    #[error("unknown search parameter '{param}' for {resource_type}")]
    UnknownParameter { resource_type: String, param: String },
    #[error("search parameter '{param}' is not supported yet")]
    UnsupportedParameter { param: String },
    #[error("modifier ':{modifier}' is not supported on '{param}'")]
    UnsupportedModifier { param: String, modifier: String },
    #[error("invalid value for '{param}': {reason}")]
    InvalidValue { param: String, reason: String },
    #[error("a conditional interaction needs at least one search parameter")]
    Empty,
}

/// How a token value constrains the system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SystemMatch {
    /// `code`: any system.
    Any,
    /// `|code`: no system.
    NoSystem,
    /// `system|code` or `system|`.
    Is(String),
}

/// One alternative of a token parameter value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenValue {
    pub system: SystemMatch,
    /// `None` for `system|` (any code in the system).
    pub code: Option<String>,
}

/// One AND-ed condition; the values inside it are OR-ed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Clause {
    Id(Vec<String>),
    Token { param: String, values: Vec<TokenValue> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchQuery {
    pub resource_type: String,
    pub clauses: Vec<Clause>,
}

/// Splits on an unescaped `sep`, unescaping `\,` `\|` `\$` `\\` in the parts.
pub fn split_escaped(s: &str, sep: char) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(n) if n == sep => parts.last_mut().unwrap().push(n),
                Some(n) => {
                    // keep other escapes for the next split level
                    let last = parts.last_mut().unwrap();
                    last.push('\\');
                    last.push(n);
                }
                None => parts.last_mut().unwrap().push('\\'),
            }
        } else if c == sep {
            parts.push(String::new());
        } else {
            parts.last_mut().unwrap().push(c);
        }
    }
    parts
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn parse_token(param: &str, raw: &str) -> Result<TokenValue, SearchError> {
    let parts = split_escaped(raw, '|');
    let value = match parts.as_slice() {
        [code] => TokenValue { system: SystemMatch::Any, code: Some(unescape(code)) },
        [system, code] => {
            let system = if system.is_empty() { SystemMatch::NoSystem } else { SystemMatch::Is(unescape(system)) };
            let code = if code.is_empty() { None } else { Some(unescape(code)) };
            if system == SystemMatch::NoSystem && code.is_none() {
                return Err(SearchError::InvalidValue { param: param.into(), reason: "empty token".into() });
            }
            TokenValue { system, code }
        }
        _ => {
            return Err(SearchError::InvalidValue {
                param: param.into(),
                reason: "a token has at most one unescaped '|'".into(),
            });
        }
    };
    if value.code.as_deref() == Some("") {
        return Err(SearchError::InvalidValue { param: param.into(), reason: "empty token".into() });
    }
    Ok(value)
}

impl SearchQuery {
    /// Parses `(name, value)` pairs (already percent-decoded) for `resource_type`.
    pub fn parse(resource_type: &str, params: &[(String, String)]) -> Result<SearchQuery, SearchError> {
        let mut clauses = Vec::new();
        for (name, value) in params {
            let (code, modifier) = match name.split_once(':') {
                Some((c, m)) => (c, Some(m)),
                None => (name.as_str(), None),
            };
            let def = definitions::search_param(resource_type, code).ok_or_else(|| SearchError::UnknownParameter {
                resource_type: resource_type.into(),
                param: code.into(),
            })?;
            if let Some(m) = modifier {
                return Err(SearchError::UnsupportedModifier { param: code.into(), modifier: m.into() });
            }
            let alternatives = split_escaped(value, ',');
            if alternatives.iter().any(String::is_empty) {
                return Err(SearchError::InvalidValue { param: code.into(), reason: "empty value".into() });
            }
            if code == "_id" {
                let ids: Vec<String> = alternatives.iter().map(|a| unescape(a)).collect();
                if let Some(bad) = ids.iter().find(|i| !bastion_fhir::primitives::is_valid_id(i)) {
                    return Err(SearchError::InvalidValue {
                        param: code.into(),
                        reason: format!("'{bad}' is not a valid id"),
                    });
                }
                clauses.push(Clause::Id(ids));
                continue;
            }
            if def.kind != SearchParamType::Token {
                return Err(SearchError::UnsupportedParameter { param: code.into() });
            }
            let values = alternatives.iter().map(|a| parse_token(code, a)).collect::<Result<Vec<_>, _>>()?;
            clauses.push(Clause::Token { param: code.into(), values });
        }
        Ok(SearchQuery { resource_type: resource_type.into(), clauses })
    }

    /// Parses the query string of a conditional interaction (`If-None-Exist`, `PUT [type]?...`).
    pub fn parse_conditional(resource_type: &str, query: &str) -> Result<SearchQuery, SearchError> {
        let pairs: Vec<(String, String)> = form_pairs(query);
        if pairs.is_empty() {
            return Err(SearchError::Empty);
        }
        Self::parse(resource_type, &pairs)
    }
}

/// Percent-decodes `a=b&c=d` (also accepting `+` for space, as forms send it).
pub fn form_pairs(query: &str) -> Vec<(String, String)> {
    let q = query.strip_prefix('?').unwrap_or(query);
    q.split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(q: &str) -> Vec<(String, String)> {
        form_pairs(q)
    }

    #[test]
    fn token_forms() {
        let q = SearchQuery::parse("Patient", &pairs("identifier=urn:mrn|123,|x,y,urn:s|")).unwrap();
        let Clause::Token { values, .. } = &q.clauses[0] else { panic!() };
        assert_eq!(values[0], TokenValue { system: SystemMatch::Is("urn:mrn".into()), code: Some("123".into()) });
        assert_eq!(values[1], TokenValue { system: SystemMatch::NoSystem, code: Some("x".into()) });
        assert_eq!(values[2], TokenValue { system: SystemMatch::Any, code: Some("y".into()) });
        assert_eq!(values[3], TokenValue { system: SystemMatch::Is("urn:s".into()), code: None });
    }

    #[test]
    fn escaped_separators_are_data() {
        let q = SearchQuery::parse("Patient", &pairs("identifier=a\\,b\\|c")).unwrap();
        let Clause::Token { values, .. } = &q.clauses[0] else { panic!() };
        assert_eq!(values.len(), 1);
        assert_eq!(values[0].code.as_deref(), Some("a,b|c"));
    }

    #[test]
    fn rejects_unknown_parameter() {
        assert!(matches!(
            SearchQuery::parse("Patient", &pairs("nonsense=1")),
            Err(SearchError::UnknownParameter { .. })
        ));
    }

    #[test]
    fn rejects_invalid_id() {
        assert!(matches!(SearchQuery::parse("Patient", &pairs("_id=a%2Fb")), Err(SearchError::InvalidValue { .. })));
    }

    #[test]
    fn rejects_empty_conditional() {
        assert_eq!(SearchQuery::parse_conditional("Patient", ""), Err(SearchError::Empty));
    }

    #[test]
    fn decodes_percent_and_plus() {
        assert_eq!(form_pairs("a=x%7Cy+z&b"), vec![("a".into(), "x|y z".into()), ("b".into(), "".into())]);
        assert_eq!(form_pairs("a=%zz%"), vec![("a".into(), "%zz%".into())]);
    }
}
