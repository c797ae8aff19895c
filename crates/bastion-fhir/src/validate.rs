//! Structural validation of a FHIR R4 JSON resource, driven by the generated tables in
//! [`crate::definitions`]:
//!
//! - `resourceType` present, a string, a concrete R4 resource type;
//! - every property a known element of its type (choice variants only for the types the
//!   choice admits, one variant at a time); `null`, `{}`, `[]` and `""` rejected as FHIR JSON
//!   requires;
//! - cardinality: arrays exactly where an element repeats, required elements present;
//! - primitive values: the JSON type and the spec's format for each primitive type, with real
//!   calendar dates and times (no `2023-02-30`, no month 13, no hour 24);
//! - primitive extension parts (`_given` aligned with `given`, `_birthDate`) as `Element`s;
//! - extensions: a `url`, and a `value[x]` or nested extensions, not both;
//! - resources inside resources (`contained`, `Bundle.entry.resource`,
//!   `Parameters.parameter.resource`) by their own `resourceType`;
//! - nesting depth, without recursion: the walk uses an explicit work stack, so a
//!   pathologically deep value cannot overflow the stack.
//!
//! What it does not do: FHIRPath invariants (other than the extension rule above),
//! terminology bindings, profiles (`meta.profile` is not looked at), reference resolution,
//! and the narrative's XHTML content (only "a string starting with `<div`" here; a dedicated
//! validator does the rest). It never modifies the value: what passes is stored as parsed,
//! decimals included (`1.50` stays `1.50`).
//!
//! Diagnostics are written for API clients: they name the element (in `expression`, e.g.
//! `Patient.name[0].given[1]`) and the rule, and never echo the offending value (it may be
//! personal data, and error texts end up in logs).

use std::rc::Rc;

use serde_json::{Map, Value};

use crate::definitions::{self, Child, ElementTable, TypeDef};
use crate::{Issue, IssueType};

/// Limits on what a resource body may be.
#[derive(Debug, Clone, Copy)]
pub struct ValidationLimits {
    /// Deepest nesting of JSON objects and arrays accepted (the resource itself is level 1).
    pub max_depth: usize,
}

impl Default for ValidationLimits {
    fn default() -> Self {
        ValidationLimits { max_depth: 64 }
    }
}

/// More issues than this are not worth reporting: the client has enough to fix.
pub const MAX_ISSUES: usize = 100;

/// `string`s SHALL NOT exceed 1 MiB (1024 * 1024 characters).
const MAX_STRING_CHARS: usize = 1024 * 1024;

/// Validates a whole resource. Every issue names its element in `expression`.
pub fn validate_resource(resource: &Value, limits: &ValidationLimits) -> Result<(), Vec<Issue>> {
    let mut v = Validator { issues: Vec::new(), max_depth: limits.max_depth, too_deep: false, stack: Vec::new() };
    v.stack.push(Task::Resource { value: resource, loc: None, expected: None, depth: 1 });
    while let Some(task) = v.stack.pop() {
        if v.issues.len() >= MAX_ISSUES {
            break;
        }
        match task {
            Task::Resource { value, loc, expected, depth } => v.resource(value, loc, expected, depth),
            Task::Object(o) => v.object(o),
        }
    }
    if v.issues.is_empty() { Ok(()) } else { Err(v.issues) }
}

// ---------------------------------------------------------------------------------------------
// Locations: a linked list of segments, rendered only when an issue needs one.

enum Seg<'v> {
    Name(&'v str),
    Index(usize),
}

struct Loc<'v> {
    parent: Option<Rc<Loc<'v>>>,
    seg: Seg<'v>,
}

type LocRef<'v> = Rc<Loc<'v>>;

impl Drop for Loc<'_> {
    // Unlinks the chain iteratively: dropping the location of a deeply nested value must not
    // recurse once per level.
    fn drop(&mut self) {
        let mut parent = self.parent.take();
        while let Some(rc) = parent {
            match Rc::try_unwrap(rc) {
                Ok(mut loc) => parent = loc.parent.take(),
                Err(_) => break,
            }
        }
    }
}

fn root(name: &str) -> LocRef<'_> {
    Rc::new(Loc { parent: None, seg: Seg::Name(name) })
}

