//! Reading resources from disk: every `*.yaml|*.yml` file of each resources
//! directory, multi-document, each document dispatched on `kind`, checked,
//! scoped to this app and templated. Errors say file, line, field and what
//! was expected.

use crate::resources::{Component, Configuration, HttpEndpoint, Resiliency, Subscription};
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// Files bigger than this are refused before parsing: a resources dir holds
/// hand-written YAML, not data.
pub const MAX_FILE_BYTES: u64 = 4 << 20;

/// Where a resource came from, for messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceRef {
    pub file: PathBuf,
    pub line: usize,
}

impl fmt::Display for SourceRef {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

#[derive(Clone, Debug)]
pub struct Loaded<T> {
    pub resource: T,
    pub source: SourceRef,
}

/// Everything found in the resources dirs that applies to this app.
#[derive(Clone, Debug, Default)]
pub struct ResourceSet {
    pub components: Vec<Loaded<Component>>,
    pub subscriptions: Vec<Loaded<Subscription>>,
    pub resiliencies: Vec<Loaded<Resiliency>>,
    pub http_endpoints: Vec<Loaded<HttpEndpoint>>,
    /// Resources that were read but do not apply here (scopes, namespace,
    /// kinds read from elsewhere), with the reason; for logs.
    pub skipped: Vec<(SourceRef, String)>,
}

/// Who is loading: decides scopes, namespace filtering and templating.
#[derive(Clone, Debug)]
pub struct LoadContext {
    pub app_id: String,
    pub namespace: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadError {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)?;
        if self.column > 0 {
            write!(f, ":{}", self.column)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for LoadError {}

pub const KNOWN_KINDS: &[&str] = &[
    "Component",
    "Subscription",
    "Resiliency",
    "HTTPEndpoint",
    "Configuration",
];

/// Loads every resources directory in order. A directory that does not exist
/// is an error: a typo in `--resources-path` must not silently mean "nothing".
pub fn load_dirs(dirs: &[PathBuf], ctx: &LoadContext) -> Result<ResourceSet, LoadError> {
    let mut set = ResourceSet::default();
    for dir in dirs {
        let entries = std::fs::read_dir(dir).map_err(|e| LoadError {
            file: dir.clone(),
            line: 0,
            column: 0,
            message: format!("cannot read resources directory: {e}"),
        })?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| is_yaml(p))
            .collect();
        files.sort();
        for file in files {
            let text = read_bounded(&file)?;
            load_str(&text, &file, ctx, &mut set)?;
        }
    }
    check_unique_names(&set)?;
    Ok(set)
}

fn is_yaml(p: &Path) -> bool {
    let hidden = p
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'));
    !hidden && p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
}

fn read_bounded(file: &Path) -> Result<String, LoadError> {
    let err = |message: String| LoadError {
        file: file.to_path_buf(),
        line: 0,
        column: 0,
        message,
    };
    let len = std::fs::metadata(file)
        .map_err(|e| err(format!("cannot read file: {e}")))?
        .len();
    if len > MAX_FILE_BYTES {
        return Err(err(format!(
            "file is {len} bytes; resource files are limited to {MAX_FILE_BYTES} bytes"
        )));
    }
    std::fs::read_to_string(file).map_err(|e| err(format!("cannot read file as UTF-8 text: {e}")))
}

/// One YAML document of a file, with the line it starts on (1-based).
struct Document<'a> {
    text: &'a str,
    first_line: usize,
}

/// Splits on `---` / `...` marker lines, keeping line numbers right.
fn split_documents(text: &str) -> Vec<Document<'_>> {
    let mut docs = Vec::new();
    let mut start = 0usize;
    let mut start_line = 1usize;
    let mut offset = 0usize;
    for (idx, line) in text.split_inclusive('\n').enumerate() {
        let trimmed = line.trim_end();
        let is_marker = trimmed == "---"
            || trimmed.starts_with("--- ")
            || trimmed == "..."
            || trimmed.starts_with("---\t");
        if is_marker {
            docs.push(Document {
                text: &text[start..offset],
                first_line: start_line,
            });
            start = offset + line.len();
            start_line = idx + 2;
        }
        offset += line.len();
    }
    docs.push(Document {
        text: &text[start..],
        first_line: start_line,
    });
    docs.retain(|d| {
        d.text
            .lines()
            .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
    });
    docs
}

#[derive(serde::Deserialize)]
struct Header {
    #[serde(rename = "apiVersion", default)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
}

