//! The admin server's request parser on arbitrary bytes: an error is fine, a panic is a
//! bug.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let peer = std::net::SocketAddr::from(([127, 0, 0, 1], 1));
    if let Some(Err(e)) = sssonector::admin::http::parse_head(data, peer) {
        let _ = (e.status(), e.to_string());
    }
});