fn field<'v>(parent: &LocRef<'v>, name: &'v str) -> LocRef<'v> {
    Rc::new(Loc { parent: Some(parent.clone()), seg: Seg::Name(name) })
}

fn index<'v>(parent: &LocRef<'v>, i: usize) -> LocRef<'v> {
    Rc::new(Loc { parent: Some(parent.clone()), seg: Seg::Index(i) })
}

fn render(loc: &Loc<'_>) -> String {
    let mut segs = Vec::new();
    let mut cur = Some(loc);
    while let Some(l) = cur {
        segs.push(&l.seg);
        cur = l.parent.as_deref();
    }
    let mut out = String::new();
    for seg in segs.into_iter().rev() {
        match seg {
            Seg::Name(n) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(n);
            }
            Seg::Index(i) => {
                out.push('[');
                out.push_str(&i.to_string());
                out.push(']');
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------

struct ObjectTask<'v> {
    obj: &'v Map<String, Value>,
    def: &'static TypeDef,
    /// The table of `def` describing this object (the root one for a datatype or resource).
    table: &'static ElementTable,
    loc: LocRef<'v>,
    depth: usize,
    /// The object is a resource: `resourceType` is expected in it.
    resource_root: bool,
    /// A primitive's `_name` part standing without a value: it must carry an extension.
    needs_extension: bool,
}

enum Task<'v> {
    /// A value that must be a resource; `loc` is `None` at the top level.
    Resource {
        value: &'v Value,
        loc: Option<LocRef<'v>>,
        expected: Option<&'static str>,
        depth: usize,
    },
    Object(ObjectTask<'v>),
}

struct Validator<'v> {
    issues: Vec<Issue>,
    max_depth: usize,
    too_deep: bool,
    stack: Vec<Task<'v>>,
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A client-chosen name, cut short for a diagnostic (it is in `expression` anyway).
fn short(name: &str) -> String {
    if name.chars().count() <= 64 { name.to_string() } else { name.chars().take(64).collect::<String>() + "…" }
}

fn is_primitive_code(code: &str) -> bool {
    definitions::is_primitive_type(code)
}

/// Does `child` carry a primitive that may have a `_name` extension part?
fn takes_extension_part(child: &Child<'_>) -> bool {
    !child.element.is_xml_attribute && child.type_code.is_some_and(|t| t != "xhtml" && is_primitive_code(t))
}

impl<'v> Validator<'v> {
    fn issue(&mut self, code: IssueType, loc: &Loc<'_>, msg: impl Into<String>) {
        if self.issues.len() < MAX_ISSUES {
            self.issues.push(Issue::error(code, msg).at(render(loc)));
        }
    }

    fn issue_at(&mut self, code: IssueType, at: String, msg: impl Into<String>) {
        if self.issues.len() < MAX_ISSUES {
            self.issues.push(Issue::error(code, msg).at(at));
        }
    }

    /// `true` if a container at `depth` is within the limit; reports the first excess.
    fn depth_ok(&mut self, depth: usize, loc: &Loc<'_>) -> bool {
        if depth <= self.max_depth {
            return true;
        }
        if !self.too_deep {
            self.too_deep = true;
            let msg = format!("nesting too deep: more than {} levels of objects and arrays", self.max_depth);
            self.issue(IssueType::Structure, loc, msg);
        }
        false
    }

    fn resource(&mut self, value: &'v Value, loc: Option<LocRef<'v>>, expected: Option<&'static str>, depth: usize) {
        let rt_at =
            |loc: &Option<LocRef<'v>>| loc.as_ref().map_or("resourceType".to_string(), |l| render(l) + ".resourceType");
        let Some(obj) = value.as_object() else {
            let at = loc.as_ref().map_or("resourceType".to_string(), |l| render(l));
            self.issue_at(
                IssueType::Structure,
                at,
                format!("a resource must be a JSON object, not {}", json_kind(value)),
            );
            return;
        };
        let rt = match obj.get("resourceType") {
            Some(Value::String(s)) => s.as_str(),
            Some(other) => {
                let msg = format!("resourceType must be a string, not {}", json_kind(other));
                self.issue_at(IssueType::Invalid, rt_at(&loc), msg);
                return;
            }
            None => {
                self.issue_at(IssueType::Invalid, rt_at(&loc), "resourceType is missing");
                return;
            }
        };
        let def = definitions::is_resource_type(rt).then(|| definitions::type_definition(rt)).flatten();
        let Some(def) = def else {
            self.issue_at(IssueType::Invalid, rt_at(&loc), "resourceType is not an R4 resource type");
            return;
        };
        if let Some(want) = expected
            && want != rt
        {
            self.issue_at(IssueType::Invalid, rt_at(&loc), format!("this element holds a {want} resource"));
            return;
        }
        let loc = loc.unwrap_or_else(|| root(rt));
        if !self.depth_ok(depth, &loc) {
            return;
        }
        self.stack.push(Task::Object(ObjectTask {
            obj,
            def,
            table: def.root_table(),
            loc,
            depth,
            resource_root: true,
            needs_extension: false,
        }));
    }

    fn unknown_element(&mut self, t: &ObjectTask<'v>, key: &'v str) {
        let loc = field(&t.loc, key);
        // A choice element with a type it does not admit (`valueHumanName`), or without one.
        for c in &t.table.elements {
            if !c.choice {
                continue;
            }
            let name = key.strip_prefix('_').unwrap_or(key);
            if let Some(rest) = name.strip_prefix(c.name.as_str())
                && rest.chars().next().is_none_or(|ch| ch.is_ascii_uppercase())
            {
                let allowed: Vec<String> = c.types.iter().map(|t| definitions::choice_suffix(t)).collect();
                let msg = if rest.is_empty() {
                    format!("{} needs its type in the name: one of {}", c.spec_name(), allowed.join(", "))
                } else {
                    format!("type {rest} is not allowed for {}: it admits {}", c.spec_name(), allowed.join(", "))
                };
                self.issue(IssueType::Structure, &loc, msg);
                return;
            }
        }
        self.issue(IssueType::Structure, &loc, format!("unknown element '{}'", short(key)));
    }

    fn object(&mut self, t: ObjectTask<'v>) {
        if t.obj.is_empty() {
            self.issue(IssueType::Structure, &t.loc, "empty objects are not allowed in FHIR JSON");
            return;
        }
        let mark = self.stack.len();
        // (choice element path, chosen type): only one variant of a choice may be present.
        let mut choices: Vec<(&'static str, &'static str)> = Vec::new();
        for (key, value) in t.obj {
            if self.issues.len() >= MAX_ISSUES {
                return;
            }
            let key = key.as_str();
            if t.resource_root && key == "resourceType" {
                continue;
            }
            let (base, is_ext_part) = match key.strip_prefix('_') {
                Some(b) => (b, true),
                None => (key, false),
            };
            let Some(child) = t.table.child(base) else {
                self.unknown_element(&t, key);
                continue;
            };
            if child.element.choice {
                let ty = child.type_code.unwrap_or("");
                let path = child.element.path.as_str();
                if choices.iter().any(|(p, other)| *p == path && *other != ty) {
                    let msg = format!("only one of the {} variants may be present", child.element.spec_name());
                    self.issue(IssueType::Structure, &field(&t.loc, key), msg);
                    continue;
                }
                choices.push((path, ty));
            }
            if is_ext_part {
                self.extension_part(&t, key, base, child, value);
            } else {
                self.property(&t, key, child, value);
            }
        }
        self.required(&t);
        if t.def.name == "Extension" && t.table.path == "Extension" {
            // A `value...` property counts even when it is not a valid variant (that is
            // reported on its own).
            let has_value = t.obj.keys().any(|k| k.strip_prefix('_').unwrap_or(k).starts_with("value"));
            let has_children = t.obj.contains_key("extension");
            if has_value && has_children {
                let msg = "an extension has either a value[x] or nested extensions, not both";
                self.issue(IssueType::Invariant, &t.loc, msg);
            } else if !has_value && !has_children {
                self.issue(IssueType::Invariant, &t.loc, "an extension needs a value[x] or nested extensions");
            }
        }
        if t.needs_extension && !t.obj.contains_key("extension") {
            let msg = "a primitive element without a value must have an extension";
            self.issue(IssueType::Structure, &t.loc, msg);
        }
        // Children were pushed in document order: reverse them so they are popped that way.
        self.stack[mark..].reverse();
    }

    fn required(&mut self, t: &ObjectTask<'v>) {
        for c in &t.table.elements {
            if c.min == 0 {
                continue;
            }
            let present = if c.choice {
                t.obj.keys().any(|k| {
                    let k = k.strip_prefix('_').unwrap_or(k);
                    t.table.lookup(k).is_some_and(|(e, _)| std::ptr::eq(e, c))
                })
            } else {
                t.obj.contains_key(&c.name) || t.obj.contains_key(&format!("_{}", c.name))
            };
            if !present {
                let at = format!("{}.{}", render(&t.loc), c.spec_name());
                self.issue_at(IssueType::Required, at, format!("{} is required", c.spec_name()));
            }
        }
    }

    /// `key` (not `_key`) with its value.
    fn property(&mut self, t: &ObjectTask<'v>, key: &'v str, child: Child<'static>, value: &'v Value) {
        let el = child.element;
        let loc = field(&t.loc, key);
        if el.max == Some(0) {
            self.issue(IssueType::Structure, &loc, format!("{key} is not allowed here"));
            return;
        }
        match value {
            Value::Null => self.issue(IssueType::Structure, &loc, "null is not allowed here"),
            Value::Array(items) => {
                if !el.is_repeating() {
                    self.issue(IssueType::Structure, &loc, format!("{key} takes a single value, not an array"));
                    return;
                }
                if items.is_empty() {
                    self.issue(IssueType::Structure, &loc, "empty arrays are not allowed in FHIR JSON");
                    return;
                }
                if !self.depth_ok(t.depth + 1, &loc) {
                    return;
                }
                if let Some(max) = el.max
                    && items.len() > max as usize
                {
                    self.issue(IssueType::Structure, &loc, format!("{key} allows at most {max} entries"));
                }
                if items.len() < el.min as usize {
                    self.issue(IssueType::Required, &loc, format!("{key} needs at least {} entries", el.min));
                }
                let partner = t.obj.get(&format!("_{key}")).and_then(Value::as_array);
                let primitive = takes_extension_part(&child);
                for (i, item) in items.iter().enumerate() {
                    if item.is_null() {
                        // Allowed only where the aligned `_key` entry carries the element.
                        let covered = primitive && partner.and_then(|p| p.get(i)).is_some_and(Value::is_object);
                        if !covered {
                            let msg = if primitive {
                                format!("null in {key} needs an extension at the same position in _{key}")
                            } else {
                                "null is not allowed here".to_string()
                            };
                            self.issue(IssueType::Structure, &index(&loc, i), msg);
                        }
                        continue;
                    }
                    self.item(t, child, item, index(&loc, i), t.depth + 2);
                }
            }
            _ if el.is_repeating() => {
                self.issue(IssueType::Structure, &loc, format!("{key} repeats: its value must be an array"));
            }
            v => self.item(t, child, v, loc, t.depth + 1),
        }
    }

    /// One value of an element (an array entry, or the single value); `depth` is the depth
    /// the value has if it is an object.
    fn item(&mut self, t: &ObjectTask<'v>, child: Child<'static>, v: &'v Value, loc: LocRef<'v>, depth: usize) {
        let el = child.element;
        let Some(type_code) = child.type_code else {
            // A backbone element: children inline or by contentReference.
            match el.backbone.as_deref().and_then(|bb| t.def.table(bb)) {
                Some(table) => self.nested_object(v, t.def, table, loc, depth, "an object"),
                None => self.issue(IssueType::Structure, &loc, "this element's type is not supported"),
            }
            return;
        };
        if type_code == "Resource" || definitions::is_resource_type(type_code) {
            let expected = (type_code != "Resource").then_some(type_code);
            self.stack.push(Task::Resource { value: v, loc: Some(loc), expected, depth });
            return;
        }
        if is_primitive_code(type_code) {
            if let Err(msg) = check_primitive(type_code, v) {
                self.issue(IssueType::Value, &loc, msg);
            }
            return;
        }
        let type_name = if el.choice { type_code } else { el.profile.as_deref().unwrap_or(type_code) };
        match definitions::type_definition(type_name) {
            Some(def) => self.nested_object(v, def, def.root_table(), loc, depth, type_code),
            None => {
                // Not reachable with the generated tables; refuse rather than wave through.
                self.issue(IssueType::Structure, &loc, "this element's type is not supported");
            }
        }
    }

    fn nested_object(
        &mut self,
        v: &'v Value,
        def: &'static TypeDef,
        table: &'static ElementTable,
        loc: LocRef<'v>,
        depth: usize,
        what: &str,
    ) {
        let Some(obj) = v.as_object() else {
            self.issue(IssueType::Structure, &loc, format!("expected {what} (a JSON object), found {}", json_kind(v)));
            return;
        };
        if !self.depth_ok(depth, &loc) {
            return;
        }
        self.stack.push(Task::Object(ObjectTask {
            obj,
            def,
            table,
            loc,
            depth,
            resource_root: false,
            needs_extension: false,
        }));
    }

    /// `_key`: the id / extensions of the primitive `key`, an Element (or an array of them
    /// aligned with `key`'s array).
    fn extension_part(
        &mut self,
        t: &ObjectTask<'v>,
        key: &'v str,
        base: &str,
        child: Child<'static>,
        value: &'v Value,
    ) {
        let loc = field(&t.loc, key);
        if !takes_extension_part(&child) {
            self.issue(IssueType::Structure, &loc, format!("{key} is not allowed: {base} is not a primitive element"));
            return;
        }
        let Some(element_def) = definitions::type_definition("Element") else { return };
        let values = t.obj.get(base);
        match value {
            Value::Object(obj) => {
                if child.element.is_repeating() {
                    self.issue(IssueType::Structure, &loc, format!("{key} must be an array aligned with {base}"));
                    return;
                }
                let has_value = values.is_some_and(|v| !v.is_null());
                self.element_part(obj, element_def, loc, t.depth + 1, !has_value);
            }
            Value::Array(items) => {
                if !child.element.is_repeating() {
                    self.issue(IssueType::Structure, &loc, format!("{key} takes a single object, not an array"));
                    return;
                }
                if items.is_empty() {
                    self.issue(IssueType::Structure, &loc, "empty arrays are not allowed in FHIR JSON");
                    return;
                }
                if !self.depth_ok(t.depth + 1, &loc) {
                    return;
                }
                let values = values.and_then(Value::as_array);
                let aligned = values.is_none_or(|vals| vals.len() == items.len());
                if !aligned {
                    self.issue(IssueType::Structure, &loc, format!("{key} must have as many entries as {base}"));
                }
                for (i, item) in items.iter().enumerate() {
                    // Misaligned arrays are reported once above, not once per entry.
                    let has_value = !aligned || values.and_then(|v| v.get(i)).is_some_and(|v| !v.is_null());
                    match item {
                        Value::Null if has_value => {}
                        Value::Null => {
                            let msg = format!("null at the same position in both {base} and {key}");
                            self.issue(IssueType::Structure, &index(&loc, i), msg);
                        }
                        Value::Object(obj) => {
                            self.element_part(obj, element_def, index(&loc, i), t.depth + 2, !has_value)
                        }
                        other => {
                            let msg = format!("expected an object or null, found {}", json_kind(other));
                            self.issue(IssueType::Structure, &index(&loc, i), msg);
                        }
                    }
                }
            }
            Value::Null => self.issue(IssueType::Structure, &loc, "null is not allowed here"),
            other => {
                let msg = format!("expected an object (id and extension), found {}", json_kind(other));
                self.issue(IssueType::Structure, &loc, msg);
            }
        }
    }

    fn element_part(
        &mut self,
        obj: &'v Map<String, Value>,
        def: &'static TypeDef,
        loc: LocRef<'v>,
        depth: usize,
        needs_extension: bool,
    ) {
        if !self.depth_ok(depth, &loc) {
            return;
        }
        self.stack.push(Task::Object(ObjectTask {
            obj,
            def,
            table: def.root_table(),
            loc,
            depth,
            resource_root: false,
            needs_extension,
        }));
    }
}

// ---------------------------------------------------------------------------------------------
// Primitive formats (the regexes of the R4 datatypes page, plus real calendar dates).

fn digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

fn num(s: &str) -> u32 {
    s.parse().unwrap_or(u32::MAX)
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400) => 29,
        2 => 28,
        _ => 0,
    }
}

