//! A purpose-built FHIRPath evaluator for the expressions of the R4 SearchParameters
//! (`SearchParameter.expression`), over plain `serde_json::Value` resources.
//!
//! What it is for: deciding which elements of a resource a search parameter indexes.
//! It covers the subset of FHIRPath those expressions use: path navigation from the
//! resource type name (or `Resource` / `DomainResource`), arrays flattened; choice elements
//! (`Observation.value` finds `valueQuantity`, `valueString`, ...) and type filters on them
//! (`as T`, `.as(T)`, `.ofType(T)`, `is T`); `|` unions (duplicates removed); `where(...)`
//! with `resolve() is T`, `=` / `!=`, `and`, `or`; `exists()`, `empty()`, `first()`,
//! `last()`, `not()`, indexers `[n]`, `extension('url')`, `$this` and `%resource`.
//!
//! What it is not: a general FHIRPath engine. It has no model of FHIR types beyond what a
//! choice suffix (`valueQuantity` -> `Quantity`) or a `resourceType` says, no arithmetic,
//! no number, date or quantity literals, no ordering comparisons, and `resolve()` never
//! fetches anything: a reference resolves to a contained resource (`#id`) or to a stand-in
//! that only knows its target type (enough for `resolve() is Patient`), and stand-ins never
//! appear in results. Anything outside the subset is refused at parse time with
//! [`FhirPathError::Unsupported`] so that callers skip a parameter rather than guess.
//! Parsing is bounded (nesting depth [`MAX_DEPTH`]) and evaluation always terminates.

use serde_json::Value;
use thiserror::Error;

/// The deepest nesting of parentheses, function arguments and chained operators accepted.
pub const MAX_DEPTH: usize = 64;

/// Why an expression was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FhirPathError {
    /// Not FHIRPath: `at` is the byte offset in the expression.
    #[error("FHIRPath parse error at byte {at}: {reason}")]
    Parse { at: usize, reason: String },
    /// FHIRPath, but outside the subset this evaluator implements.
    #[error("unsupported FHIRPath: {0}")]
    Unsupported(String),
}

/// One item of a result collection.
#[derive(Debug, Clone, PartialEq)]
pub enum Item<'a> {
    /// An element of the resource, with its FHIR type when a choice suffix gave it
    /// (`valueQuantity` -> `Some("Quantity")`, `valueDateTime` -> `Some("dateTime")`).
    Node(&'a Value, Option<String>),
    /// A boolean computed by the expression (`exists()`, `=`, `and`, ...).
    Bool(bool),
    /// A string literal of the expression.
    Str(String),
}

impl Item<'_> {
    /// The item as JSON (the element itself for [`Item::Node`]).
    pub fn to_json(&self) -> Value {
        match self {
            Item::Node(v, _) => (*v).clone(),
            Item::Bool(b) => Value::Bool(*b),
            Item::Str(s) => Value::String(s.clone()),
        }
    }
}

/// A parsed expression.
#[derive(Debug, Clone)]
pub struct Expr {
    source: String,
    root: Node,
}

impl Expr {
    /// Parses `expr`; constructs outside the supported subset are [`FhirPathError::Unsupported`].
    pub fn parse(expr: &str) -> Result<Expr, FhirPathError> {
        let tokens = lex(expr)?;
        let mut p = Parser { tokens, pos: 0, end: expr.len() };
        let root = p.parse_expr(0)?;
        if let Some(t) = p.peek() {
            return Err(p.unexpected(t.clone()));
        }
        Ok(Expr { source: expr.to_string(), root })
    }

    /// The expression text as parsed.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates the expression with `resource` as its context (`%resource`).
    pub fn evaluate<'a>(&self, resource: &'a Value) -> Vec<Item<'a>> {
        let env = Env { root: resource };
        let focus = [V::Node(resource, None)];
        eval(&self.root, &focus, &env)
            .into_iter()
            .filter_map(|v| match v {
                V::Node(n, t) => Some(Item::Node(n, t)),
                V::Bool(b) => Some(Item::Bool(b)),
                V::Str(s) => Some(Item::Str(s)),
                V::Ref(_) => None,
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------
// Lexer

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    /// A plain identifier (keywords such as `and`, `is`, `true` included).
    Ident(String),
    /// A backtick-delimited identifier: never a keyword.
    Quoted(String),
    Str(String),
    Int(u64),
    Dot,
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    Pipe,
    Eq,
    Ne,
    /// `$this`, `$index`, `$total`.
    Special(String),
    /// `%resource`, `%context`, ...
    Env(String),
    /// An operator or literal outside the subset (`<`, `+`, `@2020`, `1.5`, `{`, ...).
    Other(String),
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    at: usize,
}

fn lex(src: &str) -> Result<Vec<Token>, FhirPathError> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let at = i;
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let simple = match c {
            b'.' => Some(Tok::Dot),
            b'(' => Some(Tok::LParen),
            b')' => Some(Tok::RParen),
            b'[' => Some(Tok::LBracket),
            b']' => Some(Tok::RBracket),
            b',' => Some(Tok::Comma),
            b'|' => Some(Tok::Pipe),
            b'=' => Some(Tok::Eq),
            _ => None,
        };
        if let Some(tok) = simple {
            out.push(Token { tok, at });
            i += 1;
            continue;
        }
        if c == b'!' && b.get(i + 1) == Some(&b'=') {
            out.push(Token { tok: Tok::Ne, at });
            i += 2;
            continue;
        }
        if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            out.push(Token { tok: Tok::Ident(src[start..i].to_string()), at });
            continue;
        }
        if c == b'$' || c == b'%' {
            let start = i + 1;
            i += 1;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'-') {
                i += 1;
            }
            if i == start {
                return Err(FhirPathError::Parse { at, reason: format!("'{}' without a name", c as char) });
            }
            let name = src[start..i].to_string();
            out.push(Token { tok: if c == b'$' { Tok::Special(name) } else { Tok::Env(name) }, at });
            continue;
        }
        if c.is_ascii_digit() {
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            if i + 1 < b.len() && b[i] == b'.' && b[i + 1].is_ascii_digit() {
                while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.') {
                    i += 1;
                }
                out.push(Token { tok: Tok::Other(src[start..i].to_string()), at });
                continue;
            }
            let n = src[start..i]
                .parse::<u64>()
                .map_err(|_| FhirPathError::Parse { at, reason: "integer literal out of range".into() })?;
            out.push(Token { tok: Tok::Int(n), at });
            continue;
        }
        if c == b'\'' || c == b'`' {
            let (text, next) = lex_quoted(src, i)?;
            out.push(Token { tok: if c == b'\'' { Tok::Str(text) } else { Tok::Quoted(text) }, at });
            i = next;
            continue;
        }
        // Everything else is an operator or literal outside the subset, or not FHIRPath.
        let ch = src[i..].chars().next().unwrap_or('?');
        let two = src.get(i..i + 2).unwrap_or("");
        let op = match two {
            "<=" | ">=" | "!~" | "//" | "/*" => two.to_string(),
            _ => ch.to_string(),
        };
        if matches!(op.as_str(), "<" | ">" | "<=" | ">=" | "~" | "!~" | "+" | "-" | "*" | "/" | "&" | "@" | "{" | "}") {
            i += op.len();
            out.push(Token { tok: Tok::Other(op), at });
            continue;
        }
        return Err(FhirPathError::Parse { at, reason: format!("unexpected character {ch:?}") });
    }
    Ok(out)
}

/// A `'...'` string or `` `...` `` identifier starting at `start`; returns it unescaped and
/// the offset after the closing quote.
fn lex_quoted(src: &str, start: usize) -> Result<(String, usize), FhirPathError> {
    let quote = src.as_bytes()[start] as char;
    let mut out = String::new();
    let mut chars = src[start + 1..].char_indices();
    while let Some((off, c)) = chars.next() {
        let at = start + 1 + off;
        if c == quote {
            return Ok((out, at + 1));
        }
        if c != '\\' {
            out.push(c);
            continue;
        }
        let Some((_, e)) = chars.next() else { break };
        match e {
            '\'' | '"' | '`' | '\\' | '/' => out.push(e),
            'f' => out.push('\u{c}'),
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            't' => out.push('\t'),
            'u' => {
                let hex: String = (0..4).filter_map(|_| chars.next().map(|(_, h)| h)).collect();
                let ch = u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32);
                match ch {
                    Some(ch) if hex.len() == 4 => out.push(ch),
                    _ => return Err(FhirPathError::Parse { at, reason: "bad \\u escape".into() }),
                }
            }
            _ => return Err(FhirPathError::Parse { at, reason: format!("unknown escape \\{e}") }),
        }
    }
    Err(FhirPathError::Parse { at: start, reason: format!("unterminated {quote}...{quote}") })
}

