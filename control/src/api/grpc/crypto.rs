//! `EncryptAlpha1` / `DecryptAlpha1`: bidirectional streams of
//! `StreamPayload` chunks, the options in the first message. The caller's
//! `seq` must count from 0; ours do too.

use crate::api::crypto::{self as api, Chunks, EncryptOptions, Output, bad_request};
use crate::error::ApiError;
use crate::runtime::Runtime;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use std::pin::Pin;
use std::time::Duration;
use tandem_proto::common::v1::StreamPayload;
use tonic::{Status, Streaming};

/// How long the first message may take (daprd's 5 s).
const FIRST_MESSAGE: Duration = Duration::from_secs(5);

/// The parts of a request message the stream needs.
pub trait Message: Send + 'static {
    type Options: Send;
    fn split(self) -> (Option<Self::Options>, Option<StreamPayload>);
}

impl Message for tandem_proto::runtime::v1::EncryptRequest {
    type Options = tandem_proto::runtime::v1::EncryptRequestOptions;
    fn split(self) -> (Option<Self::Options>, Option<StreamPayload>) {
        (self.options, self.payload)
    }
}

impl Message for tandem_proto::runtime::v1::DecryptRequest {
    type Options = tandem_proto::runtime::v1::DecryptRequestOptions;
    fn split(self) -> (Option<Self::Options>, Option<StreamPayload>) {
        (self.options, self.payload)
    }
}

/// The first message's options, and the data chunks (first message's
/// included) with their sequence checked.
async fn open<M: Message>(mut input: Streaming<M>) -> Result<(M::Options, Chunks), ApiError> {
    let first = tokio::time::timeout(FIRST_MESSAGE, input.message())
        .await
        .map_err(|_| bad_request("error waiting for first message: no message within 5s"))?
        .map_err(|e| {
            api_internal(format!(
                "error receiving the first message: {}",
                e.message()
            ))
        })?
        .ok_or_else(|| api_internal("error receiving the first message: EOF"))?;
    let (options, payload) = first.split();
    let options = options
        .ok_or_else(|| bad_request("first message does not contain the required options"))?;
    let head = futures_util::stream::iter(payload.map(Ok));
    let rest = input.map(|m| match m {
        Ok(m) => match m.split() {
            (Some(_), _) => Err("options found in non-leading message".to_string()),
            (None, p) => Ok(p),
        },
        Err(e) => Err(format!("error receiving message: {}", e.message())),
    });
    let rest = rest.filter_map(|r| async move {
        match r {
            Ok(Some(p)) => Some(Ok(p)),
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        }
    });
    let chunks = head.chain(rest).scan(0u64, |expected, p| {
        let item = p.and_then(|p: StreamPayload| {
            if p.seq != *expected {
                return Err(format!(
                    "invalid sequence number received: {} (expected: {})",
                    p.seq, expected
                ));
            }
            *expected += 1;
            Ok(Bytes::from(p.data))
        });
        let stop = item.is_err();
        async move { Some((item, stop)) }
    });
    // End after the first error.
    let chunks = chunks
        .scan(false, |ended, (item, stop)| {
            let out = if *ended { None } else { Some(item) };
            *ended |= stop;
            async move { out }
        })
        .filter(|c| std::future::ready(!matches!(c, Ok(b) if b.is_empty())));
    Ok((options, Box::pin(chunks)))
}

fn api_internal(what: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        http::StatusCode::INTERNAL_SERVER_ERROR,
        tonic::Code::Internal,
        "ERR_CRYPTO",
        format!("failed to perform operation: {what}"),
    )
}

pub type PayloadStream = Pin<Box<dyn Stream<Item = Result<StreamPayload, Status>> + Send>>;

/// The result as payloads numbered from 0.
fn payloads(out: Output) -> PayloadStream {
    Box::pin(futures_util::stream::unfold(
        (out, 0u64, false),
        |(mut out, seq, done)| async move {
            if done {
                return None;
            }
            match out.recv().await {
                Some(Ok(data)) => Some((
                    Ok(StreamPayload {
                        data: data.to_vec(),
                        seq,
                    }),
                    (out, seq + 1, false),
                )),
                Some(Err(e)) => Some((
                    Err(Status::internal(format!(
                        "failed to perform operation: {e}"
                    ))),
                    (out, seq, true),
                )),
                None => None,
            }
        },
    ))
}

pub async fn encrypt(
    rt: &Runtime,
    input: Streaming<tandem_proto::runtime::v1::EncryptRequest>,
) -> Result<PayloadStream, ApiError> {
    let (o, chunks) = open(input).await?;
    if o.key_name.is_empty() {
        return Err(bad_request(
            "missing property 'keyName' in the options message",
        ));
    }
    if o.key_wrap_algorithm.is_empty() {
        return Err(bad_request(
            "missing property 'keyWrapAlgorithm' in the options message",
        ));
    }
    let store = api::store(rt, &o.component_name)?;
    let out = api::encrypt(
        store,
        EncryptOptions {
            key_name: o.key_name,
            key_wrap_algorithm: o.key_wrap_algorithm,
            data_encryption_cipher: o.data_encryption_cipher,
            omit_decryption_key_name: o.omit_decryption_key_name,
            decryption_key_name: o.decryption_key_name,
        },
        chunks,
    )
    .await?;
    Ok(payloads(out))
}

pub async fn decrypt(
    rt: &Runtime,
    input: Streaming<tandem_proto::runtime::v1::DecryptRequest>,
) -> Result<PayloadStream, ApiError> {
    let (o, chunks) = open(input).await?;
    let store = api::store(rt, &o.component_name)?;
    let out = api::decrypt(store, &o.key_name, chunks).await?;
    Ok(payloads(out))
}
