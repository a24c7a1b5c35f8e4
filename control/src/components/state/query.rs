//! The state query language (alpha, dapr-wire.md §6.1):
//! `{"filter": {EQ|IN|AND|OR}, "sort": [{key, order}], "page": {limit, token}}`
//! over fields of the stored JSON values (`"person.org"` = value.person.org).
//! Parsed once here; each SQL store renders it for its dialect with every
//! value and field path bound as a parameter (nothing user-written is
//! spliced into SQL).

use serde_json::Value;

#[derive(Clone, Debug, PartialEq)]
pub enum Filter {
    Eq(Vec<String>, Value),
    In(Vec<String>, Vec<Value>),
    And(Vec<Filter>),
    Or(Vec<Filter>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Sort {
    pub field: Vec<String>,
    pub descending: bool,
}

#[derive(Clone, Debug, PartialEq, Default)]
pub struct Query {
    pub filter: Option<Filter>,
    pub sort: Vec<Sort>,
    pub limit: Option<u64>,
    /// Where this page starts (the token of the previous page).
    pub offset: u64,
}

#[derive(Clone, Debug)]
pub struct QueryItem {
    /// The stored key (with its prefix).
    pub key: String,
    pub data: bytes::Bytes,
    pub etag: String,
}

#[derive(Clone, Debug, Default)]
pub struct QueryResult {
    pub items: Vec<QueryItem>,
    /// The next page's token, when there may be one.
    pub token: Option<String>,
}

fn field(path: &str) -> Result<Vec<String>, String> {
    let parts: Vec<String> = path.split('.').map(String::from).collect();
    if path.is_empty() || parts.iter().any(|p| p.is_empty() || p.contains('"')) {
        return Err(format!(
            "field `{path}` is not a dotted path such as `person.org`"
        ));
    }
    // The leading `value.` that some callers write is the value itself.
    Ok(match parts.first().map(String::as_str) {
        Some("value") if parts.len() > 1 => parts[1..].to_vec(),
        _ => parts,
    })
}

fn one_field(
    obj: &serde_json::Map<String, Value>,
    op: &str,
) -> Result<(Vec<String>, Value), String> {
    if obj.len() != 1 {
        return Err(format!(
            "{op} takes exactly one field, e.g. {{\"{op}\": {{\"state\": \"CA\"}}}}"
        ));
    }
    let (k, v) = obj.iter().next().expect("one entry");
    Ok((field(k)?, v.clone()))
}

fn parse_filter(v: &Value, depth: usize) -> Result<Filter, String> {
    if depth > 16 {
        return Err("the filter nests more than 16 levels".into());
    }
    let obj = v
        .as_object()
        .filter(|o| o.len() == 1)
        .ok_or("a filter is an object with one operator: EQ, IN, AND or OR")?;
    let (op, arg) = obj.iter().next().expect("one entry");
    match op.as_str() {
        "EQ" => {
            let (f, value) = one_field(arg.as_object().ok_or("EQ takes an object")?, "EQ")?;
            Ok(Filter::Eq(f, value))
        }
        "IN" => {
            let (f, values) = one_field(arg.as_object().ok_or("IN takes an object")?, "IN")?;
            let values = values
                .as_array()
                .cloned()
                .ok_or("IN takes a list of values")?;
            if values.is_empty() {
                return Err("IN takes at least one value".into());
            }
            Ok(Filter::In(f, values))
        }
        "AND" | "OR" => {
            let list = arg
                .as_array()
                .ok_or(format!("{op} takes a list of filters"))?;
            if list.len() < 2 {
                return Err(format!("{op} takes at least two filters"));
            }
            let inner = list
                .iter()
                .map(|f| parse_filter(f, depth + 1))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(if op == "AND" {
                Filter::And(inner)
            } else {
                Filter::Or(inner)
            })
        }
        other => Err(format!(
            "unknown filter operator `{other}`; expected EQ, IN, AND or OR"
        )),
    }
}

/// Parses the query JSON. Errors say what is wrong and what is expected.
pub fn parse(text: &[u8]) -> Result<Query, String> {
    let v: Value =
        serde_json::from_slice(text).map_err(|e| format!("the query is not valid JSON: {e}"))?;
    let obj = v
        .as_object()
        .ok_or("the query is a JSON object with filter, sort and page")?;
    for k in obj.keys() {
        if !matches!(k.as_str(), "filter" | "sort" | "page") {
            return Err(format!(
                "unknown query field `{k}`; expected filter, sort or page"
            ));
        }
    }
    let filter = match obj.get("filter") {
        None => None,
        Some(f) if f.as_object().is_some_and(|o| o.is_empty()) => None,
        Some(f) => Some(parse_filter(f, 0)?),
    };
    let mut sort = Vec::new();
    for s in obj
        .get("sort")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let key = s
            .get("key")
            .and_then(Value::as_str)
            .ok_or("each sort entry needs a `key`")?;
        let descending = match s.get("order").and_then(Value::as_str).unwrap_or("ASC") {
            "ASC" => false,
            "DESC" => true,
            other => return Err(format!("sort order `{other}`; expected ASC or DESC")),
        };
        sort.push(Sort {
            field: field(key)?,
            descending,
        });
    }
    let page = obj.get("page");
    let limit = match page.and_then(|p| p.get("limit")) {
        None => None,
        Some(l) => Some(
            l.as_u64()
                .filter(|n| *n > 0)
                .ok_or("page.limit is a positive number")?,
        ),
    };
    let offset = match page.and_then(|p| p.get("token")).and_then(Value::as_str) {
        None | Some("") => 0,
        Some(t) => t
            .parse()
            .map_err(|_| format!("page.token `{t}` was not issued by this store"))?,
    };
    Ok(Query {
        filter,
        sort,
        limit,
        offset,
    })
}

/// The bound parameters of a rendered query.
#[derive(Clone, Debug, PartialEq)]
pub enum Param {
    /// A field path.
    Path(Vec<String>),
    /// A value to compare with.
    Value(Value),
    Int(i64),
    Text(String),
}

/// How a SQL dialect spells the pieces.
pub trait Dialect {
    /// The expression for the JSON field at parameter `n`.
    fn field(&self, n: usize) -> String;
    /// `field = value` with the field at parameter `f` and value at `v`.
    fn equals(&self, f: usize, v: usize) -> String;
    /// The placeholder of parameter `n`.
    fn placeholder(&self, n: usize) -> String;
    /// `LIMIT` with no limit, for an offset alone.
    fn no_limit(&self) -> &'static str;
}

/// Renders `WHERE … ORDER BY … LIMIT … OFFSET …` (after a caller-written
/// `key LIKE prefix` condition at parameter 1) and the parameters after it.
pub fn render(q: &Query, d: &dyn Dialect, first_param: usize) -> (String, Vec<Param>) {
    let mut params: Vec<Param> = Vec::new();
    let mut next = |p: Param, params: &mut Vec<Param>| {
        params.push(p);
        first_param + params.len() - 1
    };
    fn filter_sql(
        f: &Filter,
        d: &dyn Dialect,
        params: &mut Vec<Param>,
        next: &mut dyn FnMut(Param, &mut Vec<Param>) -> usize,
    ) -> String {
        match f {
            Filter::Eq(field, v) => {
                let fi = next(Param::Path(field.clone()), params);
                let vi = next(Param::Value(v.clone()), params);
                d.equals(fi, vi)
            }
            Filter::In(field, vs) => {
                let parts: Vec<String> = vs
                    .iter()
                    .map(|v| {
                        let fi = next(Param::Path(field.clone()), params);
                        let vi = next(Param::Value(v.clone()), params);
                        d.equals(fi, vi)
                    })
                    .collect();
                format!("({})", parts.join(" OR "))
            }
            Filter::And(fs) | Filter::Or(fs) => {
                let joiner = if matches!(f, Filter::And(_)) {
                    " AND "
                } else {
                    " OR "
                };
                let parts: Vec<String> =
                    fs.iter().map(|f| filter_sql(f, d, params, next)).collect();
                format!("({})", parts.join(joiner))
            }
        }
    }
    let mut sql = String::new();
    if let Some(f) = &q.filter {
        sql.push_str(" AND ");
        sql.push_str(&filter_sql(f, d, &mut params, &mut next));
    }
    let mut order: Vec<String> = q
        .sort
        .iter()
        .map(|s| {
            let fi = next(Param::Path(s.field.clone()), &mut params);
            format!(
                "{} {}",
                d.field(fi),
                if s.descending { "DESC" } else { "ASC" }
            )
        })
        .collect();
    order.push("key ASC".into());
    sql.push_str(&format!(" ORDER BY {}", order.join(", ")));
    if let Some(limit) = q.limit {
        let li = next(Param::Int(limit as i64), &mut params);
        sql.push_str(&format!(" LIMIT {}", d.placeholder(li)));
    }
    if q.offset > 0 {
        if q.limit.is_none() {
            sql.push_str(&format!(" LIMIT {}", d.no_limit()));
        }
        let oi = next(Param::Int(q.offset as i64), &mut params);
        sql.push_str(&format!(" OFFSET {}", d.placeholder(oi)));
    }
    (sql, params)
}

/// The token of the page after one that returned `n` items.
pub fn next_token(q: &Query, n: usize) -> Option<String> {
    let limit = q.limit?;
    (n as u64 == limit).then(|| (q.offset + limit).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dapr_queries() {
        let q = parse(br#"{"filter":{"OR":[{"EQ":{"person.org":"A"}},{"AND":[{"EQ":{"state":"CA"}},{"IN":{"value.id":[1,2]}}]}]},"sort":[{"key":"id","order":"DESC"}],"page":{"limit":2,"token":"4"}}"#).unwrap();
        assert_eq!(q.limit, Some(2));
        assert_eq!(q.offset, 4);
        assert!(q.sort[0].descending);
        let Some(Filter::Or(parts)) = &q.filter else {
            panic!("{q:?}")
        };
        assert_eq!(
            parts[0],
            Filter::Eq(vec!["person".into(), "org".into()], "A".into())
        );
        let Filter::And(inner) = &parts[1] else {
            panic!()
        };
        assert_eq!(
            inner[1],
            Filter::In(vec!["id".into()], vec![1.into(), 2.into()])
        );
        assert_eq!(next_token(&q, 2).as_deref(), Some("6"));
        assert_eq!(next_token(&q, 1), None);
    }

    #[test]
    fn refuses_what_it_cannot_run() {
        for (bad, why) in [
            (&b"nope"[..], "not valid JSON"),
            (br#"{"filter":{"GT":{"a":1}}}"#, "unknown filter operator"),
            (br#"{"filter":{"EQ":{"a":1,"b":2}}}"#, "exactly one field"),
            (br#"{"filter":{"AND":[{"EQ":{"a":1}}]}}"#, "at least two"),
            (br#"{"sort":[{"key":"a","order":"UP"}]}"#, "ASC or DESC"),
            (br#"{"page":{"limit":0}}"#, "positive"),
            (br#"{"page":{"token":"x"}}"#, "not issued"),
            (br#"{"filter":{"EQ":{"a..b":1}}}"#, "dotted path"),
            (br#"{"select":1}"#, "unknown query field"),
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains(why), "{why}: {e}");
        }
    }
}
