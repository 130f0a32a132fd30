//! The command line, as clap reads it: the subcommands and their options.

use std::sync::Arc;

use clap::error::ErrorKind;
use clap::{Args, CommandFactory, Parser, Subcommand};
use rpcloop::rustls::RootCertStore;
use rpcloop::{ConnectionConfig, Envelope, JsonRpc2, ReconnectPolicy, TlsConfig};
use serde_json::value::RawValue;

use crate::jsonrpc;
use crate::parse::{self, CodecChoice, Dur, Every, Size};

/// Call any WebSocket API from the shell
///
/// Every message is a call: stamped with an id, matched with its answer, timed out, and shown
/// with its latency.
#[derive(Debug, Parser)]
#[command(name = "rpcloop", version, max_term_width = 100)]
#[command(after_help = "\
Examples:
  rpcloop echo-server --port 9001 &
  rpcloop call ws://127.0.0.1:9001/ '{\"op\":\"ping\"}' '[1,2,3]'
  seq 5 | rpcloop call ws://127.0.0.1:9001/ --json
  rpcloop call ws://127.0.0.1:9001/ '{\"n\":1}' --repeat 10000 --concurrency 64
  rpcloop listen ws://127.0.0.1:9001/ --header 'Authorization: Bearer TOKEN'
  rpcloop call ws://127.0.0.1:8546/ --codec jsonrpc '{\"method\":\"eth_blockNumber\"}'
  rpcloop call wss://internal.example:8443/api --ca internal-ca.pem '{\"op\":\"ping\"}'
  rpcloop listen ws://127.0.0.1:8546/ --jsonrpc-subscribe eth_subscribe '[\"newHeads\"]'

Exit status: 0 when every call succeeded, 1 when any failed (or the connection did), 2 for a
usage error.")]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Send each message as a call; print each answer with its latency
    ///
    /// Each message is one JSON text, sent as the call's payload over one connection (with the
    /// envelope codec the request on the wire is {"id":N,"message":<payload>}). With no message
    /// on the command line, one JSON text per line is read from stdin (blank lines are skipped)
    /// and each becomes a call as soon as it is read. Every call ends by its deadline; after the
    /// last one the connection is closed and a summary printed: calls, failures by kind,
    /// frames that matched no call, and the p50/p99/max latency of the answers.
    ///
    /// With --codec jsonrpc a message is {"method":NAME,"params":[..] or {..}} (params may be
    /// left out; a "jsonrpc" or "id" member is replaced), sent as
    /// {"jsonrpc":"2.0","id":N,"method":..,"params":..}. An answer prints its result; an error
    /// answer fails the call as remote, with its code, message and data (--json adds
    /// "remote":{"code":..,"message":..,"data":..}). A notification that answers no call is
    /// reported as a push.
    Call(CallArgs),
    /// Print every message the server pushes
    ///
    /// Every frame that answers no call is printed, until the connection ends, --count frames
    /// arrived or --duration passed. Exit status 0 when it stopped on --count or --duration or
    /// the server closed the connection normally, 1 otherwise.
    ///
    /// With --jsonrpc-subscribe METHOD PARAMS (JSON-RPC 2.0) it subscribes once the connection
    /// is open: it calls METHOD with PARAMS, takes the result as the subscription's key, and
    /// prints each item (the params.result of each notification that carries the key), or with
    /// --json the line {"event":"item","subscription":<key>,"item":<params.result>}. Items count
    /// towards --count. When it stops, it calls the unsubscribe method with [key]. It ends when
    /// the subscription does: a failed subscribe call prints the error (remote, with its code,
    /// message and data) and exits 1; the server closing the connection normally exits 0.
    Listen(ListenArgs),
    /// Run a WebSocket echo server
    ///
    /// Every text or binary message is sent back unchanged, so with the envelope codec every
    /// call answers itself. It prints "echo server listening on ws://HOST:PORT/" and serves
    /// until killed. With --tls it serves wss:// with a certificate from a CA made at startup,
    /// and also prints "CA certificate in FILE" (trust it with `rpcloop call --ca FILE`).
    EchoServer(EchoArgs),
}

