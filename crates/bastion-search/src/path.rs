//! A deliberately small evaluator for the *simple* FHIRPath expressions of R4 search
//! parameters: dotted paths, `|` unions, `as T` / `.as(T)` / `.ofType(T)` on choice
//! elements, and `.where(resolve() is T)` on references.
//!
//! It is not a FHIRPath engine: an expression outside this subset is reported as
//! unsupported (`None`) so that the indexer skips the parameter rather than guessing.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Branch {
    /// The resource type the branch starts at (`Observation` in `Observation.code`).
    root: String,
    steps: Vec<String>,
    /// `as T` / `ofType(T)` on the last step: the element is `step + T`.
    choice_type: Option<String>,
    /// `where(resolve() is T)`: keep references to this type only.
    reference_type: Option<String>,
}

/// A parsed expression: one branch per `|` alternative.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimplePath {
    branches: Vec<Branch>,
}

fn split_top_level(expr: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut in_str = false;
    let mut start = 0;
    for (i, c) in expr.char_indices() {
        match c {
            '\'' => in_str = !in_str,
            '(' if !in_str => depth += 1,
            ')' if !in_str => depth -= 1,
            c if c == sep && depth == 0 && !in_str => {
                parts.push(&expr[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&expr[start..]);
    parts
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_branch(raw: &str) -> Option<Branch> {
    let mut s = raw.trim();
    let mut choice_type = None;
    // `(Observation.value as Quantity)`
    if s.starts_with('(') && s.ends_with(')') {
        let inner = s[1..s.len() - 1].trim();
        match inner.split_once(" as ") {
            Some((path, ty)) => {
                choice_type = Some(ty.trim().to_string());
                s = path.trim();
            }
            None => s = inner,
        }
    }
    let mut reference_type = None;
    if let Some(stripped) = s.strip_suffix(')') {
        if let Some(idx) = stripped.rfind(".where(resolve() is ") {
            reference_type = Some(stripped[idx + ".where(resolve() is ".len()..].trim().to_string());
            s = &s[..idx];
        } else if let Some(idx) = stripped.rfind(".as(") {
            choice_type = Some(stripped[idx + 4..].trim().to_string());
            s = &s[..idx];
        } else if let Some(idx) = stripped.rfind(".ofType(") {
            choice_type = Some(stripped[idx + 8..].trim().to_string());
            s = &s[..idx];
        } else {
            return None;
        }
    }
    let mut parts = s.split('.');
    let root = parts.next()?.to_string();
    let steps: Vec<String> = parts.map(str::to_string).collect();
    if !is_identifier(&root)
        || steps.is_empty()
        || !steps.iter().all(|p| is_identifier(p))
        || choice_type.as_deref().is_some_and(|t| !is_identifier(t))
        || reference_type.as_deref().is_some_and(|t| !is_identifier(t))
    {
        return None;
    }
    Some(Branch { root, steps, choice_type, reference_type })
}

impl SimplePath {
    /// Parses an expression, keeping the branches inside the supported subset; `None` when
    /// no branch is. (An expression shared by many resource types may have a branch this
    /// evaluator cannot read; the others still index.)
    pub fn parse(expr: &str) -> Option<SimplePath> {
        let branches: Vec<Branch> = split_top_level(expr, '|').into_iter().filter_map(parse_branch).collect();
        (!branches.is_empty()).then_some(SimplePath { branches })
    }

    /// Evaluates the branches that apply to `resource`'s type.
    pub fn select<'a>(&self, resource: &'a Value) -> Vec<&'a Value> {
        let rtype = resource.get("resourceType").and_then(Value::as_str).unwrap_or("");
        let mut out = Vec::new();
        for b in &self.branches {
            if b.root != rtype && b.root != "Resource" && b.root != "DomainResource" {
                continue;
            }
            let mut current: Vec<&Value> = vec![resource];
            for (i, step) in b.steps.iter().enumerate() {
                let last = i + 1 == b.steps.len();
                let key = match (&b.choice_type, last) {
                    (Some(t), true) => {
                        let mut k = step.clone();
                        let mut cs = t.chars();
                        if let Some(f) = cs.next() {
                            k.push(f.to_ascii_uppercase());
                            k.push_str(cs.as_str());
                        }
                        k
                    }
                    _ => step.clone(),
                };
                let mut next = Vec::new();
                for v in current {
                    match v.get(&key) {
                        Some(Value::Array(items)) => next.extend(items.iter()),
                        Some(other) => next.push(other),
                        // A choice element named without its type (`probability` for
                        // `probabilityDecimal`): any one variant present.
                        None if b.choice_type.is_none() || !last => {
                            if let Some(o) = v.as_object() {
                                for (k, child) in o {
                                    let is_variant = k.len() > key.len()
                                        && k.starts_with(key.as_str())
                                        && k[key.len()..].starts_with(|c: char| c.is_ascii_uppercase());
                                    if is_variant {
                                        match child {
                                            Value::Array(items) => next.extend(items.iter()),
                                            other => next.push(other),
                                        }
                                    }
                                }
                            }
                        }
                        None => {}
                    }
                }
                current = next;
            }
            if let Some(t) = &b.reference_type {
                let prefix = format!("{t}/");
                current.retain(|v| {
                    v.get("reference")
                        .and_then(Value::as_str)
                        .is_some_and(|r| r.starts_with(&prefix) || r.contains(&format!("/{prefix}")))
                });
            }
            out.extend(current);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dotted_paths_and_unions_select_by_resource_type() {
        let p = SimplePath::parse("Patient.name.family | Practitioner.name.family").unwrap();
        let pat = json!({"resourceType":"Patient","name":[{"family":"A"},{"family":"B"}]});
        assert_eq!(p.select(&pat), vec![&json!("A"), &json!("B")]);
        let org = json!({"resourceType":"Organization","name":"x"});
        assert!(p.select(&org).is_empty());
    }

    #[test]
    fn choice_types_and_resolve_filters() {
        let p = SimplePath::parse("(Observation.value as Quantity)").unwrap();
        let obs = json!({"resourceType":"Observation","valueQuantity":{"value":1}});
        assert_eq!(p.select(&obs).len(), 1);
        let p = SimplePath::parse("Observation.subject.where(resolve() is Patient)").unwrap();
        let obs = json!({"resourceType":"Observation","subject":{"reference":"Patient/1"}});
        assert_eq!(p.select(&obs).len(), 1);
        let obs = json!({"resourceType":"Observation","subject":{"reference":"Group/1"}});
        assert!(p.select(&obs).is_empty());
    }

    #[test]
    fn parenthesised_of_type_and_partly_supported_unions() {
        let p = SimplePath::parse(
            "(DeviceRequest.code.ofType(CodeableConcept)) | Observation.code | Patient.name.where(use='x')",
        )
        .unwrap();
        let dr = json!({"resourceType":"DeviceRequest","codeCodeableConcept":{"text":"a"}});
        assert_eq!(p.select(&dr).len(), 1);
        let obs = json!({"resourceType":"Observation","code":{"text":"b"}});
        assert_eq!(p.select(&obs).len(), 1);
    }

    #[test]
    fn rejects_expressions_outside_the_subset() {
        assert!(SimplePath::parse("Patient.name.where(use='official')").is_none());
        assert!(SimplePath::parse("Bundle.entry[0].resource").is_none());
        assert!(SimplePath::parse("Patient.name.where(use='official') | Bundle.entry[0]").is_none());
        assert!(SimplePath::parse("Patient").is_none());
    }
}
