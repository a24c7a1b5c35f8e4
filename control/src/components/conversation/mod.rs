//! Conversation (LLM) components: one request shape for every provider —
//! messages by role with text, tool calls and tool results, the tools the
//! model may call — and one answer shape (choices, usage). The API layer
//! (`api::conversation`) turns alpha1/alpha2 requests into this shape and
//! back; a component only speaks its provider's protocol.

pub mod anthropic;
pub mod echo;
mod http;
pub mod ollama;
pub mod openai;
pub mod pii;

use futures_util::future::BoxFuture;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum Part {
    Text(String),
    /// A call the model made earlier (assistant messages).
    ToolCall(ToolCall),
    /// What a tool answered (tool messages).
    ToolResult {
        id: String,
        name: String,
        text: String,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// JSON text, as the model wrote it.
    pub arguments: String,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Message {
    pub role: Role,
    pub parts: Vec<Part>,
}

impl Message {
    /// The message's text parts, in order.
    pub fn texts(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Text(t) => Some(t.as_str()),
            _ => None,
        })
    }

    pub fn tool_calls(&self) -> impl Iterator<Item = &ToolCall> {
        self.parts.iter().filter_map(|p| match p {
            Part::ToolCall(c) => Some(c),
            _ => None,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Tool {
    pub name: String,
    pub description: Option<String>,
    /// A JSON Schema object (`{}` when the caller gave none).
    pub parameters: serde_json::Value,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Request {
    pub messages: Vec<Message>,
    pub tools: Vec<Tool>,
    /// `auto`, `none`, `required` or a tool's name.
    pub tool_choice: Option<String>,
    pub temperature: Option<f64>,
    pub metadata: BTreeMap<String, String>,
    /// A JSON Schema the answer must follow.
    pub response_format: Option<serde_json::Value>,
    pub prompt_cache_retention: Option<Duration>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Choice {
    pub finish_reason: String,
    pub index: i64,
    pub content: String,
    pub tool_calls: Vec<ToolCall>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct CompletionDetails {
    pub accepted_prediction: u64,
    pub audio: u64,
    pub reasoning: u64,
    pub rejected_prediction: u64,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct PromptDetails {
    pub audio: u64,
    pub cached: u64,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Usage {
    pub completion: u64,
    pub prompt: u64,
    pub total: u64,
    pub completion_details: Option<CompletionDetails>,
    pub prompt_details: Option<PromptDetails>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Output {
    pub choices: Vec<Choice>,
    pub model: Option<String>,
    pub usage: Option<Usage>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConverseError {
    /// The provider refused the request as it is (4xx but 408/429): no
    /// retry would change that.
    #[error("{0}")]
    Refused(String),
    /// The provider failed or could not be reached: worth another try.
    #[error("{0}")]
    Failed(String),
}

pub type ConverseFuture<'a> = BoxFuture<'a, Result<Vec<Output>, ConverseError>>;

pub trait Conversation: Send + Sync {
    fn converse<'a>(&'a self, req: &'a Request) -> ConverseFuture<'a>;
}

/// Answers kept for `cacheTTL`, keyed by the whole request: the same
/// question within the TTL is answered without asking the provider.
pub struct Cached<C> {
    inner: C,
    ttl: Duration,
    answers: Mutex<HashMap<[u8; 32], Answer>>,
}

/// Answers a cache keeps at most; past that, expired ones go first, then
/// the oldest.
const CACHE_ENTRIES: usize = 1024;

/// A cached answer and when it was made.
type Answer = (Instant, Vec<Output>);

/// The largest answer kept (its text), so the cache holds 64 MiB at most.
const CACHED_ANSWER: usize = 64 << 10;

fn answer_size(outputs: &[Output]) -> usize {
    outputs
        .iter()
        .flat_map(|o| o.choices.iter())
        .map(|c| {
            c.content.len()
                + c.finish_reason.len()
                + c.tool_calls
                    .iter()
                    .map(|t| t.id.len() + t.name.len() + t.arguments.len())
                    .sum::<usize>()
        })
        .fold(0, usize::saturating_add)
}

impl<C: Conversation> Cached<C> {
    pub fn new(inner: C, ttl: Duration) -> Self {
        Self {
            inner,
            ttl,
            answers: Mutex::new(HashMap::new()),
        }
    }
}

impl<C: Conversation> Conversation for Cached<C> {
    fn converse<'a>(&'a self, req: &'a Request) -> ConverseFuture<'a> {
        Box::pin(async move {
            // Keyed by the request's SHA-256, so a large prompt is not held
            // twice; answers larger than CACHED_ANSWER are not kept.
            let key = {
                let json = serde_json::to_vec(req).unwrap_or_default();
                let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &json);
                let mut k = [0u8; 32];
                k.copy_from_slice(d.as_ref());
                k
            };
            let now = Instant::now();
            if let Some((at, outputs)) = self.answers.lock().unwrap().get(&key)
                && now.duration_since(*at) < self.ttl
            {
                return Ok(outputs.clone());
            }
            let outputs = self.inner.converse(req).await?;
            if answer_size(&outputs) > CACHED_ANSWER {
                return Ok(outputs);
            }
            let mut answers = self.answers.lock().unwrap();
            if answers.len() >= CACHE_ENTRIES {
                answers.retain(|_, (at, _)| now.duration_since(*at) < self.ttl);
                if answers.len() >= CACHE_ENTRIES
                    && let Some(oldest) = answers
                        .iter()
                        .min_by_key(|(_, (at, _))| *at)
                        .map(|(k, _)| *k)
                {
                    answers.remove(&oldest);
                }
            }
            answers.insert(key, (Instant::now(), outputs.clone()));
            Ok(outputs)
        })
    }
}

/// `cacheTTL` (or its older name `responseCacheTTL`): a duration, or none.
pub fn cache_ttl(m: &BTreeMap<String, String>) -> Result<Option<Duration>, String> {
    for key in ["cacheTTL", "responseCacheTTL"] {
        if let Some(v) = m.get(key).filter(|v| !v.trim().is_empty()) {
            let d = tandem_config::parse_duration(v.trim())
                .map_err(|e| format!("metadata `{key}`: {e}"))?;
            return Ok(Some(d).filter(|d| !d.is_zero()));
        }
    }
    Ok(None)
}

/// The model: the provider's environment variable (as Dapr reads it, it
/// wins), else metadata `model`, else the provider's default.
pub fn model(m: &BTreeMap<String, String>, env: &str, default: &str) -> String {
    std::env::var(env)
        .ok()
        .filter(|v| !v.is_empty())
        .or_else(|| m.get("model").filter(|v| !v.is_empty()).cloned())
        .unwrap_or_else(|| default.to_string())
}

/// Wraps `c` in a response cache when the metadata asks for one.
pub fn with_cache<C: Conversation + 'static>(
    c: C,
    m: &BTreeMap<String, String>,
) -> Result<std::sync::Arc<dyn Conversation>, String> {
    Ok(match cache_ttl(m)? {
        Some(ttl) => std::sync::Arc::new(Cached::new(c, ttl)),
        None => std::sync::Arc::new(c),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Counting(AtomicUsize);

    impl Conversation for Counting {
        fn converse<'a>(&'a self, req: &'a Request) -> ConverseFuture<'a> {
            let n = self.0.fetch_add(1, Ordering::SeqCst);
            let text = format!("{n}:{}", req.messages.len());
            Box::pin(async move {
                Ok(vec![Output {
                    choices: vec![Choice {
                        content: text,
                        ..Default::default()
                    }],
                    ..Default::default()
                }])
            })
        }
    }

    fn ask(text: &str) -> Request {
        Request {
            messages: vec![Message {
                role: Role::User,
                parts: vec![Part::Text(text.into())],
            }],
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn the_cache_answers_the_same_request_and_only_that_one() {
        let c = Cached::new(Counting(AtomicUsize::new(0)), Duration::from_secs(60));
        let first = c.converse(&ask("a")).await.unwrap();
        assert_eq!(c.converse(&ask("a")).await.unwrap(), first);
        assert_ne!(c.converse(&ask("b")).await.unwrap(), first);
        let mut warmer = ask("a");
        warmer.temperature = Some(0.5);
        assert_ne!(c.converse(&warmer).await.unwrap(), first);
        assert_eq!(c.inner.0.load(Ordering::SeqCst), 3);
        // Expired: asked again.
        let c = Cached::new(Counting(AtomicUsize::new(0)), Duration::from_millis(1));
        c.converse(&ask("a")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        c.converse(&ask("a")).await.unwrap();
        assert_eq!(c.inner.0.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn cache_ttl_spellings() {
        let m = |k: &str, v: &str| BTreeMap::from([(k.to_string(), v.to_string())]);
        assert_eq!(cache_ttl(&BTreeMap::new()), Ok(None));
        assert_eq!(
            cache_ttl(&m("cacheTTL", "10m")),
            Ok(Some(Duration::from_secs(600)))
        );
        assert_eq!(
            cache_ttl(&m("responseCacheTTL", "1s")),
            Ok(Some(Duration::from_secs(1)))
        );
        assert_eq!(cache_ttl(&m("cacheTTL", "0s")), Ok(None));
        assert!(
            cache_ttl(&m("cacheTTL", "soon"))
                .unwrap_err()
                .contains("cacheTTL")
        );
    }
}
