//! Generated gRPC code for ragw's versioned packages.

pub mod registrar {
    pub mod v1 {
        #![allow(clippy::all, clippy::pedantic)]
        tonic::include_proto!("ragw.registrar.v1");
    }
}
