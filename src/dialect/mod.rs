//! Provider wire formats: how a callback body looks and how it is signed.
//!
//! - `agora` — Agora Chat / Shengwang-Easemob (SPEC §4.1, §4.2): signed JSON bodies.
//! - `tencent` — Tencent Cloud IM (SPEC §4.3): commands, query string, unsigned bodies.

pub mod agora;
pub mod tencent;
