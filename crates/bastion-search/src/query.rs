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
#[derive(Debug, Clone, PartialEq)]
pub enum Clause {
    Id(Vec<String>),
    Token {
        param: String,
        values: Vec<TokenValue>,
    },
    String {
        param: String,
        mode: StringMode,
        values: Vec<String>,
    },
    Date {
        param: String,
        values: Vec<DateValue>,
    },
    /// `_lastUpdated`, matched against the version's own timestamp.
    LastUpdated(Vec<DateValue>),
    Reference {
        param: String,
        values: Vec<ReferenceValue>,
    },
    Number {
        param: String,
        values: Vec<NumberValue>,
    },
    Quantity {
        param: String,
        values: Vec<QuantityValue>,
    },
    Uri {
        param: String,
        mode: UriMode,
        values: Vec<String>,
    },
    /// Resources in the compartment of this patient (compartment search).
    InPatientCompartment(String),
    /// Resources that `source_type` resources with these ids refer to through `param`
    /// (what `_include` fetches).
    ReferencedBy {
        source_type: String,
        param: String,
        source_ids: Vec<String>,
    },
    /// `param[:Type].rest`: a reference whose target (of one of `target_types`) matches
    /// `inner`. Parsed once against the first target type; the rest of the chain is the same
    /// parameter on each.
    Chain {
        param: String,
        target_types: Vec<String>,
        inner: Box<Clause>,
    },
    /// `_has:SourceType:param:inner`: some `source_type` resource refers to this one through
    /// `param` and matches `inner`.
    Has {
        source_type: String,
        param: String,
        inner: Box<Clause>,
    },
    /// `:missing=true` (`missing`) or `:missing=false`.
    Missing {
        param: String,
        kind: SearchParamType,
        missing: bool,
    },
    /// Any of these (a composite's or `_content`'s comma-separated alternatives).
    Any(Vec<Clause>),
    /// All of these (the words of one `_content` / `_text` value).
    All(Vec<Clause>),
    /// None of this: `:not` (a resource without any value of the parameter matches too).
    Not(Box<Clause>),
}

impl Clause {
    /// The same match against index rows stored under another parameter name: how a
    /// composite's second component and `:text` reach the rows written for them.
    fn with_param(self, key: String) -> Clause {
        match self {
            Clause::Token { values, .. } => Clause::Token { param: key, values },
            Clause::String { mode, values, .. } => Clause::String { param: key, mode, values },
            Clause::Date { values, .. } => Clause::Date { param: key, values },
            Clause::Reference { values, .. } => Clause::Reference { param: key, values },
            Clause::Number { values, .. } => Clause::Number { param: key, values },
            Clause::Quantity { values, .. } => Clause::Quantity { param: key, values },
            Clause::Uri { mode, values, .. } => Clause::Uri { param: key, mode, values },
            other => other,
        }
    }
}

/// The index parameter under which the token text of `param` (`CodeableConcept.text`,
/// `Coding.display`, `Identifier.type.text`) is stored as string rows.
pub fn token_text_key(param: &str) -> String {
    format!("{param}:text")
}

/// The index parameter under which an identifier's `type|value` is stored as token rows
/// (system = `type system|type code`, code = the identifier's value) for `:of-type`.
pub fn of_type_key(param: &str) -> String {
    format!("{param}:of-type")
}

/// The index parameter under which a composite's second component is stored, keyed by one
/// coding of its first (token) component: `code-value-quantity$8480-6|http://loinc.org`
/// for that system and code, `...$8480-6|` for a code without a system, and
/// `...$8480-6` for the code in any system (each coding is written under both of its keys).
pub fn composite_key(param: &str, code: &str, system: Option<&str>) -> String {
    match system {
        Some(s) => format!("{param}${code}|{s}"),
        None => format!("{param}${code}"),
    }
}

/// Full-text words of `_text` (narrative) and `_content` (every string) are string rows
/// under these parameter names.
pub const TEXT_PARAM: &str = "_text";
pub const CONTENT_PARAM: &str = "_content";

/// Splits text into the normalised words `_text` / `_content` index and match (letters
/// and digits; accents and case folded; words of one character dropped).
pub fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric()).filter(|w| w.chars().count() > 1).map(crate::index::normalize_string)
}

