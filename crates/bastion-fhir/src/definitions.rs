//! The R4 definitions Bastion works from, generated from the specification data by
//! `gen/generate.mjs` and embedded in the binary (`data/*.json`): resource and datatype
//! element tables, every SearchParameter, and the Patient CompartmentDefinition.
//!
//! The tables are parsed once, on first use. This module only answers questions about the
//! definitions; checking a resource against them is [`crate::validate`]'s job.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde::Deserialize;

/// `SearchParameter.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SearchParamType {
    Number,
    Date,
    String,
    Token,
    Reference,
    Composite,
    Quantity,
    Uri,
    Special,
}

impl SearchParamType {
    fn parse(s: &str) -> SearchParamType {
        match s {
            "number" => SearchParamType::Number,
            "date" => SearchParamType::Date,
            "string" => SearchParamType::String,
            "token" => SearchParamType::Token,
            "reference" => SearchParamType::Reference,
            "composite" => SearchParamType::Composite,
            "quantity" => SearchParamType::Quantity,
            "uri" => SearchParamType::Uri,
            _ => SearchParamType::Special,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompositeComponent {
    pub code: Option<String>,
    pub expression: String,
}

/// One R4 SearchParameter.
#[derive(Debug, Clone)]
pub struct SearchParamDef {
    pub code: String,
    pub url: String,
    pub kind: SearchParamType,
    /// The FHIRPath expression as the spec gives it (possibly shared by several bases).
    pub expression: Option<String>,
    pub base: Vec<String>,
    pub targets: Vec<String>,
    pub modifiers: Vec<String>,
    pub comparators: Vec<String>,
    pub components: Vec<CompositeComponent>,
}

/// One child element of a type or backbone element.
#[derive(Debug, Clone)]
pub struct ElementDef {
    pub name: String,
    pub min: u32,
    /// `None` for `*`.
    pub max: Option<u32>,
    /// Type codes; several for a choice element (`value[x]`).
    pub types: Vec<String>,
    /// Path of the backbone element (inline, or by `contentReference`) describing the
    /// children of this element, within the same [`TypeDef`].
    pub backbone: Option<String>,
    pub choice: bool,
}

impl ElementDef {
    pub fn is_repeating(&self) -> bool {
        self.max != Some(1) && self.max != Some(0)
    }
}

/// The children of one path (the type itself or one of its backbone elements).
#[derive(Debug, Clone, Default)]
pub struct ElementTable {
    pub elements: Vec<ElementDef>,
    by_name: HashMap<String, usize>,
    /// `valueQuantity` -> (index of `value[x]`, `Quantity`).
    by_choice_name: HashMap<String, (usize, String)>,
}

impl ElementTable {
    /// Looks up a JSON property name: a plain element, or a choice element with its type.
    pub fn lookup(&self, json_name: &str) -> Option<(&ElementDef, Option<&str>)> {
        if let Some(&i) = self.by_name.get(json_name)
            && !self.elements[i].choice
        {
            return Some((&self.elements[i], None));
        }
        self.by_choice_name.get(json_name).map(|(i, t)| (&self.elements[*i], Some(t.as_str())))
    }
}

/// A resource type or datatype.
#[derive(Debug, Clone)]
pub struct TypeDef {
    pub name: String,
    /// `resource`, `complex-type`, `primitive-type` or `logical`.
    pub kind: String,
    pub is_abstract: bool,
    pub tables: HashMap<String, ElementTable>,
}

impl TypeDef {
    /// The children of `path` (the type name itself for the top level).
    pub fn table(&self, path: &str) -> Option<&ElementTable> {
        self.tables.get(path)
    }

    pub fn is_primitive(&self) -> bool {
        self.kind == "primitive-type"
    }
}

#[derive(Deserialize)]
struct RawTypes {
    #[serde(rename = "resourceTypes")]
    resource_types: Vec<String>,
    types: HashMap<String, RawType>,
}

#[derive(Deserialize)]
struct RawType {
    kind: String,
    #[serde(rename = "abstract")]
    is_abstract: bool,
    paths: HashMap<String, HashMap<String, (u32, i64, Vec<String>, Option<String>, u8)>>,
}

#[derive(Deserialize)]
struct RawSearchParam {
    code: String,
    url: String,
    base: Vec<String>,
    #[serde(rename = "type")]
    kind: String,
    expression: Option<String>,
    target: Vec<String>,
    modifier: Vec<String>,
    comparator: Vec<String>,
    component: Vec<RawComponent>,
}

#[derive(Deserialize)]
struct RawComponent {
    code: Option<String>,
    expression: String,
}

/// Capitalises a type code as it appears in a choice element name (`dateTime` -> `DateTime`).
pub fn choice_suffix(type_code: &str) -> String {
    let mut c = type_code.chars();
    match c.next() {
        Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
        None => String::new(),
    }
}

struct Definitions {
    resource_types: Vec<String>,
    types: HashMap<String, TypeDef>,
    /// (resource type or "Resource"/"DomainResource", code) -> parameter
    search_params: Vec<SearchParamDef>,
    search_index: HashMap<String, HashMap<String, usize>>,
    patient_compartment: HashMap<String, Vec<String>>,
}

fn build_table(children: HashMap<String, (u32, i64, Vec<String>, Option<String>, u8)>) -> ElementTable {
    let mut t = ElementTable::default();
    let mut names: Vec<_> = children.into_iter().collect();
    names.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, (min, max, types, backbone, choice)) in names {
        let i = t.elements.len();
        if choice == 1 {
            for ty in &types {
                t.by_choice_name.insert(format!("{name}{}", choice_suffix(ty)), (i, ty.clone()));
            }
        }
        t.by_name.insert(name.clone(), i);
        t.elements.push(ElementDef { name, min, max: u32::try_from(max).ok(), types, backbone, choice: choice == 1 });
    }
    t
}

fn load() -> Definitions {
    let raw: RawTypes = serde_json::from_str(include_str!("../data/types.json")).expect("embedded types.json");
    let types = raw
        .types
        .into_iter()
        .map(|(name, t)| {
            let tables = t.paths.into_iter().map(|(p, c)| (p, build_table(c))).collect();
            (name.clone(), TypeDef { name, kind: t.kind, is_abstract: t.is_abstract, tables })
        })
        .collect();
    let raw_sp: Vec<RawSearchParam> =
        serde_json::from_str(include_str!("../data/search-parameters.json")).expect("embedded search-parameters.json");
    let mut search_params = Vec::with_capacity(raw_sp.len());
    let mut search_index: HashMap<String, HashMap<String, usize>> = HashMap::new();
    for sp in raw_sp {
        let i = search_params.len();
        for b in &sp.base {
            search_index.entry(b.clone()).or_default().insert(sp.code.clone(), i);
        }
        search_params.push(SearchParamDef {
            code: sp.code,
            url: sp.url,
            kind: SearchParamType::parse(&sp.kind),
            expression: sp.expression,
            base: sp.base,
            targets: sp.target,
            modifiers: sp.modifier,
            comparators: sp.comparator,
            components: sp
                .component
                .into_iter()
                .map(|c| CompositeComponent { code: c.code, expression: c.expression })
                .collect(),
        });
    }
    let mut patient_compartment: HashMap<String, Vec<String>> =
        serde_json::from_str(include_str!("../data/compartment-patient.json")).expect("embedded compartment");
    // A Patient is in its own compartment ("{def}" in CompartmentDefinition terms).
    patient_compartment.entry("Patient".into()).or_default().insert(0, "{def}".into());
    Definitions { resource_types: raw.resource_types, types, search_params, search_index, patient_compartment }
}

fn defs() -> &'static Definitions {
    static DEFS: OnceLock<Definitions> = OnceLock::new();
    DEFS.get_or_init(load)
}

/// Is `name` a concrete R4 resource type?
pub fn is_resource_type(name: &str) -> bool {
    defs().resource_types.binary_search_by(|t| t.as_str().cmp(name)).is_ok()
}

/// Every concrete R4 resource type, sorted.
pub fn resource_types() -> &'static [String] {
    &defs().resource_types
}

