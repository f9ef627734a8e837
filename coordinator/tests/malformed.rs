//! A request whose bytes do not decode as its message (invalid UTF-8 in a
//! string, a truncated field) is the caller's fault: INVALID_ARGUMENT from
//! a real coordinator over the wire, not INTERNAL.

mod common;

use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

/// Sends raw bytes as the request; expects an empty response it never gets.
#[derive(Default)]
struct RawCodec;

struct RawEncoder;
struct RawDecoder;

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        prost::bytes::BufMut::put_slice(buf, &item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        let bytes = prost::bytes::Buf::copy_to_bytes(buf, prost::bytes::Buf::remaining(buf));
        Ok(Some(bytes.to_vec()))
    }
}

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

#[tokio::test]
async fn undecodable_requests_are_invalid_arguments() -> anyhow::Result<()> {
    let (url, shutdown) = common::start_coordinator().await?;
    let channel = tonic::transport::Endpoint::from_shared(url)?
        .connect()
        .await?;
    for bytes in [
        // GetBatchRequest.batch_id holding 0xff 0xfe: not UTF-8.
        vec![0x0a_u8, 0x02, 0xff, 0xfe],
        // A field that claims nine bytes and has one.
        vec![0x0a_u8, 0x09, b'a'],
    ] {
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        grpc.ready().await?;
        let path = tonic::codegen::http::uri::PathAndQuery::from_static(
            "/volley.v1.BatchService/GetBatch",
        );
        let status = grpc
            .unary(tonic::Request::new(bytes), path, RawCodec)
            .await
            .expect_err("refused");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().starts_with("malformed message"),
            "{status:?}"
        );
    }
    shutdown.cancel();
    Ok(())
}
