//! Arbitrary bytes as a slirp4netns API request: parsing never panics, a
//! refusal always encodes to `{"error":{"desc":"bad request: ..."}}`, and
//! a request re-encoded as JSON parses back to itself.
#![no_main]

use caploop::wire::api::{self, Reply, Request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match api::parse_request(data) {
        Ok(req) => {
            let again =
                api::parse_request(req.to_json().as_bytes()).expect("re-encoded request parses");
            assert_eq!(again, req);
            if let Request::AddHostfwd {
                host_port,
                guest_port,
                ..
            } = req
            {
                assert!(host_port != 0 && guest_port != 0);
            }
        }
        Err(e) => {
            let json = e.reply().to_json();
            let v: serde_json::Value = serde_json::from_str(&json).expect("error replies are JSON");
            let desc = v["error"]["desc"]
                .as_str()
                .expect("error replies have a desc");
            assert!(desc.starts_with("bad request: "));
            assert_eq!(json, Reply::Error(e.desc()).to_json());
        }
    }
});
