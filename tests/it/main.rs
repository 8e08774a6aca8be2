//! Integration tests: the real server on 127.0.0.1:0 with a temp data dir (`Sim`), the
//! library's `Sink` as the receiver (raw TCP where a receiver must misbehave byte by byte).

mod api;
mod catalog;
mod check;
mod cli;
mod cli_flags;
mod config_fuzz;
mod connections;
mod console;
mod delivery;
mod durable;
mod generate;
mod helpers;
mod history;
mod hostile;
mod ingest;
mod lanes;
mod masking;
mod ops;
mod presend;
mod storage;
mod store_faults;
mod tencent;
mod tls;
