//! A client for Istio's CA protocol (`istio.v1.auth.IstioCertificateService`), generated
//! from its own copy of the proto so writ's compatibility tests do not share writ's
//! generated code.
#![forbid(unsafe_code)]
#![allow(missing_docs, clippy::all)]

tonic::include_proto!("istio.v1.auth");
