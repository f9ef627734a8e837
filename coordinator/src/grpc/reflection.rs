//! gRPC server reflection (`grpc.reflection.v1` and `v1alpha`) over the
//! descriptor sets a server hands it, so `grpcurl` and friends need no copy
//! of the `.proto`.

use tonic_reflection::server::{Builder, Error, v1, v1alpha};

/// The descriptor sets the coordinator's port serves: Volley's own services
/// and `grpc.health.v1.Health`.
pub const COORDINATOR_DESCRIPTOR_SETS: &[&[u8]] = &[
    volley_proto::FILE_DESCRIPTOR_SET,
    tonic_health::pb::FILE_DESCRIPTOR_SET,
];

/// Both reflection versions over `descriptor_sets` (encoded
/// `FileDescriptorSet`s): v1 for current clients, v1alpha because older
/// `grpcurl` and grpc-java releases still ask only for it. Each lists every
/// service in the sets, and the reflection service itself.
pub fn reflection_services(
    descriptor_sets: &[&'static [u8]],
) -> Result<
    (
        v1::ServerReflectionServer<impl v1::ServerReflection>,
        v1alpha::ServerReflectionServer<impl v1alpha::ServerReflection>,
    ),
    Error,
> {
    let builder = || {
        descriptor_sets
            .iter()
            .fold(Builder::configure(), |builder, descriptor_set| {
                builder.register_encoded_file_descriptor_set(descriptor_set)
            })
    };
    Ok((builder().build_v1()?, builder().build_v1alpha()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_descriptor_sets_decode_and_resolve() {
        assert!(reflection_services(COORDINATOR_DESCRIPTOR_SETS).is_ok());
    }
}