// ---------------------------------------------------------------------------------------
// Syntax tree

#[derive(Debug, Clone, PartialEq)]
enum Node {
    /// A term followed by member accesses, indexers and function calls.
    Chain {
        head: Term,
        steps: Vec<Step>,
    },
    Union(Vec<Node>),
    And(Vec<Node>),
    Or(Vec<Node>),
    Equal {
        left: Box<Node>,
        right: Box<Node>,
        negated: bool,
    },
    Is(Box<Node>, String),
    As(Box<Node>, String),
}

#[derive(Debug, Clone, PartialEq)]
enum Term {
    /// The input collection: a chain that starts with a name or function call.
    Focus,
    This,
    /// `%resource`, `%context`, `%rootResource`: the evaluated resource.
    Resource,
    Str(String),
    Bool(bool),
    Paren(Box<Node>),
}

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Member(String),
    Index(usize),
    Call(Func),
}

#[derive(Debug, Clone, PartialEq)]
enum Func {
    Where(Box<Node>),
    Exists(Option<Box<Node>>),
    Empty,
    First,
    Last,
    Not,
    Resolve,
    OfType(String),
    Is(String),
    Extension(Box<Node>),
}

// ---------------------------------------------------------------------------------------
// Parser (precedence climbing over FHIRPath's levels; only the supported ones build nodes)

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    end: usize,
}

const UNSUPPORTED_KEYWORDS: &[&str] = &["implies", "xor", "in", "contains", "div", "mod"];

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn peek_tok(&self) -> Option<&Tok> {
        self.peek().map(|t| &t.tok)
    }

    fn at(&self) -> usize {
        self.peek().map_or(self.end, |t| t.at)
    }

    fn bump(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).cloned();
        if t.is_some() {
            self.pos += 1;
        }
        t
    }

    fn is_keyword(&self, kw: &str) -> bool {
        matches!(self.peek_tok(), Some(Tok::Ident(s)) if s == kw)
    }

    fn expect(&mut self, want: Tok, what: &str) -> Result<(), FhirPathError> {
        match self.peek() {
            Some(t) if t.tok == want => {
                self.pos += 1;
                Ok(())
            }
            _ => Err(FhirPathError::Parse { at: self.at(), reason: format!("expected {what}") }),
        }
    }

    fn unexpected(&self, t: Token) -> FhirPathError {
        match &t.tok {
            Tok::Other(op) => FhirPathError::Unsupported(format!("operator or literal '{op}' at byte {}", t.at)),
            Tok::Ident(kw) if UNSUPPORTED_KEYWORDS.contains(&kw.as_str()) => {
                FhirPathError::Unsupported(format!("operator '{kw}' at byte {}", t.at))
            }
            other => FhirPathError::Parse { at: t.at, reason: format!("unexpected {other:?}") },
        }
    }

    fn check_depth(&self, depth: usize) -> Result<(), FhirPathError> {
        if depth > MAX_DEPTH {
            Err(FhirPathError::Parse { at: self.at(), reason: format!("nested deeper than {MAX_DEPTH}") })
        } else {
            Ok(())
        }
    }

    /// expression := or
    fn parse_expr(&mut self, depth: usize) -> Result<Node, FhirPathError> {
        self.check_depth(depth + 1)?;
        self.parse_or(depth + 1)
    }

    fn parse_or(&mut self, depth: usize) -> Result<Node, FhirPathError> {
        let mut parts = vec![self.parse_and(depth)?];
        while self.is_keyword("or") {
            self.bump();
            parts.push(self.parse_and(depth)?);
        }
        Ok(if parts.len() == 1 { parts.pop().expect("one part") } else { Node::Or(parts) })
    }

    fn parse_and(&mut self, depth: usize) -> Result<Node, FhirPathError> {
        let mut parts = vec![self.parse_equality(depth)?];
        while self.is_keyword("and") {
            self.bump();
            parts.push(self.parse_equality(depth)?);
        }
        Ok(if parts.len() == 1 { parts.pop().expect("one part") } else { Node::And(parts) })
    }

    fn parse_equality(&mut self, depth: usize) -> Result<Node, FhirPathError> {
        let mut left = self.parse_union(depth)?;
        let mut folds = 0;
        loop {
            let negated = match self.peek_tok() {
                Some(Tok::Eq) => false,
                Some(Tok::Ne) => true,
                _ => return Ok(left),
            };
            self.bump();
            folds += 1;
            self.check_depth(depth + folds)?;
            let right = self.parse_union(depth)?;
            left = Node::Equal { left: Box::new(left), right: Box::new(right), negated };
        }
    }

    fn parse_union(&mut self, depth: usize) -> Result<Node, FhirPathError> {
        let mut parts = vec![self.parse_type_op(depth)?];
        while matches!(self.peek_tok(), Some(Tok::Pipe)) {
            self.bump();
            parts.push(self.parse_type_op(depth)?);
        }
        Ok(if parts.len() == 1 { parts.pop().expect("one part") } else { Node::Union(parts) })
    }

    fn parse_type_op(&mut self, depth: usize) -> Result<Node, FhirPathError> {
        let mut left = self.parse_postfix(depth)?;
        let mut folds = 0;
        loop {
            let is = if self.is_keyword("is") {
                true
            } else if self.is_keyword("as") {
                false
            } else {
                return Ok(left);
            };
            self.bump();
            folds += 1;
            self.check_depth(depth + folds)?;
            let ty = self.parse_type_specifier()?;
            left = if is { Node::Is(Box::new(left), ty) } else { Node::As(Box::new(left), ty) };
        }
    }

    /// `Quantity`, `FHIR.Quantity`, `System.String`: the namespace is kept only for `System`.
    fn parse_type_specifier(&mut self) -> Result<String, FhirPathError> {
        let first = self.parse_identifier()?;
        if (first == "FHIR" || first == "System") && matches!(self.peek_tok(), Some(Tok::Dot)) {
            self.bump();
            let name = self.parse_identifier()?;
            return Ok(if first == "System" { format!("System.{name}") } else { name });
        }
        Ok(first)
    }

    fn parse_identifier(&mut self) -> Result<String, FhirPathError> {
        match self.peek_tok() {
            Some(Tok::Ident(s) | Tok::Quoted(s)) => {
                let s = s.clone();
                self.bump();
                Ok(s)
            }
            _ => Err(FhirPathError::Parse { at: self.at(), reason: "expected an identifier".into() }),
        }
    }

    /// term ('.' invocation | '[' index ']')*
    fn parse_postfix(&mut self, depth: usize) -> Result<Node, FhirPathError> {
        let (head, mut steps) = self.parse_term(depth)?;
        loop {
            match self.peek_tok() {
                Some(Tok::Dot) => {
                    self.bump();
                    steps.push(self.parse_invocation(depth)?);
                }
                Some(Tok::LBracket) => {
                    self.bump();
                    let at = self.at();
                    match self.bump().map(|t| t.tok) {
                        Some(Tok::Int(n)) => {
                            let n = usize::try_from(n)
                                .map_err(|_| FhirPathError::Parse { at, reason: "index out of range".into() })?;
                            steps.push(Step::Index(n));
                            if let Some(t) = self.peek().filter(|t| !matches!(t.tok, Tok::RBracket)) {
                                return Err(FhirPathError::Unsupported(format!("non-literal index at byte {}", t.at)));
                            }
                        }
                        _ => return Err(FhirPathError::Unsupported(format!("non-literal index at byte {at}"))),
                    }
                    self.expect(Tok::RBracket, "']'")?;
                }
                _ => break,
            }
        }
        Ok(Node::Chain { head, steps })
    }

    fn parse_term(&mut self, depth: usize) -> Result<(Term, Vec<Step>), FhirPathError> {
        let Some(t) = self.peek().cloned() else {
            return Err(FhirPathError::Parse { at: self.end, reason: "unexpected end of expression".into() });
        };
        match t.tok {
            Tok::Str(s) => {
                self.bump();
                Ok((Term::Str(s), vec![]))
            }
            Tok::Ident(ref s) if s == "true" || s == "false" => {
                self.bump();
                Ok((Term::Bool(s == "true"), vec![]))
            }
            Tok::LParen => {
                self.bump();
                let inner = self.parse_expr(depth)?;
                self.expect(Tok::RParen, "')'")?;
                Ok((Term::Paren(Box::new(inner)), vec![]))
            }
            Tok::Special(ref s) => {
                self.bump();
                match s.as_str() {
                    "this" => Ok((Term::This, vec![])),
                    _ => Err(FhirPathError::Unsupported(format!("${s}"))),
                }
            }
            Tok::Env(ref s) => {
                self.bump();
                match s.as_str() {
                    "resource" | "context" | "rootResource" => Ok((Term::Resource, vec![])),
                    _ => Err(FhirPathError::Unsupported(format!("%{s}"))),
                }
            }
            Tok::Ident(ref s) if UNSUPPORTED_KEYWORDS.contains(&s.as_str()) => Err(self.unexpected(t)),
            Tok::Ident(_) | Tok::Quoted(_) => Ok((Term::Focus, vec![self.parse_invocation(depth)?])),
            Tok::Int(_) => Err(FhirPathError::Unsupported(format!("number literal at byte {}", t.at))),
            _ => Err(self.unexpected(t)),
        }
    }

    /// A member name or a function call (after a '.' or at the start of a chain).
    fn parse_invocation(&mut self, depth: usize) -> Result<Step, FhirPathError> {
        let at = self.at();
        let quoted = matches!(self.peek_tok(), Some(Tok::Quoted(_)));
        let name = self.parse_identifier()?;
        if quoted || !matches!(self.peek_tok(), Some(Tok::LParen)) {
            return Ok(Step::Member(name));
        }
        self.bump(); // '('
        let func = match name.as_str() {
            "where" => Func::Where(Box::new(self.one_arg(depth, &name, at)?)),
            "exists" => {
                let args = self.args(depth)?;
                match <[Node; 0]>::try_from(args) {
                    Ok(_) => Func::Exists(None),
                    Err(args) => Func::Exists(Some(Box::new(only(args, &name, at)?))),
                }
            }
            "empty" => self.no_args(Func::Empty, depth, &name, at)?,
            "first" => self.no_args(Func::First, depth, &name, at)?,
            "last" => self.no_args(Func::Last, depth, &name, at)?,
            "not" => self.no_args(Func::Not, depth, &name, at)?,
            "resolve" => self.no_args(Func::Resolve, depth, &name, at)?,
            "ofType" | "as" | "is" => {
                let ty = self.parse_type_specifier()?;
                self.expect(Tok::RParen, "')' after the type")?;
                match name.as_str() {
                    "is" => Func::Is(ty),
                    _ => Func::OfType(ty),
                }
            }
            "extension" => Func::Extension(Box::new(self.one_arg(depth, &name, at)?)),
            _ => return Err(FhirPathError::Unsupported(format!("function {name}() at byte {at}"))),
        };
        Ok(Step::Call(func))
    }

    /// The arguments of a call whose '(' has been read, up to and including ')'.
    fn args(&mut self, depth: usize) -> Result<Vec<Node>, FhirPathError> {
        let mut args = Vec::new();
        if matches!(self.peek_tok(), Some(Tok::RParen)) {
            self.bump();
            return Ok(args);
        }
        loop {
            args.push(self.parse_expr(depth)?);
            match self.peek_tok() {
                Some(Tok::Comma) => {
                    self.bump();
                }
                Some(Tok::RParen) => {
                    self.bump();
                    return Ok(args);
                }
                _ => return Err(FhirPathError::Parse { at: self.at(), reason: "expected ',' or ')'".into() }),
            }
        }
    }

    fn one_arg(&mut self, depth: usize, name: &str, at: usize) -> Result<Node, FhirPathError> {
        let args = self.args(depth)?;
        only(args, name, at)
    }

    fn no_args(&mut self, f: Func, depth: usize, name: &str, at: usize) -> Result<Func, FhirPathError> {
        if self.args(depth)?.is_empty() {
            Ok(f)
        } else {
            Err(FhirPathError::Parse { at, reason: format!("{name}() takes no arguments") })
        }
    }
}