/// A number search value: the prefix and the range its precision denotes (`100` is
/// [99.5, 100.5], `100.0` is [99.95, 100.05]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NumberValue {
    pub prefix: DatePrefix,
    pub value: f64,
    pub low: f64,
    pub high: f64,
}

/// A quantity search value: `[prefix]number|system|code`, `number||unit`, or `number`.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantityValue {
    pub number: NumberValue,
    pub system: Option<String>,
    pub code: Option<String>,
}

/// How a uri parameter matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UriMode {
    Exact,
    /// `:below`: the stored uri starts with the search value.
    Below,
    /// `:above`: the search value starts with the stored uri.
    Above,
}

/// How a string parameter matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StringMode {
    /// Default: the normalised value starts with the normalised search text.
    StartsWith,
    /// `:exact`: equal, case and accents included.
    Exact,
    /// `:contains`: the normalised value contains the normalised search text.
    Contains,
}

/// Date search prefixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatePrefix {
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
    Sa,
    Eb,
    Ap,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateValue {
    pub prefix: DatePrefix,
    pub range: bastion_fhir::primitives::DateRange,
}

/// One alternative of a reference parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReferenceValue {
    /// `Type/id`, or `id` with the `:Type` modifier.
    Typed { resource_type: String, id: String },
    /// A bare `id`: any target type.
    Id(String),
    /// An absolute URL or canonical, matched as written.
    Url(String),
}

fn parse_date(param: &str, raw: &str) -> Result<DateValue, SearchError> {
    let (prefix, rest) = split_prefix(raw);
    let range = bastion_fhir::primitives::DateRange::parse(rest).ok_or_else(|| SearchError::InvalidValue {
        param: param.into(),
        reason: format!("'{raw}' is not a date (YYYY, YYYY-MM, YYYY-MM-DD or a dateTime, after an optional prefix eq ne gt lt ge le sa eb ap)"),
    })?;
    Ok(DateValue { prefix, range })
}

/// Splits an optional search prefix (`eq`, `gt`, ...) off a value.
fn split_prefix(raw: &str) -> (DatePrefix, &str) {
    let prefixes = [
        ("eq", DatePrefix::Eq),
        ("ne", DatePrefix::Ne),
        ("gt", DatePrefix::Gt),
        ("lt", DatePrefix::Lt),
        ("ge", DatePrefix::Ge),
        ("le", DatePrefix::Le),
        ("sa", DatePrefix::Sa),
        ("eb", DatePrefix::Eb),
        ("ap", DatePrefix::Ap),
    ];
    prefixes.iter().find_map(|(p, v)| raw.strip_prefix(p).map(|r| (*v, r))).unwrap_or((DatePrefix::Eq, raw))
}

fn parse_number(param: &str, raw: &str) -> Result<NumberValue, SearchError> {
    let (prefix, text) = split_prefix(raw);
    let invalid = || SearchError::InvalidValue { param: param.into(), reason: format!("'{raw}' is not a number") };
    let ok_chars =
        !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'e' | b'E' | b'+'));
    let value: f64 = if ok_chars { text.parse().map_err(|_| invalid())? } else { return Err(invalid()) };
    if !value.is_finite() {
        return Err(invalid());
    }
    let mantissa = text.split(['e', 'E']).next().unwrap_or(text);
    let decimals = mantissa.split_once('.').map_or(0, |(_, d)| d.len()) as i32;
    let exponent: i32 = text.split_once(['e', 'E']).and_then(|(_, e)| e.parse().ok()).unwrap_or(0);
    // Scaled so that the bounds of short decimals come out exact (0.2 -> [0.15, 0.25)).
    let scale = 10f64.powi(decimals - exponent);
    Ok(NumberValue { prefix, value, low: (value * scale - 0.5) / scale, high: (value * scale + 0.5) / scale })
}

fn parse_quantity(param: &str, raw: &str) -> Result<QuantityValue, SearchError> {
    let parts = split_escaped(raw, '|');
    let nonempty = |s: &String| (!s.is_empty()).then(|| unescape(s));
    match parts.as_slice() {
        [n] => Ok(QuantityValue { number: parse_number(param, n)?, system: None, code: None }),
        [n, system, code] => {
            Ok(QuantityValue { number: parse_number(param, n)?, system: nonempty(system), code: nonempty(code) })
        }
        _ => Err(SearchError::InvalidValue {
            param: param.into(),
            reason: "a quantity is number, number|system|code or number||unit".into(),
        }),
    }
}

