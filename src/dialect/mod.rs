//! Provider wire formats: how a callback body looks and how it is signed.
//!
//! - `agora` — Agora Chat / Shengwang-Easemob (SPEC §4.1, §4.2).

pub mod agora;