/// Options of `rpcloop call`.
#[derive(Debug, Args)]
pub struct CallArgs {
    /// The server's URL: ws://HOST[:PORT][/PATH], or wss://... for WebSocket over TLS.
    #[arg(value_parser = parse::url)]
    pub url: String,

    /// JSON texts to send, one call each (none: read one per line from stdin).
    #[arg(value_name = "MESSAGE", allow_negative_numbers = true, value_parser = parse::json_text)]
    pub messages: Vec<Box<RawValue>>,

    /// Wire format of requests and answers: envelope ({"id":N,"message":...}), jsonrpc
    /// (JSON-RPC 2.0: a message is {"method":..,"params":..}), or jsonrpc-string-ids (the same,
    /// with ids sent as strings).
    #[arg(long, value_name = "CODEC", default_value = "envelope", value_parser = parse::codec)]
    pub codec: CodecChoice,

    /// How long each call waits for its answer, from its submission.
    #[arg(long, value_name = "DURATION", default_value_t = Dur(std::time::Duration::from_secs(10)), value_parser = parse::duration)]
    pub timeout: Dur,

    /// Calls in flight at once.
    #[arg(long, value_name = "K", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub concurrency: u32,

    /// Send the messages this many times over (in order, each time).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub repeat: u64,

    /// Never show a progress bar (one is shown on stderr for --repeat runs when it is a
    /// terminal).
    #[arg(long)]
    pub no_progress: bool,

    #[command(flatten)]
    pub output: OutputArgs,

    #[command(flatten)]
    pub conn: ConnArgs,
}

/// Options of `rpcloop listen`.
#[derive(Debug, Args)]
pub struct ListenArgs {
    /// The server's URL: ws://HOST[:PORT][/PATH], or wss://... for WebSocket over TLS.
    #[arg(value_parser = parse::url)]
    pub url: String,

    /// Stop after this many messages (pushes and subscription items).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,

    /// Stop after this long.
    #[arg(long, value_name = "DURATION", value_parser = parse::duration)]
    pub duration: Option<Dur>,

    /// Wire format, as for call [default: envelope; jsonrpc with --jsonrpc-subscribe].
    #[arg(long, value_name = "CODEC", value_parser = parse::codec)]
    pub codec: Option<CodecChoice>,

    /// Subscribe first (JSON-RPC 2.0): call METHOD with PARAMS, a JSON array or object, and
    /// print the subscription's items.
    #[arg(long, num_args = 2, value_names = ["METHOD", "PARAMS"], allow_hyphen_values = true)]
    pub jsonrpc_subscribe: Option<Vec<String>>,

    /// The method that ends the subscription, called with [key] [default: METHOD with its
    /// ending subscribe/Subscribe made unsubscribe/Unsubscribe, as eth_subscribe ->
    /// eth_unsubscribe; required for other names].
    #[arg(long, value_name = "METHOD", requires = "jsonrpc_subscribe")]
    pub jsonrpc_unsubscribe: Option<String>,

    #[command(flatten)]
    pub output: OutputArgs,

    #[command(flatten)]
    pub conn: ConnArgs,
}

/// Options of `rpcloop echo-server`.
#[derive(Debug, Args)]
pub struct EchoArgs {
    /// Port to listen on (0 picks a free one; the URL is printed on startup).
    #[arg(long, default_value_t = 9001)]
    pub port: u16,

    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,

    /// Serve wss:// with a certificate from a CA made at startup (its certificate is written
    /// to --ca-out, for clients to trust with --ca).
    #[arg(long)]
    pub tls: bool,

    /// Where --tls writes the CA's certificate (PEM).
    #[arg(
        long,
        value_name = "FILE",
        default_value = "echo_server_ca.pem",
        requires = "tls"
    )]
    pub ca_out: String,
}

/// How results are printed.
#[derive(Debug, Args)]
pub struct OutputArgs {
    /// One JSON object per line on stdout, for programs: calls, unmatched frames,
    /// subscription items, state changes, and a summary last.
    #[arg(long)]
    pub json: bool,
}