fn parse_reference(
    param: &str,
    raw: &str,
    type_modifier: Option<&str>,
    targets: &[String],
    base: Option<&str>,
) -> Result<ReferenceValue, SearchError> {
    let invalid = |reason: &str| SearchError::InvalidValue { param: param.into(), reason: reason.into() };
    // An absolute URL on this server's own base is the relative reference it names: stored
    // references are relative, and a narrowing that missed this form would be a leak.
    let raw = match base.and_then(|b| raw.strip_prefix(b)).and_then(|r| r.strip_prefix('/')) {
        Some(relative) => relative,
        None => raw,
    };
    if raw.contains("://") || raw.starts_with("urn:") {
        return Ok(ReferenceValue::Url(raw.to_string()));
    }
    let parts: Vec<&str> = raw.split('/').collect();
    let (t, id): (Option<&str>, &str) = match (parts.as_slice(), type_modifier) {
        ([id], Some(t)) => (Some(t), id),
        ([id], None) => (None, id),
        ([t, id], None) => (Some(t), id),
        ([t, id], Some(m)) if *t == m => (Some(t), id),
        ([t, id, "_history", _], None) => (Some(t), id),
        _ => return Err(invalid("a reference is id, Type/id or an absolute URL")),
    };
    if !bastion_fhir::primitives::is_valid_id(id) {
        return Err(invalid("not a valid id"));
    }
    match t {
        Some(t) if !definitions::is_resource_type(t) => Err(invalid("unknown resource type")),
        Some(t) if !targets.is_empty() && !targets.iter().any(|x| x == t || x == "Resource") => {
            Err(invalid("this parameter cannot refer to that resource type"))
        }
        Some(t) => Ok(ReferenceValue::Typed { resource_type: t.to_string(), id: id.to_string() }),
        None => Ok(ReferenceValue::Id(id.to_string())),
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct SearchQuery {
    /// The type the parameters were parsed for (the first of `types` in a system search).
    pub resource_type: String,
    /// A system-level search (`GET [base]?_type=A,B`): the types searched. Empty for a
    /// search of `resource_type` alone.
    pub types: Vec<String>,
    pub clauses: Vec<Clause>,
    /// `_sort` keys, most significant first; the store breaks ties by insertion order.
    pub sort: Vec<SortKey>,
    /// The access predicate of each type that chains and `_has` reach (see
    /// [`SearchQuery::reached_types`]), set by the caller's authorization; a reached type
    /// missing from the list reaches nothing. `None`: the search's own predicate applies to
    /// them too, which is right only where that predicate is the same for every type (the
    /// server's own work, a caller without restrictions).
    pub reached_access: Option<Vec<(String, crate::AccessPredicate)>>,
}

/// One `_sort` key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortKey {
    pub by: SortBy,
    pub descending: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SortBy {
    Id,
    LastUpdated,
    Param { code: String, kind: SearchParamType },
}

/// `_include` / `_revinclude`: `SourceType:param[:TargetType]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Include {
    pub source_type: String,
    pub param: String,
    /// The reference targets to follow; for `_include` without a target type, every
    /// target the parameter allows.
    pub target_types: Vec<String>,
    pub reverse: bool,
    pub iterate: bool,
}

/// Parses a `_sort` value (`-date,code`).
pub fn parse_sort(resource_type: &str, value: &str) -> Result<Vec<SortKey>, SearchError> {
    value
        .split(',')
        .map(|k| {
            let (descending, code) = match k.strip_prefix('-') {
                Some(c) => (true, c),
                None => (false, k),
            };
            let by = match code {
                "_id" => SortBy::Id,
                "_lastUpdated" => SortBy::LastUpdated,
                _ => {
                    let def =
                        definitions::search_param(resource_type, code).ok_or_else(|| SearchError::InvalidValue {
                            param: "_sort".into(),
                            reason: format!("'{code}' is not a search parameter of {resource_type}"),
                        })?;
                    if !crate::index::is_indexed_kind(def.kind) {
                        return Err(SearchError::InvalidValue {
                            param: "_sort".into(),
                            reason: format!("cannot sort by '{code}'"),
                        });
                    }
                    SortBy::Param { code: code.to_string(), kind: def.kind }
                }
            };
            Ok(SortKey { by, descending })
        })
        .collect()
}

/// Parses an `_include` / `_revinclude` value into the includes it names: one, or for a
/// wildcard every reference parameter it covers. `_include=*` follows every reference
/// parameter of the searched types (`primary_types`), `Type:*` every one of `Type`;
/// `_revinclude=Type:*` fetches `Type` resources through any of their reference parameters
/// that can point at a searched type. `_revinclude=*` (everything that points anywhere at a
/// result) is refused: it has no bound.
pub fn parse_include(
    value: &str,
    reverse: bool,
    iterate: bool,
    primary_types: &[String],
) -> Result<Vec<Include>, SearchError> {
    let name = if reverse { "_revinclude" } else { "_include" };
    let invalid = |reason: String| SearchError::InvalidValue { param: name.into(), reason };
    let every_reference = |source: &str| -> Vec<Include> {
        definitions::search_params(source)
            .into_iter()
            .filter(|d| d.kind == SearchParamType::Reference)
            .filter_map(|d| {
                let target_types: Vec<String> = if reverse {
                    primary_types
                        .iter()
                        .filter(|t| d.targets.iter().any(|x| x == *t || x == "Resource"))
                        .cloned()
                        .collect()
                } else {
                    d.targets.iter().filter(|t| definitions::is_resource_type(t)).cloned().collect()
                };
                (!target_types.is_empty()).then(|| Include {
                    source_type: source.into(),
                    param: d.code.clone(),
                    target_types,
                    reverse,
                    iterate,
                })
            })
            .collect()
    };
    if value == "*" {
        if reverse {
            return Err(invalid("_revinclude=* is not supported: name the source type (_revinclude=Type:*)".into()));
        }
        return Ok(primary_types.iter().flat_map(|t| every_reference(t)).collect());
    }
    let parts: Vec<&str> = value.split(':').collect();
    let (source, param, target) = match parts.as_slice() {
        [s, p] => (*s, *p, None),
        [s, p, t] => (*s, *p, Some(*t)),
        _ => return Err(invalid(format!("'{value}' is not SourceType:parameter[:TargetType]"))),
    };
    if param == "*" && target.is_none() {
        if !definitions::is_resource_type(source) {
            return Err(invalid(format!("'{source}' is not a resource type")));
        }
        return Ok(every_reference(source));
    }
    let def = definitions::search_param(source, param)
        .filter(|d| d.kind == SearchParamType::Reference)
        .ok_or_else(|| invalid(format!("'{source}:{param}' is not a reference parameter")))?;
    let target_types = match target {
        Some(t) if def.targets.iter().any(|x| x == t) => vec![t.to_string()],
        Some(t) => return Err(invalid(format!("'{param}' cannot refer to {t}"))),
        None => def.targets.iter().filter(|t| definitions::is_resource_type(t)).cloned().collect(),
    };
    Ok(vec![Include { source_type: source.into(), param: param.into(), target_types, reverse, iterate }])
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
        Self::parse_limited(resource_type, params, DEFAULT_MAX_CHAIN_DEPTH)
    }

    /// As [`SearchQuery::parse`], with chains and `_has` at most `max_chain_depth` deep.
    pub fn parse_limited(
        resource_type: &str,
        params: &[(String, String)],
        max_chain_depth: usize,
    ) -> Result<SearchQuery, SearchError> {
        Self::parse_on_base(resource_type, params, max_chain_depth, None)
    }

    /// As [`SearchQuery::parse_limited`], with references written as absolute URLs on `base`
    /// (this server's FHIR base, `https://host/fhir`) read as the relative ones they name.
    pub fn parse_on_base(
        resource_type: &str,
        params: &[(String, String)],
        max_chain_depth: usize,
        base: Option<&str>,
    ) -> Result<SearchQuery, SearchError> {
        let ctx = Ctx { max: max_chain_depth, base };
        let mut clauses = Vec::new();
        for (name, value) in params {
            clauses.push(parse_param(resource_type, name, value, 0, &ctx)?);
        }
        Ok(SearchQuery {
            resource_type: resource_type.into(),
            types: Vec::new(),
            clauses,
            sort: Vec::new(),
            reached_access: None,
        })
    }

    /// The other resource types the query looks into: chain targets and `_has` sources, at
    /// any depth. A caller must be allowed to search each of them, or the query would be an
    /// oracle on data it may not see.
    pub fn reached_types(&self) -> Vec<String> {
        fn walk(c: &Clause, out: &mut Vec<String>) {
            match c {
                Clause::Chain { target_types, inner, .. } => {
                    out.extend(target_types.iter().cloned());
                    walk(inner, out);
                }
                Clause::Has { source_type, inner, .. } => {
                    out.push(source_type.clone());
                    walk(inner, out);
                }
                Clause::Any(cs) | Clause::All(cs) => cs.iter().for_each(|c| walk(c, out)),
                Clause::Not(c) => walk(c, out),
                _ => {}
            }
        }
        let mut out = Vec::new();
        self.clauses.iter().for_each(|c| walk(c, &mut out));
        out.sort();
        out.dedup();
        out
    }

    /// The resource types searched.
    pub fn scope_types(&self) -> Vec<String> {
        if self.types.is_empty() { vec![self.resource_type.clone()] } else { self.types.clone() }
    }

    /// The one type searched, or `Resource` for a system-level search.
    pub fn scope_type(&self) -> &str {
        if self.types.is_empty() { &self.resource_type } else { "Resource" }
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

/// How deep chains and `_has` go unless configured otherwise.
pub const DEFAULT_MAX_CHAIN_DEPTH: usize = 4;

/// One parameter: `_has:...`, a chain `ref[:Type].param`, or a plain parameter.
/// What every level of a parameter's parse needs to know.
struct Ctx<'a> {
    /// How deep chains and `_has` may go.
    max: usize,
    /// This server's FHIR base, for absolute references to it.
    base: Option<&'a str>,
}

fn parse_param(
    resource_type: &str,
    name: &str,
    value: &str,
    depth: usize,
    ctx: &Ctx<'_>,
) -> Result<Clause, SearchError> {
    let max = ctx.max;
    let too_deep = || SearchError::InvalidValue {
        param: name.into(),
        reason: format!("chains and _has may be at most {max} levels deep"),
    };
    if let Some(rest) = name.strip_prefix("_has:") {
        if depth >= max {
            return Err(too_deep());
        }
        // _has:SourceType:param:inner
        let mut parts = rest.splitn(3, ':');
        let (Some(source), Some(param), Some(inner)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(SearchError::InvalidValue {
                param: name.into(),
                reason: "_has takes _has:Type:reference-parameter:parameter".into(),
            });
        };
        let def = definitions::search_param(source, param)
            .filter(|d| d.kind == SearchParamType::Reference)
            .ok_or_else(|| SearchError::InvalidValue {
                param: name.into(),
                reason: format!("'{source}:{param}' is not a reference parameter"),
            })?;
        if !def.targets.iter().any(|t| t == resource_type || t == "Resource") {
            return Err(SearchError::InvalidValue {
                param: name.into(),
                reason: format!("{source}.{param} cannot refer to {resource_type}"),
            });
        }
        let inner = parse_param(source, inner, value, depth + 1, ctx)?;
        return Ok(Clause::Has { source_type: source.into(), param: param.into(), inner: Box::new(inner) });
    }
    if let Some((head, rest)) = name.split_once('.') {
        if depth >= max {
            return Err(too_deep());
        }
        let (code, type_modifier) = match head.split_once(':') {
            Some((c, t)) => (c, Some(t)),
            None => (head, None),
        };
        let def = definitions::search_param(resource_type, code)
            .ok_or_else(|| SearchError::UnknownParameter { resource_type: resource_type.into(), param: code.into() })?;
        if def.kind != SearchParamType::Reference {
            return Err(SearchError::InvalidValue {
                param: name.into(),
                reason: format!("'{code}' is not a reference parameter: it cannot be chained"),
            });
        }
        let candidates: Vec<String> = match type_modifier {
            Some(t) if def.targets.iter().any(|x| x == t) => vec![t.to_string()],
            Some(t) => {
                return Err(SearchError::InvalidValue {
                    param: name.into(),
                    reason: format!("'{code}' cannot refer to {t}"),
                });
            }
            None => def.targets.iter().filter(|t| definitions::is_resource_type(t)).cloned().collect(),
        };
        // Every target type on which the rest of the chain is a parameter.
        let mut targets = Vec::new();
        let mut inner = None;
        let mut last_err = None;
        for t in candidates {
            match parse_param(&t, rest, value, depth + 1, ctx) {
                Ok(c) => {
                    inner.get_or_insert(c);
                    targets.push(t);
                }
                Err(e @ SearchError::UnknownParameter { .. }) => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        // An unknown parameter inside a chain is an error, not a parameter to ignore:
        // ignoring it would widen the chain to every target.
        let Some(inner) = inner else {
            let reason = match last_err {
                Some(SearchError::UnknownParameter { param, .. }) => {
                    format!("'{param}' is not a parameter of what '{code}' refers to")
                }
                _ => format!("'{rest}' cannot be searched through '{code}'"),
            };
            return Err(SearchError::InvalidValue { param: name.into(), reason });
        };
        return Ok(Clause::Chain { param: code.into(), target_types: targets, inner: Box::new(inner) });
    }
    let mut out = Vec::new();
    parse_simple(resource_type, name, value, &mut out, ctx)?;
    out.pop().ok_or(SearchError::Empty)
}

fn parse_simple(
    resource_type: &str,
    name: &str,
    value: &str,
    clauses: &mut Vec<Clause>,
    ctx: &Ctx<'_>,
) -> Result<(), SearchError> {
    let (code, modifier) = match name.split_once(':') {
        Some((c, m)) => (c, Some(m)),
        None => (name, None),
    };
    let unsupported = |m: &str| SearchError::UnsupportedModifier { param: code.into(), modifier: m.into() };
    if code == "_list" {
        // `_list=X` is `_has:List:item:_id=X`: the List itself is access-checked like any
        // other `_has` source, so a list the caller may not see selects nothing.
        if let Some(m) = modifier {
            return Err(unsupported(m));
        }
        let ids = parse_ids(code, value)?;
        clauses.push(Clause::Has {
            source_type: "List".into(),
            param: "item".into(),
            inner: Box::new(Clause::Id(ids)),
        });
        return Ok(());
    }
    let def = definitions::search_param(resource_type, code)
        .ok_or_else(|| SearchError::UnknownParameter { resource_type: resource_type.into(), param: code.into() })?;
    let alternatives = split_escaped(value, ',');
    if alternatives.iter().any(String::is_empty) {
        return Err(SearchError::InvalidValue { param: code.into(), reason: "empty value".into() });
    }
    if modifier == Some("missing") {
        let missing = match value {
            "true" => true,
            "false" => false,
            _ => {
                return Err(SearchError::InvalidValue {
                    param: code.into(),
                    reason: ":missing takes true or false".into(),
                });
            }
        };
        if !crate::index::is_indexed_kind(def.kind) || code.starts_with('_') {
            return Err(unsupported("missing"));
        }
        clauses.push(Clause::Missing { param: code.into(), kind: def.kind, missing });
        return Ok(());
    }
    if code == "_id" {
        if let Some(m) = modifier {
            return Err(unsupported(m));
        }
        clauses.push(Clause::Id(parse_ids(code, value)?));
        return Ok(());
    }
    if code == TEXT_PARAM || code == CONTENT_PARAM {
        let mode = match modifier {
            None => StringMode::StartsWith,
            Some("exact") => StringMode::Exact,
            Some("contains") => StringMode::Contains,
            Some(m) => return Err(unsupported(m)),
        };
        clauses.push(parse_full_text(code, mode, &alternatives)?);
        return Ok(());
    }
    clauses.push(parse_values(resource_type, code, def, modifier, &alternatives, ctx)?);
    Ok(())
}

fn parse_ids(code: &str, value: &str) -> Result<Vec<String>, SearchError> {
    let ids: Vec<String> = split_escaped(value, ',').iter().map(|a| unescape(a)).collect();
    match ids.iter().find(|i| !bastion_fhir::primitives::is_valid_id(i)) {
        Some(bad) => {
            Err(SearchError::InvalidValue { param: code.into(), reason: format!("'{bad}' is not a valid id") })
        }
        None => Ok(ids),
    }
}

/// `_text` / `_content`: each comma-separated alternative is a list of words, all of which
/// must occur (as word prefixes, whole words with `:exact`, or anywhere in a word with
/// `:contains`).
fn parse_full_text(code: &str, mode: StringMode, alternatives: &[String]) -> Result<Clause, SearchError> {
    let mut any = Vec::new();
    for a in alternatives {
        let all: Vec<Clause> =
            words(&unescape(a)).map(|w| Clause::String { param: code.into(), mode, values: vec![w] }).collect();
        if all.is_empty() {
            return Err(SearchError::InvalidValue {
                param: code.into(),
                reason: "give at least one word of two or more letters or digits".into(),
            });
        }
        any.push(Clause::All(all));
    }
    Ok(Clause::Any(any))
}

/// The comma-separated `alternatives` of one parameter, by the parameter's type.
fn parse_values(
    resource_type: &str,
    code: &str,
    def: &definitions::SearchParamDef,
    modifier: Option<&str>,
    alternatives: &[String],
    ctx: &Ctx<'_>,
) -> Result<Clause, SearchError> {
    let unsupported = |m: &str| SearchError::UnsupportedModifier { param: code.into(), modifier: m.into() };
    let tokens = || alternatives.iter().map(|a| parse_token(code, a)).collect::<Result<Vec<_>, _>>();
    let normalized = || alternatives.iter().map(|a| crate::index::normalize_string(&unescape(a))).collect();
    Ok(match (def.kind, modifier) {
        (SearchParamType::Token, None) => Clause::Token { param: code.into(), values: tokens()? },
        (SearchParamType::Token, Some("not")) => {
            Clause::Not(Box::new(Clause::Token { param: code.into(), values: tokens()? }))
        }
        (SearchParamType::Token, Some("text")) => {
            Clause::String { param: token_text_key(code), mode: StringMode::StartsWith, values: normalized() }
        }
        (SearchParamType::Token, Some("of-type")) => {
            let values = alternatives
                .iter()
                .map(|a| match split_escaped(a, '|').as_slice() {
                    [system, type_code, value] if !system.is_empty() && !type_code.is_empty() && !value.is_empty() => {
                        Ok(TokenValue {
                            system: SystemMatch::Is(format!("{}|{}", unescape(system), unescape(type_code))),
                            code: Some(unescape(value)),
                        })
                    }
                    _ => Err(SearchError::InvalidValue {
                        param: code.into(),
                        reason: ":of-type takes type-system|type-code|value".into(),
                    }),
                })
                .collect::<Result<Vec<_>, _>>()?;
            Clause::Token { param: of_type_key(code), values }
        }
        (SearchParamType::String, m @ (None | Some("exact") | Some("contains"))) => {
            let mode = match m {
                Some("exact") => StringMode::Exact,
                Some("contains") => StringMode::Contains,
                _ => StringMode::StartsWith,
            };
            let values = if mode == StringMode::Exact {
                alternatives.iter().map(|a| unescape(a)).collect()
            } else {
                normalized()
            };
            Clause::String { param: code.into(), mode, values }
        }
        (SearchParamType::Date, None) => {
            let values = alternatives.iter().map(|a| parse_date(code, a)).collect::<Result<Vec<_>, _>>()?;
            if code == "_lastUpdated" {
                Clause::LastUpdated(values)
            } else {
                Clause::Date { param: code.into(), values }
            }
        }
        (SearchParamType::Reference, m) => {
            if let Some(t) = m
                && !definitions::is_resource_type(t)
            {
                return Err(unsupported(t));
            }
            let values = alternatives
                .iter()
                .map(|a| parse_reference(code, &unescape(a), m, &def.targets, ctx.base))
                .collect::<Result<Vec<_>, _>>()?;
            Clause::Reference { param: code.into(), values }
        }
        (SearchParamType::Number, None) => {
            let values = alternatives.iter().map(|a| parse_number(code, a)).collect::<Result<Vec<_>, _>>()?;
            Clause::Number { param: code.into(), values }
        }
        (SearchParamType::Quantity, None) => {
            let values = alternatives.iter().map(|a| parse_quantity(code, a)).collect::<Result<Vec<_>, _>>()?;
            Clause::Quantity { param: code.into(), values }
        }
        (SearchParamType::Uri, m @ (None | Some("below") | Some("above"))) => {
            let mode = match m {
                Some("below") => UriMode::Below,
                Some("above") => UriMode::Above,
                _ => UriMode::Exact,
            };
            Clause::Uri { param: code.into(), mode, values: alternatives.iter().map(|a| unescape(a)).collect() }
        }
        (SearchParamType::Composite, None) => parse_composite(resource_type, code, def, alternatives, ctx)?,
        (
            SearchParamType::Token
            | SearchParamType::String
            | SearchParamType::Date
            | SearchParamType::Number
            | SearchParamType::Quantity
            | SearchParamType::Uri
            | SearchParamType::Composite,
            Some(m),
        ) => return Err(unsupported(m)),
        _ => return Err(SearchError::UnsupportedParameter { param: code.into() }),
    })
}

/// Whether a composite parameter can be indexed and searched: two components, the first a
/// token (every R4 composite but the three-part MolecularSequence coordinates and
/// DocumentReference's `relationship`, whose R4 definition is inconsistent).
pub fn is_supported_composite(def: &definitions::SearchParamDef) -> bool {
    def.kind == SearchParamType::Composite
        && def.components.len() == 2
        && def.components[0].kind == SearchParamType::Token
        && def.components[1].kind != SearchParamType::Composite
}

/// `code$value` alternatives of a composite: the second component's match against the rows
/// stored under the first component's coding (see [`composite_key`]).
fn parse_composite(
    resource_type: &str,
    code: &str,
    def: &definitions::SearchParamDef,
    alternatives: &[String],
    ctx: &Ctx<'_>,
) -> Result<Clause, SearchError> {
    if !is_supported_composite(def) {
        return Err(SearchError::UnsupportedParameter { param: code.into() });
    }
    let second = &def.components[1];
    let second_def = definitions::search_param(resource_type, &second.code)
        .ok_or_else(|| SearchError::UnsupportedParameter { param: code.into() })?;
    let mut any = Vec::new();
    for a in alternatives {
        let parts = split_escaped(a, '$');
        let [first, rest] = parts.as_slice() else {
            return Err(SearchError::InvalidValue {
                param: code.into(),
                reason: "a composite value is token$value, with '$' in a value escaped as '\\$'".into(),
            });
        };
        let key = match parse_token(code, first)? {
            TokenValue { system: SystemMatch::Any, code: Some(c) } => composite_key(code, &c, None),
            TokenValue { system: SystemMatch::NoSystem, code: Some(c) } => composite_key(code, &c, Some("")),
            TokenValue { system: SystemMatch::Is(s), code: Some(c) } => composite_key(code, &c, Some(&s)),
            TokenValue { code: None, .. } => {
                return Err(SearchError::InvalidValue {
                    param: code.into(),
                    reason: "the first part of a composite value needs a code".into(),
                });
            }
        };
        if rest.is_empty() {
            return Err(SearchError::InvalidValue { param: code.into(), reason: "empty value".into() });
        }
        let inner = parse_values(resource_type, &second.code, second_def, None, std::slice::from_ref(rest), ctx)?;
        any.push(inner.with_param(key));
    }
    Ok(Clause::Any(any))
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
    fn absolute_references_on_the_base_are_relative() {
        let base = "https://h.example/fhir";
        let q = SearchQuery::parse_on_base(
            "Observation",
            &pairs("subject=https://h.example/fhir/Patient/p1,https://other.example/fhir/Patient/p1"),
            DEFAULT_MAX_CHAIN_DEPTH,
            Some(base),
        )
        .unwrap();
        let Clause::Reference { values, .. } = &q.clauses[0] else { panic!() };
        assert_eq!(values[0], ReferenceValue::Typed { resource_type: "Patient".into(), id: "p1".into() });
        assert_eq!(values[1], ReferenceValue::Url("https://other.example/fhir/Patient/p1".into()));
        // a base that is only a prefix of the host is not the base
        let q = SearchQuery::parse_on_base(
            "Observation",
            &pairs("subject=https://h.example/fhirx/Patient/p1"),
            DEFAULT_MAX_CHAIN_DEPTH,
            Some(base),
        )
        .unwrap();
        let Clause::Reference { values, .. } = &q.clauses[0] else { panic!() };
        assert!(matches!(values[0], ReferenceValue::Url(_)));
    }

    #[test]
    fn composite_values_need_both_parts() {
        for bad in ["8480-6", "8480-6$", "$gt1", "a$b$c", "http://loinc.org|$gt1"] {
            assert!(
                SearchQuery::parse("Observation", &[("component-code-value-quantity".into(), bad.into())]).is_err(),
                "{bad}"
            );
        }
        let q = SearchQuery::parse("Observation", &[("code-value-quantity".into(), "|x$5".into())]).unwrap();
        let Clause::Any(alts) = &q.clauses[0] else { panic!() };
        let Clause::Quantity { param, .. } = &alts[0] else { panic!() };
        assert_eq!(param, "code-value-quantity$x|", "no system: the empty-system key");
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