/// Four digits, not `0000`.
fn check_year(y: &str) -> bool {
    y.len() == 4 && digits(y) && y != "0000"
}

/// `YYYY`, `YYYY-MM` or `YYYY-MM-DD`, a real date.
fn check_date(s: &str) -> bool {
    let mut parts = s.split('-');
    let (Some(y), m, d, None) = (parts.next(), parts.next(), parts.next(), parts.next()) else { return false };
    if !check_year(y) {
        return false;
    }
    let Some(m) = m else { return true };
    if m.len() != 2 || !digits(m) || !(1..=12).contains(&num(m)) {
        return false;
    }
    let Some(d) = d else { return true };
    d.len() == 2 && digits(d) && (1..=days_in_month(num(y), num(m))).contains(&num(d))
}

/// `hh:mm:ss(.fraction)?`, hours 00-23, seconds up to 60 (a leap second).
fn check_time(s: &str) -> bool {
    let (main, frac) = match s.split_once('.') {
        Some((a, b)) => (a, Some(b)),
        None => (s, None),
    };
    if frac.is_some_and(|f| !digits(f)) {
        return false;
    }
    let mut p = main.split(':');
    let (Some(h), Some(m), Some(sec), None) = (p.next(), p.next(), p.next(), p.next()) else { return false };
    [h, m, sec].iter().all(|x| x.len() == 2 && digits(x)) && num(h) <= 23 && num(m) <= 59 && num(sec) <= 60
}