/// Settings of the connection, shared by `call` and `listen`. Defaults are rpcloop's own.
#[derive(Debug, Args)]
#[command(next_help_heading = "Connection")]
pub struct ConnArgs {
    /// Limit on the TCP connect and the WebSocket handshake together.
    #[arg(long, value_name = "DURATION", default_value_t = Dur(defaults().connect_timeout), value_parser = parse::duration)]
    pub connect_timeout: Dur,

    /// After the last call, how long to wait for the server's close frame.
    #[arg(long, value_name = "DURATION", default_value_t = Dur(defaults().close_timeout), value_parser = parse::duration)]
    pub close_timeout: Dur,

    /// Send a ping this often ("off" for none).
    #[arg(long, value_name = "DURATION", default_value_t = Every(defaults().ping_interval), value_parser = parse::every)]
    pub ping_interval: Every,

    /// After a ping, how long the server has to send anything before it is taken for gone.
    #[arg(long, value_name = "DURATION", default_value_t = Dur(defaults().pong_timeout), value_parser = parse::duration)]
    pub pong_timeout: Dur,

    /// Largest message either way (a larger request fails with too_large, unsent).
    #[arg(long, value_name = "BYTES", default_value_t = Size(defaults().max_message_size), value_parser = parse::size)]
    pub max_message_size: Size,

    /// Bytes that may wait to be written; past it a call fails with busy, unsent.
    #[arg(long, value_name = "BYTES", default_value_t = Size(defaults().max_write_buffer), value_parser = parse::size)]
    pub max_write_buffer: Size,

    /// Reconnect after the connection is lost (exponential backoff with jitter); calls not
    /// yet written wait for the next connection within their deadlines.
    #[arg(long)]
    pub reconnect: bool,

    /// An HTTP header for the opening handshake, as 'Name: value' (repeatable).
    #[arg(long = "header", short = 'H', value_name = "NAME: VALUE", value_parser = parse::header)]
    pub headers: Vec<(String, String)>,

    /// wss://: trust only the CA certificates in this PEM file, instead of the bundled Mozilla
    /// roots (for a server whose certificate a private CA signed).
    #[arg(long, value_name = "FILE", value_parser = parse::ca_file, conflicts_with = "native_roots")]
    pub ca: Option<RootCertStore>,

    /// wss://: trust the platform's certificate store instead of the bundled Mozilla roots.
    #[arg(long)]
    pub native_roots: bool,
}

/// A subscription to make (`listen --jsonrpc-subscribe`).
#[derive(Debug)]
pub struct Subscribe {
    pub method: String,
    pub params: Box<RawValue>,
    pub unsubscribe: String,
}

impl CallArgs {
    /// Checks what clap cannot check alone: with JSON-RPC, that each message on the command
    /// line is a call.
    pub fn check(&self) -> Result<(), String> {
        if !self.codec.is_jsonrpc() {
            return Ok(());
        }
        for message in &self.messages {
            jsonrpc::check(message).map_err(|why| {
                let (text, cut) = crate::fmt::truncate(message.get(), 60);
                let more = if cut { "..." } else { "" };
                format!("the message '{text}{more}' is not a JSON-RPC call: {why}")
            })?;
        }
        Ok(())
    }
}

impl ListenArgs {
    /// The codec, and the subscription to make if any, checked together.
    pub fn plan(&self) -> Result<(CodecChoice, Option<Subscribe>), String> {
        let Some(subscribe) = &self.jsonrpc_subscribe else {
            return Ok((self.codec.unwrap_or(CodecChoice::Envelope), None));
        };
        let codec = self.codec.unwrap_or(CodecChoice::JsonRpc);
        if !codec.is_jsonrpc() {
            return Err(format!(
                "--jsonrpc-subscribe needs a JSON-RPC codec, not --codec {codec}"
            ));
        }
        let [method, params] = subscribe.as_slice() else {
            return Err("--jsonrpc-subscribe takes two values: METHOD PARAMS".into());
        };
        if method.is_empty() {
            return Err("--jsonrpc-subscribe METHOD is empty".into());
        }
        let params = jsonrpc::subscribe_params(params)?;
        let unsubscribe = match &self.jsonrpc_unsubscribe {
            Some(name) if name.is_empty() => {
                return Err("--jsonrpc-unsubscribe METHOD is empty".into());
            }
            Some(name) => name.clone(),
            None => jsonrpc::unsubscribe_method(method).ok_or_else(|| {
                format!(
                    "cannot tell the unsubscribe method that goes with {method:?}: \
                     give it with --jsonrpc-unsubscribe METHOD"
                )
            })?,
        };
        let method = method.clone();
        Ok((
            codec,
            Some(Subscribe {
                method,
                params,
                unsubscribe,
            }),
        ))
    }
}

