//! A fast reader for the YAML that Kubernetes manifests are written in, in
//! front of serde-saphyr (kipvs-proxy's manifest mode reads its files with
//! it).
//!
//! Manifest mode at 10k Services × 10 endpoints reads about 10 MB of YAML
//! (20,000 documents): serde-saphyr's general YAML parser alone takes 2.8 s
//! of one core on it, this reader 0.37 s, 7× less
//! (`cargo bench -p kipvs-benches --bench manifests`;
//! `benches/results/manifests.md`). Manifests use a small part of
//! YAML: block mappings and sequences, one-line flow collections, plain and
//! one-line quoted scalars, comments and literal block scalars. [`from_str`]
//! reads exactly that part into a tree and deserializes from it; anything
//! else (anchors, aliases, tags, folded or multi-line scalars, multi-line
//! flow, tabs, a plain scalar whose type is ambiguous for its target …)
//! makes the fast reader decline, and serde-saphyr reads the document. So
//! every answer, and every error message, is serde-saphyr's; the fast path
//! only ever finds the same answer sooner. A property test holds it to that.
//!
//! A document that starts with `{` is tried as JSON first (JSON is YAML).

use serde::de::{self, DeserializeOwned, DeserializeSeed, Deserializer, MapAccess, SeqAccess};
use std::borrow::Cow;

/// serde-saphyr's answer for one document, found faster when the document
/// is in the subset described above.
pub fn from_str<T: DeserializeOwned>(doc: &str) -> Result<T, serde_saphyr::Error> {
    match fast_from_str(doc) {
        Ok(value) => Ok(value),
        Err(Declined(_)) => serde_saphyr::from_str(doc),
    }
}

/// Why the fast reader left a document to serde-saphyr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declined(pub String);

impl std::fmt::Display for Declined {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Declined {}

impl de::Error for Declined {
    fn custom<M: std::fmt::Display>(msg: M) -> Self {
        Declined(msg.to_string())
    }
}

fn decline<T>(why: &str) -> Result<T, Declined> {
    Err(Declined(why.to_owned()))
}

/// The fast reader alone: the value, or why it declined.
pub fn fast_from_str<T: DeserializeOwned>(doc: &str) -> Result<T, Declined> {
    if doc.trim_start().starts_with('{') {
        return serde_json::from_str(doc).map_err(|e| Declined(format!("JSON: {e}")));
    }
    match parse(doc)? {
        Some(node) => T::deserialize(&node),
        None => T::deserialize(&Node::Null),
    }
}

/// A parsed node. Plain scalars keep their text; their type is decided by
/// what they are deserialized into.
#[derive(Debug, Clone, PartialEq)]
pub enum Node<'a> {
    /// An empty value (`key:` with nothing under it).
    Null,
    Scalar(Scalar<'a>),
    Seq(Vec<Node<'a>>),
    Map(Vec<(Scalar<'a>, Node<'a>)>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Scalar<'a> {
    pub text: Cow<'a, str>,
    /// Quoted or block scalars are strings; plain ones are resolved.
    pub plain: bool,
}

/// Parses one document (no `---` lines). `None`: the document is empty.
pub fn parse(doc: &str) -> Result<Option<Node<'_>>, Declined> {
    let mut lines = Vec::new();
    for raw in doc.lines() {
        if raw.contains(['\t', '\u{feff}']) {
            return decline("a tab or byte-order mark");
        }
        let text = raw.trim_end();
        let body = text.trim_start();
        let indent = text.len() - body.len();
        if indent == 0
            && (body.starts_with("---") || body.starts_with("...") || body.starts_with('%'))
        {
            return decline("a document marker or directive");
        }
        lines.push(Line {
            indent,
            text: body,
            raw,
        });
    }
    let mut p = Parser { lines, at: 0 };
    p.skip_insignificant();
    let Some(first) = p.peek() else {
        return Ok(None);
    };
    let node = p.block(first.indent)?;
    p.skip_insignificant();
    if p.peek().is_some() {
        return decline("text after the top-level node");
    }
    Ok(Some(node))
}

#[derive(Debug, Clone, Copy)]
struct Line<'a> {
    indent: usize,
    /// Without indentation and trailing whitespace.
    text: &'a str,
    /// As in the document, for block scalars.
    raw: &'a str,
}

impl Line<'_> {
    fn insignificant(&self) -> bool {
        self.text.is_empty() || self.text.starts_with('#')
    }
    fn is_seq_item(&self) -> bool {
        self.text == "-" || self.text.starts_with("- ")
    }
}

struct Parser<'a> {
    lines: Vec<Line<'a>>,
    at: usize,
}

impl<'a> Parser<'a> {
    fn skip_insignificant(&mut self) {
        while self.lines.get(self.at).is_some_and(Line::insignificant) {
            self.at += 1;
        }
    }