/// `Z`, or `+hh:mm` / `-hh:mm` from 00:00 to 14:00.
fn check_zone(z: &str) -> bool {
    if z == "Z" {
        return true;
    }
    let Some(rest) = z.strip_prefix('+').or_else(|| z.strip_prefix('-')) else { return false };
    let Some((h, m)) = rest.split_once(':') else { return false };
    h.len() == 2
        && m.len() == 2
        && digits(h)
        && digits(m)
        && num(m) <= 59
        && (num(h) <= 13 || (num(h) == 14 && m == "00"))
}

/// A partial `date`, or a full date with a time and a zone; `instant` requires the latter.
fn check_date_time(s: &str, instant: bool) -> bool {
    match s.split_once('T') {
        None => !instant && check_date(s),
        Some((date, rest)) => {
            if date.len() != 10 || !check_date(date) {
                return false;
            }
            let Some(i) = rest.find(['Z', '+', '-']) else { return false };
            check_time(&rest[..i]) && check_zone(&rest[i..])
        }
    }
}

/// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`
fn check_decimal_text(s: &str) -> bool {
    let s = s.strip_prefix('-').unwrap_or(s);
    let (mantissa, exp) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    if let Some(e) = exp
        && !digits(e.strip_prefix(['+', '-']).unwrap_or(e))
    {
        return false;
    }
    let (int, frac) = match mantissa.split_once('.') {
        Some((a, b)) => (a, Some(b)),
        None => (mantissa, None),
    };
    digits(int) && (int == "0" || !int.starts_with('0')) && frac.is_none_or(digits)
}

