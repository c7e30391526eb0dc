//! Code the benches share (`mod common;` in each): the proxies and their processes, and
//! the report. Each bench uses a part of it.
#![allow(dead_code)]

pub mod peers;
pub mod report;