fn only(mut args: Vec<Node>, name: &str, at: usize) -> Result<Node, FhirPathError> {
    if args.len() == 1 {
        Ok(args.pop().expect("one argument"))
    } else {
        Err(FhirPathError::Parse { at, reason: format!("{name}() takes one argument, got {}", args.len()) })
    }
}

// ---------------------------------------------------------------------------------------
// Evaluation

/// An item during evaluation.
#[derive(Debug, Clone)]
enum V<'a> {
    Node(&'a Value, Option<String>),
    Bool(bool),
    Str(String),
    /// The result of `resolve()` on a reference to a resource of this type that is not in
    /// the resource: known only by type.
    Ref(String),
}

struct Env<'a> {
    root: &'a Value,
}

fn eval<'a>(node: &Node, focus: &[V<'a>], env: &Env<'a>) -> Vec<V<'a>> {
    match node {
        Node::Chain { head, steps } => {
            let mut coll = match head {
                Term::Focus | Term::This => focus.to_vec(),
                Term::Resource => vec![V::Node(env.root, None)],
                Term::Str(s) => vec![V::Str(s.clone())],
                Term::Bool(b) => vec![V::Bool(*b)],
                Term::Paren(inner) => eval(inner, focus, env),
            };
            for (i, step) in steps.iter().enumerate() {
                let type_name_allowed = i == 0 && *head == Term::Focus;
                coll = apply_step(step, coll, type_name_allowed, env);
            }
            coll
        }
        Node::Union(parts) => {
            let mut out: Vec<V<'a>> = Vec::new();
            for p in parts {
                for v in eval(p, focus, env) {
                    if !out.iter().any(|o| same_item(o, &v)) {
                        out.push(v);
                    }
                }
            }
            out
        }
        Node::And(parts) => {
            let vals: Vec<Option<bool>> = parts.iter().map(|p| truth(&eval(p, focus, env))).collect();
            if vals.contains(&Some(false)) {
                vec![V::Bool(false)]
            } else if vals.iter().all(|v| *v == Some(true)) {
                vec![V::Bool(true)]
            } else {
                vec![]
            }
        }
        Node::Or(parts) => {
            let vals: Vec<Option<bool>> = parts.iter().map(|p| truth(&eval(p, focus, env))).collect();
            if vals.contains(&Some(true)) {
                vec![V::Bool(true)]
            } else if vals.iter().all(|v| *v == Some(false)) {
                vec![V::Bool(false)]
            } else {
                vec![]
            }
        }
        Node::Equal { left, right, negated } => {
            let l = eval(left, focus, env);
            let r = eval(right, focus, env);
            if l.is_empty() || r.is_empty() {
                return vec![];
            }
            let eq = l.len() == r.len() && l.iter().zip(&r).all(|(a, b)| item_eq(a, b));
            vec![V::Bool(eq != *negated)]
        }
        Node::Is(inner, ty) => {
            let coll = eval(inner, focus, env);
            match coll.as_slice() {
                [one] => vec![V::Bool(type_matches(one, ty))],
                _ => vec![],
            }
        }
        Node::As(inner, ty) => eval(inner, focus, env).into_iter().filter(|v| type_matches(v, ty)).collect(),
    }
}

fn apply_step<'a>(step: &Step, coll: Vec<V<'a>>, type_name_allowed: bool, env: &Env<'a>) -> Vec<V<'a>> {
    match step {
        Step::Member(name) => {
            let mut out = Vec::new();
            for v in coll {
                let V::Node(value, _) = v else { continue };
                if let Some(rt) = value.get("resourceType").and_then(Value::as_str)
                    && (rt == name || (type_name_allowed && resource_is_a(rt, name)))
                {
                    out.push(v);
                    continue;
                }
                children(value, name, &mut out);
            }
            out
        }
        Step::Index(n) => coll.into_iter().nth(*n).into_iter().collect(),
        Step::Call(func) => call(func, coll, env),
    }
}