/// `-?([0]|([1-9][0-9]*))`
fn check_integer_text(s: &str) -> bool {
    let s = s.strip_prefix('-').unwrap_or(s);
    digits(s) && (s == "0" || !s.starts_with('0'))
}

/// `(\s*([0-9a-zA-Z\+/=]){4}\s*)+`
fn check_base64(s: &str) -> bool {
    let mut n = 0usize;
    for b in s.bytes() {
        match b {
            b' ' | b'\t' | b'\r' | b'\n' | 0x0b | 0x0c => {}
            b if b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=' => n += 1,
            _ => return false,
        }
    }
    n > 0 && n.is_multiple_of(4)
}

/// `[^\s]+(\s[^\s]+)*`: no leading, trailing or doubled whitespace.
fn check_code(s: &str) -> bool {
    !s.is_empty()
        && s.split(char::is_whitespace).all(|tok| !tok.is_empty())
        && !s.starts_with(char::is_whitespace)
        && !s.ends_with(char::is_whitespace)
}

/// Characters below U+0020 other than tab, CR and LF are not allowed in any string-based
/// primitive (R4 datatypes: "Strings SHOULD not contain Unicode character points below 32,
/// except for u0009, u000D and u000A"; Bastion holds to it).
fn has_forbidden_controls(s: &str) -> bool {
    s.chars().any(|c| (c as u32) < 0x20 && !matches!(c, '\t' | '\r' | '\n'))
}