/// Exits with a usage error of `subcommand`, shown as clap shows its own (exit status 2).
pub fn usage_error(subcommand: &str, message: &str) -> ! {
    let mut command = Cli::command();
    command.build();
    let error = match command.find_subcommand_mut(subcommand) {
        Some(sub) => sub.error(ErrorKind::ValueValidation, message),
        None => command.error(ErrorKind::ValueValidation, message),
    };
    error.exit()
}

fn defaults() -> ConnectionConfig {
    ConnectionConfig::default()
}

impl ConnArgs {
    /// The library's connection settings these options stand for.
    pub fn config(&self, codec: CodecChoice) -> ConnectionConfig {
        let codec: Arc<dyn rpcloop::Codec> = match codec {
            CodecChoice::Envelope => Arc::new(Envelope),
            CodecChoice::JsonRpc => Arc::new(JsonRpc2::default()),
            CodecChoice::JsonRpcStringIds => Arc::new(JsonRpc2::with_string_ids()),
        };
        ConnectionConfig {
            connect_timeout: self.connect_timeout.0,
            close_timeout: self.close_timeout.0,
            ping_interval: self.ping_interval.0,
            pong_timeout: self.pong_timeout.0,
            max_message_size: self.max_message_size.0,
            max_write_buffer: self.max_write_buffer.0,
            reconnect: self.reconnect.then(ReconnectPolicy::default),
            headers: self.headers.clone(),
            codec,
            tls: self.tls(),
            ..ConnectionConfig::default()
        }
    }

    /// Which roots a wss:// server's certificate must chain to: the bundled Mozilla roots
    /// unless --ca or --native-roots says otherwise (clap lets only one of them through).
    fn tls(&self) -> TlsConfig {
        match (&self.ca, self.native_roots) {
            (Some(roots), _) => TlsConfig::Custom(roots.clone()),
            (None, true) => TlsConfig::Native,
            (None, false) => TlsConfig::WebPki,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn options_become_the_connection_config() {
        let cli = Cli::try_parse_from([
            "rpcloop",
            "call",
            "ws://127.0.0.1:1/",
            "1",
            "--ping-interval",
            "off",
            "--max-message-size",
            "1KiB",
            "--reconnect",
            "-H",
            "X-Key: v",
        ])
        .unwrap();
        let Command::Call(args) = cli.command else {
            panic!("not a call")
        };
        let config = args.conn.config(args.codec);
        assert_eq!(config.ping_interval, None);
        assert_eq!(config.max_message_size, 1024);
        assert_eq!(config.reconnect, Some(ReconnectPolicy::default()));
        assert_eq!(config.headers, vec![("X-Key".into(), "v".into())]);
        let library = ConnectionConfig::default();
        assert_eq!(config.connect_timeout, library.connect_timeout);
        assert_eq!(config.max_write_buffer, library.max_write_buffer);
        assert_eq!(args.timeout, Dur(std::time::Duration::from_secs(10)));
        assert_eq!((args.concurrency, args.repeat), (1, 1));
        assert!(matches!(config.tls, TlsConfig::WebPki));
    }

    #[test]
    fn native_roots_become_the_tls_config() {
        let cli = Cli::try_parse_from(["rpcloop", "listen", "wss://localhost/", "--native-roots"])
            .unwrap();
        let Command::Listen(args) = cli.command else {
            panic!("not a listen")
        };
        assert!(matches!(
            args.conn.config(CodecChoice::Envelope).tls,
            TlsConfig::Native
        ));
    }
}