fn call<'a>(func: &Func, coll: Vec<V<'a>>, env: &Env<'a>) -> Vec<V<'a>> {
    match func {
        Func::Where(crit) => {
            coll.into_iter().filter(|v| truth(&eval(crit, std::slice::from_ref(v), env)) == Some(true)).collect()
        }
        Func::Exists(None) => vec![V::Bool(!coll.is_empty())],
        Func::Exists(Some(crit)) => {
            let any = coll.iter().any(|v| truth(&eval(crit, std::slice::from_ref(v), env)) == Some(true));
            vec![V::Bool(any)]
        }
        Func::Empty => vec![V::Bool(coll.is_empty())],
        Func::First => coll.into_iter().next().into_iter().collect(),
        Func::Last => coll.into_iter().last().into_iter().collect(),
        Func::Not => match truth(&coll) {
            Some(b) => vec![V::Bool(!b)],
            None => vec![],
        },
        Func::Resolve => coll.iter().filter_map(|v| resolve(v, env)).collect(),
        Func::OfType(ty) => coll.into_iter().filter(|v| type_matches(v, ty)).collect(),
        Func::Is(ty) => match coll.as_slice() {
            [one] => vec![V::Bool(type_matches(one, ty))],
            _ => vec![],
        },
        Func::Extension(url) => {
            let mut out = Vec::new();
            for v in &coll {
                let V::Node(value, _) = v else { continue };
                let url = eval(url, std::slice::from_ref(v), env);
                let Some(url) = (match url.as_slice() {
                    [one] => string_value(one),
                    _ => None,
                }) else {
                    continue;
                };
                let mut exts = Vec::new();
                children(value, "extension", &mut exts);
                out.extend(exts.into_iter().filter(
                    |e| matches!(e, V::Node(ext, _) if ext.get("url").and_then(Value::as_str) == Some(url.as_str())),
                ));
            }
            out
        }
    }
}

/// The children called `name` of `value`, arrays flattened; for a choice element named
/// without its type (`value`), every `value` + type key (`valueQuantity`, ...).
fn children<'a>(value: &'a Value, name: &str, out: &mut Vec<V<'a>>) {
    let Value::Object(map) = value else { return };
    let push = |v: &'a Value, ty: Option<String>, out: &mut Vec<V<'a>>| match v {
        Value::Array(items) => {
            out.extend(items.iter().filter(|i| !i.is_null()).map(|i| V::Node(i, ty.clone())));
        }
        Value::Null => {}
        other => out.push(V::Node(other, ty)),
    };
    if let Some(v) = map.get(name) {
        push(v, None, out);
        return;
    }
    for (key, v) in map {
        if let Some(suffix) = key.strip_prefix(name)
            && let Some(ty) = choice_type(suffix)
        {
            push(v, Some(ty), out);
        }
    }
}

/// The FHIR type a choice suffix names (`Quantity`, `DateTime` -> `dateTime`), if any.
fn choice_type(suffix: &str) -> Option<String> {
    let first = suffix.chars().next()?;
    if !first.is_ascii_uppercase() {
        return None;
    }
    let lowered = first.to_ascii_lowercase().to_string() + &suffix[1..];
    if let Some(td) = bastion_fhir::definitions::type_definition(&lowered)
        && td.is_primitive()
    {
        return Some(lowered);
    }
    match bastion_fhir::definitions::type_definition(suffix) {
        Some(td) if td.kind == "complex-type" => Some(suffix.to_string()),
        _ => None,
    }
}

/// Does a resource of type `rt` count as a `name` (its own type, `Resource`, `DomainResource`)?
fn resource_is_a(rt: &str, name: &str) -> bool {
    rt == name || name == "Resource" || (name == "DomainResource" && !matches!(rt, "Bundle" | "Binary" | "Parameters"))
}

/// The FHIR types a datatype specialises (`Age` is a `Quantity`, `code` is a `string`).
fn supertype(ty: &str) -> Option<&'static str> {
    Some(match ty {
        "Age" | "Count" | "Distance" | "Duration" | "MoneyQuantity" | "SimpleQuantity" => "Quantity",
        "code" | "id" | "markdown" => "string",
        "canonical" | "oid" | "url" | "uuid" => "uri",
        "positiveInt" | "unsignedInt" => "integer",
        _ => return None,
    })
}

fn type_matches(v: &V<'_>, wanted: &str) -> bool {
    match v {
        V::Bool(_) => matches!(wanted, "boolean" | "System.Boolean"),
        V::Str(_) => matches!(wanted, "string" | "System.String"),
        V::Ref(rt) => resource_is_a(rt, wanted),
        V::Node(_, Some(ty)) => {
            let mut t = Some(ty.as_str());
            while let Some(cur) = t {
                if cur == wanted {
                    return true;
                }
                t = supertype(cur);
            }
            false
        }
        V::Node(value, None) => match value.get("resourceType").and_then(Value::as_str) {
            Some(rt) => resource_is_a(rt, wanted),
            None => false,
        },
    }
}

/// `resolve()`: a contained resource for `#id`, a type-only stand-in for `Type/id` and for
/// absolute URLs `.../Type/id` (a `_history/v` suffix allowed), nothing otherwise.
fn resolve<'a>(v: &V<'a>, env: &Env<'a>) -> Option<V<'a>> {
    let V::Node(value, _) = v else { return None };
    let reference = match value {
        Value::String(s) => s.as_str(),
        Value::Object(m) => m.get("reference")?.as_str()?,
        _ => return None,
    };
    if let Some(id) = reference.strip_prefix('#') {
        let contained = env.root.get("contained")?.as_array()?;
        return contained.iter().find(|r| r.get("id").and_then(Value::as_str) == Some(id)).map(|r| V::Node(r, None));
    }
    reference_type(reference).map(|t| V::Ref(t.to_string()))
}

/// The resource type a literal reference points at.
pub(crate) fn reference_type(reference: &str) -> Option<&str> {
    let path = reference.split(['?', '#']).next().unwrap_or("");
    let mut segs: Vec<&str> = path.split('/').collect();
    if segs.len() >= 4 && segs[segs.len() - 2] == "_history" {
        segs.truncate(segs.len() - 2);
    }
    let absolute = path.contains("://");
    if !absolute && segs.len() != 2 {
        return None;
    }
    let (ty, id) = (segs.get(segs.len().checked_sub(2)?)?, segs.last()?);
    (!id.is_empty() && bastion_fhir::definitions::is_resource_type(ty)).then_some(*ty)
}