fn is_uuid(r: &str) -> bool {
    r.len() == 36
        && r.bytes().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_digit() || (b'a'..=b'f').contains(&c),
        })
}

fn is_oid(r: &str) -> bool {
    let mut parts = r.split('.');
    let first = parts.next().unwrap_or("");
    let rest: Vec<&str> = parts.collect();
    matches!(first, "0" | "1" | "2")
        && !rest.is_empty()
        && rest.iter().all(|p| digits(p) && (*p == "0" || !p.starts_with('0')))
}

/// Checks one primitive value against its R4 type: the JSON type (string, number, boolean)
/// and the format. The error text says what was expected, without echoing the value.
pub fn check_primitive(code: &str, v: &Value) -> Result<(), String> {
    match code {
        "boolean" => match v {
            Value::Bool(_) => Ok(()),
            _ => Err(format!("expected true or false (a JSON boolean), found {}", json_kind(v))),
        },
        "integer" | "positiveInt" | "unsignedInt" => {
            let Value::Number(n) = v else {
                return Err(format!("expected a whole number (a JSON number), found {}", json_kind(v)));
            };
            let text = n.to_string();
            let i = check_integer_text(&text).then(|| text.parse::<i64>().ok()).flatten();
            let (min, what) = match code {
                "positiveInt" => (1, "a whole number from 1 to 2147483647"),
                "unsignedInt" => (0, "a whole number from 0 to 2147483647"),
                _ => (i64::from(i32::MIN), "a whole number from -2147483648 to 2147483647"),
            };
            match i {
                Some(i) if (min..=i64::from(i32::MAX)).contains(&i) => Ok(()),
                _ => Err(format!("expected {what} ({code})")),
            }
        }
        "decimal" => match v {
            // With arbitrary_precision the number keeps the client's text: check that text.
            Value::Number(n) if check_decimal_text(&n.to_string()) => Ok(()),
            Value::Number(_) => Err("not a valid decimal".to_string()),
            _ => Err(format!("expected a decimal (a JSON number), found {}", json_kind(v))),
        },
        _ => {
            let Value::String(s) = v else {
                return Err(format!("expected {code} (a JSON string), found {}", json_kind(v)));
            };
            if s.is_empty() {
                return Err("empty strings are not allowed in FHIR JSON".to_string());
            }
            if has_forbidden_controls(s) {
                return Err("control characters other than tab, CR and LF are not allowed".to_string());
            }
            let (ok, expected): (bool, &str) = match code {
                "string" | "markdown" => (
                    s.len() <= MAX_STRING_CHARS || s.chars().count() <= MAX_STRING_CHARS,
                    "at most 1 MiB of characters",
                ),
                "xhtml" => (s.trim_start().starts_with("<div"), "an XHTML <div> element"),
                "code" => (check_code(s), "a code: no leading, trailing or repeated whitespace"),
                "id" => (crate::primitives::is_valid_id(s), "an id: 1 to 64 of A-Z, a-z, 0-9, '-' and '.'"),
                "uri" | "url" | "canonical" => (!s.chars().any(char::is_whitespace), "a URI without whitespace"),
                "oid" => (s.strip_prefix("urn:oid:").is_some_and(is_oid), "an OID URI (urn:oid:1.2.3)"),
                "uuid" => (s.strip_prefix("urn:uuid:").is_some_and(is_uuid), "a lower-case UUID URI (urn:uuid:...)"),
                "base64Binary" => (check_base64(s), "base64 content"),
                "date" => (check_date(s), "a real calendar date: YYYY, YYYY-MM or YYYY-MM-DD"),
                "dateTime" => (
                    check_date_time(s, false),
                    "a real date and time: YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm:ss(.sss) with a zone",
                ),
                "instant" => (check_date_time(s, true), "an instant: YYYY-MM-DDThh:mm:ss(.sss) with a zone"),
                "time" => (check_time(s), "a time of day: hh:mm:ss(.sss), hours 00 to 23"),
                // Every R4 primitive is listed above; another name is a string-like type.
                _ => (true, ""),
            };
            if ok { Ok(()) } else { Err(format!("expected {expected} ({code})")) }
        }
    }
}