    fn peek(&self) -> Option<Line<'a>> {
        self.lines.get(self.at).copied()
    }

    /// The block node whose first line (significant, current) is at `indent`.
    fn block(&mut self, indent: usize) -> Result<Node<'a>, Declined> {
        let line = self.peek().expect("caller checked");
        if line.is_seq_item() {
            self.seq(indent)
        } else if line.text.starts_with(['{', '[']) {
            // A one-line flow collection standing alone.
            self.at += 1;
            let node = flow_line(line.text)?;
            self.no_continuation(indent)?;
            Ok(node)
        } else if split_key(line.text)?.is_some() {
            self.map(indent)
        } else {
            decline("a bare scalar where a block was expected")
        }
    }

    fn seq(&mut self, indent: usize) -> Result<Node<'a>, Declined> {
        let mut items = Vec::new();
        loop {
            self.skip_insignificant();
            let Some(line) = self.peek() else { break };
            if line.indent < indent || (line.indent == indent && !line.is_seq_item()) {
                break;
            }
            if line.indent > indent {
                return decline("a sequence item indented deeper than its siblings");
            }
            let rest = line.text[1..].trim_start();
            if rest.is_empty() || rest.starts_with('#') {
                self.at += 1;
                items.push(self.nested(indent, false)?);
                continue;
            }
            if rest == "-" || rest.starts_with("- ") {
                return decline("a compact nested sequence");
            }
            let column = indent + (line.text.len() - rest.len());
            if split_key(rest)?.is_some() {
                // `- key: value`: a mapping whose keys sit at `column`.
                self.lines[self.at] = Line {
                    indent: column,
                    text: rest,
                    ..line
                };
                items.push(self.map(column)?);
            } else {
                self.at += 1;
                items.push(self.inline_value(rest, indent)?);
            }
        }
        Ok(Node::Seq(items))
    }

    fn map(&mut self, indent: usize) -> Result<Node<'a>, Declined> {
        let mut entries: Vec<(Scalar<'a>, Node<'a>)> = Vec::new();
        loop {
            self.skip_insignificant();
            let Some(line) = self.peek() else { break };
            if line.indent < indent || (line.indent == indent && line.is_seq_item()) {
                break;
            }
            if line.indent > indent {
                return decline("a mapping key indented deeper than its siblings");
            }
            let Some((key, rest)) = split_key(line.text)? else {
                return decline("a line in a mapping that is not a key");
            };
            if entries.iter().any(|(k, _)| k.text == key.text) {
                return decline("a duplicate key");
            }
            self.at += 1;
            let value = if rest.is_empty() || rest.starts_with('#') {
                self.nested(indent, true)?
            } else {
                self.inline_value(rest, indent)?
            };
            entries.push((key, value));
        }
        Ok(Node::Map(entries))
    }

    /// The value under a `key:` or `-` with nothing after it: a deeper
    /// block, an indentless sequence (for a key), or empty.
    fn nested(&mut self, indent: usize, after_key: bool) -> Result<Node<'a>, Declined> {
        self.skip_insignificant();
        match self.peek() {
            Some(next) if next.indent > indent => self.block(next.indent),
            Some(next) if after_key && next.indent == indent && next.is_seq_item() => {
                self.seq(indent)
            }
            _ => Ok(Node::Null),
        }
    }

    /// A value written on its line after `key: ` or `- `; the line is
    /// already consumed. `indent` is the parent's indentation.
    fn inline_value(&mut self, rest: &'a str, indent: usize) -> Result<Node<'a>, Declined> {
        let node = match rest.as_bytes()[0] {
            b'{' | b'[' => flow_line(rest)?,
            b'"' | b'\'' => {
                let (s, after) = quoted(rest)?;
                end_of_line(after)?;
                Node::Scalar(s)
            }
            b'|' => return self.literal(rest, indent),
            b'>' => return decline("a folded scalar"),
            b'&' | b'*' | b'!' => return decline("an anchor, alias or tag"),
            _ => Node::Scalar(Scalar {
                text: Cow::Borrowed(block_plain(rest)?),
                plain: true,
            }),
        };
        self.no_continuation(indent)?;
        Ok(node)
    }

    /// After a one-line value, a deeper line would continue it (a
    /// multi-line scalar) or be an error: leave both to serde-saphyr.
    fn no_continuation(&mut self, indent: usize) -> Result<(), Declined> {
        self.skip_insignificant();
        match self.peek() {
            Some(next) if next.indent > indent => decline("a value continued on the next line"),
            _ => Ok(()),
        }
    }

    /// A literal block scalar (`|`, `|-`, `|+`) whose parent is at `indent`.
    fn literal(&mut self, header: &str, indent: usize) -> Result<Node<'a>, Declined> {
        let chomp = match header.split(" #").next().unwrap_or("").trim_end() {
            "|" => Chomp::Clip,
            "|-" => Chomp::Strip,
            "|+" => Chomp::Keep,
            _ => return decline("a block scalar header with an indentation indicator"),
        };
        // Content lines: blank ones, and those indented at least as deep as
        // the first non-blank one (which must be deeper than the parent).
        let mut content_indent = None;
        let mut text = String::new();
        while let Some(line) = self.peek() {
            if line.text.is_empty() {
                if content_indent.is_none() && !line.raw.is_empty() {
                    return decline("spaces before a block scalar's first line");
                }
                let extra = content_indent.map_or("", |c| line.raw.get(c..).unwrap_or(""));
                text.push_str(extra);
                text.push('\n');
                self.at += 1;
                continue;
            }
            let c = *content_indent.get_or_insert(line.indent);
            if line.indent < c {
                break;
            }
            if c <= indent {
                return decline("a block scalar not indented under its parent");
            }
            text.push_str(&line.raw[c..]);
            text.push('\n');
            self.at += 1;
        }
        if content_indent.is_none() {
            return decline("an empty block scalar");
        }
        let body_len = text.trim_end_matches('\n').len();
        match chomp {
            Chomp::Strip => text.truncate(body_len),
            Chomp::Clip if body_len < text.len() => text.truncate(body_len + 1),
            Chomp::Clip | Chomp::Keep => {}
        }
        self.no_continuation(indent)?;
        Ok(Node::Scalar(Scalar {
            text: Cow::Owned(text),
            plain: false,
        }))
    }
}