/// A resource type or datatype by name.
pub fn type_definition(type_name: &str) -> Option<&'static TypeDef> {
    defs().types.get(type_name)
}

/// Every search parameter that applies to `resource_type`, the common ones
/// (`_id`, `_lastUpdated`, ...) included.
pub fn search_params(resource_type: &str) -> Vec<&'static SearchParamDef> {
    let d = defs();
    let mut out: Vec<&SearchParamDef> = ["Resource", "DomainResource", resource_type]
        .iter()
        .filter_map(|b| d.search_index.get(*b))
        .flat_map(|m| m.values().map(|&i| &d.search_params[i]))
        .collect();
    if !is_resource_type(resource_type) {
        out.clear();
    }
    out.sort_by(|a, b| a.code.cmp(&b.code));
    out.dedup_by(|a, b| a.code == b.code);
    out
}

/// One search parameter of `resource_type` by code.
pub fn search_param(resource_type: &str, code: &str) -> Option<&'static SearchParamDef> {
    if !is_resource_type(resource_type) {
        return None;
    }
    let d = defs();
    [resource_type, "DomainResource", "Resource"]
        .iter()
        .find_map(|b| d.search_index.get(*b).and_then(|m| m.get(code)))
        .map(|&i| &d.search_params[i])
}

/// The search parameters that put a `resource_type` resource into a patient's compartment
/// (`{def}` for Patient itself). Empty: never in a patient compartment.
pub fn patient_compartment_params(resource_type: &str) -> &'static [String] {
    defs().patient_compartment.get(resource_type).map(Vec::as_slice).unwrap_or(&[])
}

