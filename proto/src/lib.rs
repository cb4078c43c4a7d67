//! Generated gRPC code for ragw's versioned packages.
//!
//! The code under `src/generated/` is checked in so that building ragw needs nothing but the
//! Rust toolchain. `tests/generated_code.rs` regenerates it from the `.proto` files with a
//! pure-Rust compiler and fails when the checked-in copy differs; run it with
//! `RAGW_UPDATE_GENERATED=1` after editing a `.proto` file to rewrite the copy.

pub mod registrar {
    pub mod v1 {
        #![allow(clippy::all, clippy::pedantic)]
        include!("generated/ragw.registrar.v1.rs");
    }
}