enum Chomp {
    Clip,
    Strip,
    Keep,
}

/// `key: rest` or `key:` at the start of `text`: the key and what follows
/// the colon (trimmed). `None`: the line is not a mapping entry.
fn split_key(text: &str) -> Result<Option<(Scalar<'_>, &str)>, Declined> {
    if text.starts_with(['{', '[']) {
        return Ok(None);
    }
    if text.starts_with(['"', '\'']) {
        let (key, after) = quoted(text)?;
        return match after.strip_prefix(':') {
            Some(rest) if rest.is_empty() || rest.starts_with(' ') => {
                Ok(Some((key, rest.trim_start())))
            }
            _ => Ok(None),
        };
    }
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b':' if i + 1 == bytes.len() || bytes[i + 1] == b' ' => {
                let key = &text[..i];
                if key.is_empty() || !plain_start_ok(key) || key.ends_with(' ') {
                    return decline("an unusual key");
                }
                if key.contains(['[', ']', '{', '}', ',', '#', '"', '\'']) {
                    return decline("an unusual key");
                }
                let key = Scalar {
                    text: Cow::Borrowed(key),
                    plain: true,
                };
                return Ok(Some((key, text[i + 1..].trim_start())));
            }
            b'#' if i > 0 && bytes[i - 1] == b' ' => return Ok(None),
            _ => {}
        }
        i += 1;
    }
    Ok(None)
}

/// Whether a plain scalar may start this way (no indicator character).
fn plain_start_ok(s: &str) -> bool {
    let b = s.as_bytes();
    match b.first() {
        None => false,
        Some(b'-' | b'?' | b':') => b.get(1).is_some_and(|c| *c != b' '),
        Some(
            b',' | b'[' | b']' | b'{' | b'}' | b'#' | b'&' | b'*' | b'!' | b'|' | b'>' | b'\''
            | b'"' | b'%' | b'@' | b'`',
        ) => false,
        Some(_) => true,
    }
}

/// A plain scalar ending a block line (a comment cut off).
fn block_plain(rest: &str) -> Result<&str, Declined> {
    let value = match rest.find(" #") {
        Some(i) => rest[..i].trim_end(),
        None => rest,
    };
    if !plain_start_ok(value) || value.contains(": ") || value.ends_with(':') {
        return decline("an unusual plain scalar");
    }
    Ok(value)
}

/// Only a comment (after a space) may follow a value on its line.
fn end_of_line(after: &str) -> Result<(), Declined> {
    let t = after.trim_start();
    if t.is_empty() || (t.starts_with('#') && t.len() < after.len()) {
        Ok(())
    } else {
        decline("text after a value")
    }
}

/// A one-line quoted scalar at the start of `s`, and what follows it.
fn quoted(s: &str) -> Result<(Scalar<'_>, &str), Declined> {
    let quote = s.as_bytes()[0];
    let body = &s[1..];
    if quote == b'\'' {
        let mut out: Option<String> = None;
        let mut i = 0;
        let b = body.as_bytes();
        while i < b.len() {
            if b[i] == b'\'' {
                if b.get(i + 1) == Some(&b'\'') {
                    let o = out.get_or_insert_with(|| body[..i].to_owned());
                    o.push('\'');
                    i += 2;
                    continue;
                }
                let text = match out {
                    Some(o) => Cow::Owned(o),
                    None => Cow::Borrowed(&body[..i]),
                };
                return Ok((Scalar { text, plain: false }, &body[i + 1..]));
            }
            if let Some(o) = out.as_mut() {
                let ch = body[i..].chars().next().expect("in bounds");
                o.push(ch);
                i += ch.len_utf8();
            } else {
                i += 1;
            }
        }
        return decline("a quoted scalar going on past its line");
    }
    let b = body.as_bytes();
    let Some(first_special) = b.iter().position(|c| *c == b'"' || *c == b'\\') else {
        return decline("a quoted scalar going on past its line");
    };
    if b[first_special] == b'"' {
        return Ok((
            Scalar {
                text: Cow::Borrowed(&body[..first_special]),
                plain: false,
            },
            &body[first_special + 1..],
        ));
    }
    let mut out = body[..first_special].to_owned();
    let mut chars = body[first_special..].char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => {
                let rest = &body[first_special + i + 1..];
                return Ok((
                    Scalar {
                        text: Cow::Owned(out),
                        plain: false,
                    },
                    rest,
                ));
            }
            '\\' => {
                let Some((_, e)) = chars.next() else { break };
                let simple = match e {
                    '0' => '\0',
                    'a' => '\x07',
                    'b' => '\x08',
                    't' => '\t',
                    'n' => '\n',
                    'v' => '\x0b',
                    'f' => '\x0c',
                    'r' => '\r',
                    'e' => '\x1b',
                    ' ' => ' ',
                    '"' => '"',
                    '/' => '/',
                    '\\' => '\\',
                    'N' => '\u{85}',
                    '_' => '\u{a0}',
                    'L' => '\u{2028}',
                    'P' => '\u{2029}',
                    'x' | 'u' | 'U' => {
                        let n = match e {
                            'x' => 2,
                            'u' => 4,
                            _ => 8,
                        };
                        let hex: String = chars.by_ref().take(n).map(|(_, c)| c).collect();
                        let code = (hex.len() == n)
                            .then(|| u32::from_str_radix(&hex, 16).ok())
                            .flatten()
                            .and_then(char::from_u32);
                        match code {
                            Some(c) => c,
                            None => return decline("an unusual escape"),
                        }
                    }
                    _ => return decline("an unusual escape"),
                };
                out.push(simple);
            }
            c => out.push(c),
        }
    }
    decline("a quoted scalar going on past its line")
}