/// Where the definitions came from.
pub fn definitions_source() -> &'static str {
    include_str!("../data/source.txt").trim()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_resource_type_has_a_definition_with_a_top_level_table() {
        assert!(resource_types().len() >= 140);
        for t in resource_types() {
            let def = type_definition(t).unwrap_or_else(|| panic!("{t}"));
            assert!(def.table(t).is_some(), "{t}");
        }
        assert!(is_resource_type("Patient"));
        assert!(!is_resource_type("DomainResource"), "abstract types are not resource types");
        assert!(!is_resource_type("HumanName"));
    }

    #[test]
    fn observation_search_parameters() {
        let codes: Vec<&str> = search_params("Observation").iter().map(|p| p.code.as_str()).collect();
        for c in ["code", "patient", "subject", "date", "_id", "_lastUpdated", "_tag", "_security"] {
            assert!(codes.contains(&c), "{c}");
        }
        assert_eq!(search_param("Observation", "code").unwrap().kind, SearchParamType::Token);
        assert!(search_param("Observation", "nonsense").is_none());
        let combo = search_param("Observation", "code-value-quantity").unwrap();
        assert_eq!(combo.kind, SearchParamType::Composite);
        assert_eq!(combo.components[0].code.as_deref(), Some("code"));
    }

    #[test]
    fn patient_compartment_membership() {
        let obs = patient_compartment_params("Observation");
        assert!(obs.contains(&"subject".to_string()) && obs.contains(&"performer".to_string()));
        assert!(!obs.contains(&"focus".to_string()));
        assert!(patient_compartment_params("Organization").is_empty());
        assert_eq!(patient_compartment_params("Patient")[0], "{def}");
    }

    #[test]
    fn choice_and_content_reference_lookups() {
        let obs = type_definition("Observation").unwrap().table("Observation").unwrap();
        let (el, ty) = obs.lookup("valueQuantity").unwrap();
        assert_eq!(el.name, "value");
        assert_eq!(ty, Some("Quantity"));
        assert!(obs.lookup("value").is_none(), "the bare choice name is not a JSON property");
        assert!(obs.lookup("valueHumanName").is_none());
        let q = type_definition("Questionnaire").unwrap();
        let (item, _) = q.table("Questionnaire.item").unwrap().lookup("item").unwrap();
        assert_eq!(item.backbone.as_deref(), Some("Questionnaire.item"));
    }

    #[test]
    fn loads_quickly() {
        let t = std::time::Instant::now();
        let _ = defs();
        eprintln!("definitions loaded in {:?} ({})", t.elapsed(), definitions_source());
    }
}
