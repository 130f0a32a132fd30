mod support;

use std::cell::RefCell;
use std::rc::Rc;

use rpcloop::ConnectionConfig;
use support::*;

#[test]
fn echo_one_call() {
    let server = Server::start(echo);
    let (mut ev, conn) = connected(&server, ConnectionConfig::default());
    let got = Rc::new(RefCell::new(None));
    let g = got.clone();
    ev.submit(conn, serde_json::json!({"n": 1}), move |_, r| {
        *g.borrow_mut() = Some(r.map(|r| r.text().to_owned()).map_err(|e| e.to_string()));
    })
    .unwrap();
    turn_until(&mut ev, |_| got.borrow().is_some());
    assert_eq!(got.borrow().clone().unwrap().unwrap(), r#"{"n":1}"#);
    ev.close(conn).unwrap();
    turn_until(&mut ev, |ev| {
        ev.state(conn) == Some(rpcloop::ConnState::Closed)
    });
    server.join();
}
