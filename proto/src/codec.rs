//! The gRPC codec of every Volley service: prost, except that a message
//! that does not decode (bad wire format, invalid UTF-8 in a string) is the
//! sender's fault, INVALID_ARGUMENT, where tonic's prost codec says
//! INTERNAL.

use std::marker::PhantomData;

use prost::Message;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::ProstEncoder;

#[derive(Debug, Clone)]
pub struct ProtoCodec<T, U> {
    _types: PhantomData<(T, U)>,
}

impl<T, U> Default for ProtoCodec<T, U> {
    fn default() -> Self {
        ProtoCodec {
            _types: PhantomData,
        }
    }
}

impl<T, U> Codec for ProtoCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProtoDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProtoDecoder { _type: PhantomData }
    }
}

#[derive(Debug, Clone)]
pub struct ProtoDecoder<U> {
    _type: PhantomData<U>,
}

impl<U: Message + Default> Decoder for ProtoDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        decode_message(buf).map(Some)
    }
}

/// One message from `bytes`; undecodable input is INVALID_ARGUMENT.
fn decode_message<U: Message + Default>(bytes: impl prost::bytes::Buf) -> Result<U, Status> {
    U::decode(bytes)
        .map_err(|error| Status::invalid_argument(format!("malformed message: {error}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1;

    #[test]
    fn invalid_utf8_is_the_senders_fault() {
        // Field 1 (batch_id, a string) holding the bytes 0xff 0xfe.
        let bytes = [0x0a_u8, 0x02, 0xff, 0xfe];
        let status = decode_message::<v1::GetBatchRequest>(&bytes[..]).expect_err("not UTF-8");
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(
            status.message().starts_with("malformed message: "),
            "{status:?}"
        );
        // A truncated message too.
        let status = decode_message::<v1::GetBatchRequest>(&[0x0a_u8, 0x09, b'a'][..])
            .expect_err("truncated");
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        let fine =
            decode_message::<v1::GetBatchRequest>(&[0x0a_u8, 0x01, b'a'][..]).expect("valid");
        assert_eq!(fine.batch_id, "a");
    }
}
