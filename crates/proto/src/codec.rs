//! The codec every generated client and server uses: prost encoding, and strict decoding
//! of requests.
//!
//! A server decoding a request message (the input of some RPC in the descriptor set)
//! first runs the [`crate::wire`] checks on the raw bytes, then prost's decoder. Either
//! failing is the client's mistake and answers `INVALID_ARGUMENT` with a `BadRequest`
//! naming the field, before any handler runs: one place for every service, present and
//! future. (tonic's stock codec answers `INTERNAL` to undecodable requests.) Responses
//! decode as prost decodes them, so an older client still reads a newer server's enums.

use std::marker::PhantomData;

use bytes::Buf as _;
use prost::Message;
use strata_errors::ApiError;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::ProstEncoder;

use crate::wire::Schema;

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct StrictCodec<T, U> {
    _pd: PhantomData<(T, U)>,
}

impl<T, U> Default for StrictCodec<T, U> {
    fn default() -> Self {
        Self { _pd: PhantomData }
    }
}

impl<T, U> Codec for StrictCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + prost::Name + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = StrictDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        StrictDecoder { _pd: PhantomData }
    }
}

/// Decodes `U`, strictly when `U` is a request. See the module documentation.
#[derive(Debug, Clone)]
pub struct StrictDecoder<U> {
    _pd: PhantomData<U>,
}

impl<U: Message + Default + prost::Name> Decoder for StrictDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        let schema = Schema::get();
        let name = U::full_name();
        if !schema.is_request(&name) {
            return U::decode(buf)
                .map(Some)
                .map_err(|e| Status::internal(e.to_string()));
        }
        // Zero-copy: tonic decodes from a `BytesMut`, which splits off the message.
        let bytes = buf.copy_to_bytes(buf.remaining());
        if let Err(violations) = schema.check(&name, &bytes) {
            return Err(ApiError::InvalidArgument(violations).into());
        }
        U::decode(bytes).map(Some).map_err(|e| {
            ApiError::invalid(
                "request",
                format!("is not a valid {name}: {}", e.to_string().trim()),
            )
            .into()
        })
    }
}
