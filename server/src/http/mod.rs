//! HTTP handlers only: parse, check access, call one domain function, render.

pub mod api;
pub mod extract;
pub mod ops;
