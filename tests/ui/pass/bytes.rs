//! Bytes across RPC: what travels as a `Uint8Array` and what as an array of numbers
//! (tests/workerd/pass.test.mjs calls these from JS).
use proxy_fetch::entrypoint;
use proxy_fetch::rpc::{HandlerError, WorkerEntrypoint};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use worker::{Context, Env};

pub struct Bytes;

impl WorkerEntrypoint for Bytes {
    fn new(_env: Env, _ctx: Context) -> Self {
        Bytes
    }
}

#[derive(Serialize, Deserialize)]
pub struct Blob {
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
    pub plain: Vec<u8>,
}

#[entrypoint(name = "BytesEntrypoint")]
impl Bytes {
    /// A plain `Vec<u8>`: a sequence of numbers to serde.
    pub async fn reverse_plain(&self, mut bytes: Vec<u8>) -> Result<Vec<u8>, HandlerError> {
        bytes.reverse();
        Ok(bytes)
    }

    /// `ByteBuf` serializes as bytes: a `Uint8Array` in JS.
    pub async fn reverse_buf(&self, bytes: ByteBuf) -> Result<ByteBuf, HandlerError> {
        let mut bytes = bytes.into_vec();
        bytes.reverse();
        Ok(ByteBuf::from(bytes))
    }

    /// A field under `#[serde(with = "serde_bytes")]` is bytes; a plain `Vec<u8>` field is not.
    pub async fn echo_blob(&self, blob: Blob) -> Result<Blob, HandlerError> {
        Ok(blob)
    }
}

#[allow(dead_code)]
fn main() {}