/// A flow collection that must close on its line, then only a comment.
fn flow_line(text: &str) -> Result<Node<'_>, Declined> {
    let mut f = Flow { s: text, at: 0 };
    let node = f.node()?;
    end_of_line(&text[f.at..])?;
    Ok(node)
}

struct Flow<'a> {
    s: &'a str,
    at: usize,
}

impl<'a> Flow<'a> {
    fn skip_spaces(&mut self) {
        while self.s.as_bytes().get(self.at) == Some(&b' ') {
            self.at += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.at).copied()
    }

    fn node(&mut self) -> Result<Node<'a>, Declined> {
        self.skip_spaces();
        match self.peek() {
            Some(b'{') => self.collection(b'}'),
            Some(b'[') => self.collection(b']'),
            Some(b'"' | b'\'') => {
                let (s, after) = quoted(&self.s[self.at..])?;
                self.at = self.s.len() - after.len();
                Ok(Node::Scalar(s))
            }
            Some(_) => self.plain().map(Node::Scalar),
            None => decline("a flow collection going on past its line"),
        }
    }

    fn collection(&mut self, close: u8) -> Result<Node<'a>, Declined> {
        self.at += 1;
        let mut items = Vec::new();
        let mut entries: Vec<(Scalar<'a>, Node<'a>)> = Vec::new();
        loop {
            self.skip_spaces();
            match self.peek() {
                None => return decline("a flow collection going on past its line"),
                Some(c) if c == close => {
                    self.at += 1;
                    break;
                }
                _ => {}
            }
            if close == b'}' {
                let key = match self.node()? {
                    Node::Scalar(k) => k,
                    _ => return decline("a collection as a key"),
                };
                self.skip_spaces();
                if self.peek() != Some(b':') {
                    return decline("a flow mapping entry without a value");
                }
                self.at += 1;
                self.skip_spaces();
                let value = match self.peek() {
                    Some(b',' | b'}') => Node::Null,
                    _ => self.node()?,
                };
                if entries.iter().any(|(k, _)| k.text == key.text) {
                    return decline("a duplicate key");
                }
                entries.push((key, value));
            } else {
                items.push(self.node()?);
                self.skip_spaces();
                if self.peek() == Some(b':') {
                    return decline("a mapping inside a flow sequence");
                }
            }
            self.skip_spaces();
            match self.peek() {
                Some(b',') => {
                    self.at += 1;
                    self.skip_spaces();
                    if self.peek() == Some(b',') {
                        return decline("an empty flow entry");
                    }
                }
                Some(c) if c == close => {}
                _ => return decline("an unusual flow collection"),
            }
        }
        Ok(if close == b'}' {
            Node::Map(entries)
        } else {
            Node::Seq(items)
        })
    }

    /// A plain scalar in a flow collection: up to `,` `[` `]` `{` `}`, a
    /// `:` followed by a space or an indicator, or ` #`.
    fn plain(&mut self) -> Result<Scalar<'a>, Declined> {
        let start = self.at;
        let b = self.s.as_bytes();
        let mut end = start;
        while end < b.len() {
            match b[end] {
                b',' | b'[' | b']' | b'{' | b'}' => break,
                b':' if matches!(b.get(end + 1), None | Some(b' ' | b',' | b']' | b'}')) => break,
                b'#' if end > start && b[end - 1] == b' ' => {
                    return decline("a comment inside a flow collection");
                }
                _ => end += 1,
            }
        }
        let text = self.s[start..end].trim_end();
        if !plain_start_ok(text) {
            return decline("an unusual plain scalar");
        }
        self.at = end;
        Ok(Scalar {
            text: Cow::Borrowed(text),
            plain: true,
        })
    }
}

/// What a plain scalar means under the YAML 1.2 core schema, for the
/// forms the fast reader decides itself; anything else declines.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Resolved {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str,
    /// A form serde-saphyr may read differently (YAML 1.1 booleans, octal,
    /// hex, `.inf` …): decline.
    Unsure,
}

