//! Sundial's gRPC API: the `.proto` files under `proto/` and the tonic code
//! generated from them. Nothing else lives here.

/// Package `sundial.v1`.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("sundial.v1");

    /// The encoded file descriptor set, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("sundial_descriptor");
}

/// The subset of etcd's KV API used by `sundial bench etcd-put` to measure an
/// etcd cluster with the same load generator. Not part of Sundial's API.
#[allow(clippy::all, missing_docs)]
pub mod etcd {
    tonic::include_proto!("etcdserverpb");
}
