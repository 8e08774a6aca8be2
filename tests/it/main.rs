//! Integration tests: the real server on 127.0.0.1:0, real loopback receivers, a temp data dir.

mod api;
mod cli;
mod config_fuzz;
mod connections;
mod delivery;
mod generate;
mod helpers;
mod hostile;
mod presend;
mod storage;
mod tencent;
mod tls;
