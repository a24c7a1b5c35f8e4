//! The Prometheus text format, as far as the dashboard reads it: samples
//! of the families it shows, counters turned into rates between two
//! scrapes, and quantiles from histogram buckets.

use std::collections::BTreeMap;

/// One sample: family-qualified name (`…_bucket`, `…_count`), labels in
/// sorted order, value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, k: &str) -> &str {
        self.labels.get(k).map_or("", String::as_str)
    }
}

/// Label values longer than this are not kept (the sample is skipped).
const MAX_LABEL: usize = 256;

/// At most `max` samples whose name starts with one of `keep`; lines that
/// do not parse, and samples with a label value over [`MAX_LABEL`] bytes,
/// are skipped (a sidecar's text is not trusted to be perfect or small).
pub fn parse(text: &str, keep: &[&str], max: usize) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && keep.iter().any(|k| l.starts_with(k)))
        .filter_map(line)
        .filter(|s| s.labels.values().all(|v| v.len() <= MAX_LABEL))
        .take(max)
        .collect()
}

fn line(l: &str) -> Option<Sample> {
    let (name, rest) = match l.find(['{', ' ']) {
        Some(i) => (&l[..i], &l[i..]),
        None => return None,
    };
    let mut labels = BTreeMap::new();
    let rest = if let Some(body) = rest.strip_prefix('{') {
        let mut chars = body.char_indices().peekable();
        let end;
        loop {
            // key
            let start = chars.peek()?.0;
            while chars.peek().is_some_and(|(_, c)| *c != '=' && *c != '}') {
                chars.next();
            }
            let (i, c) = chars.next()?;
            if c == '}' {
                end = i + 1;
                break;
            }
            let key = body[start..i].trim().trim_start_matches(',').trim();
            if chars.next()?.1 != '"' {
                return None;
            }
            let mut value = String::new();
            loop {
                match chars.next()?.1 {
                    '\\' => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        c => value.push(c),
                    },
                    '"' => break,
                    c => value.push(c),
                }
            }
            labels.insert(key.to_string(), value);
            if chars.peek().is_some_and(|(_, c)| *c == ',') {
                chars.next();
            }
            if let Some(&(i, '}')) = chars.peek() {
                end = i + 1;
                break;
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
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// `q` (0–1) of a histogram given as cumulative bucket counts by upper
/// bound (`+Inf` last), interpolated inside the bucket it falls in, as
/// Prometheus' `histogram_quantile` does. `None` with no observations.
pub fn quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut prev = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                // Above the last finite bound: that bound is all we know.
                return Some(prev.0);
            }
            let inside = count - prev.1;
            let frac = if inside > 0.0 {
                (rank - prev.1) / inside
            } else {
                1.0
            };
            return Some(prev.0 + (le - prev.0) * frac);
        }
        prev = (le, count);
    }
    Some(prev.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_labels_with_escapes_and_skips_junk() {
        let text = "# HELP x y\n\
            dapr_a_total{app_id=\"o\\\"rders\",status=\"200\"} 12\n\
            dapr_a_total 3\n\
            dapr_b_bucket{le=\"+Inf\"} 4\n\
            dapr_a_total{broken 1\n\
            dapr_a_total{x=\"1\"} notanumber\n\
            other_total 9\n";
        let s = parse(text, &["dapr_"], 100);
        assert_eq!(s.len(), 3, "{s:?}");
        assert_eq!(s[0].label("app_id"), "o\"rders");
        assert_eq!(s[0].label("status"), "200");
        assert_eq!(s[0].value, 12.0);
        assert!(s[1].labels.is_empty());
        assert_eq!(s[2].label("le"), "+Inf");
        assert_eq!(s[2].value, 4.0);
        assert_eq!(parse(text, &["dapr_"], 2).len(), 2);
        let long = format!("dapr_x{{a=\"{}\"}} 1\ndapr_y 2\n", "v".repeat(300));
        let kept = parse(&long, &["dapr_"], 10);
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].name, "dapr_y");
    }

    #[test]
    fn quantiles_interpolate_inside_the_bucket() {
        let b = [
            (1.0, 0.0),
            (2.0, 50.0),
            (4.0, 100.0),
            (f64::INFINITY, 100.0),
        ];
        assert_eq!(quantile(0.5, &b), Some(2.0));
        assert_eq!(quantile(0.25, &b), Some(1.5));
        assert_eq!(quantile(0.99, &b).map(|v| (v * 100.0).round()), Some(396.0));
        assert_eq!(quantile(0.5, &[(1.0, 0.0), (f64::INFINITY, 0.0)]), None);
        // Everything above the last bound: the last bound.
        assert_eq!(
            quantile(0.5, &[(1.0, 0.0), (f64::INFINITY, 5.0)]),
            Some(1.0)
        );
    }
}