fn resolve(text: &str) -> Resolved {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Resolved::Null,
        "true" | "True" | "TRUE" => return Resolved::Bool(true),
        "false" | "False" | "FALSE" => return Resolved::Bool(false),
        _ => {}
    }
    let lower = text.to_ascii_lowercase();
    if matches!(lower.as_str(), "y" | "n" | "yes" | "no" | "on" | "off") {
        return Resolved::Unsure;
    }
    let b = text.as_bytes();
    let first = b[0];
    if !(first.is_ascii_digit() || matches!(first, b'-' | b'+' | b'.')) {
        return Resolved::Str;
    }
    let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
    if !unsigned.is_empty() && unsigned.bytes().all(|c| c.is_ascii_digit()) {
        if unsigned.len() > 1 && unsigned.starts_with('0') {
            return Resolved::Unsure;
        }
        if let Ok(i) = text.parse::<i64>() {
            return Resolved::Int(i);
        }
        if let Ok(u) = text.parse::<u64>() {
            return Resolved::UInt(u);
        }
        return Resolved::Unsure;
    }
    // Anything else number-like (floats, `1e3`, `.inf`, `0x1f`, `1_000`,
    // `1:30`) is left to serde-saphyr; IP addresses and versions like
    // `10.96.0.1` or `1.2.3` are plainly strings.
    let dots = text.bytes().filter(|c| *c == b'.').count();
    if dots >= 2 && text.bytes().all(|c| c.is_ascii_digit() || c == b'.') {
        return Resolved::Str;
    }
    if text
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'+' | b'-' | b'_' | b':'))
    {
        if let Ok(f) = text.parse::<f64>()
            && f.is_finite()
            && text
                .bytes()
                .all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'-' | b'+'))
        {
            return Resolved::Float(f);
        }
        return Resolved::Unsure;
    }
    Resolved::Str
}

impl Scalar<'_> {
    fn resolved(&self) -> Resolved {
        if self.plain {
            resolve(&self.text)
        } else {
            Resolved::Str
        }
    }
}

