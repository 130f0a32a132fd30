//! [`Request`]: a method call's payload, for codecs that name the method (JSON-RPC 2.0).

use std::borrow::Cow;

use serde::Serialize;

/// A method and its parameters: serializes to `{"method": .., "params": ..}`, which the
/// [`JsonRpc2`](crate::JsonRpc2) codec stamps with `"jsonrpc"` and the call's id.
///
/// ```
/// use rpcloop::Request;
/// let r = Request::new("eth_getBalance", ("0x407d73d8a49eeb85d32cf465507dd71d507100c1", "latest"));
/// assert_eq!(
///     serde_json::to_string(&r).unwrap(),
///     r#"{"method":"eth_getBalance","params":["0x407d73d8a49eeb85d32cf465507dd71d507100c1","latest"]}"#
/// );
/// let bare = Request::<()>::without_params("net_version");
/// assert_eq!(serde_json::to_string(&bare).unwrap(), r#"{"method":"net_version"}"#);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Request<'a, P> {
    /// The method name.
    pub method: Cow<'a, str>,
    /// The parameters (JSON-RPC 2.0 wants an array or an object), or none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub params: Option<P>,
}

impl<'a, P> Request<'a, P> {
    /// A call of `method` with `params`.
    pub fn new(method: impl Into<Cow<'a, str>>, params: P) -> Self {
        Request {
            method: method.into(),
            params: Some(params),
        }
    }

    /// A call of `method` without parameters (the member is left out, as JSON-RPC 2.0 allows).
    pub fn without_params(method: impl Into<Cow<'a, str>>) -> Self {
        Request {
            method: method.into(),
            params: None,
        }
    }
}