/// Parses one file's text into `set`. `file` is only used in messages.
pub fn load_str(
    text: &str,
    file: &Path,
    ctx: &LoadContext,
    set: &mut ResourceSet,
) -> Result<(), LoadError> {
    for doc in split_documents(text) {
        let header: Header = parse(&doc, file)?;
        let at = |needle: &str| SourceRef {
            file: file.to_path_buf(),
            line: line_of(&doc, needle),
        };
        let kind = header.kind.ok_or_else(|| LoadError {
            file: file.to_path_buf(),
            line: doc.first_line,
            column: 0,
            message: format!(
                "document has no `kind`; expected one of {}",
                KNOWN_KINDS.join(", ")
            ),
        })?;
        let api_version = header.api_version.unwrap_or_default();
        let allowed_versions: &[&str] = match kind.as_str() {
            "Subscription" => &["dapr.io/v1alpha1", "dapr.io/v2alpha1"],
            "Component" | "Resiliency" | "HTTPEndpoint" | "Configuration" => &["dapr.io/v1alpha1"],
            other => {
                return Err(LoadError {
                    file: file.to_path_buf(),
                    line: line_of(&doc, "kind:"),
                    column: 0,
                    message: format!(
                        "unknown kind `{other}`; expected one of {}",
                        KNOWN_KINDS.join(", ")
                    ),
                });
            }
        };
        if !allowed_versions.contains(&api_version.as_str()) {
            return Err(LoadError {
                file: file.to_path_buf(),
                line: line_of(&doc, "apiVersion:"),
                column: 0,
                message: format!(
                    "field `apiVersion` of a {kind} is `{api_version}`; expected {}",
                    allowed_versions.join(" or ")
                ),
            });
        }
        match kind.as_str() {
            "Component" => {
                let mut c: Component = parse(&doc, file)?;
                require_name(&c.metadata.name, &kind, &doc, file)?;
                if c.spec.type_.trim().is_empty() {
                    return Err(field_error(
                        &doc,
                        file,
                        "type:",
                        "field `spec.type` is empty; expected a component type such as secretstores.local.file",
                    ));
                }
                for item in &c.spec.metadata {
                    let sources = usize::from(item.value.is_some())
                        + usize::from(item.secret_key_ref.is_some())
                        + usize::from(item.env_ref.is_some());
                    if sources > 1 {
                        return Err(field_error(
                            &doc,
                            file,
                            &format!("name: {}", item.name),
                            &format!(
                                "metadata item `{}` sets more than one of value, secretKeyRef and envRef; expected exactly one",
                                item.name
                            ),
                        ));
                    }
                }
                if let Some(reason) = not_for_us(&c.scopes, &c.metadata.namespace, ctx) {
                    set.skipped.push((at("kind:"), reason));
                    continue;
                }
                apply_templates(&mut c, ctx);
                set.components.push(Loaded {
                    resource: c,
                    source: at("kind:"),
                });
            }
            "Subscription" => {
                let s: Subscription = parse(&doc, file)?;
                require_name(&s.metadata.name, &kind, &doc, file)?;
                if s.spec.effective_routes().default.is_none()
                    && s.spec.effective_routes().rules.is_empty()
                {
                    return Err(field_error(
                        &doc,
                        file,
                        "spec:",
                        "subscription has no route; expected `spec.route` (v1alpha1) or `spec.routes.default` / `spec.routes.rules` (v2alpha1)",
                    ));
                }
                if let Some(reason) = not_for_us(&s.scopes, &s.metadata.namespace, ctx) {
                    set.skipped.push((at("kind:"), reason));
                    continue;
                }
                set.subscriptions.push(Loaded {
                    resource: s,
                    source: at("kind:"),
                });
            }
            "Resiliency" => {
                let r: Resiliency = parse(&doc, file)?;
                require_name(&r.metadata.name, &kind, &doc, file)?;
                crate::validate::resiliency(&r)
                    .map_err(|(needle, msg)| field_error(&doc, file, &needle, &msg))?;
                if let Some(reason) = not_for_us(&r.scopes, &r.metadata.namespace, ctx) {
                    set.skipped.push((at("kind:"), reason));
                    continue;
                }
                set.resiliencies.push(Loaded {
                    resource: r,
                    source: at("kind:"),
                });
            }
            "HTTPEndpoint" => {
                let h: HttpEndpoint = parse(&doc, file)?;
                require_name(&h.metadata.name, &kind, &doc, file)?;
                if !(h.spec.base_url.starts_with("http://")
                    || h.spec.base_url.starts_with("https://"))
                {
                    return Err(field_error(
                        &doc,
                        file,
                        "baseUrl:",
                        &format!(
                            "field `spec.baseUrl` is `{}`; expected an http:// or https:// URL",
                            h.spec.base_url
                        ),
                    ));
                }
                if let Some(reason) = not_for_us(&h.scopes, &h.metadata.namespace, ctx) {
                    set.skipped.push((at("kind:"), reason));
                    continue;
                }
                set.http_endpoints.push(Loaded {
                    resource: h,
                    source: at("kind:"),
                });
            }
            _ => {
                // Configuration documents take effect through `--config`, as in Dapr.
                set.skipped.push((
                    at("kind:"),
                    "Configuration in a resources dir is ignored; pass it with --config".into(),
                ));
            }
        }
    }
    Ok(())
}

/// Reads the `--config` file: one Configuration document.
pub fn load_configuration(path: &Path) -> Result<Configuration, LoadError> {
    let text = read_bounded(path)?;
    load_configuration_str(&text, path)
}