impl<'de> Deserializer<'de> for &Node<'_> {
    type Error = Declined;

    fn deserialize_any<V: de::Visitor<'de>>(self, v: V) -> Result<V::Value, Declined> {
        match self {
            Node::Null => v.visit_unit(),
            Node::Scalar(s) => match s.resolved() {
                Resolved::Null => v.visit_unit(),
                Resolved::Bool(b) => v.visit_bool(b),
                Resolved::Int(i) => v.visit_i64(i),
                Resolved::UInt(u) => v.visit_u64(u),
                Resolved::Float(f) => v.visit_f64(f),
                Resolved::Str => v.visit_str(&s.text),
                Resolved::Unsure => decline("an ambiguous plain scalar"),
            },
            Node::Seq(items) => v.visit_seq(Items(items.iter())),
            Node::Map(entries) => v.visit_map(Entries {
                iter: entries.iter(),
                value: None,
            }),
        }
    }

    fn deserialize_option<V: de::Visitor<'de>>(self, v: V) -> Result<V::Value, Declined> {
        match self {
            Node::Null => v.visit_none(),
            Node::Scalar(s) if s.resolved() == Resolved::Null => v.visit_none(),
            _ => v.visit_some(self),
        }
    }

    fn deserialize_str<V: de::Visitor<'de>>(self, v: V) -> Result<V::Value, Declined> {
        // serde-saphyr reads any scalar into a string as written, except
        // the null forms, which it refuses.
        match self {
            Node::Scalar(s) if !s.plain || resolve(&s.text) != Resolved::Null => {
                v.visit_str(&s.text)
            }
            _ => decline("null as a string"),
        }
    }

    fn deserialize_string<V: de::Visitor<'de>>(self, v: V) -> Result<V::Value, Declined> {
        self.deserialize_str(v)
    }

    fn deserialize_identifier<V: de::Visitor<'de>>(self, v: V) -> Result<V::Value, Declined> {
        self.deserialize_str(v)
    }

    fn deserialize_bool<V: de::Visitor<'de>>(self, v: V) -> Result<V::Value, Declined> {
        match self {
            Node::Scalar(s) => match s.resolved() {
                Resolved::Bool(b) => v.visit_bool(b),
                _ => decline("not plainly a boolean"),
            },
            _ => decline("not plainly a boolean"),
        }
    }

    fn deserialize_i64<V: de::Visitor<'de>>(self, v: V) -> Result<V::Value, Declined> {
        match self {
            Node::Scalar(s) => match s.resolved() {
                Resolved::Int(i) => v.visit_i64(i),
                Resolved::UInt(u) => v.visit_u64(u),
                _ => decline("not plainly an integer"),
            },
            _ => decline("not plainly an integer"),
        }
    }

    fn deserialize_f64<V: de::Visitor<'de>>(self, v: V) -> Result<V::Value, Declined> {
        match self {
            Node::Scalar(s) => match s.resolved() {
                Resolved::Float(f) => v.visit_f64(f),
                Resolved::Int(i) => v.visit_f64(i as f64),
                _ => decline("not plainly a number"),
            },
            _ => decline("not plainly a number"),
        }
    }

    fn deserialize_unit<V: de::Visitor<'de>>(self, v: V) -> Result<V::Value, Declined> {
        match self {
            Node::Null => v.visit_unit(),
            Node::Scalar(s) if s.resolved() == Resolved::Null => v.visit_unit(),
            _ => decline("not plainly null"),
        }
    }

    fn deserialize_seq<V: de::Visitor<'de>>(self, v: V) -> Result<V::Value, Declined> {
        match self {
            Node::Seq(items) => v.visit_seq(Items(items.iter())),
            _ => decline("not a sequence"),
        }
    }

    fn deserialize_map<V: de::Visitor<'de>>(self, v: V) -> Result<V::Value, Declined> {
        match self {
            Node::Map(entries) => v.visit_map(Entries {
                iter: entries.iter(),
                value: None,
            }),
            _ => decline("not a mapping"),
        }
    }

    fn deserialize_struct<V: de::Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Declined> {
        self.deserialize_map(v)
    }

    fn deserialize_newtype_struct<V: de::Visitor<'de>>(
        self,
        _name: &'static str,
        v: V,
    ) -> Result<V::Value, Declined> {
        v.visit_newtype_struct(self)
    }

    fn deserialize_ignored_any<V: de::Visitor<'de>>(self, v: V) -> Result<V::Value, Declined> {
        v.visit_unit()
    }

    fn deserialize_i8<V: de::Visitor<'de>>(self, v: V) -> Result<V::Value, Declined> {
        self.deserialize_i64(v)
    }
    fn deserialize_i16<V: de::Visitor<'de>>(self, v: V) -> Result<V::Value, Declined> {
        self.deserialize_i64(v)
    }
    fn deserialize_i32<V: de::Visitor<'de>>(self, v: V) -> Result<V::Value, Declined> {
        self.deserialize_i64(v)
    }
    fn deserialize_u8<V: de::Visitor<'de>>(self, v: V) -> Result<V::Value, Declined> {
        self.deserialize_i64(v)
    }
    fn deserialize_u16<V: de::Visitor<'de>>(self, v: V) -> Result<V::Value, Declined> {
        self.deserialize_i64(v)
    }
    fn deserialize_u32<V: de::Visitor<'de>>(self, v: V) -> Result<V::Value, Declined> {
        self.deserialize_i64(v)
    }
    fn deserialize_u64<V: de::Visitor<'de>>(self, v: V) -> Result<V::Value, Declined> {
        self.deserialize_i64(v)
    }
    fn deserialize_f32<V: de::Visitor<'de>>(self, v: V) -> Result<V::Value, Declined> {
        self.deserialize_f64(v)
    }

    fn deserialize_char<V: de::Visitor<'de>>(self, _v: V) -> Result<V::Value, Declined> {
        decline("a char")
    }
    fn deserialize_bytes<V: de::Visitor<'de>>(self, _v: V) -> Result<V::Value, Declined> {
        decline("bytes")
    }
    fn deserialize_byte_buf<V: de::Visitor<'de>>(self, _v: V) -> Result<V::Value, Declined> {
        decline("bytes")
    }
    fn deserialize_unit_struct<V: de::Visitor<'de>>(
        self,
        _name: &'static str,
        v: V,
    ) -> Result<V::Value, Declined> {
        self.deserialize_unit(v)
    }
    fn deserialize_tuple<V: de::Visitor<'de>>(
        self,
        _len: usize,
        v: V,
    ) -> Result<V::Value, Declined> {
        self.deserialize_seq(v)
    }
    fn deserialize_tuple_struct<V: de::Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        v: V,
    ) -> Result<V::Value, Declined> {
        self.deserialize_seq(v)
    }
    fn deserialize_enum<V: de::Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        _v: V,
    ) -> Result<V::Value, Declined> {
        decline("an enum")
    }
}

struct Items<'b, 'a>(std::slice::Iter<'b, Node<'a>>);

