//! `rpcloop`: call any WebSocket API from the shell.
//!
//! `rpcloop call URL [MESSAGE...]` sends each JSON text as a call over one connection (stdin,
//! one per line, when none is given) and prints each answer with its latency, then a summary;
//! `rpcloop listen URL` prints what the server pushes; `rpcloop echo-server` runs the example
//! echo server. `--json` prints one JSON object per line instead (see [`output`]).
//! `--codec jsonrpc` speaks JSON-RPC 2.0 (see [`jsonrpc`]), and `listen --jsonrpc-subscribe`
//! prints a subscription's items.
//!
//! Exit status: 0 when every call succeeded, 1 when any failed, 2 for a usage error.

mod args;
mod call;
mod echo;
mod fmt;
mod input;
mod jsonrpc;
mod kinds;
mod listen;
mod output;
mod parse;

use std::process::ExitCode;

use clap::Parser;

use crate::args::{Cli, Command};

/// Exit status when a call (or the connection) failed.
pub const FAILED: u8 = 1;
/// Exit status for a usage error (clap uses it too).
pub const USAGE: u8 = 2;

fn main() -> ExitCode {
    // Help and version exit 0; a usage error prints what was wrong and exits 2.
    let cli = Cli::parse();
    match cli.command {
        Command::Call(args) => {
            if let Err(why) = args.check() {
                args::usage_error("call", &why);
            }
            call::run(args)
        }
        Command::Listen(args) => match args.plan() {
            Ok((codec, subscribe)) => listen::run(args, codec, subscribe),
            Err(why) => args::usage_error("listen", &why),
        },
        Command::EchoServer(args) => echo::run(args),
    }
}