/// The Configuration document in `text` (file `path`, for messages).
pub fn load_configuration_str(text: &str, path: &Path) -> Result<Configuration, LoadError> {
    let docs = split_documents(text);
    let mut found = None;
    for doc in &docs {
        let header: Header = parse(doc, path)?;
        if header.kind.as_deref() == Some("Configuration") {
            found = Some(parse::<Configuration>(doc, path)?);
            break;
        }
    }
    found.ok_or_else(|| LoadError {
        file: path.to_path_buf(),
        line: 1,
        column: 0,
        message: "no document with `kind: Configuration` in this file".into(),
    })
}

fn parse<T: DeserializeOwned>(doc: &Document, file: &Path) -> Result<T, LoadError> {
    serde_saphyr::from_str::<T>(doc.text).map_err(|e| {
        let (line, column) = e
            .location()
            .map(|l| (l.line() as usize, l.column() as usize))
            .unwrap_or((1, 0));
        let full = e.to_string();
        let first = full.lines().next().unwrap_or_default();
        // "error: line 4 column 3: unknown field ..." → keep only the message.
        let message = first
            .split_once(": ")
            .and_then(|(_, rest)| rest.split_once(": ").map(|(_, m)| m))
            .unwrap_or(first)
            .to_string();
        let source_line = doc
            .text
            .lines()
            .nth(line.saturating_sub(1))
            .map(str::trim)
            .unwrap_or_default();
        LoadError {
            file: file.to_path_buf(),
            line: doc.first_line + line - 1,
            column,
            message: if source_line.is_empty() {
                message
            } else {
                format!("{message} (at `{source_line}`)")
            },
        }
    })
}

/// The file line (1-based) of the first line of `doc` containing `needle`,
/// or the document's first line.
fn line_of(doc: &Document, needle: &str) -> usize {
    doc.text
        .lines()
        .position(|l| l.contains(needle))
        .map_or(doc.first_line, |i| doc.first_line + i)
}

fn field_error(doc: &Document, file: &Path, needle: &str, message: &str) -> LoadError {
    LoadError {
        file: file.to_path_buf(),
        line: line_of(doc, needle),
        column: 0,
        message: message.to_string(),
    }
}

fn require_name(name: &str, kind: &str, doc: &Document, file: &Path) -> Result<(), LoadError> {
    if name.trim().is_empty() {
        return Err(field_error(
            doc,
            file,
            "metadata:",
            &format!("{kind} has no `metadata.name`; expected a non-empty name"),
        ));
    }
    Ok(())
}

fn not_for_us(scopes: &[String], namespace: &Option<String>, ctx: &LoadContext) -> Option<String> {
    if !scopes.is_empty() && !scopes.iter().any(|s| s == &ctx.app_id) {
        return Some(format!(
            "scoped to [{}], not to app `{}`",
            scopes.join(", "),
            ctx.app_id
        ));
    }
    if let (Some(theirs), Some(ours)) = (namespace, &ctx.namespace)
        && !theirs.is_empty()
        && theirs != ours
    {
        return Some(format!(
            "in namespace `{theirs}`, this sidecar is in `{ours}`"
        ));
    }
    None
}

/// Replaces `{uuid}`, `{appID}`, `{namespace}` and `{podName}` in literal
/// metadata values.
pub fn apply_templates(c: &mut Component, ctx: &LoadContext) {
    for item in &mut c.spec.metadata {
        if let Some(serde_json::Value::String(v)) = &mut item.value
            && v.contains('{')
        {
            *v = expand_template(v, ctx);
        }
    }
}

pub fn expand_template(value: &str, ctx: &LoadContext) -> String {
    let ns = ctx.namespace.clone().unwrap_or_default();
    let mut out = value
        .replace("{appID}", &ctx.app_id)
        .replace("{namespace}", &format!("{ns}.{}", ctx.app_id))
        .replace("{podName}", &std::env::var("POD_NAME").unwrap_or_default());
    while out.contains("{uuid}") {
        out = out.replacen("{uuid}", &uuid::Uuid::new_v4().to_string(), 1);
    }
    out
}

fn check_unique_names(set: &ResourceSet) -> Result<(), LoadError> {
    fn check<T>(
        items: &[Loaded<T>],
        kind: &str,
        name: impl Fn(&T) -> &str,
    ) -> Result<(), LoadError> {
        let mut seen: HashMap<&str, &SourceRef> = HashMap::new();
        for item in items {
            let n = name(&item.resource);
            if let Some(first) = seen.insert(n, &item.source) {
                return Err(LoadError {
                    file: item.source.file.clone(),
                    line: item.source.line,
                    column: 0,
                    message: format!(
                        "a {kind} named `{n}` is already defined at {first}; names must be unique"
                    ),
                });
            }
        }
        Ok(())
    }
    check(&set.components, "Component", |c| &c.metadata.name)?;
    check(&set.subscriptions, "Subscription", |s| &s.metadata.name)?;
    check(&set.resiliencies, "Resiliency", |r| &r.metadata.name)?;
    check(&set.http_endpoints, "HTTPEndpoint", |h| &h.metadata.name)?;
    Ok(())
}
