//! A small parser of the Prometheus/OpenMetrics text format, enough to read
//! the agent's `/metrics` back in tests: `name{label="value",…} value` lines.

use std::collections::BTreeMap;

/// One sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parses every sample line; `None` on a malformed line.
pub fn samples(text: &str) -> Option<Vec<Sample>> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, rest) = match line.find(['{', ' ']) {
            Some(i) => line.split_at(i),
            None => return None,
        };
        let mut labels = BTreeMap::new();
        let rest = if let Some(body) = rest.strip_prefix('{') {
            let mut chars = body.char_indices().peekable();
            let end;
            loop {
                // key
                let start = chars.peek()?.0;
                let mut key_end = start;
                for (i, c) in chars.by_ref() {
                    if c == '=' {
                        key_end = i;
                        break;
                    }
                }
                let key = body[start..key_end].trim_start_matches(',').to_owned();
                if chars.next()?.1 != '"' {
                    return None;
                }
                let mut value = String::new();
                loop {
                    let (_, c) = chars.next()?;
                    match c {
                        '\\' => match chars.next()?.1 {
                            'n' => value.push('\n'),
                            c => value.push(c),
                        },
                        '"' => break,
                        c => value.push(c),
                    }
                }
                labels.insert(key, value);
                match chars.next()? {
                    (i, '}') => {
                        end = i + 1;
                        break;
                    }
                    (_, ',') => {
                        if let Some((i, '}')) = chars.peek().copied() {
                            end = i + 1;
                            break;
                        }
                    }
                    _ => return None,
                }
            }
            &body[end..]
        } else {
            rest
        };
        let value = rest.split_whitespace().next()?;
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().ok()?,
        };
        out.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    Some(out)
}

/// The value of the sample `name` whose labels include `labels`.
pub fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parser_reads_escapes_and_rejects_garbage() {
        let s = samples("a{x=\"q\\\"uo,te\",y=\"2\"} 1.5\nb 2\n# EOF\n").unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].labels["x"], "q\"uo,te");
        assert_eq!(value(&s, "b", &[]), Some(2.0));
        assert!(samples("a{x=1} 2").is_none());
        assert!(samples("a notanumber").is_none());
    }
}