impl<'de> SeqAccess<'de> for Items<'_, '_> {
    type Error = Declined;
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Declined> {
        self.0.next().map(|n| seed.deserialize(n)).transpose()
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

struct Entries<'b, 'a> {
    iter: std::slice::Iter<'b, (Scalar<'a>, Node<'a>)>,
    value: Option<&'b Node<'a>>,
}

impl<'de> MapAccess<'de> for Entries<'_, '_> {
    type Error = Declined;
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Declined> {
        let Some((key, value)) = self.iter.next() else {
            return Ok(None);
        };
        self.value = Some(value);
        seed.deserialize(&Node::Scalar(key.clone())).map(Some)
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Declined> {
        let value = self
            .value
            .take()
            .ok_or_else(|| Declined("value before key".into()))?;
        seed.deserialize(value)
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.iter.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Value, json};
    use std::collections::BTreeMap;

    /// The fast reader's answer, checked against serde-saphyr's.
    fn same_as_saphyr(doc: &str) -> Result<Value, Declined> {
        let fast = fast_from_str::<Value>(doc)?;
        let slow: Result<Value, _> = serde_saphyr::from_str(doc);
        match slow {
            Ok(slow) => assert_eq!(fast, slow, "document:\n{doc}"),
            Err(e) => panic!("serde-saphyr refuses what the fast reader took ({e}):\n{doc}"),
        }
        Ok(fast)
    }

    #[test]
    fn reads_the_yaml_manifests_are_written_in() {
        let doc = r#"
# a comment
apiVersion: v1
kind: Service
metadata:
  name: web   # trailing comment
  namespace: "prod"
  labels: {app: web, 'tier': "front end", version: "1.10"}
  annotations:
    note: |
      line one
        indented
      line three
    empty:
spec:
  clusterIP: 10.96.0.1
  clusterIPs: [10.96.0.1, "fd00::1"]
  ports:
  - name: http
    port: 80
    targetPort: 8080
  - {name: dns, port: 53, protocol: UDP, targetPort: dns}
  selector:
    app.kubernetes.io/name: web
  sessionAffinityConfig:
    clientIP:
      timeoutSeconds: 10800
  externalIPs:
    - 192.0.2.1
    -   192.0.2.2
  url: http://example.com:8080/x#frag
  flags: [true, false, ~, null, -1, 2.5]
"#;
        let v = same_as_saphyr(doc).map_err(|e| e.0).unwrap();
        assert_eq!(v["metadata"]["labels"]["tier"], "front end");
        assert_eq!(
            v["metadata"]["annotations"]["note"],
            "line one\n  indented\nline three\n"
        );
        assert_eq!(v["metadata"]["annotations"]["empty"], Value::Null);
        assert_eq!(v["spec"]["ports"][1]["targetPort"], "dns");
        assert_eq!(v["spec"]["ports"][0]["targetPort"], 8080);
        assert_eq!(v["spec"]["externalIPs"], json!(["192.0.2.1", "192.0.2.2"]));
        assert_eq!(
            v["spec"]["flags"],
            json!([true, false, null, null, -1, 2.5])
        );
    }

    #[test]
    fn escapes_and_chomping_match() {
        for doc in [
            r#"a: "tab\there \"q\" \\ \u00e9 \x41""#,
            "a: 'it''s'",
            "a: |-\n  x\n  y\n\nb: 1",
            "a: |+\n  x\n\n\nb: 1",
            "a: |\n  x\n\n\n",
            "a:\n- x\n- z\nb: z",
            "a: []\nb: {}\nc: [ ]\nd: [a, b,]",
            "'quoted key': 1\n\"k2\": 2",
            "a: b:c\nd: x-1\ne: x#y",
        ] {
            same_as_saphyr(doc).unwrap();
        }
    }

    #[test]
    fn declines_what_it_does_not_read_itself() {
        for doc in [
            "a: &x 1\nb: *x",
            "a: !!str 1",
            "a: >\n  folded\n",
            "a: plain\n  continued",
            "a: \"two\n  lines\"",
            "a: [1,\n  2]",
            "a:\tb",
            "? complex\n: key",
            "a: yes",
            "a: 0x1f",
            "a: 1e3",
            "a: 007",
            "a: .inf",
            "a: 1\na: 2",
            "- - a",
        ] {
            assert!(fast_from_str::<Value>(doc).is_err(), "took:\n{doc}");
        }
        // Into a string, a plain scalar is read as written, as serde-saphyr
        // does; null is left to serde-saphyr's error.
        let strings = "a: 80\nb: \"80\"\nc: 2024-01-01T00:00:00Z\nd: yes";
        let read = fast_from_str::<BTreeMap<String, String>>(strings).unwrap();
        assert_eq!(
            read,
            serde_saphyr::from_str::<BTreeMap<String, String>>(strings).unwrap()
        );
        assert!(fast_from_str::<BTreeMap<String, String>>("a: ~").is_err());
    }

    #[test]
    fn every_answer_and_error_is_serde_saphyrs() {
        // The public entry point falls back, so errors are serde-saphyr's.
        let e = from_str::<Value>("a: [1,\n b: c").unwrap_err();
        let direct = serde_saphyr::from_str::<Value>("a: [1,\n b: c").unwrap_err();
        assert_eq!(e.to_string(), direct.to_string());
        assert_eq!(
            from_str::<Value>("a: yes").unwrap()["a"],
            json!(serde_saphyr::from_str::<Value>("a: yes").unwrap()["a"])
        );
    }

    #[test]
    fn json_documents_are_read_as_json() {
        let v =
            same_as_saphyr(r#"{"kind": "Service", "spec": {"ports": [{"port": 80}]}}"#).unwrap();
        assert_eq!(v["spec"]["ports"][0]["port"], 80);
    }

    // Random documents in the styles manifests use, some of them invalid or
    // ambiguous on purpose: whatever the fast reader accepts, it must read
    // exactly as serde-saphyr does.

    #[derive(Debug, Clone)]
    enum Tree {
        Scalar(String, Style),
        Seq(Vec<Tree>),
        Map(Vec<(String, Style, Tree)>),
    }

    #[derive(Debug, Clone, Copy)]
    enum Style {
        Plain,
        Single,
        Double,
    }

    const WORDS: &[&str] = &[
        "a",
        "web",
        "foo bar",
        "10.96.0.1",
        "fd00::1",
        "80",
        "-1",
        "0",
        "007",
        "1.5",
        "1e3",
        ".inf",
        "true",
        "False",
        "yes",
        "null",
        "~",
        "",
        "a: b",
        "a:b",
        "#x",
        "a #b",
        "a#b",
        "- x",
        "-x",
        "http://x:1/y",
        "it's",
        "\"dq\"",
        "[x]",
        "{x}",
        ",",
        "é ü",
        "x,y",
        " lead",
        "trail ",
        "back\\slash",
        "line\nbreak",
        "1.2.3",
        "+1",
        "0.5",
        "*",
        "&a",
        "!t",
        "|",
        ">",
        "%",
        "@",
        "`",
        "?",
        ":",
        "a: ",
        "key:",
        "TRUE",
        "Null",
        "0x10",
        "1_000",
    ];

    fn style() -> impl Strategy<Value = Style> {
        prop_oneof![
            6 => Just(Style::Plain),
            1 => Just(Style::Single),
            1 => Just(Style::Double)
        ]
    }

    fn scalar() -> impl Strategy<Value = (String, Style)> {
        (prop::sample::select(WORDS), style()).prop_map(|(w, s)| (w.to_owned(), s))
    }

    fn tree() -> impl Strategy<Value = Tree> {
        let leaf = scalar().prop_map(|(w, s)| Tree::Scalar(w, s));
        leaf.prop_recursive(4, 40, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Tree::Seq),
                prop::collection::vec((scalar(), inner), 0..4).prop_map(|entries| {
                    Tree::Map(entries.into_iter().map(|((k, s), v)| (k, s, v)).collect())
                }),
            ]
        })
    }

    fn render_scalar(w: &str, s: Style) -> String {
        match s {
            Style::Plain => w.to_owned(),
            Style::Single => format!("'{}'", w.replace('\'', "''")),
            Style::Double => format!(
                "\"{}\"",
                w.replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n")
            ),
        }
    }

    fn flow(t: &Tree) -> String {
        match t {
            Tree::Scalar(w, s) => render_scalar(w, *s),
            Tree::Seq(items) => format!(
                "[{}]",
                items.iter().map(flow).collect::<Vec<_>>().join(", ")
            ),
            Tree::Map(entries) => format!(
                "{{{}}}",
                entries
                    .iter()
                    .map(|(k, s, v)| format!("{}: {}", render_scalar(k, *s), flow(v)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    /// Block style; `choices` picks flow for some children, indentless
    /// sequences and 2- or 4-space steps.
    fn block(t: &Tree, indent: usize, choices: &mut impl Iterator<Item = u8>, out: &mut String) {
        let pad = " ".repeat(indent);
        match t {
            Tree::Scalar(..) => {}
            Tree::Seq(items) => {
                for item in items {
                    match item {
                        Tree::Map(e)
                            if !e.is_empty() && choices.next().unwrap_or(0).is_multiple_of(2) =>
                        {
                            // `- key: value`, the rest at indent + 2.
                            let mut sub = String::new();
                            block(item, indent + 2, choices, &mut sub);
                            out.push_str(&format!("{pad}- {}", &sub[indent + 2..]));
                        }
                        Tree::Seq(_) | Tree::Map(_)
                            if nonempty(item) && !choices.next().unwrap_or(0).is_multiple_of(3) =>
                        {
                            out.push_str(&format!("{pad}-\n"));
                            block(item, indent + 2, choices, out);
                        }
                        _ => out.push_str(&format!("{pad}- {}\n", flow(item))),
                    }
                }
            }
            Tree::Map(entries) => {
                for (k, s, v) in entries {
                    let key = render_scalar(k, *s);
                    let c = choices.next().unwrap_or(0);
                    if nonempty(v) && !c.is_multiple_of(4) {
                        out.push_str(&format!("{pad}{key}:\n"));
                        let step = if c % 4 == 1 { 4 } else { 2 };
                        let child = if matches!(v, Tree::Seq(_)) && c % 4 == 3 {
                            indent
                        } else {
                            indent + step
                        };
                        block(v, child, choices, out);
                    } else {
                        out.push_str(&format!("{pad}{key}: {}\n", flow(v)));
                    }
                }
            }
        }
    }

    fn nonempty(t: &Tree) -> bool {
        e_len(t) > 0
    }

    fn e_len(t: &Tree) -> usize {
        match t {
            Tree::Scalar(..) => 0,
            Tree::Seq(i) => i.len(),
            Tree::Map(e) => e.len(),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        #[test]
        fn whatever_the_fast_reader_takes_it_reads_as_serde_saphyr(
            t in tree(),
            choices in prop::collection::vec(any::<u8>(), 64),
        ) {
            let mut doc = String::new();
            match &t {
                Tree::Scalar(..) => doc = format!("{}\n", flow(&t)),
                _ => block(&t, 0, &mut choices.into_iter(), &mut doc),
            }
            let _ = same_as_saphyr(&doc);
            if let Ok(fast) = fast_from_str::<BTreeMap<String, String>>(&doc) {
                let slow: BTreeMap<String, String> = serde_saphyr::from_str(&doc).unwrap();
                prop_assert_eq!(fast, slow);
            }
        }
    }
}