/// A collection as a boolean: empty -> unknown, one boolean -> itself, one other item ->
/// true, several -> unknown (an error in FHIRPath; this evaluator does not raise).
fn truth(coll: &[V<'_>]) -> Option<bool> {
    match coll {
        [] => None,
        [V::Bool(b)] => Some(*b),
        [V::Node(Value::Bool(b), _)] => Some(*b),
        [_] => Some(true),
        _ => None,
    }
}

fn string_value(v: &V<'_>) -> Option<String> {
    match v {
        V::Str(s) => Some(s.clone()),
        V::Node(Value::String(s), _) => Some(s.clone()),
        _ => None,
    }
}

/// FHIRPath `=` on two items.
fn item_eq(a: &V<'_>, b: &V<'_>) -> bool {
    match (a, b) {
        (V::Node(x, _), V::Node(y, _)) => json_eq(x, y),
        (V::Node(Value::String(x), _), V::Str(y)) | (V::Str(y), V::Node(Value::String(x), _)) => x == y,
        (V::Node(Value::Bool(x), _), V::Bool(y)) | (V::Bool(y), V::Node(Value::Bool(x), _)) => x == y,
        (V::Str(x), V::Str(y)) => x == y,
        (V::Bool(x), V::Bool(y)) => x == y,
        (V::Ref(x), V::Ref(y)) => x == y,
        _ => false,
    }
}

/// Duplicate detection for `|`.
fn same_item(a: &V<'_>, b: &V<'_>) -> bool {
    item_eq(a, b)
}

/// JSON equality with numbers compared by value (`70` = `70.0`).
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => x == y,
            _ => x == y,
        },
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn eval(expr: &str, resource: &Value) -> Vec<Value> {
        Expr::parse(expr)
            .unwrap_or_else(|e| panic!("{expr}: {e}"))
            .evaluate(resource)
            .iter()
            .map(Item::to_json)
            .collect()
    }

    fn observation() -> Value {
        json!({
            "resourceType": "Observation",
            "id": "o1",
            "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
            "subject": {"reference": "Patient/p1"},
            "valueQuantity": {"value": 70.5, "unit": "kg", "system": "http://unitsofmeasure.org", "code": "kg"},
            "effectiveDateTime": "2021-03-04T05:06:07Z"
        })
    }

    #[test]
    fn path_from_the_resource_type_flattens_arrays() {
        let patient = json!({"resourceType": "Patient", "name": [
            {"family": "Chalmers", "given": ["Peter", "James"]},
            {"family": "Windsor", "given": ["Jim"]}
        ]});
        assert_eq!(eval("Patient.name.family", &patient), vec![json!("Chalmers"), json!("Windsor")]);
        assert_eq!(eval("Patient.name.given", &patient), vec![json!("Peter"), json!("James"), json!("Jim")]);
        assert_eq!(eval("Patient.name", &patient).len(), 2);
        assert!(eval("Practitioner.name", &patient).is_empty(), "another type's path selects nothing");
        assert!(eval("Patient.birthDate", &patient).is_empty());
    }

    #[test]
    fn resource_and_domain_resource_match_every_resource_that_is_one() {
        let bundle = json!({"resourceType": "Bundle", "id": "b1", "meta": {"lastUpdated": "2021-01-01T00:00:00Z"}, "text": {"div": "x"}});
        assert_eq!(eval("Resource.id", &bundle), vec![json!("b1")]);
        assert_eq!(eval("Resource.meta.lastUpdated", &bundle), vec![json!("2021-01-01T00:00:00Z")]);
        assert!(eval("DomainResource.text", &bundle).is_empty(), "a Bundle is not a DomainResource");
        assert_eq!(eval("DomainResource.id", &observation()), vec![json!("o1")]);
    }

    #[test]
    fn choice_element_named_without_its_type_finds_the_variant_and_its_type() {
        let obs = observation();
        let items = Expr::parse("Observation.value").unwrap().evaluate(&obs);
        assert_eq!(items, vec![Item::Node(&obs["valueQuantity"], Some("Quantity".into()))]);
        let items = Expr::parse("Observation.effective").unwrap().evaluate(&obs);
        assert_eq!(items, vec![Item::Node(&obs["effectiveDateTime"], Some("dateTime".into()))]);
    }

    #[test]
    fn choice_suffix_must_name_a_datatype() {
        // `answerValueSet` is not a choice variant of `answer`.
        let q = json!({"resourceType": "Questionnaire", "item": [{"answerValueSet": "http://x"}]});
        assert!(eval("Questionnaire.item.answer", &q).is_empty());
        let m = json!({"resourceType": "MedicationRequest", "dosageInstruction": [{"text": "daily"}]});
        assert!(eval("MedicationRequest.dosage", &m).is_empty());
    }

    #[test]
    fn as_of_type_and_is_select_one_choice_variant() {
        let obs = observation();
        let quantity = vec![obs["valueQuantity"].clone()];
        assert_eq!(eval("(Observation.value as Quantity)", &obs), quantity);
        assert_eq!(eval("Observation.value.as(Quantity)", &obs), quantity);
        assert_eq!(eval("Observation.value.ofType(Quantity)", &obs), quantity);
        assert_eq!(eval("Observation.value.ofType(FHIR.Quantity)", &obs), quantity);
        assert!(eval("Observation.value.ofType(string)", &obs).is_empty());
        assert!(eval("(Observation.value as CodeableConcept)", &obs).is_empty());
        assert_eq!(eval("(Observation.value as Quantity).unit", &obs), vec![json!("kg")]);
        assert_eq!(eval("Observation.value is Quantity", &obs), vec![json!(true)]);
        assert_eq!(eval("Observation.value.is(Period)", &obs), vec![json!(false)]);
        let s = json!({"resourceType": "Observation", "valueString": "positive"});
        assert_eq!(eval("Observation.value.ofType(string)", &s), vec![json!("positive")]);
        assert!(eval("Observation.value.ofType(Quantity)", &s).is_empty());
        // A specialised datatype counts as its base type.
        let c = json!({"resourceType": "Condition", "onsetAge": {"value": 40, "unit": "a"}});
        assert_eq!(eval("Condition.onset.ofType(Quantity)", &c), vec![json!({"value": 40, "unit": "a"})]);
        assert_eq!(eval("Condition.onset.ofType(Age)", &c).len(), 1);
    }

    #[test]
    fn where_resolve_is_keeps_references_to_that_type() {
        let obs = json!({
            "resourceType": "Observation",
            "contained": [{"resourceType": "Patient", "id": "cp"}, {"resourceType": "Device", "id": "cd"}],
            "performer": [
                {"reference": "Patient/p1"},
                {"reference": "Practitioner/d1"},
                {"reference": "https://other.example/fhir/Patient/p2/_history/3"},
                {"reference": "https://other.example/fhir/Organization/o1"},
                {"reference": "#cp"},
                {"reference": "#cd"},
                {"reference": "urn:uuid:0f3a1a5e-0000-0000-0000-000000000000"},
                {"identifier": {"value": "no literal reference"}}
            ]
        });
        assert_eq!(
            eval("Observation.performer.where(resolve() is Patient)", &obs),
            vec![
                json!({"reference": "Patient/p1"}),
                json!({"reference": "https://other.example/fhir/Patient/p2/_history/3"}),
                json!({"reference": "#cp"})
            ]
        );
        assert_eq!(eval("Observation.performer.where(resolve() is Device)", &obs), vec![json!({"reference": "#cd"})]);
        assert_eq!(eval("Observation.subject.where(resolve() is Patient)", &observation()).len(), 1);
        assert!(eval("Observation.subject.where(resolve() is Group)", &observation()).is_empty());
        // The stand-in for an unfetched resource never appears in results; a contained one does.
        assert!(
            eval(
                "Observation.performer.resolve()",
                &json!({"resourceType": "Observation", "performer": [{"reference": "Patient/1"}]})
            )
            .is_empty()
        );
        assert_eq!(
            eval("Observation.performer.resolve().ofType(Device)", &obs),
            vec![json!({"resourceType": "Device", "id": "cd"})]
        );
    }

    #[test]
    fn where_with_string_equality_filters_by_field() {
        let patient = json!({"resourceType": "Patient", "telecom": [
            {"system": "phone", "value": "555-1234"},
            {"system": "email", "value": "a@example.org"},
            {"system": "phone", "value": "555-9999", "use": "work"}
        ]});
        assert_eq!(
            eval("Patient.telecom.where(system='phone').value", &patient),
            vec![json!("555-1234"), json!("555-9999")]
        );
        assert_eq!(eval("Patient.telecom.where(system = 'email')", &patient).len(), 1);
        assert_eq!(eval("Patient.telecom.where(system != 'phone').value", &patient), vec![json!("a@example.org")]);
        assert_eq!(
            eval("Patient.telecom.where(system='phone' and use='work').value", &patient),
            vec![json!("555-9999")]
        );
        assert_eq!(eval("Patient.telecom.where(use='work' or system='email').value", &patient).len(), 2);
        let plan = json!({"resourceType": "PlanDefinition", "relatedArtifact": [
            {"type": "composed-of", "resource": "http://x/PlanDefinition/a"},
            {"type": "depends-on", "resource": "http://x/Library/b"}
        ]});
        assert_eq!(
            eval("PlanDefinition.relatedArtifact.where(type='composed-of').resource", &plan),
            vec![json!("http://x/PlanDefinition/a")]
        );
    }

    #[test]
    fn indexer_selects_from_the_whole_collection() {
        let bundle = json!({"resourceType": "Bundle", "type": "document", "entry": [
            {"resource": {"resourceType": "Composition", "id": "c"}},
            {"resource": {"resourceType": "Patient", "id": "p"}}
        ]});
        assert_eq!(eval("Bundle.entry[0].resource", &bundle), vec![json!({"resourceType": "Composition", "id": "c"})]);
        assert_eq!(eval("Bundle.entry[1].resource.id", &bundle), vec![json!("p")]);
        assert!(eval("Bundle.entry[2]", &bundle).is_empty());
        assert_eq!(eval("Bundle.entry.resource.first().id", &bundle), vec![json!("c")]);
        assert_eq!(eval("Bundle.entry.resource.last().id", &bundle), vec![json!("p")]);
    }

    #[test]
    fn extension_by_url_then_its_value() {
        let patient = json!({"resourceType": "Patient", "extension": [
            {"url": "http://hl7.org/fhir/StructureDefinition/patient-birthPlace", "valueAddress": {"city": "Leiden"}},
            {"url": "http://example.org/other", "valueString": "x"}
        ]});
        let e = "Patient.extension('http://hl7.org/fhir/StructureDefinition/patient-birthPlace').value";
        let expr = Expr::parse(e).unwrap();
        assert_eq!(
            expr.evaluate(&patient),
            vec![Item::Node(&patient["extension"][0]["valueAddress"], Some("Address".into()))]
        );
        assert!(eval("Patient.extension('http://example.org/none')", &patient).is_empty());
    }

    #[test]
    fn union_across_types_removes_duplicates() {
        let e = "Patient.telecom.where(system='phone') | Person.telecom.where(system='phone') | Practitioner.telecom.where(system='phone')";
        let practitioner = json!({"resourceType": "Practitioner", "telecom": [{"system": "phone", "value": "1"}]});
        assert_eq!(eval(e, &practitioner), vec![json!({"system": "phone", "value": "1"})]);
        let obs = observation();
        assert_eq!(
            eval("Observation.id | Observation.id | Observation.effective", &obs),
            vec![json!("o1"), json!("2021-03-04T05:06:07Z")]
        );
        assert_eq!(eval("Observation.value.value | Observation.value.value", &obs).len(), 1);
    }

    #[test]
    fn exists_empty_and_boolean_logic() {
        let e = "Patient.deceased.exists() and Patient.deceased != false";
        assert_eq!(eval(e, &json!({"resourceType": "Patient", "deceasedBoolean": true})), vec![json!(true)]);
        assert_eq!(eval(e, &json!({"resourceType": "Patient", "deceasedBoolean": false})), vec![json!(false)]);
        assert_eq!(eval(e, &json!({"resourceType": "Patient", "deceasedDateTime": "2020-02-02"})), vec![json!(true)]);
        // `false and {}` is false; `{} != false` is empty.
        assert_eq!(eval(e, &json!({"resourceType": "Patient"})), vec![json!(false)]);
        assert_eq!(eval("Patient.name.empty()", &json!({"resourceType": "Patient"})), vec![json!(true)]);
        assert_eq!(
            eval("Patient.name.exists(family = 'X')", &json!({"resourceType": "Patient", "name": [{"family": "X"}]})),
            vec![json!(true)]
        );
        assert_eq!(
            eval("Patient.active.not()", &json!({"resourceType": "Patient", "active": true})),
            vec![json!(false)]
        );
        assert!(eval("Patient.active or Patient.gender = 'x'", &json!({"resourceType": "Patient"})).is_empty());
        assert_eq!(eval("true or Patient.active", &json!({"resourceType": "Patient"})), vec![json!(true)]);
    }

    #[test]
    fn string_literals_unescape_and_this_and_resource_evaluate() {
        let obs = observation();
        assert_eq!(Expr::parse(r"'it\'s \u00e9'").unwrap().evaluate(&obs), vec![Item::Str("it's é".into())]);
        assert_eq!(
            eval("Observation.code.coding.where($this.system = 'http://loinc.org').code", &obs),
            vec![json!("29463-7")]
        );
        assert_eq!(eval("%resource.id", &obs), vec![json!("o1")]);
        assert_eq!(eval("Observation.`id`", &obs), vec![json!("o1")]);
    }

    #[test]
    fn functions_and_operators_outside_the_subset_are_unsupported() {
        for e in [
            "Patient.name.select(given)",
            "Patient.name.given.count()",
            "Patient.name.frobnicate()",
            "Observation.value > 5",
            "Observation.value.value + 1",
            "Patient.birthDate = @2020-01-01",
            "Observation.value.value = 1.5",
            "Patient.name.given contains 'x'",
            "Patient.active implies Patient.deceased",
            "Patient.name[0 + 1]",
            "%ucum",
            "$index",
            "1",
        ] {
            match Expr::parse(e) {
                Err(FhirPathError::Unsupported(_)) => {}
                other => panic!("{e}: expected Unsupported, got {other:?}"),
            }
        }
    }

    #[test]
    fn malformed_expressions_are_parse_errors_at_a_position() {
        for (e, at) in [
            ("Patient.name.", 13),
            ("Patient.(name)", 8),
            ("Patient.name.where(use='x'", 26),
            ("'unterminated", 0),
            ("Patient.name)", 12),
            ("Patient.name.first('x')", 13),
            ("Patient.name.where()", 13),
            ("Patient # name", 8),
            ("", 0),
        ] {
            match Expr::parse(e) {
                Err(FhirPathError::Parse { at: got, .. }) => assert_eq!(got, at, "{e}"),
                other => panic!("{e}: expected a parse error, got {other:?}"),
            }
        }
        let err = Expr::parse("Patient.name.").unwrap_err();
        assert_eq!(err.to_string(), "FHIRPath parse error at byte 13: expected an identifier");
        assert_eq!(
            Expr::parse("Patient.name.select(given)").unwrap_err().to_string(),
            "unsupported FHIRPath: function select() at byte 13"
        );
    }

    #[test]
    fn deep_nesting_is_refused_and_long_inputs_do_not_overflow() {
        let deep = format!("{}Patient{}", "(".repeat(10_000), ")".repeat(10_000));
        assert!(matches!(Expr::parse(&deep), Err(FhirPathError::Parse { .. })));
        let wheres = format!("Patient{}", ".where(a".repeat(5_000));
        assert!(matches!(Expr::parse(&wheres), Err(FhirPathError::Parse { .. })));
        let eqs = vec!["Patient.a"; 5_000].join(" = ");
        assert!(matches!(Expr::parse(&eqs), Err(FhirPathError::Parse { .. })));
        let ises = format!("Patient{}", " is Patient".repeat(5_000));
        assert!(matches!(Expr::parse(&ises), Err(FhirPathError::Parse { .. })));
        let ok = format!("{}Patient.id{}", "(".repeat(MAX_DEPTH - 1), ")".repeat(MAX_DEPTH - 1));
        assert_eq!(eval(&ok, &json!({"resourceType": "Patient", "id": "x"})), vec![json!("x")]);
        // Long flat chains and unions are fine: they do not nest.
        let chain = format!("Patient{}", ".a".repeat(50_000));
        assert!(eval(&chain, &json!({"resourceType": "Patient"})).is_empty());
        let union = vec!["Patient.id"; 10_000].join(" | ");
        assert_eq!(eval(&union, &json!({"resourceType": "Patient", "id": "x"})), vec![json!("x")]);
        let ands = vec!["Patient.active"; 10_000].join(" and ");
        assert_eq!(eval(&ands, &json!({"resourceType": "Patient", "active": true})), vec![json!(true)]);
    }

    #[test]
    fn reference_types_from_relative_and_absolute_references() {
        assert_eq!(reference_type("Patient/1"), Some("Patient"));
        assert_eq!(reference_type("Patient/1/_history/2"), Some("Patient"));
        assert_eq!(reference_type("http://x.org/fhir/Patient/1"), Some("Patient"));
        assert_eq!(reference_type("http://x.org/fhir/Patient/1/_history/2"), Some("Patient"));
        assert_eq!(reference_type("http://x.org/fhir/Patient/1?x=y#frag"), Some("Patient"));
        assert_eq!(reference_type("Patient"), None);
        assert_eq!(reference_type("Patient/"), None);
        assert_eq!(reference_type("Frobnicator/1"), None);
        assert_eq!(reference_type("urn:uuid:1234"), None);
        assert_eq!(reference_type("a/Patient/1"), None);
    }

    fn search_parameters() -> Vec<Value> {
        let all: Value = serde_json::from_str(include_str!("../../bastion-fhir/data/search-parameters.json")).unwrap();
        all.as_array().unwrap().clone()
    }

    #[test]
    fn every_r4_search_parameter_expression_parses() {
        let params = search_parameters();
        let exprs: Vec<&str> = params.iter().filter_map(|p| p["expression"].as_str()).collect();
        assert!(exprs.len() > 1_300, "{} expressions", exprs.len());
        let failed: Vec<(&str, FhirPathError)> =
            exprs.iter().filter_map(|e| Expr::parse(e).err().map(|err| (*e, err))).collect();
        for (e, err) in &failed {
            println!("not parsed: {e}\n    {err}");
        }
        let parsed = exprs.len() - failed.len();
        println!("parsed {parsed} of {} search parameter expressions", exprs.len());
        assert!(parsed * 100 >= exprs.len() * 98, "only {parsed} of {} parse", exprs.len());
        // Composite components are relative expressions (`code`, `value.ofType(Quantity)`).
        for p in &params {
            for c in p["component"].as_array().unwrap() {
                let e = c["expression"].as_str().unwrap();
                Expr::parse(e).unwrap_or_else(|err| panic!("component {e}: {err}"));
            }
        }
    }

    mod cross_check {
        //! Synthetic resources for every search parameter expression, and the comparison
        //! with fhirpath.js (`fhirpath-check/check.mjs`).

        use super::super::*;
        use bastion_fhir::definitions::{TypeDef, choice_suffix, type_definition};
        use serde_json::{Map, json};
        use std::io::{BufRead, BufReader, Write};
        use std::process::{Command, Stdio};

        /// One step of a path an expression navigates, as far as the generator cares.
        #[derive(Debug)]
        enum PStep<'e> {
            Member(&'e str),
            TypeFilter(&'e str),
            Where(&'e Node),
        }

        fn paths(node: &Node) -> Vec<Vec<PStep<'_>>> {
            match node {
                Node::Chain { head, steps } => {
                    let prefixes = match head {
                        Term::Focus | Term::This => vec![vec![]],
                        Term::Paren(inner) => paths(inner),
                        _ => return vec![],
                    };
                    prefixes
                        .into_iter()
                        .map(|mut p| {
                            for s in steps {
                                match s {
                                    Step::Member(m) => p.push(PStep::Member(m)),
                                    Step::Call(Func::OfType(t)) => p.push(PStep::TypeFilter(t)),
                                    Step::Call(Func::Where(c)) => p.push(PStep::Where(c)),
                                    _ => {}
                                }
                            }
                            p
                        })
                        .collect()
                }
                Node::Union(parts) | Node::And(parts) | Node::Or(parts) => parts.iter().flat_map(paths).collect(),
                Node::Equal { left, right, .. } => paths(left).into_iter().chain(paths(right)).collect(),
                Node::Is(inner, t) | Node::As(inner, t) => paths(inner)
                    .into_iter()
                    .map(|mut p| {
                        p.push(PStep::TypeFilter(t));
                        p
                    })
                    .collect(),
            }
        }

        struct Gen {
            variant: usize,
            contained: Vec<Value>,
        }

        fn is_primitive(ty: &str) -> bool {
            type_definition(ty).is_some_and(TypeDef::is_primitive)
        }

        fn primitive(ty: &str, name: &str, i: usize, g: &Gen) -> Value {
            match ty {
                "boolean" => json!((g.variant + i).is_multiple_of(2)),
                "integer" | "positiveInt" | "unsignedInt" => json!(3 + i),
                "decimal" => json!(1.5 + i as f64),
                "date" => json!(format!("2021-03-0{}", i + 1)),
                "dateTime" => json!(format!("2021-03-0{}T05:06:07Z", i + 1)),
                "instant" => json!(format!("2021-03-0{}T05:06:07.123Z", i + 1)),
                "time" => json!("08:09:10"),
                "base64Binary" => json!("aGVsbG8="),
                _ => json!(format!("{name}-{i}")),
            }
        }

        /// A datatype with its primitive children filled (and complex ones, `depth` levels).
        fn fill(td: &TypeDef, table: &str, depth: usize, i: usize, g: &Gen) -> Value {
            let mut obj = Map::new();
            if td.name == "Reference" && table == "Reference" {
                obj.insert("reference".into(), json!(format!("Patient/p{i}")));
                obj.insert("display".into(), json!(format!("display-{i}")));
                return Value::Object(obj);
            }
            let Some(tab) = td.table(table) else { return Value::Object(obj) };
            for el in &tab.elements {
                if matches!(el.name.as_str(), "id" | "extension" | "modifierExtension" | "contained") {
                    continue;
                }
                let Some(ty) = el.types.get(if el.choice { g.variant % el.types.len() } else { 0 }) else {
                    if let Some(bb) = &el.backbone
                        && depth > 0
                    {
                        let v = fill(td, bb, depth - 1, i, g);
                        insert(&mut obj, &el.name, v, el.is_repeating());
                    }
                    continue;
                };
                let key = if el.choice { format!("{}{}", el.name, choice_suffix(ty)) } else { el.name.clone() };
                let v = if is_primitive(ty) {
                    primitive(ty, &el.name, i, g)
                } else if depth > 0
                    && ty != "Extension"
                    && ty != "Resource"
                    && let Some(sub) = type_definition(ty)
                {
                    fill(sub, ty, depth - 1, i, g)
                } else {
                    continue;
                };
                if v.as_object().is_some_and(Map::is_empty) {
                    continue;
                }
                insert(&mut obj, &key, v, el.is_repeating());
            }
            Value::Object(obj)
        }

        fn insert(obj: &mut Map<String, Value>, key: &str, v: Value, repeating: bool) {
            obj.insert(key.to_string(), if repeating { json!([v]) } else { v });
        }

        fn other_type(t: &str) -> &'static str {
            if t == "Group" { "Device" } else { "Group" }
        }

        /// Makes instance `i` of a `where(...)`-filtered element pass the filter or not.
        fn satisfy(inst: &mut Value, cond: &Node, pass: bool, g: &mut Gen) {
            let Some(obj) = inst.as_object_mut() else { return };
            match cond {
                Node::Is(inner, t) if matches!(&**inner, Node::Chain { head: Term::Focus, steps } if steps == &[Step::Call(Func::Resolve)]) =>
                {
                    let reference = if !pass {
                        format!("{}/x{}", other_type(t), g.variant)
                    } else {
                        match g.variant {
                            0 => format!("{t}/r1"),
                            1 => format!("https://elsewhere.example/fhir/{t}/r2/_history/1"),
                            _ => {
                                let id = format!("c{}", g.contained.len());
                                g.contained.push(json!({"resourceType": t, "id": id}));
                                format!("#{id}")
                            }
                        }
                    };
                    obj.insert("reference".into(), json!(reference));
                }
                Node::Equal { left, right, negated: false } => {
                    if let (Node::Chain { head: Term::Focus, steps: l }, Node::Chain { head: Term::Str(lit), steps: r }) =
                        (&**left, &**right)
                        && let ([Step::Member(field)], []) = (l.as_slice(), r.as_slice())
                    {
                        obj.insert(field.clone(), json!(if pass { lit.clone() } else { format!("not-{lit}") }));
                    }
                }
                _ => {}
            }
        }

        /// Adds what `steps` navigates to `obj`, an instance of `table` in `td`.
        fn build(obj: &mut Map<String, Value>, td: &TypeDef, table: &str, steps: &[PStep<'_>], g: &mut Gen) {
            let Some(PStep::Member(name)) = steps.first() else { return };
            let Some(el) = td.table(table).and_then(|t| t.elements.iter().find(|e| e.name == *name)) else {
                return;
            };
            let mut k = 1;
            let mut type_filter = None;
            let mut wheres = Vec::new();
            while let Some(s) = steps.get(k) {
                match s {
                    PStep::TypeFilter(t) => type_filter = Some(*t),
                    PStep::Where(c) => wheres.push(*c),
                    PStep::Member(_) => break,
                }
                k += 1;
            }
            let rest = &steps[k..];
            let (key, ty) = if el.choice {
                let existing = el.types.iter().find(|t| obj.contains_key(&format!("{}{}", el.name, choice_suffix(t))));
                let ty = match (existing, type_filter) {
                    (Some(t), _) => t.clone(),
                    (None, Some(f)) if g.variant.is_multiple_of(2) && el.types.iter().any(|t| t == f) => f.to_string(),
                    (None, Some(f)) => {
                        el.types.iter().find(|t| *t != f).cloned().unwrap_or_else(|| el.types[0].clone())
                    }
                    (None, None) => el.types[g.variant % el.types.len()].clone(),
                };
                (format!("{}{}", el.name, choice_suffix(&ty)), Some(ty))
            } else {
                (el.name.clone(), el.types.first().cloned())
            };
            let count = if el.is_repeating() { 2 } else { 1 };
            let mut instances: Vec<Value> = match obj.remove(&key) {
                Some(Value::Array(a)) => a,
                Some(v) => vec![v],
                None => vec![],
            };
            for i in 0..count {
                if instances.len() <= i {
                    let fresh = match (&ty, &el.backbone) {
                        (_, Some(bb)) => {
                            if rest.is_empty() {
                                fill(td, bb, 0, i, g)
                            } else {
                                json!({})
                            }
                        }
                        (Some(t), _) if is_primitive(t) => primitive(t, name, i, g),
                        (Some(t), _) if t == "Resource" => json!({"resourceType": "Patient", "id": format!("e{i}")}),
                        (Some(t), _) => match type_definition(t) {
                            Some(sub) if rest.is_empty() => fill(sub, t, 1, i, g),
                            _ => json!({}),
                        },
                        (None, None) => json!({}),
                    };
                    instances.push(fresh);
                }
                let inst = &mut instances[i];
                let pass = i == 0 && g.variant != 3;
                for c in &wheres {
                    satisfy(inst, c, pass, g);
                }
                if !rest.is_empty()
                    && let Some(o) = inst.as_object_mut()
                {
                    match (&el.backbone, &ty) {
                        (Some(bb), _) => build(o, td, bb, rest, g),
                        (None, Some(t)) => {
                            if let Some(sub) = type_definition(t) {
                                build(o, sub, t, rest, g)
                            }
                        }
                        _ => {}
                    }
                }
            }
            obj.insert(key, if el.is_repeating() { Value::Array(instances) } else { instances.swap_remove(0) });
        }

        /// Synthetic resources of type `rt` that an expression's paths reach into.
        fn synthesize(expr: &Expr, rt: &str, variant: usize) -> Value {
            let td = type_definition(rt).expect("resource type");
            let mut g = Gen { variant, contained: vec![] };
            let mut obj = Map::new();
            obj.insert("resourceType".into(), json!(rt));
            obj.insert("id".into(), json!(format!("synthetic-{variant}")));
            for p in paths(&expr.root) {
                if let Some(PStep::Member(first)) = p.first()
                    && resource_is_a(rt, first)
                {
                    build(&mut obj, td, rt, &p[1..], &mut g);
                }
            }
            if !g.contained.is_empty() {
                obj.insert("contained".into(), Value::Array(g.contained));
            }
            Value::Object(obj)
        }

        /// Canonical text of a JSON value: keys sorted, numbers by value.
        fn canon(v: &Value) -> String {
            match v {
                Value::Object(m) => {
                    let mut keys: Vec<&String> = m.keys().collect();
                    keys.sort();
                    let body: Vec<String> =
                        keys.iter().map(|k| format!("{}:{}", Value::String((*k).clone()), canon(&m[*k]))).collect();
                    format!("{{{}}}", body.join(","))
                }
                Value::Array(a) => format!("[{}]", a.iter().map(canon).collect::<Vec<_>>().join(",")),
                Value::Number(n) => n.as_f64().map_or_else(|| n.to_string(), |f| f.to_string()),
                other => other.to_string(),
            }
        }

        fn sorted(vals: impl IntoIterator<Item = Value>) -> Vec<String> {
            let mut v: Vec<String> = vals.into_iter().map(|v| canon(&v)).collect();
            v.sort();
            v
        }

        struct Case {
            code: String,
            expression: String,
            resource: Value,
            ours: Vec<String>,
        }

        fn corpus() -> (Vec<Case>, usize) {
            let mut cases = Vec::new();
            let mut seen = std::collections::HashSet::new();
            let mut unparsed = 0;
            for p in super::search_parameters() {
                let Some(e) = p["expression"].as_str() else { continue };
                let Ok(expr) = Expr::parse(e) else {
                    unparsed += 1;
                    continue;
                };
                for base in p["base"].as_array().unwrap() {
                    let base = base.as_str().unwrap();
                    let types: &[&str] = match base {
                        "Resource" => &["Patient", "Bundle"],
                        "DomainResource" => &["Observation"],
                        b => &[b][..],
                    };
                    for rt in types {
                        for variant in 0..4 {
                            let resource = synthesize(&expr, rt, variant);
                            if !seen.insert((e.to_string(), canon(&resource))) {
                                continue;
                            }
                            let ours = sorted(expr.evaluate(&resource).iter().map(Item::to_json));
                            cases.push(Case {
                                code: format!("{base}.{}", p["code"].as_str().unwrap()),
                                expression: e.into(),
                                resource,
                                ours,
                            });
                        }
                    }
                }
            }
            (cases, unparsed)
        }

        #[test]
        fn synthetic_resources_reach_what_the_expressions_select() {
            let (cases, _) = corpus();
            let nonempty = cases.iter().filter(|c| !c.ours.is_empty()).count();
            println!("{} cases, {nonempty} with a non-empty result", cases.len());
            assert!(nonempty * 10 >= cases.len() * 8, "the generator misses too much: {nonempty} of {}", cases.len());
        }

        #[test]
        #[ignore = "needs node and `npm ci` in crates/bastion-search/fhirpath-check"]
        fn cross_check_against_fhirpath_js() {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fhirpath-check");
            if Command::new("node").arg("--version").output().is_err() {
                eprintln!("\n!!! SKIPPED cross_check_against_fhirpath_js: `node` is not on PATH !!!\n");
                return;
            }
            if !dir.join("node_modules/fhirpath/package.json").exists() {
                eprintln!(
                    "\n!!! SKIPPED cross_check_against_fhirpath_js: run `npm ci` in {} first !!!\n",
                    dir.display()
                );
                return;
            }
            let (cases, unparsed) = corpus();
            let input: String = cases
                .iter()
                .map(|c| json!({"expression": c.expression, "resource": c.resource}).to_string() + "\n")
                .collect();
            let mut child = Command::new("node")
                .arg("check.mjs")
                .current_dir(&dir)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("node check.mjs");
            let mut stdin = child.stdin.take().unwrap();
            let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
            let lines: Vec<String> =
                BufReader::new(child.stdout.take().unwrap()).lines().map(|l| l.expect("read")).collect();
            writer.join().unwrap().expect("write corpus");
            assert!(child.wait().unwrap().success(), "node check.mjs failed");
            assert_eq!(lines.len(), cases.len(), "one answer per case");

            let (mut agree, mut differ, mut js_errors) = (0, 0, 0);
            let mut bad_exprs = std::collections::BTreeSet::new();
            let mut all_exprs = std::collections::BTreeSet::new();
            for (case, line) in cases.iter().zip(&lines) {
                all_exprs.insert(case.expression.clone());
                let answer: Value = serde_json::from_str(line).unwrap();
                if let Some(err) = answer.get("error") {
                    js_errors += 1;
                    bad_exprs.insert(case.expression.clone());
                    println!("fhirpath.js error [{}] {}: {err}", case.code, case.expression);
                    continue;
                }
                let theirs = sorted(answer["result"].as_array().unwrap().iter().cloned());
                if theirs == case.ours {
                    agree += 1;
                } else {
                    differ += 1;
                    if bad_exprs.insert(case.expression.clone()) {
                        println!(
                            "DIFFERENT [{}] {}\n  resource: {}\n  ours:     {:?}\n  fhirpath: {:?}",
                            case.code, case.expression, case.resource, case.ours, theirs
                        );
                    }
                }
            }
            let total = cases.len();
            println!(
                "cross-check: {agree} of {total} cases agree ({:.2}%), {differ} differ, {js_errors} fhirpath.js errors; \
                 {} of {} distinct expressions agree on every case; {unparsed} expressions not parsed here",
                100.0 * agree as f64 / total as f64,
                all_exprs.len() - bad_exprs.len(),
                all_exprs.len()
            );
            assert!(agree * 100 >= total * 99, "agreement below 99%");
        }
    }
}
